import signal

import pytest

from metamanip.training.distributed import DistEnv, detect, first_slurm_host
from metamanip.training.preemption import Preempted, StopSignals


def test_torchrun_variables_win():
    d = detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "1234",
                "SLURM_PROCID": "0", "SLURM_NTASKS": "8"})
    assert d == DistEnv(3, 4, 1, "n1", 1234, "torchrun") and not d.is_main and d.distributed


def test_ranks_from_slurm_with_master_from_the_node_list():
    d = detect({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
                "SLURM_JOB_NODELIST": "gpu[07-08,11]", "SLURM_JOB_ID": "123456"})
    assert (d.rank, d.world_size, d.local_rank, d.launcher) == (5, 8, 1, "slurm")
    assert d.master_addr == "gpu07" and d.master_port == 20000 + 123456 % 20000


def test_single_task_slurm_job_and_plain_process_are_not_distributed():
    assert not detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).distributed
    assert detect({}) == DistEnv()


def test_submitit_local_tasks():
    d = detect({"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_LOCALID": "1",
                "SUBMITIT_LOCAL_JOB_ID": "4242"})
    assert (d.rank, d.world_size, d.master_addr, d.launcher) == (1, 2, "127.0.0.1", "submitit-local")


@pytest.mark.parametrize("nodelist, host", [("node1", "node1"), ("a[1-3],b2", "a1"), ("gpu[009,011]", "gpu009"),
                                            ("x-y[10-12]", "x-y10")])
def test_first_slurm_host(nodelist, host, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no scontrol: parse the list ourselves
    assert first_slurm_host(nodelist) == host


def test_stop_signal_is_deferred_then_handed_to_the_previous_handler():
    seen = []
    before = signal.signal(signal.SIGUSR2, lambda s, f: seen.append(s))
    try:
        stop = StopSignals(("SIGUSR2",)).install()
        signal.raise_signal(signal.SIGUSR2)
        assert stop.requested and seen == []  # only recorded: the loop saves first
        stop.forward()
        assert seen == [signal.SIGUSR2]
        assert signal.getsignal(signal.SIGUSR2) is not stop._record
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert "SIGUSR2 at step 7" in str(Preempted(signal.SIGUSR2, 7, "x/last.pt"))
