"""The LLM oracle through the real collection CLI: a tiny local causal LM (saved with save_pretrained)
drives a states-only Explore-3 collection; its garbage replies are retried and fall back, the data is valid."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from tiny_lm import build_tiny_lm  # noqa: E402

pytestmark = pytest.mark.slow


def test_llm_oracle_collects_with_a_tiny_local_lm(tmp_path):
    from metamanip.cli import collect
    from metamanip.cli.pipeline import compose
    from metamanip.data.shards import EpisodeReader, list_episodes

    corpus = ["user: Beginning of trial 1: Please give an instruction for this trial.",
              "assistant: Explanation: hmm Notes: none Instruction: the weather"]
    model = build_tiny_lm(tmp_path / "lm", corpus)
    cfg = compose("collect", [
        "oracle=llm", f"oracle.model={model}", "oracle.max_new_tokens=8",
        "oracle.retries=1", "oracle.device=cpu", "oracle.max_prompt_tokens=64",
        "env.num_objs=3", "env.num_trials=3", "env.rollout_steps=450", "collect.episodes=1",
        "collect.render=later", "collect.progress=false", "collect.max_attempts=3",
        f"collect.dir={tmp_path / 'ds'}"], output_dir=tmp_path / "job")
    metrics = collect.run(cfg)
    assert metrics["episodes"] == 1
    (ref,) = list_episodes(tmp_path / "ds", verify=True)
    sources = ref.meta["decisions"]
    assert len(sources) == 3 and set(sources) <= {"llm", "fallback"}
    texts = [t for t in EpisodeReader().texts(ref, "oracle_text") if t]
    assert len(texts) == 3 and all("Instruction" in t for t in texts)
    lm = EpisodeReader().texts(ref, "lm_feedback")
    assert lm[0].startswith("Beginning of trial 1")
