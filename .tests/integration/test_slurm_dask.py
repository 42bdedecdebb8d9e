"""The simulate wrapper's Dask `slurm` backend on the real local SLURM: workers are sbatch jobs named
dask-worker-<run id>; they retire before their walltime and are replaced; the rule fails clearly when none ever
starts; and none is left in the queue after the rule ends, whether it succeeded, failed, was terminated (SIGTERM)
or was killed outright (SIGKILL, when only the reaper process can cancel them)."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm.slurmkit import ACCOUNT, LOCAL, node_memory_mb, require_slurm, wait_until
from testkit import run_snakemake, venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

SNAKEFILE = LOCAL / "dask" / "Snakefile"
LOG = "logs/calibration/sir_on_slurm/simulate.log"
OUTPUT = "results/calibration/sir_on_slurm/sweep/simulations.parquet"


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


def write_config(workdir: Path, model: str, points: int, delay_s: float = 0.0, **overrides) -> None:
    fixed = {"population": 2000, "initial_infected": 5, "days": 30}
    if delay_s:
        fixed["delay_s"] = delay_s
    fixed.update(overrides.pop("fixed", {}))
    slurm_options = {
        "account": ACCOUNT,
        "queue": "cpu",
        "cores": 1,
        "memory": "1GB",
        "walltime": "00:10:00",
        "interface": "lo",
        "jobs": 2,
        "local_directory": str(workdir / "dask-scratch"),
        "log_directory": str(workdir / "dask-logs"),
        **overrides.pop("slurm", {}),
    }
    config = {
        "calibration": {
            "name": "sir_on_slurm",
            "model": model,
            "fixed": fixed,
            "parameters": {"beta": {"low": 0.2, "high": 0.4}, "gamma": {"low": 0.05, "high": 0.15}},
            "sweep": {"enabled": True, "design": "sobol", "n": points, "replicates": 1, "seed": 0},
            "simulation": {"batch_size": 2, "max_failed_fraction": 0.05, **overrides.pop("simulation", {})},
            "threads": 1,
            "backend": {"kind": "slurm", "slurm": slurm_options},
        }
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def env() -> dict[str, str]:
    # Workers import the test models: sbatch exports this environment to them.
    return {"PYTHONPATH": f"{LOCAL / 'dask'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def snakemake_args(workdir: Path) -> list[str]:
    return ["--snakefile", str(SNAKEFILE), "--directory", str(workdir), "--cores", "2"]


def job_name(workdir: Path) -> str:
    """The run's worker job name, as the simulate log reports it."""
    wait_until(
        lambda: (workdir / LOG).exists() and "jobs named" in (workdir / LOG).read_text(), 120, "the cluster"
    )
    return re.search(r"jobs named (dask-worker-[0-9a-f]+)", (workdir / LOG).read_text()).group(1)


def queued(name: str, states: str = "PENDING,RUNNING,COMPLETING,CONFIGURING") -> list[str]:
    proc = subprocess.run(
        ["squeue", "-h", "-n", name, "-t", states, "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout.split()


def accounting(name: str) -> list[dict[str, str]]:
    """sacct records (JobID, State, Account, Partition, Elapsed, Timelimit) of this run's worker jobs."""
    fields = ["JobID", "State", "Account", "Partition", "ElapsedRaw", "TimelimitRaw"]
    proc = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", "now-1hour", "--name", name, "-o", ",".join(fields)],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return [dict(zip(fields, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]


def finished_jobs(name: str, at_least: int = 1) -> list[dict[str, str]]:
    """Accounting of this run's worker jobs once slurmdbd has them all in a final state (it lags a little)."""
    final = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")

    def settled() -> bool:
        jobs = accounting(name)
        return len(jobs) >= at_least and all(j["State"].startswith(final) for j in jobs)

    wait_until(settled, 60, f"sacct to report the worker jobs {name} as finished")
    return accounting(name)


def assert_no_workers_left(name: str, within_s: float = 20) -> None:
    # cluster.close() runs scancel before the rule returns; a cancelled job may show COMPLETING for a moment.
    wait_until(lambda: not queued(name), within_s, f"the worker jobs {name} to leave the queue")


def start_snakemake(workdir: Path) -> subprocess.Popen:
    console = (workdir / "console.txt").open("w")
    return subprocess.Popen(
        [venv_bin("snakemake"), *snakemake_args(workdir)], cwd=workdir, env={**os.environ, **env()},
        stdout=console, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def test_sweep_runs_on_slurm_workers_and_leaves_none(slurm, tmp_path):
    write_config(tmp_path, "sweep_models:slow_sir", points=8, delay_s=0.2)
    run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=300)
    assert (tmp_path / OUTPUT).exists()
    log = (tmp_path / LOG).read_text()
    assert "started a SLURMCluster" in log and f"-A {ACCOUNT}" in log and "--lifetime" in log
    name = job_name(tmp_path)
    assert_no_workers_left(name)
    workers = finished_jobs(name)
    assert all((w["Account"], w["Partition"]) == (ACCOUNT, "cpu") for w in workers), workers


def test_a_sweep_in_a_folder_with_a_space_gets_its_slurm_workers(slurm, tmp_path):
    """The worker command in the job script names local_directory (here under "my runs"): dask-jobqueue writes it
    unquoted, so before simcal quoted it bash split the path and no worker started (the rule then waited for the
    no-worker watchdog). The workers' log folder may not hold a space (refused), so it lies outside."""
    workdir = tmp_path / "my runs"
    workdir.mkdir()
    write_config(
        workdir,
        "sweep_models:slow_sir",
        points=4,
        delay_s=0.1,
        slurm={"log_directory": str(tmp_path / "dask-logs")},
    )
    run_snakemake(*snakemake_args(workdir), cwd=workdir, env=env(), timeout=300)
    rows = pd.read_parquet(workdir / OUTPUT).drop_duplicates("param_id")
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}, rows
    assert "started a SLURMCluster" in (workdir / LOG).read_text()
    assert (workdir / "dask-scratch").is_dir()  # the workers' local_directory, the whole path, space included
    assert_no_workers_left(job_name(workdir))


def test_failing_sweep_leaves_no_workers(slurm, tmp_path):
    write_config(tmp_path, "sweep_models:always_fails", points=4)
    run = run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=300, check=False)
    assert run.returncode != 0
    log = (tmp_path / LOG).read_text()
    # Every simulation fails: the fail-fast rule stops the sweep after its probe (the first batches here, as
    # the batch size is fixed), which covers two parameter sets.
    stopped = re.search(
        r"all (\d+) simulations of (?:the timing probe|the first batch(?:es)? \(run first as a fail-fast "
        r"probe\)) failed, so the other (\d+) were not started",
        log,
    )
    assert stopped and sum(map(int, stopped.groups())) == 4, log[-2000:]
    assert "always_fails: refusing params" in log
    assert_no_workers_left(job_name(tmp_path))


