"""resource_history: a job's next mem_mb/runtime from its rule's benchmark files, gpu_mem_mb from its GPU records.

The benchmark files are written by Snakemake's own writer (snakemake.benchmark.write_benchmark_records), in the
plain and the --benchmark-extended format, so the parser is checked against the real format.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy
import pytest
import yaml
from snakemake.benchmark import BenchmarkRecord, write_benchmark_records
from testkit import REPO

from resource_history import (
    GPU_PEAK_KEY,
    BenchmarkFileError,
    BenchmarkPattern,
    LearnedResourceSettings,
    ResourceHistory,
    SettingsError,
    read_benchmark,
    read_gpu_record,
    size_fit,
)

PATTERN = "benchmarks/train/{dataset}.tsv"


def write_runs(path: Path, runs: list[tuple[float, float | None]], input_mb: float | None = None) -> Path:
    """A benchmark file as Snakemake writes it: one row per (seconds, max_rss MB); extended with an input file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for seconds, rss in runs:
        record = BenchmarkRecord(running_time=seconds, max_rss=rss, max_vms=rss, max_uss=rss, max_pss=rss)
        record.data_collected = rss is not None
        record.io_in = record.io_out = 0
        record.cpu_time = record.cpu_usage = seconds / 2
        if input_mb is not None:
            data = path.with_suffix(".input")
            data.write_bytes(b"\0" * int(input_mb * 2**20))
            record.input, record.wildcards, record.params, record.resources = [str(data)], {}, {}, {}
        records.append(record)
    write_benchmark_records(records, str(path), input_mb is not None)
    return path


def history(tmp_path: Path, **settings) -> ResourceHistory:
    return ResourceHistory(LearnedResourceSettings(enabled=True, **settings), workdir=tmp_path)


def memory(base_mb: float, settings: LearnedResourceSettings, attempt: int = 1) -> int:
    """The documented formula: ceil((peak + mem_overhead_mb) x margin) x attempt."""
    return math.ceil(round((base_mb + settings.mem_overhead_mb) * settings.margin, 6)) * attempt


# --- reading files ----------------------------------------------------------------------------------------------
def test_reads_plain_and_extended_files(tmp_path):
    plain = read_benchmark(write_runs(tmp_path / "plain.tsv", [(12.5, 300.0), (13.0, None)]))
    assert [(r.seconds, r.max_rss_mb, r.input_size_mb) for r in plain] == [
        (12.5, 300.0, None),
        (13.0, None, None),
    ]
    extended = read_benchmark(write_runs(tmp_path / "extended.tsv", [(2.0, 50.0)], input_mb=3))
    assert extended[0].input_size_mb == pytest.approx(3.0)
    assert extended[0].line == 2


@pytest.mark.parametrize(
    ("content", "line", "says"),
    [
        ("", 1, "empty"),
        ("s\th:m:s\tmax_rss\n", None, "no runs"),
        ("s\th:m:s\tio_in\n1\t0:00:01\t3\n", 1, "no 'max_rss' column"),
        ("s\th:m:s\tmax_rss\n1\t0:00:01\t20\n2\t0:00:02\n", 3, "2 fields where the header has 3"),
        ("s\th:m:s\tmax_rss\n1\t0:00:01\tlots\n", 2, "max_rss 'lots' is not a number"),
        ("s\th:m:s\tmax_rss\nNA\t0:00:01\t5\n", 2, "'s' (wall seconds) field is empty"),
        ("s\th:m:s\tmax_rss\tinput_size_mb\n1\t0:00:01\t5\t[3]\n", 2, "not a dict of file sizes"),
    ],
)
def test_bad_file_is_named_with_its_line(tmp_path, content, line, says):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(BenchmarkFileError) as error:
        read_benchmark(path)
    assert error.value.path == str(path) and error.value.line == line
    assert says in str(error.value) and str(path) in str(error.value)


def test_pattern_finds_files_and_their_wildcards(tmp_path):
    for name in ("benchmarks/train/a.tsv", "benchmarks/train/b.tsv", "benchmarks/train/nested/c.tsv"):
        write_runs(tmp_path / name, [(1.0, 1.0)])
    found = BenchmarkPattern.parse("benchmarks/train/{dataset,[^/]+}.tsv").files(tmp_path)
    assert [values for _, values in found] == [{"dataset": "a"}, {"dataset": "b"}]  # the constraint holds
    unconstrained = BenchmarkPattern.parse(PATTERN).files(tmp_path)
    assert {"dataset": "nested/c"} in [values for _, values in unconstrained]  # Snakemake's default `.+`


