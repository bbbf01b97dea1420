"""`OracleAgent`: an expert that decides with a decider (scripted or LLM) and acts with motion primitives.

At every decision point of the setting (trial start, Combi mid-trial feedback) it asks its decider for a
task, then runs that task's primitive (`metamanip.oracle.primitives.make_primitive`) until the next
decision. When the primitive is done before the setting moves on, the agent holds still (zero relative
motion, gripper as last commanded). Used by collection and by evaluation as the oracle baseline.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np

from metamanip.oracle.scripted import Decision, ScriptedDecider

log = logging.getLogger(__name__)


def _default_primitive_factory(task: str) -> Any:
    from metamanip.oracle.primitives import make_primitive

    return make_primitive(task)


class OracleAgent:
    """Decider + primitives, with the DESIGN.md agent API (`reset_episode`, `act`)."""

    def __init__(self, env: Any = None, decider: Any = None,
                 primitive_factory: Callable[[str], Any] | None = None):
        self.env = env
        self.decider = decider if decider is not None else ScriptedDecider()
        self.primitive_factory = primitive_factory or _default_primitive_factory
        self.decision: Decision | None = None
        self.decisions: list[Decision] = []
        self._primitive: Any = None
        self._gripper = 1.0
        self._new_decision = False

    def bind(self, env: Any) -> "OracleAgent":
        """Attach the setting env the agent plays in (when it was built without one)."""
        self.env = env
        return self

    def reset_episode(self, info: Mapping[str, Any]) -> None:
        """Start a meta-episode: forget the last decisions; the first `act` decides."""
        if self.env is None:
            raise RuntimeError("OracleAgent has no env: build it with env=... or call bind(env) first")
        self.decision = None
        self.decisions = []
        self._primitive = None
        self._gripper = 1.0
        self.decider.reset_episode(self.env, info)

    @property
    def new_decision(self) -> bool:
        """True right after `act` took a new decision (the step that carries the oracle's text)."""
        return self._new_decision

    def act(self, obs: Mapping[str, Any], info: Mapping[str, Any]) -> np.ndarray:
        """A (7,) relative action: decide at decision points, then follow the task's primitive."""
        self._new_decision = False
        if self.decision is None or info.get("decision_point", False):
            self.decision = self.decider.decide(self.env, info)
            self.decisions.append(self.decision)
            self._primitive = self.primitive_factory(self.decision.task)
            self._primitive.reset(obs)
            self._new_decision = True
            log.debug("trial %s: %s (%s)", info.get("trial"), self.decision.task, self.decision.source)
        if self._primitive.done:
            action = np.zeros(7, np.float32)
            action[6] = self._gripper
            return action
        action = np.asarray(self._primitive.act(obs), np.float32).reshape(7)
        self._gripper = 1.0 if action[6] >= 0 else -1.0
        return action
