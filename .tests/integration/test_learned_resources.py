"""Resources learned from benchmark history, in real Snakemake runs (workflow/modules/learned_resources.smk).

A tiny workflow (learned_resources/Snakefile: one job per dataset holding 40 MB per MB of its input) runs once and
writes its benchmark files; a dry run of the next run then shows the learned mem_mb and runtime, computed here
from those files with the formula config/README.md documents, and its log says where each came from. The main
workflow's dry run shows that every rule with a `benchmark:` uses them, and that the kd_gat training rules learn
gpu_mem_mb from the GPU peak a run recorded in its metrics.json (written here: no GPU run happens in these tests).
"""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import numpy
import pandas as pd
import pytest
import yaml
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records
from testkit import REPO, run_snakemake

from resource_history import GPU_PEAK_KEY, LearnedResourceSettings

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parent / "learned_resources" / "Snakefile"
LEARNING = {"enabled": True, "min_runtime": 1}
DEFAULTS = LearnedResourceSettings(**{**LEARNING})


def configure(workdir: Path, datasets: dict[str, int], **learning) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump({"datasets": datasets, "learned_resources": {**LEARNING, **learning}}))
    return path


def job_resources(dry_run_output: str, rule: str) -> dict[str, dict[str, str]]:
    """{wildcards: {resource: value}} of every job of `rule` in a dry run's output."""
    jobs = {}
    for block in dry_run_output.split(f"rule {rule}:")[1:]:
        wildcards = re.search(r"wildcards: (.+)", block).group(1).strip()
        resources = re.search(r"resources: (.+)", block).group(1)
        jobs[wildcards] = dict(item.split("=", 1) for item in resources.split(", "))
    return jobs


def recorded(workdir: Path, dataset: str) -> pd.Series:
    table = pd.read_csv(workdir / f"benchmarks/hold_memory/{dataset}.tsv", sep="\t")
    assert len(table) == 1
    row = table.iloc[0].copy()
    row["input_mb"] = sum(ast.literal_eval(row["input_size_mb"]).values())
    return row


def mem_mb(peak_mb: float) -> int:
    return math.ceil(round((peak_mb + DEFAULTS.mem_overhead_mb) * DEFAULTS.margin, 6))


def runtime(seconds: float) -> int:
    return max(DEFAULTS.min_runtime, math.ceil(round(seconds / 60 * DEFAULTS.margin, 6)))


