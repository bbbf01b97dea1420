"""`metamanip-render`: render the images of a states-only dataset (collected with collect.render=later).

    metamanip-render dataset=data/explore_5 render.workers=8

The simulator (cameras included) is the one the dataset was collected with, from its collection.json;
`render.sim` overrides it. Interrupted renders resume; the pixels equal those of live rendering.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from metamanip.cli.entry import entry_point
from metamanip.cli.jobstate import job, write_metrics

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "conf"


def run(cfg: DictConfig) -> dict[str, Any]:
    """Render every states-only episode of `cfg.dataset`; returns counts (also in metrics.json)."""
    from metamanip.data.card import write_card
    from metamanip.data.render import render_dataset, sim_config_of
    from metamanip.data.shards import WriteOptions

    if not cfg.get("dataset"):
        raise ValueError("give the dataset directory to render: metamanip-render dataset=<dir>")
    root = Path(cfg.dataset)
    with job(cfg) as out:
        r = cfg.render
        sim = OmegaConf.to_container(r.sim, resolve=True) if r.get("sim") else sim_config_of(root)
        options = WriteOptions(image_codec=str(r.image_codec), image_chunk=int(r.image_chunk),
                               lzma_preset=int(r.lzma_preset), compression_level=int(r.compression_level))
        counts = render_dataset(root, sim, workers=int(r.workers), options=options,
                                skip_corrupt=bool(r.skip_corrupt), progress=bool(r.progress))
        card = write_card(root)
        metrics = {**counts, "bytes": card["bytes"], "episodes_with_images": card["episodes_with_images"]}
        write_metrics(out, metrics)
    return metrics


@entry_point("render")
def main(cfg: DictConfig) -> None:
    m = run(cfg)
    print(f"rendered {m['episodes']} episode(s), {m['frames']} frames in {m['files']} file(s) of {cfg.dataset}")


if __name__ == "__main__":
    main()
