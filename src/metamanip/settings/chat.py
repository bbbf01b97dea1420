"""What the LLM oracle reads: the environment description (chat preamble) and the per-decision messages.

Every message is a chat turn `{"role": "user", "content": ...}`; the description is a two-turn
preamble (rules from the user, an acknowledgement from the assistant) because the chat models we
target (Gemma) have no system role. Each decision message carries the environment status and asks
for the reply template `Explanation: ... Notes: ... Instruction: ...`.
"""
from __future__ import annotations

from typing import Sequence

from metamanip.settings.objects import LogicalState, feasible_task, object_text, state_description, task_instruction

ChatMessage = dict[str, str]

REPLY_TEMPLATE = "Explanation: <your explanation> Notes: <your notes> Instruction: <your instruction>"
_REMINDER = (f"Answer with the template '{REPLY_TEMPLATE}'. Keep the instruction short: one object, one action. "
             "Once you have found a rewarding instruction, repeat it in every later trial.")
_MID_REMINDER = (f"Answer with the template '{REPLY_TEMPLATE}'. Keep the instruction short: one object, one action, "
                 "for this trial only.")


def user(content: str) -> ChatMessage:
    return {"role": "user", "content": content}


def env_status(objects: Sequence[str], state: LogicalState) -> str:
    """`The current status of the environment: The drawer is currently open; The LED is currently off; ...`."""
    return "The current status of the environment: " + "; ".join(state_description(o, state) for o in objects) + "."


def _object_line(obj: str, state: LogicalState) -> str:
    name = object_text(obj)
    if obj == "slider":
        what = f"A sliding door, now at the {state.slider}, that can be slid to the left or to the right."
        tasks = ("move_slider_left", "move_slider_right")
    elif obj == "drawer":
        what = f"A drawer, now {state.drawer}, that opens when its handle is pulled and closes when it is pushed."
        tasks = ("open_drawer", "close_drawer")
    elif obj == "led":
        what = f"A green LED, now {'on' if state.led else 'off'}, that a press on the button switches on or off."
        tasks = ("turn_on_led", "turn_off_led")
    elif obj == "lightbulb":
        what = (f"A lightbulb, now {'on' if state.lightbulb else 'off'}, that the switch next to it turns "
                "on (pushed up) or off (pulled down).")
        tasks = ("turn_on_lightbulb", "turn_off_lightbulb")
    else:
        where = "on the table" if state.value(obj) == "table" else "in the slider"
        what = f"A {name}, now {where}, that can be picked up."
        color = obj.split("_")[0]
        tasks = (f"lift_{color}_block_table", f"lift_{color}_block_slider")
    possible = ", ".join(f'"{task_instruction(t)}"' for t in tasks)
    doable = feasible_task(obj, state)
    now = f' Possible now: "{task_instruction(doable)}".' if doable else " It cannot be reached now."
    return f"{what} Instructions for it: {possible}.{now}"


def object_descriptions(objects: Sequence[str], state: LogicalState) -> list[str]:
    return [_object_line(o, state) for o in objects]


_EXPLORE_RULES = (
    "Guidelines: "
    "1) Guide me from the current state of the objects and from what earlier trials revealed. "
    f"2) Always reply as '{REPLY_TEMPLATE}'. "
    "3) Only ask for the manipulations listed above, and only those that make sense in the current state "
    "(do not ask to open a drawer that is already open). "
    "4) One short instruction with one action, for example 'lift the red block from the table'. "
    "5) Never repeat an instruction that was not rewarding. "
    "6) If I did not manage to complete an instruction, you may give it again. "
    "7) Once an instruction was rewarding, give that same instruction in every remaining trial. "
    "8) Explore the objects in the order in which they are listed: the first object first, then the second, and so on."
)

_COMBI_RULES = (
    "Guidelines: "
    "1) Guide me from the current state of the objects and from what earlier trials revealed. "
    f"2) Always reply as '{REPLY_TEMPLATE}'. "
    "3) Only ask for the manipulations listed above, and only those that make sense in the current state. "
    "4) One short instruction with one action, for example 'pull the handle to open the drawer'. "
    "5) Never repeat an instruction that was not rewarding. "
    "6) Each object can be manipulated at most once per trial, and a trial ends after two completed tasks. "
    "7) Once both rewarding tasks are known, do exactly these two in every remaining trial. "
    "8) Explore the objects in the order in which they are listed: the first object first, then the second, and so on."
)


def environment_description(setting: str, objects: Sequence[str], state: LogicalState) -> list[ChatMessage]:
    """The chat preamble for the LLM oracle: objects with their instructions, the trial rules, the guidelines."""
    listing = " ".join(f"{i + 1}) {line}" for i, line in enumerate(object_descriptions(objects, state)))
    if setting == "combi_explore":
        goal = ("Two of the possible tasks are rewarding, and a trial is rewarded only when both are done in it. "
                "We do not know which two, so we must find them quickly and then repeat them.")
        rules = _COMBI_RULES
    else:
        goal = ("Exactly one of the possible tasks is rewarding. We do not know which, so we must find it quickly "
                "and then keep repeating it.")
        rules = _EXPLORE_RULES
    content = (
        "You are my assistant: you tell me which task to do next with the objects in front of me. "
        f"{goal} The objects present are: {listing} "
        "Nothing can be done with the objects beyond what is described; there are no hidden functions. "
        "I get several trials. The rewarding task stays the same across trials, and every trial starts from the "
        "same initial state of all objects. After each trial I tell you which tasks were completed and whether "
        f"they were rewarding. {rules}"
    )
    ack = ("Understood. I will follow these guidelines and give one clear instruction at a time to find the "
           "reward and then collect it in every trial.")
    return [user(content), {"role": "assistant", "content": ack}]


def first_trial_message(status: str) -> ChatMessage:
    return user(f"Beginning of trial 1: please give an instruction for this trial. {status} {_REMINDER}")


def trial_end_message(trial: int, outcomes: Sequence[tuple[str, bool]], status: str) -> ChatMessage:
    """`trial` is the 1-based number of the trial that ended; `outcomes` (instruction, rewarded) pairs."""
    if outcomes:
        done = "; ".join(f"{instr} was {'rewarding' if rew else 'not rewarding'}" for instr, rew in outcomes)
    else:
        done = "no task was completed"
    return user(f"Trial {trial} completed. Completed instructions: {done}. Please give an instruction for the next "
                f"trial. {status} {_REMINDER}")


def task_done_message(instruction: str, status: str) -> ChatMessage:
    """Combi mid-trial: one subtask is done, ask for the second instruction of this trial."""
    return user(f"Completed instruction: {instruction}. Give a new instruction for this trial. {status} {_MID_REMINDER}")