def test_on_a_worker_job_of_two_threads_only_the_simulations_that_kill_it_are_crashed(slurm, tmp_path):
    """A SLURM worker job is one process with `cores` threads: the simulation running beside a crasher dies with
    it. Run alone in a process of its own afterwards, it finishes; only the crashers are recorded as crashed."""
    crash_above = 0.36  # two of the eight design points (sobol, seed 0): the first and the last planned
    write_config(
        tmp_path, "sweep_models:crashes_late_for_high_beta", points=8, fixed={"crash_above_beta": crash_above},
        slurm={"cores": 2, "jobs": 1}, simulation={"batch_size": 1, "max_failed_fraction": 0.5},
    )  # fmt: skip
    run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=600)
    rows = pd.read_parquet(tmp_path / OUTPUT).drop_duplicates("param_id")
    outcome = rows[["beta", "status", "error"]].to_string()  # shown when an assertion fails
    crashed = rows["status"] == "crashed"
    assert crashed.any() and (~crashed).sum() >= 4, outcome
    assert (crashed == (rows["beta"] > crash_above)).all() and (rows.loc[~crashed, "status"] == "ok").all(), (
        outcome
    )
    assert (
        rows.loc[crashed, "error"].str.contains("exited with exit code 11; that process died 1 time").all()
    ), outcome
    log = (tmp_path / LOG).read_text()
    assert "running it again alone, in a process of its own" in log and "--nthreads 2" in log, log[-2000:]
    assert_no_workers_left(job_name(tmp_path))


def test_workers_past_their_lifetime_are_replaced_and_the_sweep_outlives_the_walltime(slurm, tmp_path):
    # One worker job at a time with a one-minute walltime; the sweep needs about 75 s of simulation.
    write_config(
        tmp_path, "sweep_models:slow_sir", points=25, delay_s=3.0,
        slurm={"walltime": "00:01:00", "jobs": 1}, simulation={"batch_size": 1},
    )  # fmt: skip
    began = time.monotonic()
    run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=420)
    assert time.monotonic() - began > 60
    import pandas as pd

    result = pd.read_parquet(tmp_path / OUTPUT)
    assert len(result.drop_duplicates(["param_id"])) == 25 and (result["status"] == "ok").all()
    assert "--lifetime 37s --lifetime-stagger 3s" in (tmp_path / LOG).read_text()
    name = job_name(tmp_path)
    assert_no_workers_left(name)
    jobs = finished_jobs(name, at_least=2)  # the worker was replaced
    assert not [j for j in jobs if j["State"].startswith("TIMEOUT")], jobs  # retired before the walltime
    assert all(int(j["ElapsedRaw"]) < 60 for j in jobs), jobs


def test_no_worker_watchdog_fails_the_rule_when_no_job_starts(slurm, tmp_path):
    write_config(
        tmp_path, "sweep_models:slow_sir", points=4, delay_s=0.1,
        slurm={"job_extra_directives": ["--begin=now+1hour"]}, simulation={"no_worker_timeout_s": 10},
    )  # fmt: skip
    began = time.monotonic()
    run = run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=300, check=False)
    assert run.returncode != 0 and time.monotonic() - began < 120
    log = (tmp_path / LOG).read_text()
    assert re.search(
        r"NoWorkers: no Dask worker has been connected for \d+ s \(simulation.no_worker_timeout_s = 10\)", log
    )
    assert "squeue --me" in log
    assert_no_workers_left(job_name(tmp_path))