# --- which history --------------------------------------------------------------------------------------------
def test_own_dataset_first_then_across_datasets(tmp_path):
    write_runs(tmp_path / "benchmarks/train/small.tsv", [(60.0, 100.0)])
    write_runs(tmp_path / "benchmarks/train/large.tsv", [(600.0, 900.0), (500.0, 800.0)])
    estimator = history(tmp_path)
    own = estimator.estimate("mem_mb", PATTERN, {"dataset": "small"}, default=4000)
    assert own.learned and own.value == memory(100.0, estimator.settings)
    assert own.sources == (str(tmp_path / "benchmarks/train/small.tsv"),)
    assert "same wildcards (dataset=small)" in own.explanation
    new = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000)
    assert new.value == memory(900.0, estimator.settings)  # no history of its own: the peak of all datasets
    assert "all wildcard values" in new.explanation and len(new.sources) == 2


def test_sweep_row_learns_from_its_dataset_before_other_datasets(tmp_path):
    pattern = "benchmarks/sweep/{dataset}/lr~{lr}.tsv"
    write_runs(tmp_path / "benchmarks/sweep/hcrl/lr~0.1.tsv", [(10.0, 100.0)])
    write_runs(tmp_path / "benchmarks/sweep/hcrl/lr~0.2.tsv", [(10.0, 120.0)])
    write_runs(tmp_path / "benchmarks/sweep/road/lr~0.1.tsv", [(10.0, 3000.0)])
    estimator = history(tmp_path)
    row = estimator.estimate("mem_mb", pattern, {"dataset": "hcrl", "lr": "0.3"}, default=4000)
    assert row.value == memory(120.0, estimator.settings)
    assert "same (dataset=hcrl)" in row.explanation


def test_history_roots_add_earlier_runs(tmp_path):
    write_runs(tmp_path / "archive/benchmarks/train/a.tsv", [(60.0, 700.0)])
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 100.0)])
    estimator = history(tmp_path, benchmark_roots=(".", "archive"))
    both = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert both.value == memory(700.0, estimator.settings) and len(both.sources) == 2


def test_min_history_keeps_the_default_until_enough_runs(tmp_path):
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 100.0)])
    few = history(tmp_path, min_history=2).estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert (few.value, few.learned) == (4000, False)
    assert "fewer than min_history 2" in few.explanation


def test_no_history_keeps_the_configured_value(tmp_path):
    estimate = history(tmp_path).estimate("runtime", PATTERN, {"dataset": "a"}, default=120)
    assert (estimate.value, estimate.learned) == (120, False)
    assert "configured default: no benchmark history" in estimate.explanation


def test_memory_not_recorded_keeps_the_default_but_runtime_learns(tmp_path):
    write_runs(
        tmp_path / "benchmarks/train/a.tsv", [(900.0, None)]
    )  # max_rss NA: ended before the first sample
    estimator = history(tmp_path)
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000).value == 4000
    assert estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120).value == math.ceil(
        900 / 60 * 1.3
    )


# --- arithmetic -----------------------------------------------------------------------------------------------
def test_margin_overhead_and_attempt(tmp_path):
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 1000.0)])
    for margin, overhead, attempt in [(1.3, 300, 1), (1.3, 300, 3), (2.0, 0, 1), (1.0, 0, 2)]:
        estimator = history(tmp_path, margin=margin, mem_overhead_mb=overhead)
        mem = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1, attempt=attempt)
        assert mem.value == math.ceil((1000 + overhead) * margin) * attempt
        runtime = estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=1, attempt=attempt)
        assert runtime.value == math.ceil(10 * margin) * attempt  # 600 s = 10 min
    quick = history(tmp_path, min_runtime=5)
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(3.0, 1.0)])
    assert quick.estimate("runtime", PATTERN, {"dataset": "b"}, default=1, attempt=2).value == 10


