#!/usr/bin/env python3
"""Preflight for profiles/slurm (OSC Pitzer): what must hold before a workflow submits its first job.

Run it on a login node from the environment you run snakemake from (the project's venv):

    export OSC_PROJECT=PAS1234
    .venv/bin/python scripts/slurm_preflight.py               # everything, including torch on a GPU node
    .venv/bin/python scripts/slurm_preflight.py --no-gpu-node # the submission checks only (seconds)

Checks, each with `sbatch --test-only` (nothing is queued) unless said otherwise:
  account      -A $OSC_PROJECT on every partition of the partition file: refused on all of them, OSC_PROJECT is
               wrong; refused on some only, the project lacks access to those partitions
  partitions   -p <name> for every partition of the partition file (SNAKEMAKE_SLURM_PARTITIONS)
  GPU request  --gpus=<SNAKEMAKE_SLURM_GPU_MODEL>:1 on the GPU partitions, plus -C <feature> for each node feature
               the file lists (v100-32g on gpu-exp): the flags snakemake-executor-plugin-slurm 2.8 emits
  MinJobAge    `scontrol show config`: at least 3 x slurm-init-seconds-before-status-checks (--init-seconds,
               default the profile's value), or the plugin polls sacct instead of squeue (an info line says so)
               and never sees a scancelled job as failed
  torch        `srun` on a GPU partition: python -m kdgat.runtime --check, the check select_device makes
               in every training job (torch's arch list must hold the GPU's compute capability: sm_70 on a V100)

profiles/slurm/profile.yaml runs all but the last one at every snakemake start, so a wrong account, partition
or GPU type stops the run before any job is submitted: check_before_submission while Snakemake reads the
profile, and the MinJobAge check once Snakemake has merged every profile and the command line into the
plugin's settings (install_status_polling_guard), so that it compares with the delay the plugin will use.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).resolve().parents[1] / "profiles" / "slurm"
# The delay before the first status query, as a profile spells it (--<it> on the command line); the plugin
# keeps polling squeue only while MinJobAge >= 3 x the delay.
INIT_DELAY_SETTING = "slurm-init-seconds-before-status-checks"
TORCH_CHECK = ["-m", "kdgat.runtime", "--check"]
# SLURM's text (ESLURM_INVALID_ACCOUNT) when an account is unknown, not the user's, or not allowed on the partition:
# "Invalid account or account/partition combination specified". Not "accounting/QOS policy" (job limits).
ACCOUNT_REFUSAL = "invalid account"
# SLURM's text (slurm_strerror of SLURM_COMMUNICATIONS_CONNECTION_ERROR and its kin) when no controller answers:
# nothing about the settings can be learnt then, so no partition or account is blamed.
CONTROLLER_DOWN = "unable to contact slurm controller"
# How the profile's refusal starts, whichever check refuses.
REFUSAL = (
    "profiles/slurm: no job submitted, these settings would fail "
    "(SNAKEMAKE_SLURM_CHECKS=off skips this check):"
)


class PreflightError(ValueError):
    """One or more settings would make submissions fail; the message names each setting and its fix."""


@dataclass(frozen=True)
class Probe:
    """One `sbatch --test-only` call and what its failure would say about the settings."""

    partition: str
    flags: tuple[str, ...]
    kind: str  # "partition", "gpu" or "feature"
    feature: str = ""


def read_partitions(path: Path) -> dict:
    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PreflightError(f"partition file {path}: cannot be read ({error})") from error
    partitions = (document or {}).get("partitions") if isinstance(document, dict) else None
    if not isinstance(partitions, dict) or not partitions:
        raise PreflightError(f"partition file {path}: expected a mapping under 'partitions'")
    for name, limits in partitions.items():
        limits_problem(path, name, limits)
    return document


def limits_problem(path: Path, name, limits) -> None:
    """The keys the checks read, of the types the plugin needs (the plugin reads the file only when it submits)."""
    where = f"partition file {path}: partitions.{name}"
    if limits is None:
        return
    if not isinstance(limits, dict):
        raise PreflightError(f"{where} must be a mapping of limits (max_gpu: 2, ...), got {limits!r}")
    max_gpu = limits.get("max_gpu", 0)
    if isinstance(max_gpu, bool) or not isinstance(max_gpu, int) or max_gpu < 0:
        raise PreflightError(f"{where}.max_gpu must be a whole number of GPUs >= 0, got {max_gpu!r}")
    for key in ("available_gpu_models", "available_constraints"):
        value = limits.get(key)
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(item, str) for item in value)
        ):
            raise PreflightError(f"{where}.{key} must be a list of names, got {value!r}")


def gpu_flag(gpu_model: str) -> str:
    """The GPU request the plugin builds from `gpu: 1` (+ `gpu_model`): --gpus=<model>:1, or --gpus=1."""
    return f"--gpus={gpu_model}:1" if gpu_model else "--gpus=1"


def probes(partitions: dict, gpu_model: str) -> list[Probe]:
    found = []
    for name, limits in partitions.items():
        limits = limits or {}
        found.append(Probe(name, ("-p", name), "partition"))
        gpus = (gpu_flag(gpu_model),) if limits.get("max_gpu", 0) > 0 else ()
        if gpus:
            found.append(Probe(name, ("-p", name, *gpus), "gpu"))
        for feature in limits.get("available_constraints") or []:
            found.append(Probe(name, ("-p", name, *gpus, "-C", feature), "feature", feature))
    return found


def test_only(account: str, flags: tuple[str, ...]) -> str | None:
    """Run one `sbatch --test-only`; None when SLURM would accept the job, else what sbatch said."""
    command = [
        "sbatch",
        "--test-only",
        "-A",
        account,
        "-t",
        "1",
        "-n",
        "1",
        "--mem=100",
        *flags,
        "--wrap",
        "true",
    ]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{' '.join(command)}: {error}"
    if proc.returncode == 0:
        return None
    return " ".join((proc.stderr + proc.stdout).split()) or f"exit status {proc.returncode}"


def min_job_age() -> int | None:
    """MinJobAge in seconds, read exactly as snakemake-executor-plugin-slurm reads it (None when unreadable)."""
    from snakemake_executor_plugin_slurm.job_status_query import get_min_job_age

    return get_min_job_age()


def profile_init_seconds(profile: Path = PROFILE_DIR / "profile.yaml") -> int:
    """The profile's slurm-init-seconds-before-status-checks, read from the template without rendering it."""
    try:
        value = yaml.safe_load(Path(profile).read_text()).get(INIT_DELAY_SETTING)
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise PreflightError(f"{profile}: cannot be read ({error})") from error
    if not isinstance(value, int) or isinstance(value, bool):
        raise PreflightError(
            f"{profile}: {INIT_DELAY_SETTING} must be a whole number of seconds, got {value!r}"
        )
    return value