def test_terminated_sweep_leaves_no_workers(slurm, tmp_path):
    """SIGTERM to every process of the driver, as SLURM sends it at the driver job's time limit or scancel: the
    sweep stops mid-way (its rule's own process closes the cluster, cancelling the worker jobs) instead of running
    on. A SIGTERM to Snakemake alone is no test of this: Snakemake waits for its running jobs to finish, and the
    sweep then closed its cluster as on success (it did so here, a minute later)."""
    write_config(tmp_path, "sweep_models:slow_sir", points=32, delay_s=3)
    run = start_snakemake(tmp_path)
    try:
        name = job_name(tmp_path)
        wait_until(lambda: bool(queued(name, "RUNNING")), 120, "a running Dask worker job")
        time.sleep(3)  # let the sweep get going
        os.killpg(run.pid, signal.SIGTERM)  # snakemake and the rule's process, a session of their own
        assert run.wait(timeout=120) != 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    # Terminated before the end: the sweep's output was never written (its finished parts stay for a resume).
    assert not (tmp_path / OUTPUT).exists()
    log = (tmp_path / LOG).read_text()
    assert (
        "simulate stopped by SIGTERM (a walltime, scancel or pod deletion): its Dask cluster was closed"
        in log
    )
    assert "Traceback" not in log, log[-3000:]
    assert "Finished jobid: 1 (Rule: calibration_simulate)" not in (tmp_path / "console.txt").read_text()
    assert_no_workers_left(name)


def test_sigkilled_driver_leaves_no_worker_job_pending_or_running(slurm, tmp_path):
    # Two jobs of 60% of the node's memory each: one runs, the other stays pending. death_timeout is short, but
    # the reaper should cancel both much sooner.
    job_memory_mb = int(node_memory_mb() * 0.6)
    write_config(
        tmp_path, "sweep_models:slow_sir", points=32, delay_s=3,
        slurm={"memory": f"{job_memory_mb}MB", "death_timeout": 10, "jobs": 2},
    )  # fmt: skip
    run = start_snakemake(tmp_path)
    try:
        name = job_name(tmp_path)
        # Other users' jobs may hold the node for a while; once ours runs, its 5 GB twin must be pending.
        wait_until(lambda: bool(queued(name, "RUNNING")), 300, "a running Dask worker job")
        # Adaptive scaling may submit the twin a moment after the first job starts.
        wait_until(lambda: bool(queued(name, "PENDING")), 60, "the second worker job pending")
        time.sleep(2)
        os.killpg(run.pid, signal.SIGKILL)  # snakemake and the wrapper's python: no cleanup code runs
        run.wait(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert_no_workers_left(name, within_s=10 + 10)
    states = {j["State"].split()[0] for j in finished_jobs(name)}
    assert states <= {"CANCELLED", "COMPLETED", "FAILED"}, states


def test_submit_and_gather_run_on_slurm_workers(slurm, tmp_path, caplog, monkeypatch):
    from simcal.api import SimulationService
    from simcal.contract import ContractError

    models = Path(__file__).parent / "slurm" / "dask"  # sweep_models, importable here and on the workers
    monkeypatch.syspath_prepend(str(models))
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(models), os.environ.get("PYTHONPATH")]))
    )
    caplog.set_level(logging.INFO, logger="simcal")
    options = {
        "account": ACCOUNT, "queue": "cpu", "cores": 1, "memory": "1GB", "walltime": "00:05:00", "interface": "lo",
        "jobs": 1, "log_directory": str(tmp_path / "dask-logs"), "local_directory": str(tmp_path / "dask-scratch"),
    }  # fmt: skip
    with SimulationService(backend="slurm", backend_options=options) as service:
        # An out-of-space value is refused at submit, naming the parameter, as a sweep refuses it before it starts.
        with pytest.raises(ContractError, match="parameter 'beta' = -1 is below its lower bound"):
            service.submit("simcal.models.sir:simulate", {"beta": -1, "gamma": 0.1, "days": 10})
        futures = [
            service.submit("simcal.models.sir:simulate", {"beta": 0.2, "gamma": 0.1, "days": 10}),
            service.submit("sweep_models:always_fails", {"beta": -1}),
        ]
        rows = service.gather(futures)
    assert list(rows.drop_duplicates("param_id")["status"]) == ["ok", "failed"]
    # Raised on a worker: a failed row, as in a sweep.
    assert rows["error"].iloc[-1].startswith("RuntimeError: always_fails: refusing params")
    assert len(rows[rows["status"] == "ok"]) == 10
    name = re.search(r"jobs named (dask-worker-[0-9a-f]+)", caplog.text).group(1)
    assert_no_workers_left(name)
    assert finished_jobs(name), "no worker ran as a SLURM job"
