"""`metamanip-export {lerobot,calvin} <dataset> <out> [...]`: a collected dataset in another project's layout.

    metamanip-export lerobot data/explore_5 data/explore_5_lerobot      # LeRobotDataset v3.0 (parquet + mp4)
    metamanip-export calvin  data/explore_5 data/explore_5_calvin       # CALVIN's per-step npz files

A thin front for `metamanip.data.lerobot_export` / `metamanip.data.calvin_export` (each also runs as
`python -m ...`), through the shared error path: a bad input is one `error: ...` line and exit status 2.
"""
from __future__ import annotations

import sys
from typing import Sequence

from metamanip.cli.entry import run_entry_point

FORMATS = ("lerobot", "calvin")


def _dispatch(argv: list[str]) -> None:
    from metamanip.errors import ConfigValueError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return
    fmt, rest = argv[0], argv[1:]
    if fmt == "lerobot":
        from metamanip.data.lerobot_export import main
    elif fmt == "calvin":
        from metamanip.data.calvin_export import main
    else:
        raise ConfigValueError(f"unknown export format {fmt!r}", fix=f"use one of: {', '.join(FORMATS)}")
    main(rest)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    run_entry_point(lambda: _dispatch([a for a in args if a != "--debug"]), argv=args)


if __name__ == "__main__":
    main()
