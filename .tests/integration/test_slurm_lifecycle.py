"""profiles/slurm on the local SLURM when a run is interrupted: Ctrl-C of the driver, a job past its time limit, and
a GPU job the profile refuses before submission while another job runs.

Every run uses the real Pitzer profile plus the small local override (timing and queue-size keys only), as in
test_slurm_profile.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import pytest
from slurm.slurmkit import (
    ACCOUNT,
    LOCAL,
    profile_env,
    require_slurm,
    rule_of,
    run_on_slurm,
    sacct,
    snakemake_args,
    submitted_job_ids,
    wait_until,
)
from testkit import venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
ACTIVE_STATES = "PENDING,RUNNING,SUSPENDED,COMPLETING,CONFIGURING"


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


def job_states(job_ids: list[str]) -> dict[str, str]:
    proc = subprocess.run(
        ["squeue", "-h", "-j", ",".join(job_ids), "-t", ACTIVE_STATES, "-o", "%i %T"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return dict(line.split() for line in proc.stdout.splitlines())


def test_ctrl_c_of_the_driver_cancels_its_running_jobs(slurm, tmp_path):
    console = tmp_path / "console.txt"
    with console.open("w") as out:
        driver = subprocess.Popen(
            [venv_bin("snakemake"), *snakemake_args(tmp_path, LOCAL / "sigint" / "Snakefile")],
            cwd=tmp_path,
            env={**os.environ, **profile_env(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
            # A shell without job control starts background commands with SIGINT ignored; a terminal does not.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        wait_until(lambda: len(submitted_job_ids(console.read_text())) == 2, 120, "both submissions")
        job_ids = submitted_job_ids(console.read_text())
        wait_until(lambda: "RUNNING" in job_states(job_ids).values(), 120, "a running job")
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=120) != 0
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "Terminating processes on user request" in console.read_text()
    # scancel is immediate; the processes get KillWait (5 s locally) before SIGKILL.
    wait_until(lambda: not job_states(job_ids), 30, f"jobs {job_ids} to leave the queue")
    assert all(row["State"].startswith("CANCELLED") for row in sacct(job_ids)), sacct(job_ids)
    assert not list(tmp_path.glob("slept_*.txt"))


def test_cancel_reaches_the_jobs_the_executor_is_checking(slurm, monkeypatch):
    """The profile's cancel (scripts/slurm_cancel.py) scancels every job named after the run, also when the
    executor's active-job list is empty, as it is while Snakemake checks their status (a Ctrl-C in that window
    left the jobs running: seen in a CI-like run), and then calls the plugin's own cancel."""
    import importlib.util
    import uuid

    import snakemake_executor_plugin_slurm as plugin
    from testkit import REPO

    spec = importlib.util.spec_from_file_location("slurm_cancel", REPO / "scripts" / "slurm_cancel.py")
    slurm_cancel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(slurm_cancel)
    original = []
    monkeypatch.setattr(plugin.Executor, "cancel", lambda self: original.append(self.run_uuid))
    slurm_cancel.install()
    slurm_cancel.install()  # idempotent: one wrapper, not two

    run_uuid = str(uuid.uuid4())
    submitted = subprocess.run(
        ["sbatch", "--parsable", "--job-name", run_uuid, "-A", ACCOUNT, "-t", "5", "-o", "/dev/null", "--wrap",
         "sleep 300"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        wait_until(lambda: bool(job_states([job_id])), 30, "the job in the queue")
        executor = type("Executor", (), {"run_uuid": run_uuid, "active_jobs": []})()
        plugin.Executor.cancel(executor)
        wait_until(lambda: not job_states([job_id]), 30, f"job {job_id} to leave the queue")
        assert original == [run_uuid]  # the plugin's own cancel still runs, once
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=30)


def test_job_past_its_time_limit_is_retried_with_more_time_and_succeeds(slurm, tmp_path):
    run = run_on_slurm(tmp_path, LOCAL / "timeout" / "Snakefile", timeout=600)
    job_ids = submitted_job_ids(run.stdout)
    first, second = sacct(job_ids, settle=60)
    assert rule_of(first) == rule_of(second) == "work_95_seconds"
    assert first["State"] == "TIMEOUT", first
    assert f"SLURM-job '{first['JobID']}' failed, SLURM status is: 'TIMEOUT'" in run.stdout
    assert second["State"] == "COMPLETED", second
    limits, elapsed = zip(
        *(
            line.split("|")
            for line in subprocess.run(
                ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", "TimelimitRaw,ElapsedRaw"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.split()
        ),
        strict=True,
    )
    assert limits == ("1", "2")  # minutes: runtime = attempt
    assert int(elapsed[0]) >= 60, elapsed  # the first attempt ran its whole minute before SLURM ended it
    assert (tmp_path / "worked.txt").read_text().strip() == "done"
    # The retry continued the killed attempt's work instead of starting over. How many seconds the first attempt
    # counted depends on the load (the inner Snakemake's start-up and each `sleep 1` loop take part of the minute:
    # 54 of 60 on a loaded CI machine), so the check is that it carried work over (and less than the rule's 95 s).
    starts = re.findall(r"attempt starts after (\d+) s of work", (tmp_path / "attempts.txt").read_text())
    assert len(starts) == 2 and starts[0] == "0" and 0 < int(starts[1]) < 95, starts


REFUSED_GPU_JOB = """
rule all:
    input:
        "slept.txt",
        "gpu.txt",


rule sleep_long:
    output:
        "slept.txt",
    log:
        "logs/sleep_long.log",
    resources:
        mem_mb=1000,
        runtime=15,
    shell:
        "sleep 600 > {log} 2>&1 && touch {output}"


rule quick:
    output:
        "quick.txt",
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "touch {output}"


rule on_gpu:
    input:
        "quick.txt",
    output:
        "gpu.txt",
    resources:
        mem_mb=1000,
        runtime=5,
        gpu=1,
    shell:
        "touch {output}"
"""


def test_a_gpu_job_refused_for_want_of_a_gpu_partition_stops_the_run_and_its_jobs_are_cancelled(
    slurm, tmp_path
):
    """profiles/slurm/README.md: a GPU job with no GPU partition in the partition file "is refused just before it
    is submitted, with the rule, the partition file and what to set ... The refusal stops the run, and Snakemake
    cancels the jobs it had already submitted". Here a long CPU job runs when the GPU job becomes ready (after a
    quick one), on a partition file with the CPU partition only."""
    (tmp_path / "Snakefile").write_text(REFUSED_GPU_JOB)
    cpu_only = tmp_path / "cpu-only.yaml"
    cpu_only.write_text("partitions:\n  cpu:\n    max_gpu: 0\n    max_threads: 2\n")
    proc = run_on_slurm(
        tmp_path, tmp_path / "Snakefile", timeout=300, check=False, SNAKEMAKE_SLURM_PARTITIONS=str(cpu_only)
    )
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert "profiles/slurm: rule on_gpu asks for " in proc.stdout, proc.stdout[-4000:]
    assert f"the partition file {cpu_only} has no partition with GPUs" in proc.stdout, proc.stdout[-4000:]
    found = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", proc.stdout)
    submitted = dict(found)
    assert sorted(submitted.values()) == ["quick", "sleep_long"], proc.stdout[-4000:]
    (long_job,) = [job for job, rule in submitted.items() if rule == "sleep_long"]
    try:
        # the run ended before the long job could: it must not be left running until its time limit
        wait_until(lambda: not job_states([long_job]), 30, f"job {long_job} to leave the queue")
    finally:
        subprocess.run(["scancel", *submitted], capture_output=True, timeout=30)  # a failed check leaves none
    rows = sacct([long_job])
    assert rows and all(row["State"].startswith("CANCELLED") for row in rows), rows
    assert not (tmp_path / "slept.txt").exists() and not (tmp_path / "gpu.txt").exists()
