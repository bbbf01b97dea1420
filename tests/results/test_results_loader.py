"""The sweep loader on synthetic sweep directories: rows, columns, trials, missing jobs, bad input."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
import yaml
from results_sweeps import EPISODES, EVAL_REWARDS, NUM_TRIALS, eval_outputs, write_job, write_multirun

from metamanip.results import NoRunsError, find_job_dirs, load_results


def test_one_row_per_job_with_choices_config_and_metrics(eval_sweep: Path) -> None:
    res = load_results(eval_sweep)
    jobs = res.jobs
    assert len(jobs) == 6 and jobs["has_results"].all()
    assert list(jobs["job"]) == ["0", "1", "2", "3", "4", "5"]
    assert list(jobs["decoder"]) == ["lstm"] * 3 + ["fc"] * 3
    assert list(jobs["seed"]) == [1, 2, 3, 1, 2, 3]
    assert set(jobs["setting"]) == {"explore"} and set(jobs["num_objs"]) == {3}
    assert set(jobs["backbone"]) == {"tiny"} and set(jobs["trial_limits"]) == {"thesis_3_5"}
    assert set(jobs["split"]) == {"heldout"} and set(jobs["num_trials"]) == {NUM_TRIALS}
    assert jobs.loc[0, "overrides"] == "decoder=lstm seed=1"
    assert jobs.loc[4, "override.seed"] == 2 and jobs.loc[4, "override.decoder"] == "fc"
    assert jobs.loc[0, "choice.decoder"] == "lstm" and "choice.hydra/launcher" not in jobs.columns
    # the resolved config wins over .hydra/config.yaml (which keeps ${hydra:...} interpolations)
    assert jobs.loc[0, "cfg.paths.output_dir"] == str(eval_sweep / "0")
    assert jobs.loc[0, "cfg.trainer.lr"] == pytest.approx(1e-4)
    for (decoder, seed), reward in EVAL_REWARDS.items():
        row = jobs[(jobs.decoder == decoder) & (jobs.seed == seed)].iloc[0]
        assert row["average_reward"] == pytest.approx(round(reward * EPISODES) / EPISODES)
    assert res.metrics[:4] == ["total_reward", "average_reward", "ratio_reward_found", "episode_length"]
    assert res.metrics[4:8] == [f"success_trial_{i}" for i in range(1, NUM_TRIALS + 1)]
    assert res.missing.empty and res.warnings == []
    assert jobs.loc[0, "log_path"] == str(eval_sweep / "0" / "eval.log")


def test_trials_frame_concatenates_every_trials_csv_with_job_keys(eval_sweep: Path) -> None:
    res = load_results(eval_sweep)
    assert len(res.trials) == 6 * EPISODES * NUM_TRIALS
    assert {"job", "decoder", "seed", "reward", "trial", "episode"} <= set(res.trials.columns)
    per_job = res.trials.groupby("job")["reward"].sum()
    jobs = res.jobs.set_index("job")
    for job, total in per_job.items():
        assert total == pytest.approx(jobs.loc[job, "total_reward"])


def test_half_finished_sweep_lists_failed_and_unstarted_jobs(half_sweep: Path) -> None:
    res = load_results(half_sweep)
    assert len(res.jobs) == 4 and len(res.finished) == 2
    missing = res.missing.set_index("job")
    assert list(missing.index) == ["2", "3"]
    assert missing.loc["2", "status"] == "failed"
    assert "CUDA out of memory" in missing.loc["2", "error"]
    assert missing.loc["2", "log_path"] == str(half_sweep / ".submitit" / "777_2" / "777_2_0_log.err")
    # job 3 (decoder=fc seed=2) was promised by multirun.yaml but never created its directory
    assert missing.loc["3", "status"] == "not started"
    assert missing.loc["3", "overrides"] == "decoder=fc seed=2"
    assert pd.isna(missing.loc["3", "log_path"])
    # a finished job's log: the (non-empty) submitit stdout
    assert res.jobs.set_index("job").loc["0", "log_path"].endswith("777_0_0_log.out")


def test_job_killed_before_status_update_takes_error_from_submitit_result(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    write_multirun(sweep, ["seed=1"])
    write_job(sweep / "0", num=0, overrides=["seed=1"], choices={}, config={"seed": 1}, status="running",
              job_id="991_0")
    folder = sweep / ".submitit" / "991_0"
    folder.mkdir(parents=True)
    with open(folder / "991_0_0_result.pkl", "wb") as fh:
        pickle.dump(("error", "Traceback (most recent call last):\n  ...\nValueError: NaN loss at step 7"), fh)
    (folder / "991_0_0_log.err").write_text("ValueError: NaN loss at step 7\n")
    res = load_results(sweep)
    row = res.missing.iloc[0]
    assert row["status"] == "failed" and row["error"] == "ValueError: NaN loss at step 7"
    assert row["log_path"].endswith("991_0_0_log.err")


def test_several_directories_and_a_single_run(eval_sweep: Path, train_run: Path) -> None:
    res = load_results([eval_sweep, train_run])
    assert len(res.jobs) == 7
    assert set(res.jobs["sweep"]) == {str(eval_sweep), str(train_run)}
    train = res.jobs[res.jobs["sweep"] == str(train_run)].iloc[0]
    assert train["job"] == "." and train["task_name"] == "train" and train["train_loss"] == 0.3
    assert len(res.train_logs) == 4 and set(res.train_logs["job"]) == {"."}
    # different metric sets (train vs eval) are reported, not silently merged
    assert any("lack metric(s)" in w and "train_loss" in w for w in res.warnings)
    assert any("average_reward" in w for w in res.warnings)


def test_pipeline_job_reads_its_stage_subdirectories(tmp_path: Path) -> None:
    job = tmp_path / "pipeline" / "runs" / "r1"
    metrics, summary, trials = eval_outputs(2.0, seed=3, config={"decoder": "fc"})
    write_job(job, num=0, overrides=["decoder=fc"], choices={"env": "explore", "decoder": "fc"},
              config={"task_name": "pipeline", "seed": 3, "env": {"num_objs": 5}}, job_name="pipeline",
              metrics=metrics)
    for stage in ("collect", "train", "eval"):
        (job / stage).mkdir()
        (job / stage / "status.json").write_text(json.dumps({"status": "done"}))
    (job / "eval" / "summary.json").write_text(json.dumps({**summary, "num_objs": 5}))
    trials.to_csv(job / "eval" / "trials.csv", index=False)
    pd.DataFrame({"step": [1, 2], "loss": [0.5, 0.4]}).to_csv(job / "train" / "train_log.csv", index=False)
    assert find_job_dirs(tmp_path) == [job]  # stages belong to the pipeline job
    res = load_results(tmp_path)
    row = res.jobs.iloc[0]
    assert len(res.jobs) == 1 and row["task_name"] == "pipeline" and row["num_objs"] == 5
    assert row["decoder"] == "fc" and row["seed"] == 3 and row["average_reward"] == 2.0
    assert len(res.trials) == EPISODES * NUM_TRIALS and len(res.train_logs) == 2


def test_summary_only_job_gets_metrics_from_summary(tmp_path: Path) -> None:
    _, summary, _ = eval_outputs(1.4)
    write_job(tmp_path / "run", num=0, overrides=[], choices={}, config={"seed": 1}, status=None,
              summary=summary)
    row = load_results(tmp_path).jobs.iloc[0]
    assert row["status"] == "done" and row["average_reward"] == pytest.approx(1.4)
    assert row["success_trial_4"] == pytest.approx(summary["success_by_trial"][3])


def test_empty_directory_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty" / "nothing").mkdir(parents=True)
    with pytest.raises(NoRunsError, match="no runs found under .*empty.*sweep dir"):
        load_results(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "nope")


def test_corrupt_metrics_file_is_reported_not_fatal(eval_sweep: Path) -> None:
    (eval_sweep / "1" / "metrics.json").write_text("{not json")
    (eval_sweep / "1" / "summary.json").unlink()
    res = load_results(eval_sweep)
    assert list(res.missing["job"]) == ["1"]
    assert any("1/metrics.json: unreadable JSON" in w for w in res.warnings)


def test_incomplete_evaluation_is_listed_not_tabulated(eval_sweep: Path) -> None:
    summary = json.loads((eval_sweep / "2" / "summary.json").read_text())
    (eval_sweep / "2" / "summary.json").write_text(json.dumps({**summary, "complete": False}))
    res = load_results(eval_sweep)
    assert list(res.missing["job"]) == ["2"] and res.missing.loc[0, "status"] == "incomplete"
    assert "rerun the job to resume" in res.missing.loc[0, "error"]
    assert any("partial and left out" in w for w in res.warnings)
    assert len(res.finished) == 5


def test_optuna_sweep_lists_trials_that_never_ran(tmp_path: Path) -> None:
    sweep = tmp_path / "optuna"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {
        "sweeper": {"_target_": "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper", "n_trials": 3},
        "overrides": {"task": ["hparams_search=optuna_lr"]}}}))
    metrics, summary, trials = eval_outputs(2.0)
    write_job(sweep / "0", num=0, overrides=["trainer.lr=0.001"], choices={}, config={"seed": 0},
              metrics=metrics, summary=summary)
    res = load_results(sweep)
    assert len(res.finished) == 1 and res.jobs.loc[0, "override.trainer.lr"] == pytest.approx(1e-3)
    assert list(res.missing["job"]) == ["1", "2"] and set(res.missing["status"]) == {"not started"}


def test_overlapping_directories_count_each_job_once(eval_sweep: Path) -> None:
    res = load_results([eval_sweep, eval_sweep.parent])
    assert len(res.jobs) == 6 and any("counted once" in w for w in res.warnings)


def test_running_job_whose_process_is_gone_is_reported_killed(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    write_job(tmp_path / "run", num=0, overrides=[], choices={}, config={"seed": 0}, status=None)
    (tmp_path / "run" / "status.json").write_text(json.dumps(
        {"status": "running", "pid": int(dead.stdout), "host": socket.gethostname()}))
    write_job(tmp_path / "alive", num=0, overrides=[], choices={}, config={"seed": 0}, status=None)
    (tmp_path / "alive" / "status.json").write_text(json.dumps(
        {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}))
    missing = load_results(tmp_path).missing.set_index("job")
    assert missing.loc["run", "status"] == "killed" and "resume" in missing.loc["run", "error"]
    assert missing.loc["alive", "status"] == "running"


def test_job_that_died_before_its_dir_existed_is_found_through_submitit(tmp_path: Path) -> None:
    from submitit.helpers import DelayedSubmission

    sweep = tmp_path / "sweep"
    write_multirun(sweep, ["seed=1,2"])
    metrics, summary, _ = eval_outputs(1.0)
    write_job(sweep / "0", num=0, overrides=["seed=1"], choices={}, config={"seed": 1}, metrics=metrics,
              summary=summary, job_id="5001")
    for pid, num in (("5001", 0), ("5002", 1)):  # local job ids are pids, unrelated to the job number
        folder = sweep / ".submitit" / pid
        folder.mkdir(parents=True)
        with open(folder / f"{pid}_submitted.pkl", "wb") as fh:
            pickle.dump(DelayedSubmission(print, [f"seed={num + 1}"], "hydra.sweep.dir", num, f"job_id_for_{num}", {}), fh)
    with open(sweep / ".submitit" / "5002" / "5002_0_result.pkl", "wb") as fh:
        pickle.dump(("error", "Traceback ...\nhydra.errors.ConfigCompositionException: Could not override 'x'"), fh)
    (sweep / ".submitit" / "5002" / "5002_0_log.err").write_text("ConfigCompositionException\n")
    row = load_results(sweep).missing.iloc[0]
    assert row["job"] == "1" and row["status"] == "failed" and "ConfigCompositionException" in row["error"]
    assert row["log_path"].endswith("5002_0_log.err") and row["overrides"] == "seed=2"


def test_eval_of_a_checkpoint_takes_the_model_from_the_train_job(tmp_path: Path, train_run: Path) -> None:
    ckpt = train_run / "checkpoints" / "last.pt"
    metrics, summary, _ = eval_outputs(1.0, config={"ckpt": str(ckpt), "backbone": None, "decoder": None})
    write_job(tmp_path / "evals" / "e1", num=0, overrides=[f"ckpt={ckpt}"], choices={"env": "explore"},
              config={"seed": 0, "ckpt": str(ckpt)}, metrics=metrics, summary=summary)
    row = load_results(tmp_path / "evals").jobs.iloc[0]
    assert row["decoder"] == "lstm"  # the train job's choice (its .hydra/hydra.yaml)


def test_setting_names_are_normalised() -> None:
    from metamanip.results.loader import normalise_setting

    assert normalise_setting("metamanip.settings.combi.CombiExploreEnv") == "combi_explore"
    assert normalise_setting("combi") == "combi_explore" and normalise_setting("ExploreEnv") == "explore"
    assert normalise_setting("metamanip.settings.single_object.SingleObjectEnv") == "single_object"
    assert normalise_setting("my_new_setting") == "my_new_setting"
