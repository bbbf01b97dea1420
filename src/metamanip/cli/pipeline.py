"""`metamanip-pipeline`: the main job, collect → train → eval → results table, in one job dir.

    metamanip-pipeline experiment=demo           # what `make demo` runs: a state policy that learns to explore
    metamanip-pipeline experiment=smoke          # everything tiny, a minute on a CPU

One composed config (the node names of collect.yaml, train.yaml and eval.yaml) feeds the three stages'
own `run(cfg)`; each stage writes into its subdir (collect/, train/, eval/) and is resumable on its own,
so running the pipeline again in the same dir (hydra.run.dir=...) finishes what an interrupted run left.
The job's metrics.json holds the eval metrics plus the training figures (prefixed `train_`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, objective, write_metrics

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"
STAGES = ("collect", "train", "eval")


def compose(config_name: str, overrides: Sequence[str] = (), output_dir: str | os.PathLike | None = None) -> DictConfig:
    """A primary config composed outside a Hydra app (benchmarks, tests), with `paths.output_dir` set.

    Hydra-only interpolations (`hydra:runtime...`) are replaced: the root is METAMANIP_ROOT or the repository.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    root = os.environ.get("METAMANIP_ROOT", str(CONFIG_DIR.parent))
    extra = [f"paths.root_dir={root}"]
    if output_dir is not None:
        extra.append(f"paths.output_dir={Path(output_dir).resolve()}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=[*overrides, *extra])


#: The node each stage reads from its own primary config (conf/<stage>.yaml).
STAGE_NODES = {"collect": "collect", "train": "data", "eval": "eval"}


def primary_node(stage: str) -> DictConfig:
    """The `STAGE_NODES[stage]` node as written in conf/<stage>.yaml (its defaults)."""
    raw = OmegaConf.load(CONFIG_DIR / f"{stage}.yaml")
    return raw.get(STAGE_NODES[stage]) or OmegaConf.create({})


def stage_config(cfg: DictConfig, stage: str, out: Path) -> DictConfig:
    """The config one stage's `run` gets: the pipeline's, with its own output dir and task name, and the
    stage nodes completed from the primary configs (keys added there need no copy in pipeline.yaml)."""
    node = cfg.copy()
    with open_dict(node):
        for s, name in STAGE_NODES.items():
            node[name] = OmegaConf.merge(primary_node(s), node.get(name) or {})
        node.task_name = stage
        node.paths.output_dir = str(out / stage)
        node.collect.dir = str(out / "collect" / "dataset")  # the whole pipeline lives in its job dir
        if stage == "train":
            node.data.dir = str(dataset_dir(out))
        if stage == "eval":
            node.ckpt = str(out / "train" / "checkpoints" / "last.pt")
            node.eval.agent = "policy"
        if stage == "baseline":  # the oracle through the same protocol, episodes and seeds as the policy
            node.task_name = "eval"
            node.ckpt = None
            node.eval.agent = "oracle"
            node.eval.videos = 0
    return node


def dataset_dir(out: Path) -> Path:
    """Where the collect stage leaves its shards."""
    return out / "collect" / "dataset"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Collect, train, evaluate; returns the eval metrics plus `train_*` figures (also in metrics.json)."""
    from metamanip.cli import collect as collect_cli
    from metamanip.cli import eval as eval_cli
    from metamanip.cli import train as train_cli

    with job(cfg) as out:
        for stage in cfg.pipeline.get("skip", []) or []:
            if stage not in STAGES:
                raise ValueError(f"pipeline.skip lists {stage!r}; stages are {list(STAGES)}")
        skip = set(cfg.pipeline.get("skip", []) or [])
        if "collect" not in skip:
            log.info("pipeline: collect → %s", out / "collect")
            collect_cli.run(stage_config(cfg, "collect", out))
        train_metrics: dict[str, Any] = {}
        if "train" not in skip:
            log.info("pipeline: train → %s", out / "train")
            train_metrics = train_cli.run(stage_config(cfg, "train", out))
        log.info("pipeline: eval → %s", out / "eval")
        metrics = dict(eval_cli.run(stage_config(cfg, "eval", out)))
        if cfg.pipeline.get("baseline"):
            log.info("pipeline: oracle baseline → %s", out / "baseline")
            for k, v in eval_cli.run(stage_config(cfg, "baseline", out)).items():
                if isinstance(v, (int, float)):
                    metrics[f"baseline_{k}"] = v
        for k, v in (train_metrics or {}).items():
            if isinstance(v, (int, float)):
                metrics[k if k.startswith("train_") else f"train_{k}"] = v
        write_metrics(out, metrics)
    return metrics


def compare_by_trial(summaries: dict[str, dict[str, Any]]) -> str:
    """Success by trial of several agents side by side (one row per agent, one column per trial)."""
    n = max(len(s["success_by_trial"]) for s in summaries.values())
    width = max(len(k) for k in summaries)
    head = f"{'success by trial':<{width + 2}}" + "".join(f"{'trial ' + str(t + 1):>9}" for t in range(n)) \
        + f"{'avg_reward':>12}"
    rows = [f"{name:<{width + 2}}" + "".join(f"{v:>9.2f}" for v in s["success_by_trial"])
            + f"{s['average_reward']:>12.2f}" for name, s in summaries.items()]
    return "\n".join([head, *rows])


@entry_point("pipeline")
def main(cfg: DictConfig) -> float | None:
    from metamanip.cli.eval import format_table

    metrics = run(cfg)
    summary = json.loads((Path(cfg.paths.output_dir) / "eval" / "summary.json").read_text())
    print(f"\nmetamanip pipeline: {summary['config'].get('setting')} ({summary['config'].get('split')} split, "
          f"{summary['episodes']} episodes, {summary['num_trials']} trials each)")
    if metrics.get("train_steps") is not None:
        loss = metrics.get("train_loss")
        print(f"policy: {int(metrics['train_steps'])} training steps"
              + (f", final loss {loss:.4f}" if loss is not None else ""))
    print(format_table(summary))
    baseline = Path(cfg.paths.output_dir) / "baseline" / "summary.json"
    if cfg.pipeline.get("baseline") and baseline.is_file():
        oracle = json.loads(baseline.read_text())
        print("\nbaseline: the oracle through the same protocol (same episodes)")
        print(format_table(oracle))
        print("\n" + compare_by_trial({"policy": summary, "oracle": oracle}))
    print(f"results in {cfg.paths.output_dir}")
    return objective(cfg, metrics)


if __name__ == "__main__":
    main()
