"""Graceful stop on SIGTERM / SIGUSR2 (SLURM preemption, time limit, `scancel`, torchrun shutdown).

The handler only records the signal. The training loop notices it at the next optimizer-step boundary
(all ranks agree through the step's all-reduce), rank 0 writes a checkpoint, and only then is the
handler that was installed before ours called. Under submitit that previous handler is submitit's
own: it calls the launcher's ``checkpoint()`` (which resubmits the same job into the same output dir)
and requeues the job, so the requeued job resumes from the checkpoint just written. Replacing
submitit's handler instead of chaining to it would lose the requeue.
"""
from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any, Callable

log = logging.getLogger(__name__)

DEFAULT_SIGNALS = ("SIGTERM", "SIGUSR2", "SIGUSR1")


class Preempted(RuntimeError):
    """The run stopped on a signal after saving its checkpoint; rerun the same command to resume."""

    def __init__(self, signum: int, step: int, checkpoint: str | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        where = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (not rank 0)"
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}, {where}; "
                         "run the same command (same output dir) to resume")


class StopSignals:
    """Install deferred handlers for `names`; `requested` says a stop was asked for."""

    def __init__(self, names: tuple[str, ...] = DEFAULT_SIGNALS) -> None:
        self.signals = [getattr(signal, n) for n in names if hasattr(signal, n)]
        self.previous: dict[int, Any] = {}
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None:
            log.warning("caught %s: saving a checkpoint at the end of this step, then stopping",
                        signal.Signals(signum).name)
        self.signum = signum

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            log.info("not in the main thread: stop signals are not handled by the trainer")
            return self
        for sig in self.signals:
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._record)
        return self

    def uninstall(self) -> None:
        for sig, prev in self.previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        self.previous.clear()

    def forward(self) -> None:
        """Give the recorded signal to the handler that was there before ours (e.g. submitit's
        checkpoint-and-requeue), after our handlers are removed. May not return (sys.exit)."""
        signum = self.signum
        prev: Callable | Any = self.previous.get(signum) if signum is not None else None
        self.uninstall()
        if signum is not None and callable(prev):
            log.info("handing %s to the previous handler %r", signal.Signals(signum).name, prev)
            prev(signum, None)

    def __enter__(self) -> "StopSignals":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()
