"""Environment worker processes for parallel evaluation.

Each worker owns `envs_per_worker` setting envs (built in the worker from a picklable factory) and
answers commands over a pipe: `reset`/`step` (its first env) and `reset_many`/`step_many` (a list of
(env index, ...) in, a list of answers out) for lockstep rollouts whose agent lives in the parent (a
policy batched across workers and envs), and `episode` for whole episodes run by a per-env agent inside
the worker (oracles). A failure in a worker comes back to the parent as an exception carrying the
worker's traceback.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import sys
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class WorkerError(RuntimeError):
    """An exception raised inside an env worker."""


#: The setting info keys an agent in the parent process needs (the simulator's state snapshot stays home).
INFO_KEYS = ("feedback", "trial", "trial_step", "trial_done", "decision_point", "completed_tasks",
             "explored_objects", "episode_objects", "meta_task", "meta_position", "trial_results", "episode_done")


def slim_info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in INFO_KEYS if k in info}


def _worker_main(conn: Connection, env_factory: Callable[[], Any],
                 agent_factory: Callable[[Any], Any] | None, threads: int, num_envs: int = 1) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    from metamanip.evaluation.rollout import run_episode

    env = agent = None
    envs: list[Any] = []
    try:
        envs = [env_factory() for _ in range(num_envs)]
        env = envs[0]
        agent = agent_factory(env) if agent_factory is not None else None
        if "torch" in sys.modules:  # an agent with a network: keep to this worker's share of the cores
            sys.modules["torch"].set_num_threads(threads)
        conn.send(("ready", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            cmd, payload = conn.recv()
        except EOFError:
            break
        try:
            if cmd == "close":
                break
            if cmd == "reset":
                spec = payload
                obs, info = env.reset(seed=spec.seed, options=spec.reset_options())
                out = (obs, slim_info(info))
            elif cmd == "step":
                obs, reward, terminated, truncated, info = env.step(payload)
                out = (obs, reward, terminated, truncated, slim_info(info))
            elif cmd == "reset_many":  # [(env index, seed, options)]
                out = []
                for j, seed, options in payload:
                    obs, info = envs[j].reset(seed=seed, options=options)
                    out.append((obs, slim_info(info)))
            elif cmd == "step_many":  # [(env index, action)]
                out = []
                for j, action in payload:
                    obs, reward, terminated, truncated, info = envs[j].step(action)
                    out.append((obs, reward, terminated, truncated, slim_info(info)))
            elif cmd == "episode":
                if agent is None:
                    raise RuntimeError("this pool has no per-env agent: build it with agent_factory")
                spec, kwargs = payload
                out = run_episode(env, agent, spec, **kwargs)
            else:
                raise ValueError(f"unknown worker command {cmd!r}")
            conn.send(("ok", out))
        except BaseException:
            conn.send(("error", traceback.format_exc()))
    for e in envs:
        if hasattr(e, "close"):
            try:
                e.close()
            except Exception:  # pragma: no cover - best effort at shutdown
                pass


#: Imported once by the fork server, so each worker starts as a cheap fork with these already loaded.
PRELOAD = ["metamanip.evaluation.rollout", "hydra.utils", "omegaconf"]


def _context(start_method: str | None) -> mp.context.BaseContext:
    """A fork server by default: workers fork from a clean process (never from a parent holding torch
    threads or a simulator), without paying a fresh interpreter's imports each time as spawn does."""
    method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(PRELOAD)
    return ctx


class EnvWorkerPool:
    """N worker processes, each owning `envs_per_worker` envs; use as a context manager so workers
    always stop."""

    def __init__(self, env_factory: Callable[[], Any], num_workers: int,
                 agent_factory: Callable[[Any], Any] | None = None, threads_per_worker: int = 1,
                 start_method: str | None = None, envs_per_worker: int = 1):
        if num_workers < 1:
            raise ValueError(f"eval.num_workers must be >= 1, got {num_workers}")
        if envs_per_worker < 1:
            raise ValueError(f"envs_per_worker must be >= 1, got {envs_per_worker}")
        self.envs_per_worker = int(envs_per_worker)
        ctx = _context(start_method)
        self.conns: list[Connection] = []
        self.procs: list[mp.process.BaseProcess] = []
        for i in range(num_workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker_main, args=(child, env_factory, agent_factory, threads_per_worker,
                                                         self.envs_per_worker),
                            name=f"metamanip-env-{i}", daemon=True)
            p.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(p)
        try:
            for i in range(num_workers):
                self._recv(i)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return len(self.conns)

    def __enter__(self) -> "EnvWorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, i: int, cmd: str, payload: Any = None) -> None:
        self.conns[i].send((cmd, payload))

    def _recv(self, i: int) -> Any:
        try:
            status, out = self.conns[i].recv()
        except EOFError:
            raise WorkerError(f"env worker {i} died (exit code {self.procs[i].exitcode})") from None
        if status == "error":
            raise WorkerError(f"env worker {i} failed:\n{out}")
        return out

    def recv(self, i: int) -> Any:
        """The answer of worker i to its last command (blocks)."""
        return self._recv(i)

    def ready(self, busy: Sequence[int]) -> list[int]:
        """The busy workers that have an answer waiting (blocks until at least one)."""
        by_conn = {self.conns[i]: i for i in busy}
        return sorted(by_conn[c] for c in wait(list(by_conn)))

    def close(self) -> None:
        for c in self.conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self.conns:
            c.close()
        self.conns, self.procs = [], []


class ConfigFactory:
    """Picklable recipe `instantiate(node)`: how a worker builds its env from the `env` config node."""

    def __init__(self, node: Any):
        from omegaconf import DictConfig, OmegaConf

        self.node = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)

    def __call__(self) -> Any:
        from hydra.utils import instantiate

        return instantiate(self.node, _convert_="all")
