"""Suite-wide reporting: a run that skipped the real-SLURM tests says so at the end, with the command that
enables them, so a green `make test` on a machine without the local cluster is not mistaken for a tested
SLURM path."""
from __future__ import annotations

ENABLE = "sudo bash slurm/ci-prepare.sh && make test   (root with apt reachable; see docs/workbench.md)"


def _is_slurm_skip(report) -> bool:
    if not report.skipped or not isinstance(report.longrepr, tuple):
        return False
    reason = str(report.longrepr[2]).lower()
    return "slurm" in reason or "slurm" in report.nodeid.lower()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if _is_slurm_skip(r)]
    if not skipped:
        return
    tr = terminalreporter
    tr.section("SLURM tests skipped", sep="=", yellow=True, bold=True)
    tr.write_line(f"{len(skipped)} test(s) of the real-SLURM path did not run on this machine:")
    for r in skipped:
        tr.write_line(f"  {r.nodeid}: {str(r.longrepr[2]).removeprefix('Skipped: ')}")
    tr.write_line(f"to run them: {ENABLE}")
