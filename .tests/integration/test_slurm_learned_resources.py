"""Learned resources under profiles/slurm on the local SLURM: the second run's sbatch asks for what the first used.

The tiny workflow of test_learned_resources.py runs twice with the real Pitzer profile (plus the local timing
override). The first job gets the rule's own mem_mb and runtime; the second the values learned from the benchmark
file the first wrote inside its SLURM job, which sacct's ReqMem and Timelimit show. A job killed at a learned
memory that was too low is retried with twice the learned mem_mb and runtime.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm.slurmkit import FAILED_STATES, require_slurm, rule_of, run_on_slurm, sacct, submitted_job_ids
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records

from resource_history import LearnedResourceSettings

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FIXTURE = Path(__file__).resolve().parent / "learned_resources" / "Snakefile"
LEARNING = {"enabled": True, "min_runtime": 1}


def time_limit(job_id: str) -> str:
    return subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "Timelimit"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip


def steps_max_rss_mb(job_id: str) -> float:
    """The job's memory as SLURM counts it against --mem: the peaks of its steps (the batch script's Snakemake,
    and the job step's Snakemake with the rule's processes), summed, as they run side by side."""
    rows = subprocess.run(
        ["sacct", "-P", "-n", "-j", job_id, "-o", "JobID,MaxRSS"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}
    steps = [row.split("|")[1] for row in rows if "." in row.split("|")[0]]
    assert len(steps) >= 2 and all(steps), rows  # batch and the job step, each measured
    return sum(float(value[:-1]) * units[value[-1]] for value in steps)


def only_job(output: str) -> dict[str, str]:
    (row,) = sacct(submitted_job_ids(output))
    assert rule_of(row) == "hold_memory" and row["State"] == "COMPLETED", row
    return row


def test_second_run_on_slurm_requests_the_learned_memory_and_time(tmp_path):
    require_slurm()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"a": 2}, "learned_resources": LEARNING}))
    first = only_job(run_on_slurm(tmp_path, FIXTURE, "--configfile", str(config)).stdout)
    assert first["ReqMem"] == "1000M" and time_limit(first["JobID"]) == "00:07:00"  # the rule's own values

    benchmark = pd.read_csv(tmp_path / "benchmarks/hold_memory/a.tsv", sep="\t")
    assert "input_size_mb" in benchmark  # the profile's benchmark-extended reaches the job step
    settings = LearnedResourceSettings(**LEARNING)
    peak, seconds = benchmark["max_rss"].max(), benchmark["s"].max()
    learned_mb = math.ceil(round((peak + settings.mem_overhead_mb) * settings.margin, 6))
    learned_minutes = max(settings.min_runtime, math.ceil(seconds / 60 * settings.margin))
    # What the benchmark does not see and SLURM counts: the job's two Snakemake processes. mem_overhead_mb is
    # there to cover them (config/README.md), before the margin: on a cluster that limits the whole job
    # (cgroups, as at OSC) a learned mem_mb below this would kill a small job on its first attempt.
    overhead_mb = steps_max_rss_mb(first["JobID"]) - peak
    assert 0 < overhead_mb <= settings.mem_overhead_mb, (overhead_mb, peak)

    second_run = run_on_slurm(tmp_path, FIXTURE, "--configfile", str(config), "--forcerun", "hold_memory")
    second = only_job(second_run.stdout)
    assert second["ReqMem"] == f"{learned_mb}M"
    assert time_limit(second["JobID"]) == f"00:{learned_minutes:02d}:00"
    assert f"mem_mb={learned_mb} (learned from 1 run(s), same wildcards (dataset=a)" in second_run.stdout


def test_job_killed_at_its_learned_memory_is_retried_with_twice_the_learned_values(tmp_path):
    """History can be too low (an earlier run on less data): SLURM kills the job at its learned memory, and the
    profile's retry asks for the learned mem_mb and runtime times the attempt, as documented, not the rule's own."""
    require_slurm()
    # Dataset a holds 40 x 40 = 1600 MB (plus Snakemake's own ~500 MB in the job); its history says 300 MB.
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"datasets": {"a": 40}, "learned_resources": LEARNING}))
    benchmark = tmp_path / "benchmarks/hold_memory/a.tsv"
    benchmark.parent.mkdir(parents=True)
    record = BenchmarkRecord(running_time=100.0, max_rss=300.0, max_vms=300.0, max_uss=300.0, max_pss=300.0)
    record.data_collected, record.io_in, record.io_out, record.cpu_time, record.cpu_usage = True, 0, 0, 1, 1
    write_benchmark_records([record], str(benchmark), False)
    settings = LearnedResourceSettings(**LEARNING)
    learned_mb = math.ceil(round((300.0 + settings.mem_overhead_mb) * settings.margin, 6))
    learned_minutes = max(settings.min_runtime, math.ceil(100.0 / 60 * settings.margin))
    assert learned_mb < 1600 and 1600 + settings.mem_overhead_mb < 2 * learned_mb

    run = run_on_slurm(tmp_path, FIXTURE, "--configfile", str(config))
    rows = sacct(submitted_job_ids(run.stdout))
    assert [rule_of(row) for row in rows] == ["hold_memory", "hold_memory"], rows
    first, second = rows
    assert first["State"].split()[0] in FAILED_STATES and first["ReqMem"] == f"{learned_mb}M", first
    assert time_limit(first["JobID"]) == f"00:{learned_minutes:02d}:00"
    assert second["State"] == "COMPLETED" and second["ReqMem"] == f"{2 * learned_mb}M", second
    assert time_limit(second["JobID"]) == f"00:{2 * learned_minutes:02d}:00"
    assert f"hold_memory (dataset=a), attempt 2: mem_mb={2 * learned_mb} (learned from 1 run(s)" in run.stdout
    # The killed attempt wrote no benchmark; the one that succeeded recorded what the job really held.
    assert pd.read_csv(benchmark, sep="\t")["max_rss"].max() > 1600
