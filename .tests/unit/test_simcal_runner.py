"""The batched, resumable simulation runner on real Dask clusters (LocalCluster with worker processes)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from distributed import Client, LocalCluster

from simcal.backends import Terminated, close_on_signals, slurm_cluster_kwargs, slurm_scaling
from simcal.contract import ContractError
from simcal.runner import TooManyFailures, read_results, simulate

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as connected:
            yield connected


def table(n: int, start: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": [start + i for i in range(n)]})


def test_same_seed_same_output_whatever_the_batching_and_order(tmp_path, client):
    settings = {"replicates": 3}
    one = simulate(
        "simcal_models:series", table(5), tmp_path / "one", {**settings, "batch_size": 1}, client=client
    )
    shuffled = table(5).sample(frac=1.0, random_state=3)
    four = simulate(
        "simcal_models:series", shuffled, tmp_path / "four", {**settings, "batch_size": 4}, client=client
    )
    assert (one.batches, four.batches) == (15, 4)
    first, second = read_results(tmp_path / "one"), read_results(tmp_path / "four")
    columns = ["param_id", "replicate", "seed", "a", "t", "value", "status"]
    pd.testing.assert_frame_equal(first[columns], second[columns])
    assert len(first) == 5 * 3 * 3
    assert first.groupby(["param_id", "replicate"])["seed"].nunique().eq(1).all()


def test_simulations_run_in_worker_processes(tmp_path, client):
    simulate("simcal_models:noisy_line", table(8), tmp_path / "out", {"batch_size": 2}, client=client)
    result = read_results(tmp_path / "out")
    assert os.getpid() not in set(result["pid"])
    assert result["pid"].nunique() == 2


def test_automatic_batch_size_packs_many_cheap_simulations_per_task(tmp_path, client):
    summary = simulate(
        "simcal_models:noisy_line", table(2000), tmp_path / "out", {"replicates": 2}, client=client
    )
    assert summary.total == 4000
    assert summary.batch_size > 50  # a cheap model: many simulations per task
    assert summary.batches < 4000 / 50
    assert len(read_results(tmp_path / "out")) == 4000


def test_failures_become_rows_and_threshold_decides(tmp_path, client):
    params = pd.DataFrame({"a": [1.0, -1.0, 2.0, 3.0]})
    summary = simulate(
        "simcal_models:fails_for_negative",
        params,
        tmp_path / "ok",
        {"batch_size": 4, "max_failed_fraction": 0.25},
        client=client,
    )
    result = read_results(tmp_path / "ok")
    assert summary.total == 4
    failed = result[result["status"] == "failed"]
    assert list(failed["a"]) == [-1.0]
    assert failed["error"].iloc[0] == "ValueError: a must be >= 0, got -1.0"
    assert result.loc[result["status"] == "ok", "error"].isna().all()

    with pytest.raises(TooManyFailures) as error:
        simulate(
            "simcal_models:fails_for_negative",
            params,
            tmp_path / "bad",
            {"batch_size": 2, "max_failed_fraction": 0.2},
            client=client,
        )
    message = str(error.value)
    assert "1 of 4 simulations failed" in message and "1x ValueError: a must be >= 0, got -1.0" in message
    assert not (tmp_path / "bad").exists()
    assert len(list((tmp_path / "bad.partial").glob("*.parquet"))) == 2  # finished parts are kept for a rerun


def test_a_dying_worker_is_retried_not_lost(tmp_path, client, monkeypatch):
    monkeypatch.setenv("SIMCAL_TEST_MARKER", str(tmp_path / "marker"))
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_MARKER", str(tmp_path / "marker")))
    simulate(
        "simcal_models:dies_once", table(4), tmp_path / "out", {"batch_size": 2, "retries": 2}, client=client
    )
    result = read_results(tmp_path / "out")
    assert (tmp_path / "marker").read_text() == "died"
    assert list(result["status"]) == ["ok"] * 4
    client.wait_for_workers(2, timeout=30)


def test_a_batch_that_keeps_killing_workers_is_recorded_as_lost_and_redone_on_rerun(tmp_path, client):
    from simcal.runner import PartStore

    with pytest.raises(TooManyFailures, match=r"2 of 2 simulations failed .*batch lost after 0 retries"):
        simulate(
            "simcal_models:always_dies",
            table(2),
            tmp_path / "out",
            {"batch_size": 2, "retries": 0},
            client=client,
        )
    partial = tmp_path / "out.partial"
    lost = list(partial.glob("lost-*.parquet"))
    assert len(lost) == 1 and set(pd.read_parquet(lost[0])["status"]) == {"lost"}
    store = PartStore(tmp_path / "out", {"model": "simcal_models:always_dies", "replicates": 1})
    assert store.done() == set() and not list(partial.glob("lost-*.parquet"))  # a rerun redoes lost batches
    client.wait_for_workers(2, timeout=60)


def test_progress_lines_have_counts_rate_eta_and_dashboard(tmp_path, client, caplog):
    caplog.set_level(logging.INFO, logger="simcal")
    simulate("simcal_models:noisy_line", table(6), tmp_path / "out", {"batch_size": 2}, client=client)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("simulations ")]
    assert lines and "6/6 (100.0%)" in lines[-1]
    assert "/s, ETA" in lines[-1] and "dashboard http" in lines[-1]


def test_local_backend_starts_and_closes_its_own_cluster(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    summary = simulate(
        "simcal_models:noisy_line", table(6), tmp_path / "out", {"batch_size": 2}, backend="local", threads=2
    )
    assert summary.batches == 3
    assert read_results(tmp_path / "out")["pid"].nunique() == 2
    time.sleep(0.5)
    leftover = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running()} - before
    assert not leftover, f"worker processes left running: {leftover}"


def test_scheduler_backend_uses_an_existing_scheduler_and_leaves_it_running(tmp_path, monkeypatch):
    with LocalCluster(n_workers=1, processes=True, dashboard_address=":0") as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        simulate(
            "simcal_models:noisy_line", table(4), tmp_path / "env", {"batch_size": 2}, backend="scheduler"
        )
        simulate(
            "simcal_models:noisy_line", table(4), tmp_path / "cfg", {"batch_size": 2},
            backend="scheduler", backend_options={"address": cluster.scheduler_address},
        )  # fmt: skip
        assert len(read_results(tmp_path / "env")) == len(read_results(tmp_path / "cfg")) == 4
        with Client(cluster.scheduler_address, timeout=5) as again:  # still alive, workers too
            assert len(again.scheduler_info()["workers"]) == 1


def test_scheduler_backend_without_address_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ContractError, match="DASK_SCHEDULER_ADDRESS"):
        simulate("simcal_models:noisy_line", table(2), tmp_path / "o", {"batch_size": 1}, backend="scheduler")


def test_slurm_job_script_from_config():
    from dask_jobqueue import SLURMCluster

    options = {
        "account": "PAS1234", "queue": "gpu", "walltime": "00:30:00", "cores": 4, "memory": "16GB",
        "processes": 2, "job_extra_directives": ["--exclusive"], "gpus": 2, "interface": "lo",
        "job_script_prologue": ["module load python"], "adaptive": {"minimum_jobs": 0, "maximum_jobs": 3},
    }  # fmt: skip
    kwargs = slurm_cluster_kwargs(options)
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for expected in [
        "#SBATCH -A PAS1234", "#SBATCH -p gpu", "#SBATCH -t 00:30:00", "#SBATCH --cpus-per-task=4",
        "#SBATCH --exclusive", "#SBATCH --gpus-per-node=2", "module load python", "--nworkers 2",
        "--resources GPU=1", "--death-timeout 60",
    ]:  # fmt: skip
        assert expected in script, f"{expected!r} not in job script:\n{script}"
    assert slurm_scaling(options) == {"minimum_jobs": 0, "maximum_jobs": 3}
    assert slurm_scaling({"jobs": 4}) == {"jobs": 4}
    with pytest.raises(ContractError, match="unknown options \\['acount'\\]"):
        slurm_cluster_kwargs({"acount": "typo"})


def test_sigterm_becomes_an_exception_that_unwinds_the_block():
    closed = []
    with pytest.raises(Terminated):
        with close_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                closed.append(True)
    assert closed == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


RUN_SWEEP = """
import sys
from simcal.logs import configure
from simcal.runner import simulate
import pandas as pd
if __name__ == "__main__":
    configure()
    simulate("simcal_models:counted_sleep", pd.DataFrame({"a": range(24), "sleep_s": 0.1}), sys.argv[1],
             {"batch_size": 2}, backend="local", threads=2)
