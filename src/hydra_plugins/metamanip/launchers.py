"""The local submitit launcher of the `hydra/launcher=local` preset.

It is the plugin's own `LocalLauncher` with two additions that a workstation needs:
- `max_parallel` caps how many jobs run at once (submitit's local executor otherwise starts a whole
  sweep at the same time, which a laptop or a 2-core CI machine cannot take); the next job starts as
  soon as one ends, not batch after batch;
- a SLURM-only key (`partition`, `account`, `gres`, `setup`, ...) set while this launcher is selected
  is refused with a message naming the launcher presets it belongs to, instead of being dropped or
  failing deep inside submitit.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _SubmititLocalLauncher

from metamanip.errors import UserError

log = logging.getLogger(__name__)

#: Keys the SLURM launcher understands and the local one does not (`max_num_timeout` works for both:
#: submitit's local executor requeues timed-out jobs too).
SLURM_ONLY_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(SlurmQueueConf)
    if f.name not in {g.name for g in dataclasses.fields(BaseQueueConf)}
    and f.name not in ("_target_", "max_num_timeout"))

SLURM_PRESETS = "hydra/launcher=slurm_gpu (training, evaluation) or hydra/launcher=slurm_cpu (collection)"


class SlurmKeyUnderLocalLauncher(UserError, ValueError):
    """A SLURM setting was given while the local launcher is selected."""


@dataclass
class _LocalQueueConfWithCap(LocalQueueConf):
    _target_: str = "hydra_plugins.metamanip.launchers.LocalLauncher"
    # Run at most this many jobs at once (None: the whole batch at once, as submitit_local does).
    max_parallel: Optional[int] = None
    # Requeues of a job that hit timeout_min (submitit's local default).
    max_num_timeout: int = 3


#: `submitit_local` plus `max_parallel`; the SLURM-only keys are present (all None) only so that setting
#: one composes and is then refused by LocalLauncher with a message naming the SLURM presets, instead of
#: Hydra's generic "Key 'partition' not in 'LocalQueueConf'".
CheckedLocalQueueConf = dataclasses.make_dataclass(
    "CheckedLocalQueueConf",
    [(k, Optional[Any], field(default=None)) for k in SLURM_ONLY_KEYS],
    bases=(_LocalQueueConfWithCap,),
)

ConfigStore.instance().store(group="hydra/launcher", name="submitit_local_checked",
                             node=CheckedLocalQueueConf, provider="metamanip")


def slurm_keys_problem(params: dict[str, Any]) -> Optional[str]:
    """The message for SLURM-only keys set under the local launcher (None when there are none); also the
    compose-time check of `metamanip.cli.checks`, so a sweep is refused before it starts."""
    given = {k: params[k] for k in SLURM_ONLY_KEYS if params.get(k) is not None}
    if not given:
        return None
    keys = ", ".join(f"hydra.launcher.{k}={v!r}" for k, v in sorted(given.items()))
    return (f"{keys}: SLURM-only setting(s), but the selected launcher is the local one "
            f"(hydra/launcher=local runs jobs as processes on this machine); they belong to {SLURM_PRESETS}: "
            f"choose one of those, or drop the key(s).")


class LocalLauncher(_SubmititLocalLauncher):
    """submitit's local launcher with a concurrency cap and a clear error for SLURM-only keys."""

    def __init__(self, max_parallel: Optional[int] = None, **params: Any) -> None:
        problem = slurm_keys_problem(params)
        if problem:
            raise SlurmKeyUnderLocalLauncher(problem)
        for k in SLURM_ONLY_KEYS:
            params.pop(k, None)
        if max_parallel is not None and int(max_parallel) < 1:
            raise ValueError(f"hydra.launcher.max_parallel={max_parallel}: must be a positive number of jobs "
                             "(or null for the whole batch at once)")
        self.max_parallel = None if max_parallel is None else int(max_parallel)
        super().__init__(**params)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if self.max_parallel is None or self.max_parallel >= len(job_overrides):
            return super().launch(job_overrides, initial_job_idx)
        return self._launch_rolling(job_overrides, initial_job_idx, self.max_parallel)

    def _launch_rolling(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int,
                        cap: int) -> Sequence[JobReturn]:
        """Submit the jobs one by one, starting the next as soon as one of the `cap` running ends."""
        import submitit

        assert self.config is not None
        params = dict(self.params)
        folder = params.pop("submitit_folder")
        max_num_timeout = params.pop("max_num_timeout", 3)
        executor = submitit.AutoExecutor(cluster="local", folder=folder, local_max_num_timeout=max_num_timeout)
        executor.update_parameters(**params)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Submitit 'local' sweep output dir : %s (%d jobs, at most %d at a time)",
                 self.config.hydra.sweep.dir, len(job_overrides), cap)
        jobs: list[Any] = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            while sum(not j.done() for j in jobs) >= cap:
                time.sleep(0.1)
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            jobs.append(executor.submit(self, list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                                        Singleton.get_state()))
        return [j.results()[0] for j in jobs]
