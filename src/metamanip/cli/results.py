"""`metamanip-results [DIR...] [--group-by COL ...]`: a sweep's table on stdout, its files on disk.

Loads every job under the given sweep / run directories, prints the mean ± 95 % CI table (Markdown)
and the jobs without results, and writes tables (Markdown, CSV, LaTeX), job listings and plots
(PNG + PDF) into `--out` (default: `<first DIR>/results`).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from metamanip.cli.entry import format_error
from metamanip.results.loader import NoRunsError, latest_sweep, load_results
from metamanip.results.report import missing_markdown, write_report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="metamanip-results",
        description="Tabulate and plot one or several sweep (or run) directories: mean ± CI over seeds.",
        epilog="exit status: 0 table written; 1 no job has results yet (the missing jobs are listed); "
               "2 bad input (no runs, unknown column or metric)")
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="sweep dirs (logs/<task>/multiruns/<date>) or run dirs; none: the newest sweep under "
                        "$METAMANIP_ROOT/logs (default ./logs)")
    p.add_argument("--group-by", nargs="+", metavar="COL", default=None,
                   help="columns to group by (e.g. decoder num_objs, any override key, or cfg.<dotted.key>); "
                        "default: the columns that differ between jobs, never the seed")
    p.add_argument("--metrics", nargs="+", metavar="NAME", default=None,
                   help="metrics to tabulate (default: average_reward, ratio_reward_found, episode_length and "
                        "success per trial; train-only sweeps: their metrics)")
    p.add_argument("--out", default=None, help="output directory (default: <first DIR>/results)")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (0.95)")
    p.add_argument("--no-reference", action="store_true", help="leave out the thesis' published figures")
    p.add_argument("--print", dest="fmt", choices=("markdown", "latex", "csv"), default="markdown",
                   help="format of the table on stdout (all three are written to --out)")
    p.add_argument("-v", "--verbose", action="store_true", help="log what is read")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not 0.0 < args.confidence < 1.0:
        print(format_error(f"--confidence must be in (0, 1), got {args.confidence}; use e.g. --confidence 0.95"),
              file=sys.stderr)
        return 2
    try:
        if not args.dirs:
            log_dir = Path(os.environ.get("METAMANIP_ROOT", ".")) / "logs"
            args.dirs = [str(latest_sweep(log_dir))]
            print(f"newest sweep under {log_dir}: {args.dirs[0]}")
        results = load_results(args.dirs)
        out = Path(args.out) if args.out else Path(args.dirs[0]) / "results"
        report = write_report(results, out, group_by=args.group_by, metrics=args.metrics,
                              confidence=args.confidence, reference=not args.no_reference)
    except (NoRunsError, FileNotFoundError, NotADirectoryError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(format_error(str(msg)), file=sys.stderr)
        return 2
    done = len(results.finished)
    print(f"{done} of {len(results.jobs)} job(s) with results under {', '.join(args.dirs)}\n")
    if report.table is not None:
        print({"markdown": report.table.to_markdown, "latex": report.table.to_latex,
               "csv": report.table.to_csv}[args.fmt]())
    text = missing_markdown(results)
    if text:
        print(text)
    for w in results.warnings:
        print(f"warning: {w}")
    print(f"\nwrote to {out}:")
    for name, paths in report.files.items():
        print(f"  {name}: {', '.join(Path(p).name for p in paths)}")
    for name, why in report.skipped.items():
        print(f"  {name}: skipped ({why})")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
