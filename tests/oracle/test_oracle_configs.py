"""conf/oracle presets compose and build the agents they describe (the LM loads lazily, so no weights here)."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from metamanip.cli.pipeline import compose
from metamanip.oracle.agent import OracleAgent
from metamanip.oracle.llm import LLMDecider
from metamanip.oracle.scripted import ScriptedDecider


@pytest.mark.parametrize("preset,decider", [("scripted", ScriptedDecider), ("llm", LLMDecider)])
def test_oracle_presets_build(preset, decider):
    cfg = compose("collect", [f"oracle={preset}", "seed=5"])
    agent = instantiate(cfg.oracle, env="the env", _convert_="all")
    assert isinstance(agent, OracleAgent) and isinstance(agent.decider, decider) and agent.env == "the env"
    if preset == "llm":
        assert agent.decider.model_name == "google/gemma-2-27b-it" and agent.decider.seed == 5
        assert agent.decider._model is None  # nothing loaded until the first decision


def test_llm_model_override_spelling():
    cfg = compose("collect", ["oracle=llm", "oracle.model=/models/tiny", "oracle.retries=0"])
    agent = instantiate(cfg.oracle, env=None, _convert_="all")
    assert agent.decider.model_name == "/models/tiny" and agent.decider.retries == 0
