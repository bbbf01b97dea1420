"""`hydra/sweeper/sampler=tpe_shared`: optuna's TPE sampler configured for studies that several sweeper
processes grow at once.

The plugin's own `tpe` config passes arguments optuna 4 deprecated (`consider_prior`, ...), which warn on
every start; this one passes only current ones, and turns on `constant_liar` so that a process does not
propose the point another process is still evaluating.
"""
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import SamplerConfig


@dataclass
class SharedTPESamplerConfig(SamplerConfig):
    """optuna.samplers.TPESampler with the arguments of optuna 4 (https://optuna.readthedocs.io)."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: bool = False
    constant_liar: bool = True


ConfigStore.instance().store(group="hydra/sweeper/sampler", name="tpe_shared", node=SharedTPESamplerConfig,
                             provider="metamanip")
