"""Policies that learn to explore: scripted data → tiny policy trained on CPU → the thesis protocol.

Each row is a `metamanip-pipeline` job of a recipe in `experiments/` (collect → train → eval, the same
protocol as `metamanip-eval`), so `metamanip-pipeline experiment=<recipe>` reproduces it:

- explore_3 / state     `meta_learn_state_3`: Explore-3, 3 trials, robot_obs + scene_obs beside the feedback text
- explore_3 / ablated   the same recipe and the same dataset, trained and evaluated with the episode's first
                        feedback in every trial (`policy.text_input=first_trial`): it cannot know what it tried
- explore_3 / vision    `meta_learn_vision_3`: static + gripper cameras, no state
- explore_3 / oracle    the scripted oracle through the same protocol (the pipeline's baseline stage)
- explore_3 / random_object  computed: one listed object at random in every trial (settings.optimal)
- explore_5_heldout / state, oracle  `meta_learn_state_5`: trained on the 7 train combinations of
                        Explore-5, evaluated on its 3 held-out ones

Goals (2-core CPU): state ≥ 0.8 × oracle average reward, trial-2 success ≥ trial-1 + 0.25, trials 2–3
success ≥ ablated + 0.3, ≤ 30 training minutes; Explore-5 held-out state ≥ 0.6 × oracle; vision ≥ 0.5 ×
oracle within 60 training minutes. Last line: JSON {"explore_3": {...}, "explore_5_heldout": {...}}.

    python benchmarks/meta_learn.py [--rows state ablated vision e5] [--out DIR] [--threads 2] [-- overrides]
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

ROWS = ("state", "ablated", "vision", "e5")


def minutes(stage_dir: Path) -> float:
    st = json.loads((stage_dir / "status.json").read_text())
    return round((st["ended"] - st["started"]) / 60, 2)


def figures(summary_path: Path, train_dir: Path | None) -> dict[str, Any]:
    s = json.loads(summary_path.read_text())
    return {"average_reward": round(s["average_reward"], 3),
            "success_by_trial": [round(v, 3) for v in s["success_by_trial"]],
            "found": round(s["ratio_reward_found"], 3),
            "train_minutes": minutes(train_dir) if train_dir is not None else 0.0,
            "episodes": s["episodes"]}


def pipeline_job(recipe: str, job: Path, overrides: list[str], dataset: Path | None = None) -> None:
    """One pipeline job; with `dataset`, the collect stage is skipped and that dataset is trained on."""
    from metamanip.cli import pipeline

    extra = []
    if dataset is not None:
        target = pipeline.dataset_dir(job)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.symlink(dataset.resolve(), target)
        extra.append("pipeline.skip=[collect]")
    cfg = pipeline.compose("pipeline", [f"experiment={recipe}", *overrides, *extra], job)
    pipeline.run(cfg)


def curve_to_text(r: dict[str, Any]) -> str:
    return " ".join(f"{v:.2f}" for v in r["success_by_trial"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", nargs="*", default=list(ROWS), choices=ROWS, help="which trained rows to run")
    ap.add_argument("--out", default=None, help="keep the job dirs here (default: a temporary dir)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for training")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from metamanip.settings.optimal import balanced_positions, optimal_explorer

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        e3: dict[str, Any] = {}
        e5: dict[str, Any] = {}
        state_job = root / "explore_3_state"
        if "state" in args.rows or "ablated" in args.rows:
            pipeline_job("meta_learn_state_3", state_job, ["pipeline.baseline=true", *args.overrides])
            e3["state"] = figures(state_job / "eval" / "summary.json", state_job / "train")
            e3["oracle"] = figures(state_job / "baseline" / "summary.json", None)
        if "ablated" in args.rows:
            job = root / "explore_3_ablated"
            pipeline_job("meta_learn_ablated_3", job, list(args.overrides),
                         dataset=state_job / "collect" / "dataset")
            e3["ablated"] = figures(job / "eval" / "summary.json", job / "train")
        if "vision" in args.rows:
            job = root / "explore_3_vision"
            pipeline_job("meta_learn_vision_3", job, list(args.overrides))
            e3["vision"] = figures(job / "eval" / "summary.json", job / "train")
        if e3:
            num_trials = len(next(iter(e3.values()))["success_by_trial"])
            rnd = optimal_explorer("explore", 3, num_trials, balanced_positions(3, num_trials), strategy="random")
            e3["random_object"] = {"average_reward": round(rnd["average_reward"], 3),
                                   "success_by_trial": [round(v, 3) for v in rnd["success_by_trial"]],
                                   "found": round(rnd["ratio_reward_found"], 3), "train_minutes": 0.0}
        if "e5" in args.rows:
            job = root / "explore_5_heldout"
            pipeline_job("meta_learn_state_5", job, ["pipeline.baseline=true", *args.overrides])
            e5["state"] = figures(job / "eval" / "summary.json", job / "train")
            e5["oracle"] = figures(job / "baseline" / "summary.json", None)

    print(f"{'setting':<18} {'agent':<14} {'avg_reward':>10} {'found':>6} {'train_min':>9}  success by trial")
    for name, rows in (("explore_3", e3), ("explore_5_heldout", e5)):
        for agent, r in rows.items():
            print(f"{name:<18} {agent:<14} {r['average_reward']:>10.2f} {r['found']:>6.2f} "
                  f"{r['train_minutes']:>9.2f}  {curve_to_text(r)}")
    goals = {}
    if "state" in e3 and "oracle" in e3:
        s, o = e3["state"], e3["oracle"]
        goals["state_vs_oracle"] = round(s["average_reward"] / max(o["average_reward"], 1e-9), 3)
        goals["state_trial2_minus_trial1"] = round(s["success_by_trial"][1] - s["success_by_trial"][0], 3)
        if "ablated" in e3:
            a = e3["ablated"]
            later = lambda r: sum(r["success_by_trial"][1:]) / max(len(r["success_by_trial"]) - 1, 1)  # noqa: E731
            goals["state_minus_ablated_trials_2_on"] = round(later(s) - later(a), 3)
        if "vision" in e3:
            goals["vision_vs_oracle"] = round(e3["vision"]["average_reward"] / max(o["average_reward"], 1e-9), 3)
    if "state" in e5:
        goals["e5_state_vs_oracle"] = round(e5["state"]["average_reward"] / max(e5["oracle"]["average_reward"], 1e-9), 3)
    print("goals:", json.dumps(goals), f"(total {(time.time() - t0) / 60:.1f} min)")
    out = {"explore_3": e3, "explore_5_heldout": e5}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
