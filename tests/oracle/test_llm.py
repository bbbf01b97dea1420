"""LLM oracle plumbing with tiny local LMs: a trained one whose replies are grounded and played, and a
garbage-talking one that is retried and falls back to the scripted decision without a crash."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from decision_world import DecisionWorld  # noqa: E402
from tiny_lm import build_tiny_lm  # noqa: E402

from metamanip.oracle.grounder import Grounder  # noqa: E402
from metamanip.oracle.llm import LLMDecider, parse_instruction, render_chat  # noqa: E402

FEASIBLE = {"drawer": "open_drawer", "lightbulb": "turn_off_lightbulb", "slider": "move_slider_left"}
REPLY = "Explanation: the drawer comes first . Notes: nothing explored . Instruction: pull the handle to open the drawer"


def _world(meta="open_drawer"):
    return DecisionWorld("explore", ["drawer", "lightbulb", "slider"], FEASIBLE, meta)


def _corpus() -> list[str]:
    """The prompts the decider will show the model in an episode of `_world()`."""
    w = _world()
    msgs = w.environment_description()
    out = []
    for trial in range(4):
        msgs = msgs + [{"role": "user", "content": f"Trial {trial + 1}. Instruction?"}]
        out.append(render_chat(None, msgs)[:-len("\nassistant:")])
        msgs = msgs + [{"role": "assistant", "content": REPLY}]
    return out


@pytest.fixture(scope="module")
def grounder():
    return Grounder(use_embeddings=False)  # canonical phrases suffice here; embeddings: test_grounder.py


@pytest.fixture(scope="module")
def talking_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "talking", _corpus(), reply=REPLY, steps=60)


@pytest.fixture(scope="module")
def garbage_lm(tmp_path_factory):
    return build_tiny_lm(tmp_path_factory.mktemp("lm") / "garbage", _corpus() + [REPLY])


def test_parse_instruction():
    assert parse_instruction("Explanation: a Notes: b Instruction: open the drawer\nmore") == "open the drawer"
    assert parse_instruction("Instruction : 'lift the red block'") == "lift the red block"
    assert parse_instruction("I don't know") is None
    assert parse_instruction("Instruction:   ") is None


@pytest.mark.slow
def test_trained_tiny_lm_plays_an_episode_end_to_end(talking_lm, grounder):
    decider = LLMDecider(str(talking_lm), grounder=grounder, do_sample=False, max_new_tokens=40,
                         max_prompt_tokens=64, retries=1, device="cpu")
    rewards, decisions = _world().play(decider)
    assert all(d.source == "llm" for d in decisions), [d.text for d in decisions]
    assert all(d.task == "open_drawer" for d in decisions)
    assert rewards == [1.0] * 4
    assert decider.stats["fallbacks"] == 0 and decider.stats["grounded"] == 4
    # the chat keeps the preamble, each feedback and each reply
    roles = [m["role"] for m in decider.history]
    assert roles == ["user", "assistant"] + ["user", "assistant"] * 4


def test_garbage_lm_is_retried_then_falls_back(garbage_lm, grounder, caplog):
    decider = LLMDecider(str(garbage_lm), grounder=grounder, do_sample=True, max_new_tokens=12,
                         max_prompt_tokens=64, retries=1, device="cpu", seed=3)
    with caplog.at_level(logging.WARNING, logger="metamanip.oracle.llm"):
        rewards, decisions = _world(meta="move_slider_left").play(decider)
    assert all(d.source == "fallback" for d in decisions)
    assert decider.stats["fallbacks"] == 4 and decider.stats["retries"] == 4
    assert rewards == [0.0, 0.0, 1.0, 1.0]  # the scripted fallback still plays optimally
    assert "falling back" in caplog.text


def test_generation_error_falls_back(garbage_lm, grounder, monkeypatch):
    decider = LLMDecider(str(garbage_lm), grounder=grounder, retries=0, device="cpu")

    def boom(messages):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(decider, "generate", boom)
    rewards, decisions = _world().play(decider)
    assert rewards == [1.0] * 4 and decisions[0].source == "fallback"


def test_missing_model_is_a_clear_error(tmp_path, grounder):
    decider = LLMDecider(str(tmp_path / "no-such-model"), grounder=grounder, device="cpu")
    with pytest.raises(OSError, match="could not load the oracle LM"):
        decider.generate([{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="model"):
        LLMDecider("", grounder=grounder)
