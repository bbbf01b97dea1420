"""What a sweep costs on top of its jobs, per launcher: the same N-job sweep of a task that sleeps a
fixed time, through Hydra's basic launcher (in-process, one after another), `hydra/launcher=local`
(submitit processes, `max_parallel` at a time) and, when the local SLURM cluster is up,
`hydra/launcher=slurm_gpu` (one job array on the `debug` partition). Prints a short table; the last
line is the JSON.

    python benchmarks/sweep_overhead.py [--jobs 4] [--sleep 2]

Goal: the local launcher's wall time <= the basic launcher's for parallel jobs (it overlaps them), and
its per-job overhead (process start, pickling, config re-composition) well under a second of CPU-bound
job time on a workstation. SLURM adds the scheduler's latency (about 1-5 s per array here).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

APP = """\
import time, hydra
@hydra.main(version_base="1.3", config_path=None)
def main(cfg):
    time.sleep(float(cfg.sleep))
    return 0.0
main()
"""

PRIMARY = """\
defaults:
  - _self_
  - paths: default
  - hydra: default
task_name: bench
seed: 0
sleep: 1.0
"""


def run_sweep(work: Path, conf: Path, jobs: int, sleep: float, launcher: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(work / "app.py"), "--config-dir", str(conf), "--config-name", "bench",
                        "-m", f"seed={','.join(str(i) for i in range(jobs))}", f"sleep={sleep}",
                        f"paths.log_dir={work}/logs", *launcher], cwd=work, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"sweep {launcher} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def slurm_up() -> bool:
    if os.geteuid() != 0 or not shutil.which("sinfo"):
        return False
    r = subprocess.run(["bash", str(REPO / "slurm" / "local-cluster.sh"), "status"], capture_output=True)
    return r.returncode == 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=4)
    ap.add_argument("--sleep", type=float, default=2.0, help="seconds each job takes")
    ap.add_argument("--parallel", type=int, default=2, help="hydra.launcher.max_parallel of the local launcher")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        conf = work / "conf"
        conf.mkdir()
        for group in ("hydra", "paths"):
            shutil.copytree(REPO / "conf" / group, conf / group)
        (conf / "bench.yaml").write_text(PRIMARY)
        (work / "app.py").write_text(APP)

        work_s = args.jobs * args.sleep
        res: dict[str, float] = {"jobs": args.jobs, "job_s": args.sleep}
        res["basic_s"] = run_sweep(work, conf, args.jobs, args.sleep, [])
        res["local_s"] = run_sweep(work, conf, args.jobs, args.sleep,
                                   ["hydra/launcher=local", f"hydra.launcher.max_parallel={args.parallel}"])
        ideal_local = -(-args.jobs // args.parallel) * args.sleep  # ceil(jobs / parallel) rounds
        res["local_overhead_per_round_s"] = (res["local_s"] - ideal_local) / -(-args.jobs // args.parallel)
        res["basic_overhead_per_job_s"] = (res["basic_s"] - work_s) / args.jobs
        res["local_vs_basic"] = res["local_s"] / res["basic_s"]
        if slurm_up():
            res["slurm_s"] = run_sweep(work, conf, args.jobs, args.sleep, [
                "hydra/launcher=slurm_gpu", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=null",
                "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"])
            res["slurm_vs_basic"] = res["slurm_s"] / res["basic_s"]

    print(f"{'launcher':<10} {'wall s':>8}")
    for k in ("basic_s", "local_s", "slurm_s"):
        if k in res:
            print(f"{k[:-2]:<10} {res[k]:>8.1f}")
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in res.items()}))


if __name__ == "__main__":
    main()
