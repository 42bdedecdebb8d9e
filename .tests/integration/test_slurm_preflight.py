"""The checks before submission (scripts/slurm_preflight.py) against the real local SLURM.

The preflight script as a Pitzer user runs it, and `snakemake --profile profiles/slurm` with a wrong account,
partition, GPU type or a MinJobAge too short for squeue status polling with the status-check delay in effect
(the local override's 2 s, or one raised on the command line): the run must stop before any job is submitted
and name the setting and its fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from slurm.slurmkit import ACCOUNT, LOCAL, profile_env, require_slurm, snakemake_args
from testkit import REPO, run_snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
PREFLIGHT = REPO / "scripts" / "slurm_preflight.py"
BASIC = LOCAL / "basic" / "Snakefile"


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


def preflight(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PREFLIGHT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={
            **os.environ,
            "OSC_PROJECT": ACCOUNT,
            "SNAKEMAKE_SLURM_PARTITIONS": str(LOCAL / "partitions.yaml"),
        }
        | env,
    )


def test_preflight_passes_the_settings_and_catches_a_torch_that_cannot_use_the_gpu(slurm):
    result = preflight()
    partitions = yaml.safe_load((LOCAL / "partitions.yaml").read_text())["partitions"]
    for name in partitions:
        assert f"ok    sbatch --test-only -A {ACCOUNT} -p {name}\n" in result.stdout, result.stdout
    assert f"ok    sbatch --test-only -A {ACCOUNT} -p gpu --gpus=v100:1\n" in result.stdout
    assert f"ok    sbatch --test-only -A {ACCOUNT} -p gpu-exp --gpus=v100:1 -C v100-32g\n" in result.stdout
    assert "ok    MinJobAge >= 3 x 40 s" in result.stdout
    # The GPU node check ran select_device's own check in a job step holding a (fake) GPU, with the CPU wheel.
    assert "torch.cuda.get_arch_list(): []" in result.stdout
    assert "FAIL  torch on a GPU node of gpu" in result.stdout
    assert "this job holds a GPU (CUDA_VISIBLE_DEVICES=0)" in result.stdout
    assert "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126" in result.stdout
    assert "FAIL  submission settings" not in result.stdout
    assert result.returncode == 1


def write_partitions(tmp_path, partitions: dict):
    path = tmp_path / "partitions.yaml"
    path.write_text(yaml.safe_dump({"partitions": partitions}))
    return str(path)


def scontrol_reporting_min_job_age(tmp_path, seconds: int) -> str:
    """The real scontrol, with MinJobAge in `show config` rewritten: a cluster configured with that MinJobAge."""
    shim = tmp_path / "shim-bin"
    shim.mkdir()
    (shim / "scontrol").write_text(
        f'#!/bin/sh\n"{shutil.which("scontrol")}" "$@" | sed "s/^MinJobAge .*/MinJobAge               = {seconds} sec/"\n'
    )
    (shim / "scontrol").chmod(0o755)
    return f"{shim}{os.pathsep}{os.environ['PATH']}"


BAD_SETTINGS = {
    "account": (
        lambda tmp_path: {"OSC_PROJECT": "pas9999"},
        ["account 'pas9999' (OSC_PROJECT) is refused", "Invalid account", "export OSC_PROJECT="],
    ),
    "partition": (
        lambda tmp_path: {
            "SNAKEMAKE_SLURM_PARTITIONS": write_partitions(tmp_path, {"cpu": {"max_gpu": 0}, "gpu-typo": {}})
        },
        ["partition 'gpu-typo' (from ", "Invalid partition name", "SNAKEMAKE_SLURM_PARTITIONS"],
    ),
    "gpu type not on the cluster": (
        lambda tmp_path: {
            "SNAKEMAKE_SLURM_GPU_MODEL": "a100",
            "SNAKEMAKE_SLURM_PARTITIONS": write_partitions(
                tmp_path, {"gpu": {"max_gpu": 2, "available_gpu_models": ["a100"]}}
            ),
        },
        ["GPU request --gpus=a100:1 on partition 'gpu' is refused", "export SNAKEMAKE_SLURM_GPU_MODEL"],
    ),
    "gpu type not in the partition file": (
        lambda tmp_path: {"SNAKEMAKE_SLURM_GPU_MODEL": "a100"},
        ["SNAKEMAKE_SLURM_GPU_MODEL='a100' is not in available_gpu_models", "(v100)"],
    ),
    "node feature": (
        lambda tmp_path: {
            "SNAKEMAKE_SLURM_PARTITIONS": write_partitions(
                tmp_path, {"gpu-exp": {"max_gpu": 2, "available_constraints": ["v100-64g"]}}
            )
        },
        ["node feature 'v100-64g' (available_constraints of 'gpu-exp'", "Invalid feature specification"],
    ),
    # Against the delay in effect: the local override's 2 s (.tests/integration/slurm/profile), not 40 s.
    "MinJobAge": (
        lambda tmp_path: {"PATH": scontrol_reporting_min_job_age(tmp_path, 5)},
        ["MinJobAge is 5 s, below 3 x slurm-init-seconds-before-status-checks (2) = 6 s", "sacct"],
    ),
    # The local cluster's MinJobAge (300 s) passes 3 x 40 s, not 3 x the 120 s given on the command line.
    "status-check delay on the command line": (
        lambda tmp_path: {},
        [
            "MinJobAge is 300 s, below 3 x slurm-init-seconds-before-status-checks (120) = 360 s",
            "lower slurm-init-seconds-before-status-checks to 100 or less",
        ],
    ),
}
COMMAND_LINE = {
    "status-check delay on the command line": ("--slurm-init-seconds-before-status-checks", "120")
}


@pytest.mark.parametrize("setting", BAD_SETTINGS)
def test_a_bad_setting_stops_the_run_before_any_job_is_submitted(slurm, tmp_path, setting):
    env_for, expected = BAD_SETTINGS[setting]
    env = profile_env(tmp_path)
    env.update(env_for(tmp_path))
    started = time.time()
    arguments = snakemake_args(tmp_path, BASIC, *COMMAND_LINE.get(setting, ()))
    run = run_snakemake(*arguments, cwd=tmp_path, env=env, check=False, timeout=300)
    assert run.returncode != 0
    assert "profiles/slurm: no job submitted, these settings would fail" in run.stdout, run.stdout[-3000:]
    for text in expected:
        assert text in run.stdout, run.stdout[-3000:]
    assert "submitted with SLURM jobid" not in run.stdout
    assert not (tmp_path / "cpu.txt").exists()
    # Nothing reached the accounting database from this working directory.
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started - 1))
    workdirs = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-a", "-S", since, "-o", "WorkDir"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert str(tmp_path) not in workdirs


def test_checks_can_be_switched_off_for_a_dry_run(slurm, tmp_path):
    env = profile_env(tmp_path, OSC_PROJECT="pas9999", SNAKEMAKE_SLURM_CHECKS="off")
    dry = run_snakemake(*snakemake_args(tmp_path, BASIC, "-n"), cwd=tmp_path, env=env, timeout=300)
    assert "slurm_account=pas9999" in dry.stdout


def test_preflight_defaults_match_the_profile(monkeypatch, tmp_path):
    import yte

    monkeypatch.setenv("OSC_PROJECT", ACCOUNT)
    monkeypatch.setenv("SNAKEMAKE_SCRATCH", str(tmp_path))
    monkeypatch.setenv("SNAKEMAKE_SLURM_CHECKS", "off")
    profile = yte.process_yaml(
        (REPO / "profiles" / "slurm" / "profile.yaml").read_text(), require_use_yte=True
    )
    sys.path.insert(0, str(PREFLIGHT.parent))
    try:
        import slurm_preflight
    finally:
        sys.path.remove(str(PREFLIGHT.parent))
    assert profile["slurm-init-seconds-before-status-checks"] == slurm_preflight.profile_init_seconds()