def status_polling_problem(init_seconds: int) -> str | None:
    """Why the plugin would not keep polling squeue with this init delay (it needs MinJobAge >= 3 x it)."""
    age, needed = min_job_age(), 3 * init_seconds
    if age is not None and age >= needed:
        return None
    seen = "cannot be read from `scontrol show config`" if age is None else f"is {age} s"
    lower = f" to {age // 3} or less" if age is not None and age >= 3 else ""
    return (
        f"MinJobAge {seen}, below 3 x {INIT_DELAY_SETTING} ({init_seconds}) = {needed} s. "
        f"snakemake-executor-plugin-slurm 2.8 then polls sacct instead of squeue (saying so only in an info line), "
        f"where a job cancelled with scancel reads 'CANCELLED by <uid>' and is waited for forever. "
        f"Fix: ask the admins for MinJobAge >= {needed}, or lower {INIT_DELAY_SETTING}{lower} where it is set "
        f"(profiles/slurm/profile.yaml, a later --profile, or --{INIT_DELAY_SETTING} on the command line)"
    )


def settings_problem(settings) -> str | None:
    """status_polling_problem for the slurm plugin's ExecutorSettings, as the plugin itself will poll."""
    init_seconds = settings.init_seconds_before_status_checks
    if settings.status_command != "squeue" or init_seconds is None:
        return None  # polling sacct on purpose: MinJobAge does not matter
    return status_polling_problem(int(init_seconds))


