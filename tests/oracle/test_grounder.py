"""Grounder: canonical phrases, every held-out paraphrase of the settings layer, junk refused."""
from __future__ import annotations

import pytest

from metamanip.oracle.grounder import Grounder, task_object
from metamanip.settings.objects import TASK_INSTRUCTIONS
from metamanip.settings.paraphrases import TASK_PHRASES


@pytest.fixture(scope="module")
def grounder():
    return Grounder()


def test_canonical_phrases_ground_by_phrase(grounder):
    for task, phrase in TASK_INSTRUCTIONS.items():
        g = grounder.ground(f"Sure. {phrase.capitalize()}!")
        assert g.task == task and g.method in ("cue", "phrase")


@pytest.mark.parametrize("task", sorted(TASK_PHRASES["heldout"]))
def test_every_heldout_paraphrase_grounds_to_its_task(grounder, task):
    # held-out phrasings are not among the grounder's phrases: they need the embeddings (or the cues)
    for phrase in TASK_PHRASES["heldout"][task]:
        for text in (phrase, f"I suggest {phrase} next"):
            g = grounder.ground(text)
            assert g.task == task, (text, g)


def test_candidates_restrict_the_choice(grounder):
    # the drawer is open, so only closing it is feasible: "open the drawer" still means "explore the drawer"
    assert grounder.ground("open the drawer", ["close_drawer", "turn_on_led"]).task == "close_drawer"
    # an object that is not in the episode is not grounded to another one
    assert grounder.ground("lift the pink block", ["open_drawer", "turn_on_led"]).task is None


@pytest.mark.parametrize("junk", ["", "   ", "asdf qwerty zxcv", "I like turtles very much",
                                  "The weather is nice today"])
def test_junk_is_ungroundable(grounder, junk):
    g = grounder.ground(junk)
    assert g.task is None and g.method == "none"


def test_task_object():
    assert task_object("lift_pink_block_slider") == "pink_block"
    assert task_object("move_slider_left") == "slider"
    assert task_object("turn_on_led") == "led"


def test_unknown_candidate_is_a_clear_error(grounder):
    with pytest.raises(ValueError, match="no phrases"):
        grounder.ground("open the drawer", ["fly_to_the_moon"])
