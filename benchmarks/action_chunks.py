"""Action chunks on the learnable setting: one action per step (k = 1) against chunks of k actions.

Every row is a `metamanip-pipeline` job of `experiments/meta_learn_state_3.yaml` (Explore-3, obs=state,
decoder=fc hidden 256, 4000 steps) on one shared dataset, with the same training budget:

- k1          decoder.fwd_pred_next_n=1 (today's policy)
- k<K>_open_loop  decoder.fwd_pred_next_n=K, the model run once every K steps, its chunk played in order
- k<K>_ensemble   the same checkpoint, eval.chunk_execution=ensemble (ACT temporal ensembling, m = 0.01)
- k<K>_first      the same checkpoint, eval.chunk_execution=first (the newest chunk's first action)

The chunked checkpoint is trained once; its other execution modes are eval-only pipeline jobs (collect and
train skipped, the checkpoint linked in). Last line: JSON {row: {"average_reward", "success_by_trial",
"found", "train_minutes", "eval_minutes", "episodes"}, "oracle": {...}}.

    python benchmarks/action_chunks.py [--k 4] [--out DIR] [--threads 2] [-- overrides]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPE = "meta_learn_state_3"


def minutes(stage_dir: Path) -> float:
    st = json.loads((stage_dir / "status.json").read_text())
    return round((st["ended"] - st["started"]) / 60, 2)


def figures(job: Path, stage: str = "eval", trained: Path | None = None) -> dict[str, Any]:
    s = json.loads((job / stage / "summary.json").read_text())
    return {"average_reward": round(s["average_reward"], 3),
            "success_by_trial": [round(v, 3) for v in s["success_by_trial"]],
            "found": round(s["ratio_reward_found"], 3),
            "train_minutes": minutes(trained / "train") if trained is not None else 0.0,
            "eval_minutes": minutes(job / stage),
            "episodes": s["episodes"]}


def link(target: Path, source: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        os.symlink(source.resolve(), target)


def pipeline_job(job: Path, overrides: list[str], dataset: Path | None = None,
                 train_dir: Path | None = None) -> None:
    """One pipeline job; with `dataset` the collect stage is skipped, with `train_dir` training too (its
    checkpoint is evaluated)."""
    from metamanip.cli import pipeline

    skip = []
    if dataset is not None:
        link(pipeline.dataset_dir(job), dataset)
        skip.append("collect")
    if train_dir is not None:
        link(job / "train", train_dir)
        skip.append("train")
    extra = [f"pipeline.skip=[{','.join(skip)}]"] if skip else []
    cfg = pipeline.compose("pipeline", [f"experiment={RECIPE}", *overrides, *extra], job)
    pipeline.run(cfg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=4, help="chunk length of the chunked rows")
    ap.add_argument("--out", default=None, help="keep the job dirs here (default: a temporary dir)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for training")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        base = root / "k1"
        pipeline_job(base, ["pipeline.baseline=true", "decoder.fwd_pred_next_n=1", *args.overrides])
        rows["k1"] = figures(base, trained=base)
        rows["oracle"] = figures(base, "baseline")
        dataset = base / "collect" / "dataset"
        chunked = root / f"k{args.k}_open_loop"
        pipeline_job(chunked, [f"decoder.fwd_pred_next_n={args.k}", "decoder.execution=open_loop",
                               *args.overrides], dataset=dataset)
        rows[chunked.name] = figures(chunked, trained=chunked)
        for mode in ("ensemble", "first"):
            job = root / f"k{args.k}_{mode}"
            pipeline_job(job, [f"decoder.fwd_pred_next_n={args.k}", f"eval.chunk_execution={mode}",
                               *args.overrides], dataset=dataset, train_dir=chunked / "train")
            rows[job.name] = figures(job, trained=chunked)

    print(f"{'row':<16} {'avg_reward':>10} {'found':>6} {'train_min':>9} {'eval_min':>8}  success by trial")
    for name, r in rows.items():
        curve = " ".join(f"{v:.2f}" for v in r["success_by_trial"])
        print(f"{name:<16} {r['average_reward']:>10.2f} {r['found']:>6.2f} {r['train_minutes']:>9.2f} "
              f"{r['eval_minutes']:>8.2f}  {curve}")
    print(f"(total {(time.time() - t0) / 60:.1f} min)")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
