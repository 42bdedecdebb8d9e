"""Helpers for the tests that drive the local single-node SLURM (scripts/slurm-up.sh) with profiles/slurm.

Every Snakemake run uses the real Pitzer profile plus the small local override in ./profile (timing and
queue-size keys only) and the profile's own parameters (OSC_PROJECT, SNAKEMAKE_SCRATCH, SNAKEMAKE_SLURM_PARTITIONS).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from testkit import REPO, require, run_snakemake, venv_bin

PROFILE = REPO / "profiles" / "slurm"
LOCAL = Path(__file__).resolve().parent
ACCOUNT = "pas0000"
FAILED_STATES = {"FAILED", "OUT_OF_MEMORY", "CANCELLED", "NODE_FAIL", "TIMEOUT"}
SACCT_FIELDS = ("JobID", "JobName", "Comment", "State", "Account", "Partition", "AllocTRES", "ReqMem")


def cluster_answers() -> bool:
    if not shutil.which("sbatch"):
        return False
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and " up" in proc.stdout


def require_slurm() -> None:
    require(
        cluster_answers(), "SLURM", "run scripts/ci-setup-slurm.sh (or scripts/slurm-up.sh when installed)"
    )


def profile_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The profile's parameters for the local cluster, and the venv first on PATH (wrappers call its tools)."""
    scratch = workdir / "scratch"
    return {
        "OSC_PROJECT": ACCOUNT,
        "SNAKEMAKE_SCRATCH": str(scratch),
        "SNAKEMAKE_SLURM_PARTITIONS": str(LOCAL / "partitions.yaml"),
        "SNAKEMAKE_OUTPUT_CACHE": str(scratch / "cache"),
        "PATH": f"{Path(venv_bin('snakemake')).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


def snakemake_args(workdir: Path, snakefile: Path, *args: str) -> list[str]:
    return [
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        "--profile",
        str(PROFILE),
        "--profile",
        str(LOCAL / "profile"),
        *args,
    ]


def run_on_slurm(workdir: Path, snakefile: Path, *args: str, timeout: int = 420, check: bool = True, **env):
    return run_snakemake(
        *snakemake_args(workdir, snakefile, *args),
        cwd=workdir,
        env=profile_env(workdir, **env),
        timeout=timeout,
        check=check,
    )


def submitted_job_ids(output: str) -> list[str]:
    return re.findall(r"submitted with SLURM jobid (\d+)", output)


def sacct(job_ids: list[str], settle: float = 30.0) -> list[dict[str, str]]:
    """Accounting records of these jobs, waiting until slurmdbd has all of them in a final state."""
    assert job_ids, "no SLURM job ids to look up"
    deadline = time.monotonic() + settle
    while True:
        proc = subprocess.run(
            ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "-o", ",".join(SACCT_FIELDS)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        rows = [dict(zip(SACCT_FIELDS, line.split("|"), strict=True)) for line in proc.stdout.splitlines()]
        final = [r for r in rows if r["State"].split()[0] in FAILED_STATES | {"COMPLETED"}]
        if proc.returncode == 0 and len(final) == len(job_ids):
            return sorted(rows, key=lambda r: int(r["JobID"]))
        if time.monotonic() > deadline:
            raise AssertionError(f"sacct did not report {job_ids} as finished:\n{proc.stdout}{proc.stderr}")
        time.sleep(1)


def rule_of(row: dict[str, str]) -> str:
    """The plugin puts `rule_<name>[_wildcards_<values>]` into the job comment (groups: the member rules)."""
    return row["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.5)


def queued_jobs(name: str) -> list[str]:
    """Ids of jobs with this name still pending, running or completing."""
    proc = subprocess.run(
        ["squeue", "-h", "-n", name, "-t", "PENDING,RUNNING,COMPLETING,CONFIGURING", "-o", "%i"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return proc.stdout.split()


def node_memory_mb() -> int:
    """The test node's schedulable memory (RealMemory), so a test can size jobs that cannot run side by side."""
    out = subprocess.run(
        ["scontrol", "-o", "show", "node"], capture_output=True, text=True, check=True
    ).stdout
    return int(re.search(r"RealMemory=(\d+)", out).group(1))
