"""Learned resources under profiles/slurm on the local SLURM: the second run's sbatch asks for what the first used.

The tiny workflow of test_learned_resources.py runs twice with the real Pitzer profile (plus the local timing
override). The first job gets the rule's own mem_mb and runtime; the second the values learned from the benchmark
file the first wrote inside its SLURM job, which sacct's ReqMem and Timelimit show.
"""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from slurm.slurmkit import require_slurm, rule_of, run_on_slurm, sacct, submitted_job_ids

from resource_history import LearnedResourceSettings

pytestmark = [pytest.mark.integration, pytest.mark.slurm]

FIXTURE = Path(__file__).resolve().parent / "learned_resources" / "Snakefile"
LEARNING = {"enabled": True, "min_runtime": 1}


def time_limit(job_id: str) -> str:
    return subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", job_id, "-o", "Timelimit"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.strip()  # fmt: skip


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

    second_run = run_on_slurm(tmp_path, FIXTURE, "--configfile", str(config), "--forcerun", "hold_memory")
    second = only_job(second_run.stdout)
    assert second["ReqMem"] == f"{learned_mb}M"
    assert time_limit(second["JobID"]) == f"00:{learned_minutes:02d}:00"
    assert f"mem_mb={learned_mb} (learned from 1 run(s), same wildcards (dataset=a)" in second_run.stdout
