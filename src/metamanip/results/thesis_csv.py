"""Read the original Meta-CALVIN result CSV into a tidy frame, to compare old runs with new sweeps.

That file has one header written when it was created (`run_name, <combination or pair>..., overall_reward`)
and appends every later run under it, whatever its columns; each cell is a Python dict string such as
"{'total_reward': 11, 'average_reward': 0.55, 'ratio_reward_found': 0.3, 'episode_length': 1272.9}".
Rows whose cell count differs from the header's cannot be matched to its names: their groups are named
by position (`group_1`, ...) and the last cell is always the overall figure.
"""
from __future__ import annotations

import ast
import csv
import os
from pathlib import Path

import pandas as pd

FIGURES = ("total_reward", "average_reward", "ratio_reward_found", "episode_length")


def load_thesis_csv(path: str | os.PathLike) -> pd.DataFrame:
    """One row per (run, group) with the thesis' four figures; `group` is 'overall' for the last cell."""
    path = Path(path)
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh, skipinitialspace=True) if r and any(c.strip() for c in r)]
    if not rows or rows[0][0].strip() != "run_name":
        raise ValueError(f"{path} is not a Meta-CALVIN result CSV: its first line should start with 'run_name'")
    header = [c.strip() for c in rows[0]]
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row]
        names = header[1:] if len(cells) == len(header) else [f"group_{i}" for i in range(1, len(cells) - 1)] + ["overall"]
        for i, (name, cell) in enumerate(zip(names, cells[1:])):
            try:
                figures = ast.literal_eval(cell)
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{path}:{lineno}: cell {i + 2} is not a Python dict string ({cell[:60]!r}): {e}") from e
            if not isinstance(figures, dict):
                raise ValueError(f"{path}:{lineno}: cell {i + 2} holds {type(figures).__name__}, expected a dict")
            group = "overall" if i == len(cells) - 2 else name
            out.append({"run_name": cells[0], "row": lineno - 1, "group": group,
                        **{k: figures.get(k) for k in FIGURES}})
    return pd.DataFrame(out, columns=["run_name", "row", "group", *FIGURES])
