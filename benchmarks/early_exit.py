"""DeeR-VLA early exit on the learnable setting: success against LM compute across exit budgets.

One `metamanip-pipeline` job of `experiments/early_exit_state_3.yaml` (collect → train a multi-exit tiny
policy, 8 LM layers with an exit after each, the state entering the LM through the gated cross-attention →
evaluate with thresholds 0 = the full model), then:

1. calibration: exit deltas of held-out demonstrations (a second scripted dataset, other seeds) are stored
   in the checkpoint (`early_exit.calibrate`);
2. a budget sweep: the same evaluation protocol for each `exit_ratio` (thresholds fitted so that
   p_k ∝ exit_ratio^k of the calibration windows leave at exit k), LM compute counted per action from the
   model's shapes;
3. optionally (`--online N`) an optuna study of N trials tuning the thresholds by simulator success under
   the FLOPs budget of `--online-budget` (DeeR's online thresholds).

Goal: `best_flops_ratio_at_95` ≤ 0.4: the smallest LM FLOPs ratio (budget / full) among budgets whose
average reward is ≥ 0.95 × the full model's. Last line: JSON
{"full": {...}, "budgets": [...], "best_flops_ratio_at_95": float, ...}.

    python benchmarks/early_exit.py [--out DIR] [--ratios 0.3 0.5 ...] [--online 0] [-- overrides]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPE = "early_exit_state_3"
RATIOS = (0.2, 0.35, 0.5, 0.7, 0.85, 1.0, 1.3)


def figures(summary: dict[str, Any], full_flops: float | None = None) -> dict[str, Any]:
    out = {"average_reward": round(summary["average_reward"], 3),
           "success_by_trial": [round(v, 3) for v in summary["success_by_trial"]],
           "mean_exit_layer": round(summary.get("mean_exit_layer", float("nan")), 3),
           "lm_layers_per_action": round(summary.get("lm_layers_per_action", float("nan")), 3),
           "lm_flops_per_action": round(summary.get("lm_flops_per_action", float("nan")), 1),
           "episodes": summary["episodes"]}
    if full_flops:
        out["lm_flops_ratio"] = round(summary["lm_flops_per_action"] / full_flops, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="keep the job dirs here (default: a temporary dir); a re-run "
                                                 "into the same dir resumes every stage")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for training")
    ap.add_argument("--ratios", type=float, nargs="*", default=list(RATIOS), help="exit_ratio budgets")
    ap.add_argument("--calib-episodes", type=int, default=36, help="held-out demonstrations for calibration")
    ap.add_argument("--online", type=int, default=0, help="optuna trials of online threshold tuning (0: none)")
    ap.add_argument("--online-budget", type=float, default=0.4, help="LM FLOPs ratio the online study must meet")
    ap.add_argument("overrides", nargs="*", help="extra Hydra overrides for every stage")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    from omegaconf import open_dict
    from torch.utils.data import DataLoader

    from metamanip.cli import collect as collect_cli
    from metamanip.cli import eval as eval_cli
    from metamanip.cli import pipeline
    from metamanip.data.dataset import WindowDataset
    from metamanip.models.checkpoint import load_policy, save_policy
    from metamanip.models.early_exit import calibrate, exits_taken, fit_thresholds

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out).resolve() if args.out else Path(tmp)
        job = root / "job"
        cfg = pipeline.compose("pipeline", [f"experiment={RECIPE}", *args.overrides], job)
        pipeline.run(cfg)  # collect, train, evaluate the full model (thresholds 0)
        train_min = round((json.loads((job / "train" / "status.json").read_text())["ended"]
                           - json.loads((job / "train" / "status.json").read_text())["started"]) / 60, 2)
        full_summary = json.loads((job / "eval" / "summary.json").read_text())
        full = figures(full_summary)
        full_flops = full_summary["lm_flops_per_action"]

        # held-out demonstrations: the same scripted oracle on other seeds
        calib_root = root / "calib"
        ccfg = pipeline.compose("pipeline", [f"experiment={RECIPE}", "seed=1009",
                                             f"collect.episodes={args.calib_episodes}", *args.overrides], calib_root)
        ccfg_stage = pipeline.stage_config(ccfg, "collect", calib_root)
        collect_cli.run(ccfg_stage)  # resumes: a finished collection is kept
        ckpt = job / "train" / "checkpoints" / "last.pt"
        calibrated = root / "calibrated.pt"
        policy = load_policy(str(ckpt))
        data = WindowDataset(pipeline.dataset_dir(calib_root), window_size=policy.window_size,
                             feedback=str(cfg.data.feedback), cameras=policy.cameras)
        gen = torch.Generator().manual_seed(0)
        loader = DataLoader(data, batch_size=128, shuffle=True, generator=gen)
        deltas = calibrate(policy, loader)
        save_policy(policy, calibrated)

        def run_eval(name: str, budget: dict[str, Any]) -> dict[str, Any]:
            node = pipeline.stage_config(cfg, "eval", job)
            with open_dict(node):
                node.paths.output_dir = str(root / "budgets" / name)
                node.ckpt = str(calibrated)
                node.eval.early_exit = budget
            eval_cli.run(node)
            return json.loads((root / "budgets" / name / "summary.json").read_text())

        budgets = []
        for r in args.ratios:
            s = run_eval(f"ratio_{r:g}", {"exit_ratio": float(r)})
            row = {"exit_ratio": r, **figures(s, full_flops)}
            th = fit_thresholds(deltas, r)
            layers = [policy.exit_layers[k] + 1 for k in exits_taken(deltas, th)]
            row["calibration_mean_exit_layer"] = round(sum(layers) / len(layers), 3)
            budgets.append(row)

        online = None
        if args.online > 0:
            from metamanip.models.early_exit import tune_thresholds_online

            def trial(thresholds: list[float], k: int) -> tuple[float, float]:
                s = run_eval(f"online_{k:03d}", {"thresholds": thresholds})
                return s["average_reward"], s["lm_flops_per_action"] / full_flops

            online = tune_thresholds_online(trial, policy.n_exits, args.online, args.online_budget, seed=0)
            online["thresholds"] = [t if t != float("inf") else None for t in online["thresholds"]]  # JSON: null

    full_reward = full["average_reward"]
    ok = [b["lm_flops_ratio"] for b in budgets if b["average_reward"] >= 0.95 * full_reward]
    best = min(ok) if ok else None
    print(f"{'budget':<14} {'avg_reward':>10} {'exit_layer':>10} {'layers/act':>10} {'flops_ratio':>11}  success by trial")
    print(f"{'full':<14} {full_reward:>10.2f} {full['mean_exit_layer']:>10.2f} {full['lm_layers_per_action']:>10.2f} "
          f"{1.0:>11.3f}  {' '.join(f'{v:.2f}' for v in full['success_by_trial'])}")
    for b in budgets:
        print(f"{'ratio ' + format(b['exit_ratio'], 'g'):<14} {b['average_reward']:>10.2f} {b['mean_exit_layer']:>10.2f} "
              f"{b['lm_layers_per_action']:>10.2f} {b['lm_flops_ratio']:>11.3f}  "
              f"{' '.join(f'{v:.2f}' for v in b['success_by_trial'])}")
    if online is not None:
        print("online (optuna):", json.dumps(online))
    print(f"best_flops_ratio_at_95: {best} (goal <= 0.4); training {train_min} min, total "
          f"{(time.time() - t0) / 60:.1f} min")
    out = {"full": {k: full[k] for k in ("average_reward", "lm_layers_per_action", "mean_exit_layer",
                                          "lm_flops_per_action", "success_by_trial")},
           "budgets": [{k: b[k] for k in ("exit_ratio", "average_reward", "lm_layers_per_action", "lm_flops_ratio",
                                          "mean_exit_layer", "calibration_mean_exit_layer")} for b in budgets],
           "best_flops_ratio_at_95": best, "train_minutes": train_min}
    if online is not None:
        out["online"] = online
    print(json.dumps(out))


if __name__ == "__main__":
    main()
