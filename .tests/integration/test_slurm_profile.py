"""profiles/slurm against a real single-node SLURM (scripts/slurm-up.sh): sbatch, sacct, GRES, memory limits.

Every run uses the real Pitzer profile plus the small local override in .tests/integration/slurm/profile (timing
and queue-size keys only) and the profile's own parameters (OSC_PROJECT, SNAKEMAKE_SCRATCH, SNAKEMAKE_SLURM_PARTITIONS).
"""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml
from slurm.slurmkit import (
    ACCOUNT,
    FAILED_STATES,
    LOCAL,
    PROFILE,
    profile_env,
    require_slurm,
    rule_of,
    run_on_slurm,
    sacct,
    snakemake_args,
    submitted_job_ids,
    wait_until,
)
from testkit import run_snakemake, venv_bin

pytestmark = [pytest.mark.integration, pytest.mark.slurm]


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


# --- the profile itself (no cluster needed: dry runs) ---------------------------------------------------------


def test_profile_requires_an_account_and_rejects_hyphenated_gpu_types(tmp_path):
    snakefile = LOCAL / "basic" / "Snakefile"
    no_account = run_snakemake(
        *snakemake_args(tmp_path, snakefile, "-n"),
        cwd=tmp_path,
        env=profile_env(tmp_path, OSC_PROJECT=""),
        check=False,
        timeout=120,
    )
    assert no_account.returncode != 0
    assert "OSC_PROJECT is not set" in no_account.stdout

    hyphen = run_snakemake(
        *snakemake_args(tmp_path, snakefile, "-n"),
        cwd=tmp_path,
        env=profile_env(tmp_path, SNAKEMAKE_SLURM_GPU_MODEL="v100-32g"),
        check=False,
        timeout=120,
    )
    assert hyphen.returncode != 0
    assert "SNAKEMAKE_SLURM_GPU_MODEL='v100-32g'" in hyphen.stdout

    dry = run_snakemake(
        *snakemake_args(tmp_path, snakefile, "-n"), cwd=tmp_path, env=profile_env(tmp_path), timeout=120
    )
    gpu_job = dry.stdout.split("rule kd_gat_train_vgae_teacher:")[1].split("rule ")[0]
    assert "slurm_account=pas0000" in gpu_job
    assert "gpu=1" in gpu_job and "gpu_model=v100" in gpu_job
    cpu_job = dry.stdout.split("rule cpu_step:")[1].split("rule ")[0]
    assert "gpu" not in cpu_job.split("resources:")[1].splitlines()[0]


# --- real jobs --------------------------------------------------------------------------------------------------


