"""The checks before submission (scripts/slurm_preflight.py) against the real local SLURM.

The preflight script as a Pitzer user runs it, and `snakemake --profile profiles/slurm` with a wrong account, an
account refused on some partitions only, a wrong partition, GPU type or a MinJobAge too short for squeue status
polling with the status-check delay in effect (the local override's 2 s, or one raised on the command line): the
run must stop before any job is submitted and name the setting (or the partition) and its fix.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import time

import pytest
import yaml
from slurm.slurmkit import ACCOUNT, LOCAL, profile_env, require_slurm, snakemake_args, wait_until
from testkit import REPO, require, run_snakemake

pytestmark = [pytest.mark.integration, pytest.mark.slurm]
PREFLIGHT = REPO / "scripts" / "slurm_preflight.py"
BASIC = LOCAL / "basic" / "Snakefile"
# A project without GPU-partition access: associated with partition cpu only, so SLURM refuses it on gpu and gpu-exp.
CPU_ONLY_ACCOUNT = "pas0001"
# SLURM's refusal of an account on a partition (ESLURM_INVALID_ACCOUNT).
INVALID_ACCOUNT = "Invalid account or account/partition combination specified"


@pytest.fixture(scope="module")
def slurm() -> None:
    require_slurm()


def sacctmgr(*args: str, admin: bool = False) -> subprocess.CompletedProcess:
    # Changes need a SLURM admin: root, else passwordless sudo (CI runs the tests as the user who called sudo).
    prefix = ["sudo", "-n"] if admin and os.geteuid() != 0 and shutil.which("sudo") else []
    return subprocess.run([*prefix, "sacctmgr", "-i", *args], capture_output=True, text=True, timeout=60)


def accepted_on(account: str, partition: str) -> bool:
    flags = ["-A", account, "-p", partition, "-t", "1", "-n", "1", "--mem=100", "--wrap", "true"]
    return subprocess.run(["sbatch", "--test-only", *flags], capture_output=True, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def cpu_only_account(slurm):
    """CPU_ONLY_ACCOUNT with the test user's association on partition cpu only; removed again if made here."""
    user = pwd.getpwuid(os.getuid()).pw_name

    def partitions_of_association() -> list[str]:
        query = ("show", "assoc", f"account={CPU_ONLY_ACCOUNT}", f"user={user}", "format=partition")
        return sacctmgr("-n", "-P", *query).stdout.split()

    created = not partitions_of_association()
    if created:
        add_account = sacctmgr(
            "add", "account", CPU_ONLY_ACCOUNT, "Description=cpu only", "Organization=test", admin=True
        )
        add_user = sacctmgr("add", "user", user, f"Account={CPU_ONLY_ACCOUNT}", "Partition=cpu", admin=True)
        require(
            partitions_of_association() == ["cpu"],
            f"an account associated with partition cpu only ({add_account.stderr}{add_user.stderr})".strip(),
            f"as a SLURM admin: sacctmgr -i add account {CPU_ONLY_ACCOUNT}; "
            f"sacctmgr -i add user {user} account={CPU_ONLY_ACCOUNT} partition=cpu",
        )
    assert partitions_of_association() == ["cpu"], f"{CPU_ONLY_ACCOUNT} exists with other associations"
    # slurmctld learns new associations from slurmdbd: wait until it accepts the account on cpu.
    wait_until(lambda: accepted_on(CPU_ONLY_ACCOUNT, "cpu"), 30, f"{CPU_ONLY_ACCOUNT} accepted on cpu")
    yield CPU_ONLY_ACCOUNT
    if created:
        sacctmgr("delete", "user", user, f"account={CPU_ONLY_ACCOUNT}", admin=True)
        sacctmgr("delete", "account", CPU_ONLY_ACCOUNT, admin=True)


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


def test_preflight_names_the_partitions_an_account_may_not_use(cpu_only_account):
    result = preflight("--no-gpu-node", OSC_PROJECT=cpu_only_account)
    # SLURM's own text follows the diagnosis (sbatch --test-only prefixes it with "allocation failure:").
    assert (
        f"- account '{cpu_only_account}' (OSC_PROJECT) may not use partitions 'gpu', 'gpu-exp' "
        f"(accepted on 'cpu'): "
    ) in result.stdout, result.stdout
    assert (
        f"{INVALID_ACCOUNT}. Fix: ask OSC (oschelp@osc.edu) to give project {cpu_only_account} access to "
        f"gpu, gpu-exp; or keep jobs off gpu, gpu-exp"
    ) in result.stdout
    assert "point SNAKEMAKE_SLURM_PARTITIONS at a copy without gpu, gpu-exp" in result.stdout
    # Both GPU partitions are closed to it: leaving them out is no way to run the GPU rules.
    assert f"max_gpu > 0 ('gpu', 'gpu-exp'), none of which accepts {cpu_only_account}" in result.stdout
    # The account is a valid project: OSC_PROJECT is not to blame.
    assert "export OSC_PROJECT=" not in result.stdout
    assert "accepted on no partition" not in result.stdout
    assert result.stdout.count(f"- account '{cpu_only_account}'") == 1
    assert result.returncode == 1


def test_preflight_blames_osc_project_for_an_account_refused_on_every_partition(slurm):
    result = preflight("--no-gpu-node", OSC_PROJECT="pas9999")
    assert (
        "- account 'pas9999' (OSC_PROJECT) is refused on 'cpu', 'gpu', 'gpu-exp' and accepted on no partition "
        f"of {LOCAL / 'partitions.yaml'}: "
    ) in result.stdout, result.stdout
    assert f"{INVALID_ACCOUNT}. Fix: export OSC_PROJECT=<a project you belong to>" in result.stdout
    assert "may not use partition" not in result.stdout
    assert result.stdout.count("- account 'pas9999'") == 1
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
        [
            "account 'pas9999' (OSC_PROJECT) is refused on 'cpu', 'gpu', 'gpu-exp' and accepted on no partition",
            INVALID_ACCOUNT,
            "export OSC_PROJECT=",
        ],
    ),
    "account without access to the GPU partitions": (
        lambda tmp_path: {"OSC_PROJECT": CPU_ONLY_ACCOUNT},
        [
            f"account '{CPU_ONLY_ACCOUNT}' (OSC_PROJECT) may not use partitions 'gpu', 'gpu-exp' (accepted on 'cpu')",
            INVALID_ACCOUNT,
            f"ask OSC (oschelp@osc.edu) to give project {CPU_ONLY_ACCOUNT} access to gpu, gpu-exp",
        ],
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
FIXTURES = {"account without access to the GPU partitions": "cpu_only_account"}


@pytest.mark.parametrize("setting", BAD_SETTINGS)
def test_a_bad_setting_stops_the_run_before_any_job_is_submitted(slurm, tmp_path, setting, request):
    if setting in FIXTURES:
        request.getfixturevalue(FIXTURES[setting])
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