# --- input-size scaling ---------------------------------------------------------------------------------------
def test_memory_that_grows_with_input_is_scaled_to_the_new_input(tmp_path):
    # 30 MB + 25 MB per input MB, and a little noise: the peak (130) badly underestimates a 12 MB input.
    for size, rss in [(1, 56.0), (2, 79.0), (3, 106.0), (4, 129.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(size * 30.0, rss)], input_mb=size)
    estimator = history(tmp_path)
    scaled = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000, input_size_mb=12.0)
    sizes, rss = numpy.array([1, 2, 3, 4]), numpy.array([56.0, 79.0, 106.0, 129.0])
    slope, intercept = numpy.polyfit(sizes, rss, 1)
    above = max(0.0, (rss - (intercept + slope * sizes)).max())  # the line raised to cover every run
    assert scaled.value == memory(intercept + slope * 12.0 + above, estimator.settings)
    assert "x input MB" in scaled.explanation and "at 12.0 MB" in scaled.explanation
    runtime = estimator.estimate("runtime", PATTERN, {"dataset": "big"}, default=1, input_size_mb=12.0)
    assert runtime.value == max(5, math.ceil(12 * 30.0 / 60 * 1.3))
    unknown_size = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000)
    assert unknown_size.value == memory(129.0, estimator.settings)  # no size for the job: the peak
    off = history(tmp_path, size_scaling=False)
    assert off.estimate("mem_mb", PATTERN, {"dataset": "big"}, 4000, input_size_mb=12.0).value == memory(
        129.0, off.settings
    )


def test_memory_unrelated_to_input_keeps_the_peak(tmp_path):
    # A model whose memory is set by its parameters, not the data: the line predicts no better than the peak.
    for size, rss in [(1, 400.0), (2, 395.0), (3, 410.0), (4, 398.0), (8, 402.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, rss)], input_mb=size)
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000, input_size_mb=100.0)
    assert estimate.value == memory(410.0, estimator.settings)
    assert "input-size line not better" in estimate.explanation


def test_fit_needs_three_sizes_and_compares_leave_one_out():
    assert size_fit([(1, 10.0), (1, 12.0), (2, 20.0)]) is None
    line = size_fit([(1, 10.0), (2, 20.0), (3, 30.0)])
    assert line.better and line.at(10) == pytest.approx(100.0) and line.fit_error == pytest.approx(0.0)
    assert line.constant_error == pytest.approx((15 + 0 + 15) / 3) and line.cover == pytest.approx(0.0)


# --- bad files and settings -----------------------------------------------------------------------------------
def test_bad_file_falls_back_with_a_warning_naming_file_and_line(tmp_path):
    bad = tmp_path / "benchmarks/train/a.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("s\th:m:s\tmax_rss\n12.0\t0:00:12\tmany\n")
    estimate = history(tmp_path).estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert (estimate.value, estimate.learned) == (4000, False)
    (warning,) = estimate.warnings
    assert f"benchmark file {bad} line 2: max_rss 'many' is not a number" in warning
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(60.0, 200.0)])
    other = history(tmp_path).estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert other.learned and other.sources == (str(tmp_path / "benchmarks/train/b.tsv"),)
    assert len(other.warnings) == 1  # still said: the bad file is left out


def test_missing_root_is_named(tmp_path):
    estimate = history(tmp_path, benchmark_roots=("gone",)).estimate(
        "mem_mb", PATTERN, {"dataset": "a"}, 4000
    )
    assert estimate.value == 4000
    assert estimate.warnings == (
        f"learned_resources.benchmark_roots: {tmp_path / 'gone'} is not a directory; skipped",
    )


# --- GPU memory from the training stages' records ---------------------------------------------------------------
RECORDS = "results/train/{dataset}/metrics.json"


