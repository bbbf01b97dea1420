"""The end of a test run lists the real-SLURM tests it skipped and the one command that enables them."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_x.py").write_text(body)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_skipped_slurm_tests_are_listed_with_the_command_that_enables_them(tmp_path):
    r = _run(tmp_path, "import pytest\n"
                       "def test_sweep_on_slurm():\n"
                       "    pytest.skip('SLURM packages not installed (slurmctld missing): run slurm/ci-prepare.sh')\n"
                       "def test_other():\n    pytest.skip('no GPU')\n"
                       "def test_ok():\n    pass\n")
    assert r.returncode == 0, r.stdout
    out = r.stdout
    assert "SLURM tests skipped" in out and "1 test(s) of the real-SLURM path did not run" in out
    assert "test_x.py::test_sweep_on_slurm: SLURM packages not installed" in out
    assert "to run them: sudo bash slurm/ci-prepare.sh && make test" in out
    assert "test_other" not in out.split("SLURM tests skipped")[1]


def test_no_note_when_nothing_of_slurm_was_skipped(tmp_path):
    r = _run(tmp_path, "def test_ok():\n    pass\n")
    assert r.returncode == 0 and "SLURM tests skipped" not in r.stdout
