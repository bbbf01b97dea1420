"""The dataset card: what a dataset holds and how it was made, as `card.json` and `card.md`.

Counts per meta task, per trial-limit bucket (unrewarded trials before the reward) and per both, the
oracle's success rate (episodes that passed the thesis filter / attempts), bytes on disk, and the config.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping

from metamanip.atomic import atomic_write_text, write_json
from metamanip.data.shards import dataset_files, list_episodes

PROGRESS_GLOB = "shard-*.progress.json"


def read_progress(root: str | os.PathLike) -> dict[str, Any]:
    """Sum the per-shard progress files: attempts, passed, failure reasons."""
    attempts = passed = 0
    reasons: Counter = Counter()
    for p in sorted(Path(root).glob(PROGRESS_GLOB)):
        d = json.loads(p.read_text())
        attempts += int(d.get("attempts", 0))
        passed += int(d.get("passed", 0))
        reasons.update(d.get("failures", {}))
    return {"attempts": attempts, "passed": passed, "failures": dict(reasons)}


def build_card(root: str | os.PathLike, config: Mapping[str, Any] | None = None,
               skip_corrupt: bool = False) -> dict[str, Any]:
    """Compute the card of the dataset at `root` from its shards and progress files."""
    root = Path(root)
    refs = list_episodes(root, skip_corrupt=skip_corrupt)
    per_task: Counter = Counter()
    per_bucket: Counter = Counter()
    per_cell: Counter = Counter()
    steps = 0
    with_images = 0
    for r in refs:
        task = _task_name(r.meta.get("meta_task"))
        bucket = str(r.meta.get("bucket"))
        per_task[task] += 1
        per_bucket[bucket] += 1
        per_cell[f"{task}|{bucket}"] += 1
        steps += r.num_steps
        with_images += int(r.has_images)
    progress = read_progress(root)
    files = dataset_files(root)
    nbytes = sum(p.stat().st_size for p in files)
    if config is None and (root / "collection.json").exists():
        config = json.loads((root / "collection.json").read_text()).get("config")
    return {
        "episodes": len(refs),
        "steps": steps,
        "episodes_with_images": with_images,
        "per_meta_task": dict(sorted(per_task.items())),
        "per_bucket": dict(sorted(per_bucket.items())),
        "per_meta_task_and_bucket": dict(sorted(per_cell.items())),
        "oracle_attempts": progress["attempts"],
        "oracle_passed": progress["passed"],
        "oracle_success_rate": (progress["passed"] / progress["attempts"]) if progress["attempts"] else None,
        "filter_failures": progress["failures"],
        "bytes": nbytes,
        "bytes_per_step": (nbytes / steps) if steps else None,
        "files": len(files),
        "config": config,
    }


def _task_name(task: Any) -> str:
    if isinstance(task, (list, tuple)):
        return "+".join(map(str, task))
    return str(task)


def card_markdown(card: Mapping[str, Any]) -> str:
    """Human-readable card."""
    rate = card["oracle_success_rate"]
    lines = [
        "# Dataset card", "",
        f"- episodes: {card['episodes']} ({card['episodes_with_images']} with images), "
        f"steps: {card['steps']}",
        f"- oracle success rate (thesis filter): "
        + (f"{rate:.1%} ({card['oracle_passed']}/{card['oracle_attempts']} attempts)" if rate is not None
           else "n/a"),
        f"- bytes on disk: {card['bytes']:,} in {card['files']} file(s)"
        + (f", {card['bytes_per_step']:.0f} per step" if card["bytes_per_step"] else ""),
        "",
    ]
    if card["filter_failures"]:
        lines += ["## Why attempts were discarded", "", "| reason | count |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(card["filter_failures"].items())] + [""]
    buckets = sorted(card["per_bucket"])
    lines += ["## Episodes per meta task and bucket (unrewarded trials before the reward)", "",
              "| meta task | " + " | ".join(buckets) + " | total |",
              "|---" * (len(buckets) + 2) + "|"]
    for task, total in card["per_meta_task"].items():
        cells = [str(card["per_meta_task_and_bucket"].get(f"{task}|{b}", 0)) for b in buckets]
        lines.append(f"| {task} | " + " | ".join(cells) + f" | {total} |")
    lines.append("| total | " + " | ".join(str(card["per_bucket"][b]) for b in buckets)
                 + f" | {card['episodes']} |")
    if card.get("config") is not None:
        lines += ["", "## Config", "", "```json", json.dumps(card["config"], indent=2, sort_keys=True,
                                                             default=str), "```"]
    return "\n".join(lines) + "\n"


def write_card(root: str | os.PathLike, config: Mapping[str, Any] | None = None,
               skip_corrupt: bool = False) -> dict[str, Any]:
    """Build the card and write `card.json` and `card.md` atomically into `root`."""
    card = build_card(root, config, skip_corrupt)
    write_json(Path(root) / "card.json", card)
    atomic_write_text(Path(root) / "card.md", card_markdown(card))
    return card
