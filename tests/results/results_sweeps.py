"""Synthetic sweep directories laid out as Hydra multiruns and metamanip jobs leave them on disk, and a
headless runner for notebooks/results.ipynb."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import nbformat
import pandas as pd
import pytest
import yaml

from metamanip.evaluation.metrics import TrialRow, metrics_from_summary, summarize

# average_reward per (decoder, seed) of the synthetic eval sweep; the tests recompute CIs from these.
EVAL_REWARDS = {("lstm", 1): 2.0, ("lstm", 2): 2.5, ("lstm", 3): 3.0, ("fc", 1): 1.0, ("fc", 2): 1.2, ("fc", 3): 1.4}
NUM_TRIALS = 4
EPISODES = 5
NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "results.ipynb"


def write_job(job_dir: Path, *, num: int, overrides: list[str], choices: dict[str, str], config: dict[str, Any],
              status: str | None = "done", metrics: dict[str, Any] | None = None,
              summary: dict[str, Any] | None = None, trials: pd.DataFrame | None = None,
              train_log: pd.DataFrame | None = None, job_id: str | None = None, job_name: str = "eval",
              error: str | None = None, resolved: bool = True) -> Path:
    """One job directory as Hydra + metamanip.cli.jobstate write it."""
    (job_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    hydra = {"hydra": {"job": {"name": job_name, "num": num, "id": job_id or f"job_id_for_{num}",
                               "override_dirname": ",".join(overrides)},
                       "runtime": {"choices": {**choices, "hydra/launcher": "submitit_local",
                                               "hydra/sweeper": "basic"}},
                       "overrides": {"task": overrides}}}
    (job_dir / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    unresolved = {**config, "paths": {"output_dir": "${hydra:runtime.output_dir}"}}
    (job_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(unresolved))
    if resolved:
        (job_dir / "resolved_config.yaml").write_text(
            yaml.safe_dump({**config, "paths": {"output_dir": str(job_dir)}}))
    (job_dir / f"{job_name}.log").write_text(f"[{job_name}] log of job {num}\n")
    if status is not None:
        st = {"status": status, "started": 0.0}
        if error:
            st["error"] = error
        (job_dir / "status.json").write_text(json.dumps(st))
    if metrics is not None:
        (job_dir / "metrics.json").write_text(json.dumps(metrics))
    if summary is not None:
        (job_dir / "summary.json").write_text(json.dumps(summary))
    if trials is not None:
        trials.to_csv(job_dir / "trials.csv", index=False)
    if train_log is not None:
        train_log.to_csv(job_dir / "train_log.csv", index=False)
    return job_dir


def eval_outputs(average_reward: float, num_objs: int = 3, seed: int = 0,
                 config: dict[str, Any] | None = None) -> tuple[dict, dict, pd.DataFrame]:
    """metrics.json, summary.json and trials.csv as metamanip.evaluation writes them, for EPISODES
    episodes of NUM_TRIALS trials whose rewarded trials add up to average_reward * EPISODES (rounded).
    """
    total = int(round(average_reward * EPISODES))
    # fill rewards from the last trial backwards, episode by episode (a learner finds it later first)
    rewarded = {(ep, t) for t, ep in [(t, ep) for t in reversed(range(1, NUM_TRIALS + 1))
                                      for ep in range(EPISODES)][:total]}
    rows = [TrialRow(setting="explore", num_objs=num_objs, group="drawer/led/slider", episode=ep, trial=t,
                     meta_position=str(ep % 3), meta_task="open_drawer", reward=float((ep, t) in rewarded),
                     steps=50 + seed, completed_tasks="open_drawer")
            for ep in range(EPISODES) for t in range(1, NUM_TRIALS + 1)]
    # what metamanip.cli.eval.run_choices records
    choices = {"setting": "explore", "num_objs": num_objs, "split": "heldout", "feedback": "train",
               "agent": "policy", "num_trials": NUM_TRIALS, "trial_steps": 300, "num_resets": EPISODES,
               "seed": seed, "trial_limits": None, **(config or {})}
    summary = summarize(rows, NUM_TRIALS, config=choices)
    summary["complete"] = True
    trials = pd.DataFrame([r.as_dict() for r in rows], columns=TrialRow.columns())
    return metrics_from_summary(summary), summary, trials


def _config(decoder: str, seed: int, num_objs: int = 3) -> dict[str, Any]:
    return {"task_name": "eval", "seed": seed,
            "env": {"_target_": "metamanip.settings.explore.ExploreEnv", "num_objs": num_objs,
                    "num_trials": NUM_TRIALS},
            "decoder": {"_target_": f"metamanip.models.decoders.{decoder}.Decoder", "hidden": 8},
            "backbone": {"name": "tiny"}, "eval": {"split": "heldout", "feedback": "train"},
            "trainer": {"lr": 1e-4}}


def write_multirun(sweep: Path, task: list[str]) -> None:
    cfg = {"hydra": {"sweep": {"dir": str(sweep), "subdir": "${hydra.job.num}"},
                     "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                 "max_batch_size": None, "params": None},
                     "overrides": {"task": task, "hydra": ["hydra/launcher=submitit_local"]},
                     "job": {"name": "eval"}},
           "task_name": "eval"}
    sweep.mkdir(parents=True, exist_ok=True)
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(cfg))


@pytest.fixture
def eval_sweep(tmp_path: Path) -> Path:
    """decoder=lstm,fc × seed=1,2,3 plus trainer.lr=1e-4: six finished eval jobs, all with results."""
    sweep = tmp_path / "multiruns" / "2026-11-21_10-00-00"
    write_multirun(sweep, ["decoder=lstm,fc", "seed=1,2,3"])
    num = 0
    for decoder in ("lstm", "fc"):
        for seed in (1, 2, 3):
            metrics, summary, trials = eval_outputs(EVAL_REWARDS[(decoder, seed)], seed=seed,
                                                    config={"decoder": decoder, "backbone": "tiny"})
            write_job(sweep / str(num), num=num, overrides=[f"decoder={decoder}", f"seed={seed}"],
                      choices={"env": "explore", "decoder": decoder, "backbone": "tiny",
                               "trial_limits": "thesis_3_5"},
                      config=_config(decoder, seed), metrics=metrics, summary=summary, trials=trials,
                      job_id=f"4242_{num}")
            num += 1
    return sweep


@pytest.fixture
def half_sweep(tmp_path: Path) -> Path:
    """decoder=lstm,fc × seed=1,2: two jobs done, one failed (submitit log), one never started."""
    sweep = tmp_path / "half"
    write_multirun(sweep, ["decoder=lstm,fc", "seed=1,2"])
    for num, (decoder, seed) in enumerate([("lstm", 1), ("lstm", 2), ("fc", 1)]):
        kwargs: dict[str, Any] = {}
        if num < 2:
            metrics, summary, trials = eval_outputs(EVAL_REWARDS[(decoder, seed)], seed=seed)
            kwargs = {"metrics": metrics, "summary": summary, "trials": trials}
        else:
            kwargs = {"status": "failed", "error": "RuntimeError: CUDA out of memory"}
        write_job(sweep / str(num), num=num, overrides=[f"decoder={decoder}", f"seed={seed}"],
                  choices={"env": "explore", "decoder": decoder, "backbone": "tiny"},
                  config=_config(decoder, seed), job_id=f"777_{num}", **kwargs)
        logs = sweep / ".submitit" / f"777_{num}"
        logs.mkdir(parents=True)
        (logs / f"777_{num}_0_log.out").write_text("started\n")
        (logs / f"777_{num}_0_log.err").write_text("" if num < 2 else "Traceback ...\nRuntimeError: CUDA out of memory\n")
    return sweep


@pytest.fixture
def train_run(tmp_path: Path) -> Path:
    """A single (non-multirun) train job with a training log and train metrics."""
    run = tmp_path / "train" / "runs" / "2026-11-21_09-00-00"
    log = pd.DataFrame({"step": [0, 10, 20, 30], "loss": [1.0, 0.6, 0.4, 0.3], "lr": [1e-4] * 4,
                        "val_loss": [None, 0.7, None, 0.45], "samples_per_s": [50.0] * 4})
    write_job(run, num=0, overrides=["decoder=lstm"], choices={"env": "explore", "decoder": "lstm"},
              config={**_config("lstm", 1), "task_name": "train"}, job_name="train",
              metrics={"train_loss": 0.3, "val_loss": 0.45, "steps": 30, "samples_per_s": 50.0}, train_log=log)
    return run


def execute_notebook(sweeps: list[Path], out_dir: Path, group_by: str = "", metrics: str = "",
                     timeout: int = 300) -> nbformat.NotebookNode:
    """Run notebooks/results.ipynb in a fresh kernel with the sweep given through the environment."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"METAMANIP_SWEEP": os.pathsep.join(map(str, sweeps)), "METAMANIP_RESULTS_OUT": str(out_dir),
           "METAMANIP_GROUP_BY": group_by, "METAMANIP_METRICS": metrics, "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb


def notebook_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            parts.extend(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
    return "\n".join(parts)