"""


def start_sweep(tmp_path: Path, output: Path, count_file: Path) -> subprocess.Popen:
    script = tmp_path / "sweep.py"
    script.write_text(RUN_SWEEP)
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{SRC}", "SIMCAL_TEST_COUNT": str(count_file)}
    return subprocess.Popen(
        [sys.executable, str(script), str(output)], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_parts(partial: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len(list(partial.glob("part-*.parquet"))) < at_least:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no batch finished in time"
        time.sleep(0.05)


def test_resume_after_a_crash_redoes_only_unfinished_batches(tmp_path, monkeypatch):
    output = tmp_path / "sweep.parquet"
    proc = start_sweep(tmp_path, output, tmp_path / "first.count")
    wait_for_parts(output.with_name("sweep.parquet.partial"), 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # a hard crash: no cleanup at all
    proc.wait()
    assert not output.exists()
    parts = list(output.with_name("sweep.parquet.partial").glob("part-*.parquet"))
    finished = sum(len(pd.read_parquet(p)) for p in parts)
    assert 6 <= finished < 24

    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(tmp_path / "second.count"))
    summary = simulate(
        "simcal_models:counted_sleep", pd.DataFrame({"a": range(24), "sleep_s": 0.1}), output,
        {"batch_size": 2}, backend="local", threads=2,
    )  # fmt: skip
    assert summary.skipped == finished
    assert summary.executed == 24 - finished
    assert (
        len((tmp_path / "second.count").read_text().split()) == 24 - finished
    )  # nothing finished was redone
    result = read_results(output)
    assert sorted(result["a"]) == list(range(24))
    assert not output.with_name("sweep.parquet.partial").exists()


def test_sigterm_closes_the_local_cluster_and_keeps_finished_parts(tmp_path):
    output = tmp_path / "sweep.parquet"
    proc = start_sweep(tmp_path, output, tmp_path / "count")
    wait_for_parts(output.with_name("sweep.parquet.partial"), 1, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the LocalCluster should have worker processes"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"worker processes survived SIGTERM: {alive}"
    assert list(output.with_name("sweep.parquet.partial").glob("part-*.parquet"))