def write_record(tmp_path: Path, dataset: str, peak_mb: float | None) -> Path:
    """A metrics.json as the training stages write it: other metrics, the device, and the GPU peak (null on CPU)."""
    path = tmp_path / RECORDS.format(dataset=dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = "cpu" if peak_mb is None else "cuda"
    path.write_text(json.dumps({"stage": "gat", "val_f1": 0.9, "device": device, GPU_PEAK_KEY: peak_mb}))
    return path


def gpu_memory(peak_mb: float, settings: LearnedResourceSettings, attempt: int = 1) -> int:
    """The documented formula: ceil((peak + gpu_overhead_mb) x margin) x attempt."""
    return math.ceil(round((peak_mb + settings.gpu_overhead_mb) * settings.margin, 6)) * attempt


@pytest.mark.parametrize(("margin", "overhead", "attempt"), [(1.3, 500, 1), (1.3, 500, 2), (1.5, 0, 3)])
def test_gpu_peak_learns_gpu_mem_mb(tmp_path, margin, overhead, attempt):
    write_record(tmp_path, "a", 6150.5)
    estimator = history(tmp_path, margin=margin, gpu_overhead_mb=overhead)
    gpu = estimator.estimate("gpu_mem_mb", RECORDS, {"dataset": "a"}, default=0, attempt=attempt)
    assert gpu.learned and gpu.value == math.ceil((6150.5 + overhead) * margin) * attempt
    assert gpu.value == gpu_memory(6150.5, estimator.settings, attempt)
    assert f"peak {GPU_PEAK_KEY} 6150.5" in gpu.describe() and str(
        tmp_path / RECORDS.format(dataset="a")
    ) in (gpu.describe())


def test_gpu_peak_of_the_own_dataset_first_then_across_datasets(tmp_path):
    write_record(tmp_path, "small", 1000.0)
    write_record(tmp_path, "large", 20000.0)
    estimator = history(tmp_path)
    assert estimator.estimate("gpu_mem_mb", RECORDS, {"dataset": "small"}, 0).value == gpu_memory(
        1000.0, estimator.settings
    )
    new = estimator.estimate("gpu_mem_mb", RECORDS, {"dataset": "new"}, 0)
    assert new.value == gpu_memory(20000.0, estimator.settings) and "all wildcard values" in new.explanation


def test_run_on_the_cpu_teaches_no_gpu_memory(tmp_path):
    path = write_record(tmp_path, "a", None)
    assert read_gpu_record(path)[0].gpu_peak_mb is None
    estimate = history(tmp_path).estimate("gpu_mem_mb", RECORDS, {"dataset": "a"}, default=0)
    assert (estimate.value, estimate.learned, estimate.warnings) == (0, False, ())
    assert f"0 run(s) with {GPU_PEAK_KEY} recorded in 1 GPU record file(s)" in estimate.explanation
    nothing = history(tmp_path).estimate("gpu_mem_mb", "results/other/{dataset}.json", {"dataset": "a"}, 0)
    assert "configured default: no GPU record history in" in nothing.explanation


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object but a list"),
        ('{"val_f1": 0.9}', f"has no '{GPU_PEAK_KEY}' key"),
        (f'{{"{GPU_PEAK_KEY}": "lots"}}', f"{GPU_PEAK_KEY} 'lots' is neither null (CPU) nor a finite number"),
        (f'{{"{GPU_PEAK_KEY}": -5}}', "nor a finite number of MB >= 0"),
        (f'{{"{GPU_PEAK_KEY}": true}}', "nor a finite number"),
    ],
)
def test_bad_gpu_record_falls_back_with_a_warning_naming_the_file(tmp_path, content, says):
    bad = tmp_path / RECORDS.format(dataset="a")
    bad.parent.mkdir(parents=True)
    bad.write_text(content)
    estimate = history(tmp_path).estimate("gpu_mem_mb", RECORDS, {"dataset": "a"}, default=16000)
    assert (estimate.value, estimate.learned) == (16000, False)
    (warning,) = estimate.warnings
    assert (
        warning.startswith(f"GPU record {bad}")
        and says in warning
        and warning.endswith("left out of the history")
    )
    good = write_record(tmp_path, "b", 900.0)
    other = history(tmp_path).estimate("gpu_mem_mb", RECORDS, {"dataset": "a"}, default=16000)
    assert other.learned and other.sources == (str(good),) and len(other.warnings) == 1


def test_settings_defaults_are_the_schema_defaults():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    section = schema["properties"]["learned_resources"]
    from_schema = {key: spec["default"] for key, spec in section["properties"].items()}
    defaults = LearnedResourceSettings()
    assert from_schema == {
        key: list(value) if isinstance(value, tuple) else value for key, value in vars(defaults).items()
    }
    assert all(spec.get("description") for spec in section["properties"].values())
    assert LearnedResourceSettings.from_config(None) == defaults and not defaults.enabled


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"margins": 1.3}, "unknown key(s) ['margins']"),
        ({"margin": 0.5}, "learned_resources.margin must be a number >= 1"),
        ({"benchmark_roots": "archive"}, "learned_resources.benchmark_roots must be a list of strings"),
        ({"enabled": "yes"}, "learned_resources.enabled must be true or false"),
        ({"gpu_overhead_mb": -1}, "learned_resources.gpu_overhead_mb must be an integer >= 0"),
    ],
)
def test_bad_settings_name_the_key(options, says):
    with pytest.raises(SettingsError, match=None) as error:
        LearnedResourceSettings.from_config(options)
    assert says in str(error.value)


def test_messages_show_the_pattern_without_constraints(tmp_path):
    estimate = history(tmp_path).estimate("mem_mb", "benchmarks/train/{dataset,a|b}.tsv", {"dataset": "a"}, 1)
    assert "for benchmarks/train/{dataset}.tsv" in estimate.explanation
