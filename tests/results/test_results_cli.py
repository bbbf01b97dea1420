"""metamanip-results: prints the table and the missing jobs, writes the files, refuses bad input clearly."""
from __future__ import annotations

from pathlib import Path

from metamanip.cli.results import main as results_main


def test_cli_prints_table_and_missing_jobs(half_sweep: Path, tmp_path: Path, capsys) -> None:
    rc = results_main([str(half_sweep), "--group-by", "decoder", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 of 4 job(s) with results" in out
    assert "| metamanip | lstm | 2 |" in out
    assert "2 of 4 job(s) have no results" in out and "not started" in out
    assert (tmp_path / "out" / "table.tex").exists() and (tmp_path / "out" / "success_by_trial.pdf").exists()


def test_cli_bad_input_exits_2_with_a_message(tmp_path: Path, capsys, eval_sweep: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert results_main([str(tmp_path / "empty")]) == 2
    assert "no runs found" in capsys.readouterr().err
    assert results_main([str(eval_sweep), "--group-by", "colour"]) == 2
    assert "unknown column 'colour'" in capsys.readouterr().err
    assert results_main([str(eval_sweep), "--confidence", "95"]) == 2
    assert "--confidence must be in (0, 1)" in capsys.readouterr().err


def test_cli_prints_latex_on_request(eval_sweep: Path, tmp_path: Path, capsys) -> None:
    assert results_main([str(eval_sweep), "--print", "latex", "--metrics", "average_reward",
                         "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert r"\begin{tabular}" in out and "lstm" in out and "| metamanip |" not in out


def test_cli_sweep_without_results_lists_jobs_and_exits_1(tmp_path: Path, capsys) -> None:
    from results_sweeps import write_job, write_multirun

    sweep = tmp_path / "s"
    write_multirun(sweep, ["seed=1,2"])
    write_job(sweep / "0", num=0, overrides=["seed=1"], choices={}, config={"seed": 1}, status="failed",
              error="ValueError: NaN loss at step 3")
    assert results_main([str(sweep), "--out", str(tmp_path / "o")]) == 1
    out = capsys.readouterr().out
    assert "0 of 2 job(s) with results" in out and "NaN loss at step 3" in out and "not started" in out
    assert "table: skipped (no job has results yet)" in out
    assert (tmp_path / "o" / "missing.csv").exists() and not (tmp_path / "o" / "table.md").exists()


def test_cli_without_dirs_takes_the_newest_sweep(tmp_path: Path, monkeypatch, capsys, eval_sweep: Path) -> None:
    # eval_sweep lives at <tmp>/multiruns/<date>; give it the logs/<task>/multiruns/<date> layout
    logs = tmp_path / "root" / "logs" / "eval"
    logs.mkdir(parents=True)
    eval_sweep.parent.rename(logs / "multiruns")
    monkeypatch.setenv("METAMANIP_ROOT", str(tmp_path / "root"))
    assert results_main(["--out", str(tmp_path / "o"), "--metrics", "average_reward"]) == 0
    out = capsys.readouterr().out
    assert "newest sweep under" in out and "2026-11-21_10-00-00" in out and "6 of 6 job(s)" in out
    monkeypatch.setenv("METAMANIP_ROOT", str(tmp_path / "nowhere"))
    assert results_main([]) == 2
    assert "no sweep or run under" in capsys.readouterr().err