def install_status_polling_guard() -> None:
    """Refuse a MinJobAge below 3 x the init delay in effect, before the workflow is read.

    The delay can come from this profile, a later --profile or the command line. Snakemake merges them into
    the plugin's ExecutorSettings, where the plugin reads the delay when it picks squeue or sacct, so the
    check runs where those settings are made (ExecutorSettings.__post_init__, after the plugin's own validation).
    """
    import snakemake_executor_plugin_slurm as plugin
    from snakemake_interface_common.exceptions import WorkflowError

    original = plugin.ExecutorSettings.__post_init__
    if getattr(original, "checks_status_polling", False):
        return

    def __post_init__(self):
        original(self)
        problem = settings_problem(self)
        if problem:
            raise WorkflowError(f"{REFUSAL}\n- {problem}")

    __post_init__.checks_status_polling = True
    plugin.ExecutorSettings.__post_init__ = __post_init__


def gpu_model_problem(partitions: dict, gpu_model: str, partitions_file: Path) -> str | None:
    offered = sorted(
        {
            model
            for limits in partitions.values()
            for model in (limits or {}).get("available_gpu_models") or []
        }
    )
    if not gpu_model or not offered or gpu_model in offered:
        return None
    return (
        f"SNAKEMAKE_SLURM_GPU_MODEL={gpu_model!r} is not in available_gpu_models of any partition in "
        f"{partitions_file} ({', '.join(offered)}): the plugin would find no partition for the GPU rules. Fix: "
        f'export SNAKEMAKE_SLURM_GPU_MODEL to one of them (or "" for any type), or correct the file'
    )


def quoted(names) -> str:
    return ", ".join(repr(name) for name in names)


def slurm_said(errors: dict[str, str]) -> str:
    """SLURM's refusal once when every partition got the same text, else per partition."""
    if len(set(errors.values())) == 1:
        return next(iter(errors.values()))
    return "; ".join(f"{name}: {error}" for name, error in errors.items())


def account_problem(
    account: str, refused: dict[str, str], accepted: list[str], partitions: dict, partitions_file: Path
) -> str:
    """Why `account` is refused: not a project of the user (refused everywhere), or not allowed on some partitions."""
    if not accepted:
        return (
            f"account {account!r} (OSC_PROJECT) is refused on {quoted(refused)} and accepted on no partition of "
            f"{partitions_file}: {slurm_said(refused)}. Fix: export OSC_PROJECT=<a project you belong to> "
            f"(list yours: sacctmgr -n show assoc user=$USER format=account; at OSC also `sbalance`)"
        )
    # The account itself is valid (SLURM took it elsewhere): only these partitions are closed to it.
    names = ", ".join(refused)
    problem = (
        f"account {account!r} (OSC_PROJECT) may not use partition{'s' if len(refused) > 1 else ''} "
        f"{quoted(refused)} (accepted on {quoted(accepted)}): {slurm_said(refused)}. Fix: ask OSC "
        f"(oschelp@osc.edu) to give project {account} access to {names}; or keep jobs off {names}: jobs reach a "
        f"partition through {partitions_file} (the plugin picks the best fit there) or a rule's slurm_partition "
        f"resource, so point SNAKEMAKE_SLURM_PARTITIONS at a copy without {names} and name none of them in "
        f"slurm_partition (what SLURM allows: sacctmgr -n show assoc user=$USER account={account} "
        f"format=partition, and AllowAccounts in scontrol show partition <name>)"
    )
    gpu_partitions = [name for name, limits in partitions.items() if (limits or {}).get("max_gpu", 0) > 0]
    if gpu_partitions and not set(gpu_partitions) - set(refused):
        # Dropping the refused partitions would leave the GPU rules no partition at all.
        problem += (
            f". The GPU rules (gpu: 1, set-resources in profiles/slurm/profile.yaml) fit only partitions with "
            f"max_gpu > 0 ({quoted(gpu_partitions)}), none of which accepts {account}: they need that access, or "
            f"an OSC_PROJECT that has it"
        )
    return problem


