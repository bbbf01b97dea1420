"""Put the repository's top-level `experiments/` folder on Hydra's search path as the `experiment` group.

The recipes live next to `conf/` rather than inside it so they read as the project's experiment list.
A `SearchPathPlugin` appends an `experiments://<dir>` source; `ExperimentsConfigSource` serves that
directory's YAML files as `experiment/<name>`, so `experiment=explore_5` and `'experiment=glob(*)'`
work from any working directory and inside SLURM jobs (which re-compose the config on the node).

The folder is found in this order: `$METAMANIP_EXPERIMENTS`, `$METAMANIP_ROOT/experiments`, the
repository this plugin was installed from (editable install), `./experiments`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
SCHEME = "experiments"


def experiments_dir() -> Path | None:
    """The experiments folder this process should use, or None when there is none."""
    env = os.environ.get("METAMANIP_EXPERIMENTS")
    if env:
        return Path(env).resolve()
    cands = []
    if os.environ.get("METAMANIP_ROOT"):
        cands.append(Path(os.environ["METAMANIP_ROOT"]) / "experiments")
    # src/hydra_plugins/metamanip/experiments.py -> repository root is three levels up from the package.
    cands.append(Path(__file__).resolve().parents[3] / "experiments")
    cands.append(Path.cwd() / "experiments")
    for c in cands:
        if c.is_dir():
            return c.resolve()
    return None


class ExperimentsSearchPathPlugin(SearchPathPlugin):
    """Appends the experiments folder (as the `experiment` group) to every config search path."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        d = experiments_dir()
        if d is not None:
            search_path.append(provider="metamanip-experiments", path=f"{SCHEME}://{d}")


class ExperimentsConfigSource(ConfigSource):
    """A flat folder of YAML files exposed as the config group `experiment`."""

    def __init__(self, provider: str, path: str) -> None:
        super().__init__(provider=provider, path=path)

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Path | None:
        """`experiment/<name>[.yaml]` -> the file in the folder; anything else -> None."""
        parts = config_path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != GROUP:
            return None
        name = parts[1] if parts[1].endswith(".yaml") else parts[1] + ".yaml"
        return Path(self.path) / name

    def load_config(self, config_path: str) -> ConfigResult:
        f = self._file(config_path)
        if f is None or not f.is_file():
            raise ConfigLoadError(f"Config not found : {config_path} in {self.path}")
        text = f.read_text(encoding="utf-8")
        return ConfigResult(
            config=OmegaConf.create(OmegaConf.load(f)),
            path=f"{self.scheme()}://{self.path}",
            provider=self.provider,
            header=ConfigSource._get_header_dict(text[:512]),
        )

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP)

    def is_config(self, config_path: str) -> bool:
        f = self._file(config_path)
        return f is not None and f.is_file()

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        p = config_path.strip("/")
        if p == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if p != GROUP or results_filter == ObjectType.GROUP:
            return []
        return sorted(f.stem for f in Path(self.path).glob("*.yaml") if f.is_file())
