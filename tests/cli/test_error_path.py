"""The one error path of every entry point: a user error is one line on stderr, `error: <what> — <fix>`, exit
status 2 and no traceback; `--debug` / HYDRA_FULL_ERROR=1 add the traceback; a bug keeps its traceback and
exits 1. Each case is a real subprocess of the console command's module (fast: they fail before any work)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(module: str, *args: str, tmp: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    hydra_args = [] if module.endswith(("results", "export")) else [f"hydra.run.dir={tmp / 'run'}",
                                                                    f"paths.root_dir={tmp}"]
    return subprocess.run([sys.executable, "-m", module, *args, *hydra_args], cwd=tmp, capture_output=True,
                          text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
                               "OMP_NUM_THREADS": "1", **(env or {})})


def _assert_user_error(r: subprocess.CompletedProcess, *words: str) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and " — " in lines[0], r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def _garbage(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a checkpoint at all\n" * 10)
    return path


# (entry point module, its arguments, words the line must hold: the value and the fix)
CASES = {
    "train-missing-data": ("metamanip.cli.train", ["data.dir=/nonexistent/ds", "logger=none"],
                           ["data.dir=/nonexistent/ds", "metamanip-collect"]),
    "train-bad-lr": ("metamanip.cli.train", ["data.dir=x", "trainer.lr=-1"], ["trainer.lr=-1", "positive"]),
    "train-unset-mandatory": ("metamanip.cli.train", ["logger=none"], ["data.dir", "data.dir=<value>"]),
    "train-unknown-choice": ("metamanip.cli.train", ["decoder=transformer", "data.dir=x"],
                             ["decoder/transformer", "lstm", "gpt"]),
    "collect-bad-num-objs": ("metamanip.cli.collect", ["env.num_objs=4"], ["env.num_objs=4", "3, 5, 7"]),
    "collect-shards-without-dir": ("metamanip.cli.collect", ["collect.num_shards=2", "collect.shard=1"],
                                   ["collect.num_shards", "collect.dir"]),
    "eval-garbage-checkpoint": ("metamanip.cli.eval", ["ckpt={tmp}/last.pt"], ["last.pt"]),
    "eval-bad-split": ("metamanip.cli.eval", ["eval.split=test", "ckpt=x"], ["eval.split='test'", "heldout"]),
    "render-missing-dataset": ("metamanip.cli.render", ["dataset=/nonexistent/ds"], ["/nonexistent/ds"]),
    "pipeline-bad-precision": ("metamanip.cli.pipeline", ["experiment=smoke", "trainer.precision=fp8"],
                               ["trainer.precision='fp8'", "fp32"]),
    "demo-unknown-task": ("metamanip.cli.demo", ["demo.tasks=[fly_away]"], ["fly_away"]),
    "results-no-runs": ("metamanip.cli.results", ["{tmp}/empty"], ["{tmp}/empty"]),
    "export-missing-dataset": ("metamanip.cli.export", ["lerobot", "/nonexistent/ds", "{tmp}/out"],
                               ["/nonexistent/ds"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_error_is_one_line_and_exit_2(tmp_path, case):
    module, args, words = CASES[case]
    _garbage(tmp_path / "last.pt")
    (tmp_path / "empty").mkdir()
    r = _run(module, *[a.format(tmp=tmp_path) for a in args], tmp=tmp_path)
    _assert_user_error(r, *[w.format(tmp=tmp_path) for w in words])


@pytest.mark.parametrize("how", ["--debug", "HYDRA_FULL_ERROR"])
def test_debug_shows_the_traceback_of_a_user_error(tmp_path, how):
    args, env = (["--debug"], None) if how == "--debug" else ([], {"HYDRA_FULL_ERROR": "1"})
    r = _run("metamanip.cli.train", "data.dir=/nonexistent/ds", "logger=none", *args, tmp=tmp_path, env=env)
    assert r.returncode == 2, r.stderr
    assert "Traceback" in r.stderr and "build_datasets" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: data.dir=/nonexistent/ds does not exist — ")


APP = """
    import sys
    from metamanip.cli.entry import entry_point
    from metamanip.errors import UserError

    @entry_point("app", config_dir={conf!r})
    def main(cfg):
        if cfg.mode == "bug":
            return {{}}["no such key"] + 1 / 0
        if cfg.mode == "user":
            raise UserError(f"mode={{cfg.mode}} is refused", fix="use mode=ok")
        if cfg.mode == "plain":
            raise ValueError("a ValueError raised outside metamanip is not a message for the user")
        print("ran", cfg.mode)

    if __name__ == "__main__":
        main()
"""


@pytest.fixture
def app(tmp_path):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "app.yaml").write_text("mode: ok\nhydra:\n  run:\n    dir: ${oc.env:APP_OUT}\n"
                                   "  sweep:\n    dir: ${oc.env:APP_OUT}/m\n")
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(APP.format(conf=str(conf))))

    def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60,
                              env={**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
                                   "APP_OUT": str(tmp_path / "out"), **(env or {})})
    return run


def test_a_bug_keeps_its_traceback_and_exits_1(app):
    r = app("mode=bug")
    assert r.returncode == 1, r.stderr
    assert "Traceback" in r.stderr and "KeyError: 'no such key'" in r.stderr
    assert "error:" not in r.stderr


def test_a_raised_user_error_and_a_clean_run(app):
    r = app("mode=user")
    assert _assert_user_error(r) == "error: mode=user is refused — use mode=ok"
    plain = app("mode=plain")
    assert plain.returncode == 1 and "Traceback" in plain.stderr
    ok = app("mode=fine")
    assert ok.returncode == 0 and "ran fine" in ok.stdout, ok.stderr


def test_a_bug_in_a_multirun_job_is_still_a_bug(app):
    r = app("-m", "mode=ok,bug")
    assert r.returncode == 1, r.stderr
    assert "Traceback" in r.stderr and "ran ok" in r.stdout