def test_partition_generator_sees_the_cluster(slurm):
    proc = subprocess.run(
        [venv_bin("generate-slurm-partition-config")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    partitions = yaml.safe_load(proc.stdout)["partitions"]
    assert {"cpu", "gpu"} <= set(partitions)
    assert partitions["gpu"]["max_gpu"] >= 1


def test_cpu_and_gpu_jobs_get_partition_account_and_gpus(slurm, tmp_path):
    run = run_on_slurm(tmp_path, LOCAL / "basic" / "Snakefile")
    rows = {rule_of(r): r for r in sacct(submitted_job_ids(run.stdout))}
    assert set(rows) == {"cpu_step", "kd_gat_train_vgae_teacher"}
    assert all(r["Account"] == ACCOUNT and r["State"] == "COMPLETED" for r in rows.values())
    assert rows["cpu_step"]["Partition"] == "cpu"
    assert "gres/gpu" not in rows["cpu_step"]["AllocTRES"]
    assert rows["kd_gat_train_vgae_teacher"]["Partition"] == "gpu"
    assert "gres/gpu=1" in rows["kd_gat_train_vgae_teacher"]["AllocTRES"]
    # The rule saw the GPU SLURM gave it, although the jobstep strips SLURM_* variables.
    assert (tmp_path / "gpu.txt").read_text().strip() == "CUDA_VISIBLE_DEVICES=0"
    # Logs and the efficiency report land under the scratch root the profile derives from SNAKEMAKE_SCRATCH.
    assert list((tmp_path / "scratch" / "slurm_logs" / "rule_kd_gat_train_vgae_teacher").glob("*.log"))
    assert list((tmp_path / "scratch" / "efficiency_reports").glob("efficiency_report_*.csv"))


def readme_recipe_for_32gb_gpus() -> dict:
    """The YAML block of profiles/slurm/README.md that requests the 32 GB V100s."""
    readme = (PROFILE / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "v100-32g" in b]
    assert len(blocks) == 1, blocks
    return yaml.safe_load(blocks[0])


def test_readme_recipe_for_32gb_v100s_lands_on_nodes_with_the_feature(slurm, tmp_path):
    recipe = tmp_path / "gpu32-profile"
    recipe.mkdir()
    (recipe / "profile.yaml").write_text(yaml.safe_dump(readme_recipe_for_32gb_gpus()))
    run = run_on_slurm(tmp_path, LOCAL / "basic" / "Snakefile", "--profile", str(recipe))
    job_ids = submitted_job_ids(run.stdout)
    rows = {rule_of(r): r for r in sacct(job_ids)}
    gpu_job = rows["kd_gat_train_vgae_teacher"]
    assert gpu_job["State"] == "COMPLETED" and gpu_job["Partition"] == "gpu-exp", gpu_job
    assert "gres/gpu=1" in gpu_job["AllocTRES"], gpu_job
    constraints = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", gpu_job["JobID"], "-o", "Constraints"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    assert constraints == "v100-32g"
    assert rows["cpu_step"]["Partition"] == "cpu"


def test_job_over_its_memory_is_killed_then_retried_with_more(slurm, tmp_path):
    run = run_on_slurm(tmp_path, LOCAL / "memory" / "Snakefile")
    rows = sacct(submitted_job_ids(run.stdout))
    assert [rule_of(r) for r in rows] == ["grow", "grow"], rows
    first, second = rows
    assert first["State"].split()[0] in FAILED_STATES
    assert first["ReqMem"] == "1000M"
    assert second["State"] == "COMPLETED"
    assert second["ReqMem"] == "2000M"
    first_log = tmp_path / "scratch" / "slurm_logs" / "rule_grow" / f"{first['JobID']}.log"
    assert "exceeded memory limit" in first_log.read_text()
    assert (tmp_path / "grown.txt").read_text().strip() == str(1200 * 2**20)


def test_cancelled_job_fails_the_run_and_rerun_resumes_from_checkpoint(slurm, tmp_path):
    snakefile = LOCAL / "resume" / "Snakefile"
    checkpoint = tmp_path / "checkpoints" / "train_slowly" / "last.txt"
    console = tmp_path / "first-run.txt"
    with console.open("w") as out:
        first = subprocess.Popen(
            [venv_bin("snakemake"), *snakemake_args(tmp_path, snakefile, "--retries", "0")],
            cwd=tmp_path,
            env={**os.environ, **profile_env(tmp_path)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(lambda: submitted_job_ids(console.read_text()), 120, "the job submission")
        job_id = submitted_job_ids(console.read_text())[0]
        wait_until(lambda: checkpoint.exists() and int(checkpoint.read_text()) >= 3, 120, "three epochs")
        subprocess.run(["scancel", job_id], check=True, timeout=30)
        assert first.wait(timeout=180) != 0
    finally:
        if first.poll() is None:
            first.kill()
    output = console.read_text()
    assert f"SLURM-job '{job_id}' failed, SLURM status is: 'CANCELLED'" in output
    assert not (tmp_path / "model.txt").exists()
    done_before = int(checkpoint.read_text())
    # Why the profile polls squeue: sacct says "CANCELLED by <uid>", which plugin 2.8.0 does not treat as failed.
    assert sacct([job_id])[0]["State"].startswith("CANCELLED by")

    rerun = run_on_slurm(tmp_path, snakefile)
    assert submitted_job_ids(rerun.stdout), "the rerun submitted nothing"
    log = (tmp_path / "logs" / "train_slowly.log").read_text()
    assert f"resumed from epoch {done_before}" in log
    assert (tmp_path / "model.txt").read_text().startswith("trained 12 epochs")


def test_squeue_status_fallback_finishes_without_accounting(slurm, tmp_path):
    # A sacct that fails like one on a cluster without accounting storage: the run must still finish, by squeue.
    fake_bin = tmp_path / "no-accounting-bin"
    fake_bin.mkdir()
    fake_sacct = fake_bin / "sacct"
    fake_sacct.write_text("#!/bin/sh\necho 'Slurm accounting storage is disabled' >&2\nexit 1\n")
    fake_sacct.chmod(0o755)
    started = time.monotonic()
    run = run_on_slurm(
        tmp_path,
        LOCAL / "basic" / "Snakefile",
        "--slurm-status-command",
        "squeue",
        timeout=240,
        PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}",
    )
    assert time.monotonic() - started < 240
    assert "Finished jobid" in run.stdout
    assert (tmp_path / "gpu.txt").exists()