def probe_problem(probe: Probe, error: str, partitions_file: Path) -> str:
    name = probe.partition
    if probe.kind == "partition":
        return (
            f"partition {name!r} (from {partitions_file}) is refused: {error}. Fix: correct the partition file "
            f"(sinfo -s; generate-slurm-partition-config, see profiles/slurm/README.md) or point "
            f"SNAKEMAKE_SLURM_PARTITIONS at a corrected copy"
        )
    flags = " ".join(probe.flags[2:])
    if probe.kind == "gpu":
        return (
            f"GPU request {flags} on partition {name!r} is refused: {error}. Fix: export SNAKEMAKE_SLURM_GPU_MODEL "
            f"to a GPU type of that partition (sinfo -p {name} -o '%G'; \"\" for any type) and keep "
            f"available_gpu_models in {partitions_file} in agreement"
        )
    return (
        f"node feature {probe.feature!r} (available_constraints of {name!r} in {partitions_file}) is refused with "
        f"{flags}: {error}. Fix: list the partition's features (sinfo -p {name} -o '%f') and correct the file"
    )


def check_before_submission(
    account: str, partitions_file: Path, gpu_model: str, init_seconds: int | None
) -> list[str]:
    """Everything a submission needs, checked without queueing a job. Returns what passed; raises
    PreflightError naming every failing setting and its fix. `init_seconds` None leaves MinJobAge out (the
    profile checks it later, against the delay in effect: install_status_polling_guard)."""
    partitions = read_partitions(partitions_file)["partitions"]
    problems = [p for p in (gpu_model_problem(partitions, gpu_model, partitions_file),) if p]
    passed = []
    if init_seconds is not None:
        polling = status_polling_problem(init_seconds)
        if polling:
            problems.append(polling)
        else:
            passed.append(f"MinJobAge >= 3 x {init_seconds} s (squeue status polling stays in effect)")
    planned = probes(partitions, gpu_model)
    with ThreadPoolExecutor(max_workers=8) as pool:
        errors = dict(
            zip(planned, pool.map(lambda probe: test_only(account, probe.flags), planned), strict=True)
        )
    down = [error for error in errors.values() if error and CONTROLLER_DOWN in error.lower()]
    if down:
        problems.append(
            f"SLURM's controller does not answer, so the account, partitions and GPU request cannot be checked "
            f"(sbatch --test-only: {down[0]}). Fix: run again once `scontrol ping` reports the controller UP, or "
            f"export SNAKEMAKE_SLURM_CHECKS=off to skip the checks (a dry run submits nothing)"
        )
        raise PreflightError("\n".join(f"- {problem}" for problem in problems))
    refused = {probe.partition for probe, error in errors.items() if error and probe.kind == "partition"}
    tried = {probe.partition: error for probe, error in errors.items() if probe.kind == "partition"}
    account_refused = {
        name: error for name, error in tried.items() if error and ACCOUNT_REFUSAL in error.lower()
    }
    accepted = [name for name, error in tried.items() if error is None]
    for probe, error in errors.items():
        if error is None:
            passed.append(f"sbatch --test-only -A {account} {' '.join(probe.flags)}")
        elif probe.kind != "partition" and probe.partition in refused:
            continue  # the partition's own refusal says it; its GPU and feature probes add nothing
        elif probe.partition in account_refused:
            problems.append(account_problem(account, account_refused, accepted, partitions, partitions_file))
        else:
            problems.append(probe_problem(probe, error, partitions_file))
    if problems:
        raise PreflightError("\n".join(f"- {problem}" for problem in dict.fromkeys(problems)))
    return passed


