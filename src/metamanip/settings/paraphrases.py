"""Paraphrase templates for `alt_feedback`: one set for training, a disjoint one held out for evaluation.

An episode samples one sentence per slot (and one phrasing per task) once, at reset, and keeps it for
all its trials, so the wording varies across episodes but not within one. The held-out set is used only
when the setting runs under `split="heldout"`; no sentence occurs in both sets (tests check this).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from metamanip.settings.splits import check_split

# slot -> sentences. Placeholders: {objects}, {explored}, {task}, {trial}, {rewarding}, {unrewarding}.
SENTENCES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "first_open": (
            "Trial one begins.",
            "We are at the first trial.",
            "Here is the opening trial.",
            "The first trial starts now.",
            "This is trial number one.",
        ),
        "objects": (
            "Objects in this episode: {objects}.",
            "The objects you can try are: {objects}.",
            "Candidates to try: {objects}.",
            "This episode offers these objects: {objects}.",
            "You may work with: {objects}.",
        ),
        "nothing_explored": (
            "Nothing has been tried yet.",
            "No object has been explored so far.",
            "So far no objects were explored.",
            "Explored up to now: nothing.",
            "None of the objects has been tried.",
        ),
        "no_reward": (
            "The last trial earned nothing.",
            "No reward came from the previous trial.",
            "The previous attempt went unrewarded.",
            "That trial brought no reward.",
            "Last trial: unrewarded.",
        ),
        "explored": (
            "Already tried: {explored}.",
            "Objects explored so far: {explored}.",
            "You have explored: {explored}.",
            "Tried until now: {explored}.",
            "Explored objects up to now: {explored}.",
        ),
        "earlier_reward": (
            "Earlier, {task} gave a reward.",
            "{task} paid off in an earlier trial.",
            "Keep in mind that {task} was rewarded before.",
            "In an earlier trial, {task} earned the reward.",
            "{task} had been rewarding before that.",
        ),
        "reward": (
            "{task} earned the reward last trial.",
            "Last trial, the reward came from {task}.",
            "The reward of the previous trial went to {task}.",
            "Well done: {task} was rewarded in the last trial.",
            "{task} paid off in the previous trial.",
        ),
        "task_done": (
            "One task is done.",
            "You just finished a task.",
            "A task was carried out.",
            "That task is complete.",
            "You got one task done.",
        ),
        "trial_over": (
            "Trial {trial} is finished.",
            "That was trial {trial}.",
            "Trial {trial} has come to an end.",
            "End of trial {trial}.",
            "Trial {trial} is behind us.",
        ),
        "rewarding_list": (
            "Rewarded tasks in it: {rewarding}.",
            "Tasks that paid off: {rewarding}.",
            "It rewarded: {rewarding}.",
            "Rewarding tasks done: {rewarding}.",
            "Tasks that earned a reward: {rewarding}.",
        ),
        "unrewarding_list": (
            "Tasks without reward in it: {unrewarding}.",
            "Tasks that paid nothing: {unrewarding}.",
            "It did not reward: {unrewarding}.",
            "Unrewarded tasks done: {unrewarding}.",
            "Tasks that earned nothing: {unrewarding}.",
        ),
    },
    "heldout": {
        "first_open": (
            "The episode opens with its first trial.",
            "Our first attempt starts here.",
            "Attempt number one is under way.",
            "Let us begin with trial one.",
            "This marks the start of trial one.",
        ),
        "objects": (
            "Available objects: {objects}.",
            "Objects on offer this time: {objects}.",
            "Pick among these objects: {objects}.",
            "Objects at your disposal: {objects}.",
            "The episode's objects are {objects}.",
        ),
        "nothing_explored": (
            "Nothing is explored yet.",
            "No objects have been touched so far.",
            "Explored list: empty.",
            "You have not explored any object yet.",
            "Not a single object has been tried.",
        ),
        "no_reward": (
            "The previous trial ended without a reward.",
            "Nothing was gained in the last trial.",
            "No payoff in the trial before.",
            "The last attempt gave no reward.",
            "Unrewarded last time.",
        ),
        "explored": (
            "Objects tried before: {explored}.",
            "So far you explored {explored}.",
            "Explored list: {explored}.",
            "Objects already covered: {explored}.",
            "Earlier attempts explored {explored}.",
        ),
        "earlier_reward": (
            "Remember that {task} was rewarding once.",
            "{task} brought a reward in a previous trial.",
            "A previous trial rewarded {task}.",
            "{task} had paid off before.",
            "Do not forget: {task} was rewarded earlier.",
        ),
        "reward": (
            "The previous trial rewarded {task}.",
            "{task} yielded the reward last time.",
            "Last time, {task} was the rewarding choice.",
            "Reward obtained in the last trial by {task}.",
            "The last attempt paid off thanks to {task}.",
        ),
        "task_done": (
            "A task has just been completed.",
            "Task finished.",
            "You completed one task.",
            "That is one task done.",
            "The task is finished.",
        ),
        "trial_over": (
            "Trial {trial} is complete.",
            "We have finished trial {trial}.",
            "Trial {trial} just ended.",
            "Trial {trial} is done now.",
            "So ends trial {trial}.",
        ),
        "rewarding_list": (
            "Rewarded in that trial: {rewarding}.",
            "Rewarding tasks carried out: {rewarding}.",
            "Tasks that brought a reward: {rewarding}.",
            "Paying tasks: {rewarding}.",
            "The trial rewarded {rewarding}.",
        ),
        "unrewarding_list": (
            "Not rewarded in that trial: {unrewarding}.",
            "Tasks carried out without reward: {unrewarding}.",
            "Tasks that brought nothing: {unrewarding}.",
            "Non-paying tasks: {unrewarding}.",
            "The trial did not reward {unrewarding}.",
        ),
    },
}

# How the paraphrases name an empty list of tasks.
NONE_TEXT: dict[str, str] = {"train": "none", "heldout": "nothing"}

# Task phrasings (gerunds, to fit the sentences above), separate for training and held-out.
TASK_PHRASES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "move_slider_left": ("sliding the door to the left", "pushing the sliding door leftwards",
                             "shifting the door to the left side"),
        "move_slider_right": ("sliding the door to the right", "pushing the sliding door rightwards",
                              "shifting the door to the right side"),
        "open_drawer": ("pulling the drawer open", "opening the drawer", "drawing the drawer out"),
        "close_drawer": ("pushing the drawer shut", "closing the drawer", "sliding the drawer in"),
        "turn_on_lightbulb": ("switching the lightbulb on", "turning the lightbulb on",
                              "moving the switch so the bulb lights up"),
        "turn_off_lightbulb": ("switching the lightbulb off", "turning the lightbulb off",
                               "moving the switch so the bulb goes dark"),
        "turn_on_led": ("pressing the button to light the led", "switching the led on", "turning the led on"),
        "turn_off_led": ("pressing the button to darken the led", "switching the led off", "turning the led off"),
        "lift_red_block_table": ("picking the red block up from the table", "raising the red block off the table"),
        "lift_pink_block_table": ("picking the pink block up from the table", "raising the pink block off the table"),
        "lift_blue_block_table": ("picking the blue block up from the table", "raising the blue block off the table"),
        "lift_red_block_slider": ("picking the red block out of the slider", "raising the red block from the shelf"),
        "lift_pink_block_slider": ("picking the pink block out of the slider", "raising the pink block from the shelf"),
        "lift_blue_block_slider": ("picking the blue block out of the slider", "raising the blue block from the shelf"),
    },
    "heldout": {
        "move_slider_left": ("moving the sliding panel left", "getting the door over to the left"),
        "move_slider_right": ("moving the sliding panel right", "getting the door over to the right"),
        "open_drawer": ("tugging the drawer outwards", "getting the drawer open"),
        "close_drawer": ("shoving the drawer back in", "getting the drawer closed"),
        "turn_on_lightbulb": ("lighting up the bulb", "getting the lightbulb to shine"),
        "turn_off_lightbulb": ("putting the bulb out", "getting the lightbulb dark"),
        "turn_on_led": ("lighting up the green led", "getting the led to glow"),
        "turn_off_led": ("putting the green led out", "getting the led dark"),
        "lift_red_block_table": ("grabbing the red block and holding it above the table",
                                 "hoisting the red block from the tabletop"),
        "lift_pink_block_table": ("grabbing the pink block and holding it above the table",
                                  "hoisting the pink block from the tabletop"),
        "lift_blue_block_table": ("grabbing the blue block and holding it above the table",
                                  "hoisting the blue block from the tabletop"),
        "lift_red_block_slider": ("grabbing the red block from behind the door", "hoisting the red block off the shelf"),
        "lift_pink_block_slider": ("grabbing the pink block from behind the door", "hoisting the pink block off the shelf"),
        "lift_blue_block_slider": ("grabbing the blue block from behind the door", "hoisting the blue block off the shelf"),
    },
}


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Paraphraser:
    """The wording one episode uses for `alt_feedback` (one sentence per slot, one phrase per task)."""

    split: str
    sentences: Mapping[str, str]
    tasks: Mapping[str, str]

    @classmethod
    def sample(cls, split: str, rng: np.random.Generator) -> "Paraphraser":
        check_split(split)
        sentences = {slot: opts[int(rng.integers(len(opts)))] for slot, opts in SENTENCES[split].items()}
        tasks = {t: opts[int(rng.integers(len(opts)))] for t, opts in TASK_PHRASES[split].items()}
        return cls(split, sentences, tasks)

    def _say(self, *parts: str, **values: str) -> str:
        return " ".join(_cap(self.sentences[p].format(**values)) for p in parts)

    def task(self, task: str) -> str:
        return self.tasks[task]

    def task_list(self, tasks: Sequence[str]) -> str:
        return "; ".join(self.tasks[t] for t in tasks) if tasks else NONE_TEXT[self.split]

    # Explore
    def first_trial(self, objects: str) -> str:
        return self._say("first_open", "objects", "nothing_explored", objects=objects)

    def rewarded(self, task: str) -> str:
        return self._say("reward", task=self.task(task))

    def unrewarded(self, objects: str, explored: str | None, earlier_task: str | None = None) -> str:
        parts = ["no_reward", "objects", "explored" if explored else "nothing_explored"]
        if earlier_task is not None:
            parts.append("earlier_reward")
        return self._say(*parts, objects=objects, explored=explored or "",
                         task=self.task(earlier_task) if earlier_task else "")

    # Combi-Explore
    def combi_first_trial(self, objects: str) -> str:
        return self._say("first_open", "objects", objects=objects)

    def combi_task_done(self, objects: str) -> str:
        return self._say("task_done", "objects", objects=objects)

    def combi_trial_end(self, trial: int, rewarding: Sequence[str], unrewarding: Sequence[str], objects: str) -> str:
        return self._say("trial_over", "rewarding_list", "unrewarding_list", "objects", trial=str(trial),
                         rewarding=self.task_list(rewarding), unrewarding=self.task_list(unrewarding),
                         objects=objects)
