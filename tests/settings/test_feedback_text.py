"""The original's train_feedback strings verbatim, and the paraphrase sets kept apart."""
from __future__ import annotations

import re

import numpy as np

from metamanip.settings import chat, feedback
from metamanip.settings.objects import LogicalState, TASK_INSTRUCTIONS
from metamanip.settings.paraphrases import SENTENCES, TASK_PHRASES, Paraphraser


def test_explore_formats_verbatim():
    objs = ["red_block", "drawer", "led", "slider"]
    assert feedback.explore_first_trial(objs) == "first trial. episode objects: red block, drawer, led, slider"
    assert feedback.explore_rewarded("open_drawer") == "pull the handle to open the drawer was rewarding last trial; "
    assert feedback.explore_unrewarded(objs, []) == (
        "no reward last trial. episode objects: red block, drawer, led, slider. explored objects: none")
    assert feedback.explore_unrewarded(objs, ["red_block", "led"], "lift_blue_block_slider") == (
        "no reward last trial. episode objects: red block, drawer, led, slider. explored objects: red block, led. "
        "lift the blue block from the slider was rewarding in previous trials")


def test_combi_formats_verbatim():
    objs = ["led", "slider", "drawer", "lightbulb"]
    assert feedback.combi_first_trial(objs) == "first trial. episode objects: led, slider, drawer, lightbulb."
    assert feedback.combi_task_done(objs) == "You completed a task. Episode objects: led, slider, drawer, lightbulb"
    assert feedback.combi_trial_end(2, ["move_slider_left"], ["turn_on_led", "close_drawer"], objs) == (
        "Trial 2 completed. Completed rewarding tasks last trial: move the door to the left. Completed unrewarding "
        "tasks last trial: turn on the led; push the handle to close the drawer. Episode objects: led, slider, "
        "drawer, lightbulb")


def test_canonical_instructions_are_the_originals():
    assert TASK_INSTRUCTIONS["close_drawer"] == "push the handle to close the drawer"
    assert TASK_INSTRUCTIONS["lift_pink_block_slider"] == "lift the pink block from the slider"
    assert len(TASK_INSTRUCTIONS) == 14


def test_paraphrase_sets_are_disjoint_and_complete():
    for slot in SENTENCES["train"]:
        assert not set(SENTENCES["train"][slot]) & set(SENTENCES["heldout"][slot]), slot
    assert set(SENTENCES["train"]) == set(SENTENCES["heldout"])
    for task in TASK_INSTRUCTIONS:
        assert not set(TASK_PHRASES["train"][task]) & set(TASK_PHRASES["heldout"][task]), task
    def pattern(sentence):
        return re.compile(".+?".join(re.escape(p) for p in re.split(r"\{\w+\}", sentence)), re.IGNORECASE)

    sets = {k: [s for v in SENTENCES[k].values() for s in v] for k in ("train", "heldout")}
    for mine, other in (("train", "heldout"), ("heldout", "train")):
        for s in sets[mine]:
            assert not any(pattern(s).search(o) for o in sets[other]), (mine, s)


def test_paraphraser_keeps_one_wording_per_episode():
    p = Paraphraser.sample("train", np.random.default_rng(0))
    a = p.unrewarded("led, drawer", "led")
    assert a == p.unrewarded("led, drawer", "led")
    assert "led, drawer" in a and a.count(".") >= 3
    assert "{" not in p.combi_trial_end(3, ["open_drawer"], [], "led, drawer")
    texts = {Paraphraser.sample("train", np.random.default_rng(s)).first_trial("x") for s in range(40)}
    assert len(texts) > 10


def test_env_status_and_description():
    s = LogicalState(slider="right", drawer="closed", led=0, lightbulb=1)
    assert chat.env_status(["drawer", "led", "red_block"], s) == (
        "The current status of the environment: The drawer is currently closed; The LED is currently off; "
        "The red block is currently on the table.")
    desc = chat.environment_description("explore", ["drawer", "led", "red_block"], s)
    text = desc[0]["content"]
    assert "1) A drawer, now closed" in text and "3) A red block" in text
    assert 'Possible now: "pull the handle to open the drawer"' in text
    assert "Explanation:" in text and "Instruction:" in text
    assert "Two of the possible tasks" in chat.environment_description("combi_explore", ["drawer"], s)[0]["content"]