def test_second_run_asks_for_what_the_first_used(tmp_path):
    first_config = configure(tmp_path, {"a": 1, "b": 2, "c": 3})
    first = run_snakemake(
        "--snakefile", str(FIXTURE), "--directory", str(tmp_path), "--configfile", str(first_config),
        "--cores", "2", "--benchmark-extended", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert "runtime=7, mem_mb=1000" in first.stdout  # nothing recorded yet: the rule's own values
    (first_log,) = (tmp_path / ".snakemake/log").glob("*.snakemake.log")  # a dry run writes none
    assert (
        f"hold_memory (dataset=a), attempt 1: mem_mb=1000 (configured default: no benchmark history in "
        f"{tmp_path} for benchmarks/hold_memory/{{dataset}}.tsv)" in first_log.read_text()
    )
    runs = {name: recorded(tmp_path, name) for name in "abc"}

    # A new, larger dataset; an unreadable file left from some other run: named, and left out.
    (tmp_path / "in/d.bin").write_bytes(b"\0" * 6 * 2**20)
    (tmp_path / "benchmarks/hold_memory/old.tsv").write_text("s\th:m:s\tmax_rss\n3.1\t0:00:03\tgarbage\n")
    second_config = configure(tmp_path, {"a": 1, "b": 2, "c": 3, "d": 6})
    dry = run_snakemake(
        "--snakefile", str(FIXTURE), "--directory", str(tmp_path), "--configfile", str(second_config),
        "--cores", "2", "-n", "--forcerun", "hold_memory", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    jobs = job_resources(dry.stdout, "hold_memory")
    for name, run in runs.items():  # each dataset: its own run
        assert jobs[f"dataset={name}"]["mem_mb"] == str(mem_mb(run["max_rss"])), name
        assert jobs[f"dataset={name}"]["runtime"] == str(runtime(run["s"])), name

    # d has no run of its own: the line through a, b, c's (input MB, max_rss), raised to cover them, at 6 MB.
    sizes = numpy.array([run["input_mb"] for run in runs.values()])
    peaks = numpy.array([run["max_rss"] for run in runs.values()])
    slope, intercept = numpy.polyfit(sizes, peaks, 1)
    cover = max(0.0, (peaks - (intercept + slope * sizes)).max())
    scaled = intercept + slope * 6.0 + cover
    assert int(jobs["dataset=d"]["mem_mb"]) == mem_mb(scaled) > mem_mb(peaks.max())
    assert jobs["dataset=d"]["runtime"] == str(runtime(max(run["s"] for run in runs.values())))

    log = dry.stdout
    own = tmp_path / "benchmarks/hold_memory/a.tsv"
    assert re.search(
        rf"hold_memory \(dataset=a\), attempt 1: mem_mb={mem_mb(runs['a']['max_rss'])} \(learned from 1 run\(s\),"
        rf" same wildcards \(dataset=a\): peak max_rss .*; from {re.escape(str(own))}\)",
        log,
    )
    across = ", ".join(str(tmp_path / f"benchmarks/hold_memory/{name}.tsv") for name in "abc")
    assert re.search(
        rf"hold_memory \(dataset=d\), attempt 1: mem_mb={mem_mb(scaled)} \(learned from 3 run\(s\), all "
        rf"wildcard values: max_rss = .* x input MB .* at 6.0 MB .*; from {re.escape(across)}\)",
        log,
    )
    bad = tmp_path / "benchmarks/hold_memory/old.tsv"
    assert f"benchmark file {bad} line 2: max_rss 'garbage' is not a number; left out of the history" in log


def write_history(path: Path, seconds: float, max_rss: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = BenchmarkRecord(
        running_time=seconds, max_rss=max_rss, max_vms=max_rss, max_uss=max_rss, max_pss=0
    )
    record.data_collected, record.io_in, record.io_out, record.cpu_time, record.cpu_usage = True, 0, 0, 1, 1
    write_benchmark_records([record], str(path), False)


def test_every_benchmarked_rule_of_the_catalog_learns(tmp_path):
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["learned_resources"] = {"enabled": True}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    seed = config["kd_gat"]["seeds"][0]
    write_history(
        tmp_path / f"benchmarks/kd_gat/synth_hcrl/seed_{seed}/teacher/gat.tsv", seconds=1800.0, max_rss=5000.0
    )
    # A GPU run of the teacher GAT on another dataset recorded its peak; the CPU run of the student VGAE none.
    chain = tmp_path / f"results/kd_gat/other_capture/seed_{seed}"
    gpu_record, cpu_record = chain / "teacher/gat/metrics.json", chain / "student/vgae/metrics.json"
    for record, peak in ((gpu_record, 20000.0), (cpu_record, None)):
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"device": "cpu" if peak is None else "cuda", GPU_PEAK_KEY: peak}))
    job = f"dataset=synth_hcrl, seed={seed}"
    dry = run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    jobs = re.findall(
        r"^ *(?:local)?rule (\w+):\n((?: +\w.*\n)+)", dry.stdout, re.M
    )  # group members indented
    benchmarked = {rule for rule, fields in jobs if re.search(r"^ +benchmark: ", fields, re.M)}
    assert "is a wildcard of no rule" not in dry.stdout  # the default match_wildcards name a real wildcard
    learning = set(re.findall(r"learned resources: (\w+)(?: \([^)]*\))?, attempt \d+: ", dry.stdout))
    assert {"kd_gat_train_gat_teacher", "evaluation_evaluate_teacher", "calibration_calibrate"} <= benchmarked
    assert benchmarked == learning
    gat = job_resources(dry.stdout, "kd_gat_train_gat_teacher")
    settings = LearnedResourceSettings()
    assert gat[job]["mem_mb"] == str(math.ceil((5000 + settings.mem_overhead_mb) * settings.margin))
    assert gat[job]["runtime"] == str(math.ceil(1800 / 60 * settings.margin))
    # Across datasets (synth_hcrl has no GPU record of its own): 20000 MB + gpu_overhead_mb, x margin.
    assert gat[job]["gpu_mem_mb"] == str(math.ceil((20000 + settings.gpu_overhead_mb) * settings.margin))
    assert re.search(
        rf"kd_gat_train_gat_teacher \({job}\), attempt 1: gpu_mem_mb={gat[job]['gpu_mem_mb']} \(learned from 1 "
        rf"run\(s\), all wildcard values: peak {GPU_PEAK_KEY} 20000.0; .*; from {re.escape(str(gpu_record))}\)",
        dry.stdout,
    )
    vgae = job_resources(dry.stdout, "kd_gat_train_vgae_student")[job]
    assert vgae["gpu_mem_mb"] == "0"  # a run on the CPU records no GPU peak: nothing learned

    # Learning off: the records are there, yet no job asks for gpu_mem_mb.
    config["learned_resources"] = {"enabled": False}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    target = f"results/kd_gat/synth_hcrl/seed_{seed}/teacher/gat/metrics.json"
    off = run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n", target, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    teacher = job_resources(off.stdout, "kd_gat_train_gat_teacher")[job]
    assert "gpu" in teacher and "gpu_mem_mb" not in teacher, teacher
    # Its student has a benchmark file of its own (use rule ... with: benchmark:): no history, kd_gat.resources.
    student = job_resources(dry.stdout, "kd_gat_train_gat_student")[job]
    assert (student["mem_mb"], student["runtime"]) == (
        str(config["kd_gat"]["resources"]["mem_mb"]),
        str(config["kd_gat"]["resources"]["runtime"]),
    )


def test_a_misspelt_match_wildcard_is_warned_about_once_in_the_catalogs_dry_run(tmp_path):
    """`match_wildcards: [datset]` matches no rule's wildcard: the dry run says so once, with the closest name,
    instead of silently learning from every dataset's history."""
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["learned_resources"] = {"enabled": True, "match_wildcards": ["datset"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    dry = run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "-n", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    said = re.findall(r"learned_resources\.match_wildcards: 'datset' is a wildcard of no rule.*", dry.stdout)
    assert len(said) == 1, dry.stdout[-3000:]
    assert "did you mean 'dataset'?" in said[0]
