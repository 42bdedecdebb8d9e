"""The simulate wrapper's Dask `slurm` backend on the real local SLURM: workers are sbatch jobs, and none is left
in the queue after the rule ends, whether it succeeded, failed or was terminated (SIGTERM)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from slurm.slurmkit import ACCOUNT, LOCAL, queued_jobs, require_slurm, wait_until
from testkit import run_snakemake, venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

SNAKEFILE = LOCAL / "dask" / "Snakefile"
WORKER_JOB = "dask-worker"  # dask-jobqueue's default job name


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


@pytest.fixture
def no_workers_before(slurm) -> None:
    assert queued_jobs(WORKER_JOB) == [], "Dask worker jobs from an earlier run are still queued"


def write_config(workdir: Path, model: str, points: int, delay_s: float = 0.0) -> None:
    fixed = {"population": 2000, "initial_infected": 5, "days": 30}
    if delay_s:
        fixed["delay_s"] = delay_s
    config = {
        "calibration": {
            "name": "sir_on_slurm",
            "model": model,
            "fixed": fixed,
            "parameters": {"beta": {"low": 0.2, "high": 0.4}, "gamma": {"low": 0.05, "high": 0.15}},
            "sweep": {"enabled": True, "design": "sobol", "n": points, "replicates": 1, "seed": 0},
            "simulation": {"batch_size": 2, "max_failed_fraction": 0.05, "retries": 0},
            "threads": 1,
            "backend": {
                "kind": "slurm",
                "slurm": {
                    "account": ACCOUNT,
                    "queue": "cpu",
                    "cores": 1,
                    "memory": "1GB",
                    "walltime": "00:10:00",
                    "interface": "lo",
                    "jobs": 2,
                    "local_directory": str(workdir / "dask-scratch"),
                    "log_directory": str(workdir / "dask-logs"),
                },
            },
        }
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


def env() -> dict[str, str]:
    # Workers import the test models: sbatch exports this environment to them.
    return {"PYTHONPATH": f"{LOCAL / 'dask'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def snakemake_args(workdir: Path) -> list[str]:
    return ["--snakefile", str(SNAKEFILE), "--directory", str(workdir), "--cores", "2"]


def worker_jobs_since(start: str) -> list[str]:
    proc = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-S", start, "--name", WORKER_JOB, "-o", "JobID,Account,Partition"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout.splitlines()


def assert_no_workers_left() -> None:
    # cluster.close() runs scancel before the rule returns; a cancelled job may show COMPLETING for a moment.
    wait_until(lambda: not queued_jobs(WORKER_JOB), 20, "the Dask worker jobs to leave the queue")


def test_sweep_runs_on_slurm_workers_and_leaves_none(no_workers_before, tmp_path):
    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    write_config(tmp_path, "sweep_models:slow_sir", points=8, delay_s=0.2)
    run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=300)
    assert (tmp_path / "results/calibration/sir_on_slurm/sweep/simulations.parquet").exists()
    log = (tmp_path / "logs/calibration/sir_on_slurm/simulate.log").read_text()
    assert "started a SLURMCluster" in log and f"-A {ACCOUNT}" in log
    workers = worker_jobs_since(start)
    assert workers, "no Dask worker ran as a SLURM job"
    assert all(f"|{ACCOUNT}|cpu" in row for row in workers), workers
    assert_no_workers_left()


def test_failing_sweep_leaves_no_workers(no_workers_before, tmp_path):
    write_config(tmp_path, "sweep_models:always_fails", points=4)
    run = run_snakemake(*snakemake_args(tmp_path), cwd=tmp_path, env=env(), timeout=300, check=False)
    assert run.returncode != 0
    assert "always_fails" in (tmp_path / "logs/calibration/sir_on_slurm/simulate.log").read_text()
    assert_no_workers_left()


def test_terminated_sweep_leaves_no_workers(no_workers_before, tmp_path):
    write_config(tmp_path, "sweep_models:slow_sir", points=32, delay_s=3)
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        run = subprocess.Popen(
            [venv_bin("snakemake"), *snakemake_args(tmp_path)],
            cwd=tmp_path,
            env={**os.environ, **env()},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        running = lambda: bool(  # noqa: E731
            subprocess.run(
                ["squeue", "-h", "-n", WORKER_JOB, "-t", "RUNNING", "-o", "%i"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.split()
        )
        wait_until(running, 120, "a running Dask worker job")
        time.sleep(3)  # let the sweep get going
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=120) != 0
    finally:
        if run.poll() is None:
            run.kill()
    # Terminated before the end (finished parts may stay for a resume; the rule did not complete).
    assert "(100%) done" not in console.read_text()
    assert_no_workers_left()