def torch_on_gpu_node(
    account: str, partition: str, gpu_model: str, python: str, timeout: int
) -> tuple[bool, str]:
    """Run select_device's GPU check in a job step on a GPU node (srun waits in the queue like any job)."""
    command = ["srun", "-A", account, "-p", partition, "-t", "10", "-n", "1", "-c", "1", "--mem=4000"]
    command += [gpu_flag(gpu_model), python, *TORCH_CHECK]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"{' '.join(command)}: no result within {timeout} s (still queued?)"
    return proc.returncode == 0, f"$ {' '.join(command)}\n{proc.stdout}{proc.stderr}".rstrip()


def default_gpu_partition(document: dict) -> str | None:
    chosen = (document.get("preflight") or {}).get("gpu_check_partition")
    gpu_partitions = [
        name for name, limits in document["partitions"].items() if (limits or {}).get("max_gpu")
    ]
    return chosen or (gpu_partitions[0] if gpu_partitions else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get
    parser.add_argument("--account", default=env("OSC_PROJECT"), help="default: $OSC_PROJECT")
    parser.add_argument(
        "--partitions",
        type=Path,
        default=Path(env("SNAKEMAKE_SLURM_PARTITIONS") or PROFILE_DIR / "partitions.yaml"),
        help="partition file (default: $SNAKEMAKE_SLURM_PARTITIONS, else profiles/slurm/partitions.yaml)",
    )
    parser.add_argument("--gpu-model", default=env("SNAKEMAKE_SLURM_GPU_MODEL", "v100"))
    parser.add_argument(
        "--init-seconds",
        type=int,
        help=f"the {INIT_DELAY_SETTING} the runs use (default: profiles/slurm/profile.yaml's)",
    )
    parser.add_argument(
        "--gpu-partition", help="where the torch check runs (default: the file's preflight entry)"
    )
    parser.add_argument(
        "--python", default=sys.executable, help="the interpreter the jobs run (default: this one)"
    )
    parser.add_argument(
        "--gpu-node-timeout", type=int, default=3600, help="seconds to wait for the srun step"
    )
    parser.add_argument("--no-gpu-node", action="store_true", help="skip the torch check on a GPU node")
    args = parser.parse_args(argv)
    if not args.account:
        parser.error("no account: export OSC_PROJECT=PAS1234 (your OSC project code) or pass --account")
    if not shutil.which("sbatch"):
        parser.error("sbatch is not on PATH: run this on a SLURM login node")

    failed = False
    try:
        init_seconds = profile_init_seconds() if args.init_seconds is None else args.init_seconds
        for line in check_before_submission(args.account, args.partitions, args.gpu_model, init_seconds):
            print(f"ok    {line}")
    except PreflightError as error:
        print(f"FAIL  submission settings:\n{error}")
        failed = True
    if not args.no_gpu_node:
        try:
            partition = args.gpu_partition or default_gpu_partition(read_partitions(args.partitions))
        except PreflightError as error:  # said above already, by the submission checks
            print(f"FAIL  torch on a GPU node: no partition to run it on ({error})")
            return 1
        if partition is None:
            print(f"FAIL  torch on a GPU node: no partition with max_gpu > 0 in {args.partitions}")
            return 1
        ok, report = torch_on_gpu_node(
            args.account, partition, args.gpu_model, args.python, args.gpu_node_timeout
        )
        print(f"{'ok  ' if ok else 'FAIL'}  torch on a GPU node of {partition}:\n{report}")
        failed = failed or not ok
    print(
        "preflight: "
        + ("FAILED, fix the settings above before running snakemake" if failed else "all passed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
