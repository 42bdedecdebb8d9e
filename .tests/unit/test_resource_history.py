"""resource_history: a job's next mem_mb/runtime from its rule's benchmark files, gpu_mem_mb from its GPU records.

The benchmark files are written by Snakemake's own writer (snakemake.benchmark.write_benchmark_records), in the
plain and the --benchmark-extended format, so the parser is checked against the real format.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
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
    clear_mark,
    first_time,
    mark_if_resumed,
    mark_restored,
    mark_resumed,
    read_benchmark,
    read_gpu_record,
    restored_reason,
    resumed_reason,
    size_fit,
)
from resource_history.benchmarks import LARGEST, recorded_params
from resource_history.estimate import SIZE_FACTOR

PATTERN = "benchmarks/train/{dataset}.tsv"


def write_runs(
    path: Path,
    runs: list[tuple[float, float | None]],
    input_mb: float | None = None,
    params: dict | None = None,
    wildcards: dict | None = None,
) -> Path:
    """A benchmark file as Snakemake writes it: one row per (seconds, max_rss MB); extended with an input file (and
    the job's params and wildcards)."""
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
            record.input, record.resources = [str(data)], {}
            record.wildcards, record.params = wildcards or {}, params or {}
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
        ("s\th:m:s\tmax_rss\n-1\t0:00:01\t5\n", 2, "s '-1' is not a finite number >= 0"),
        ("s\th:m:s\tmax_rss\n1\t0:00:01\tinf\n", 2, "max_rss 'inf' is not a finite number >= 0"),
        ("s\th:m:s\tmax_rss\n1\t0:00:01\tnan\n", 2, "max_rss 'nan' is not a finite number >= 0"),
        # Finite, yet beyond any run: a learned figure from it would ask for the impossible.
        (
            "s\th:m:s\tmax_rss\n1\t0:00:01\t5\n1e308\t0:00:01\t5\n",
            3,
            "s '1e308' is more than any run records",
        ),
        ("s\th:m:s\tmax_rss\n1\t0:00:01\t1e308\n", 2, "max_rss '1e308' is more than any run records"),
        (
            "s\th:m:s\tmax_rss\tinput_size_mb\n1\t0:00:01\t5\t{'a': 1e308, 'b': 1e308}\n",
            2,
            "is not a dict of finite sizes >= 0 summing to at most 1e+12 MB",
        ),
        ("s\th:m:s\tmax_rss\tinput_size_mb\n1\t0:00:01\t5\t{'a': -3}\n", 2, "is not a dict of finite sizes"),
    ],
)
def test_bad_file_is_named_with_its_line(tmp_path, content, line, says):
    path = tmp_path / "bad.tsv"
    path.write_text(content)
    with pytest.raises(BenchmarkFileError) as error:
        read_benchmark(path)
    assert error.value.path == str(path) and error.value.line == line
    assert says in str(error.value) and str(path) in str(error.value)


def test_a_jsonl_benchmark_file_reads_as_the_same_runs_as_its_tsv(tmp_path):
    """Snakemake writes a benchmark path ending in .jsonl as one JSON object per run (no header): the same fields,
    numbers as numbers, NA as the string "NA", the extended format's dicts as JSON objects."""
    params, wildcards = {"lr": 0.1, "out": "results/a/model.pt"}, {"dataset": "a"}
    for extended in (None, 3):
        runs = [(12.5, 300.0), (13.0, None)]
        tsv, jsonl = (
            read_benchmark(
                write_runs(
                    tmp_path / f"{kind}/a.{kind}", runs, input_mb=extended, params=params, wildcards=wildcards
                )
            )
            for kind in ("tsv", "jsonl")
        )
        fields = [
            (r.line, r.seconds, r.max_rss_mb, r.input_size_mb, r.params, r.memory_recorded) for r in tsv
        ]
        assert [
            (r.line + 1, r.seconds, r.max_rss_mb, r.input_size_mb, r.params, r.memory_recorded) for r in jsonl
        ] == fields  # line + 1: a JSONL file has no header line
        assert jsonl[0].path == str(tmp_path / "jsonl/a.jsonl")
    assert jsonl[0].input_size_mb == pytest.approx(3.0) and "results/{wildcard}/model.pt" in jsonl[0].params


def test_a_rule_with_a_jsonl_benchmark_path_learns_from_it(tmp_path):
    path = write_runs(tmp_path / "benchmarks/train/a.jsonl", [(600.0, 2500.0)], input_mb=1)
    estimator = history(tmp_path)
    pattern = "benchmarks/train/{dataset}.jsonl"
    estimate = estimator.estimate("mem_mb", pattern, {"dataset": "a"}, default=1, input_size_mb=1.0)
    assert (estimate.value, estimate.learned, estimate.warnings) == (
        memory(2500.0, estimator.settings),
        True,
        (),
    )
    assert estimate.sources == (str(path),)
    runtime = estimator.estimate("runtime", pattern, {"dataset": "a"}, default=1)
    assert runtime.value == math.ceil(600.0 / 60 * 1.3)


@pytest.mark.parametrize(
    ("content", "line", "says"),
    [
        ("", 1, "is empty (no runs)"),
        ('{"s": 1, "max_rss": 5}\n{"s": 2, "max_rss": 5\n', 2, "is not JSON ("),
        ('\n["s", 1]\n', 2, "is not a JSON object: '[\"s\", 1]'"),
        ('{"h:m:s": "0:00:01", "max_rss": 5}\n', 1, "has no 's' field"),
        ('{"s": 1, "h:m:s": "0:00:01"}\n', 1, "has no 'max_rss' field"),
        ('{"s": 1, "max_rss": "lots"}\n', 1, "max_rss 'lots' is not a number"),
        ('{"s": 1, "max_rss": true}\n', 1, "max_rss 'true' is not a number"),
        ('{"s": "NA", "max_rss": 5}\n', 1, "'s' (wall seconds) field is empty"),
        ('{"s": -1, "max_rss": 5}\n', 1, "s '-1' is not a finite number >= 0"),
        ('{"s": 1, "max_rss": NaN}\n', 1, "max_rss 'nan' is not a finite number >= 0"),
        ('{"s": 1e308, "max_rss": 5}\n', 1, "s '1e+308' is more than any run records"),
        (
            '{"s": 1, "max_rss": 5, "input_size_mb": [3]}\n',
            1,
            "input_size_mb '[3]' is not a dict of file sizes",
        ),
        ('{"s": 1, "max_rss": 5, "input_size_mb": {"a": -3}}\n', 1, "is not a dict of finite sizes"),
    ],
)
def test_bad_jsonl_file_is_named_with_its_line(tmp_path, content, line, says):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(BenchmarkFileError) as error:
        read_benchmark(path)
    assert error.value.path == str(path) and error.value.line == line
    assert says in str(error.value) and f"benchmark file {path} line {line}: " in str(error.value)


def test_bad_jsonl_file_falls_back_with_a_warning_naming_file_and_line(tmp_path):
    bad = write_runs(tmp_path / "benchmarks/train/a.jsonl", [(60.0, 200.0), (61.0, 210.0)])
    bad.write_text(bad.read_text().replace('"max_rss": 210.0', '"max_rss": "many"'))
    estimate = history(tmp_path).estimate(
        "mem_mb", "benchmarks/train/{dataset}.jsonl", {"dataset": "a"}, 4000
    )
    assert (estimate.value, estimate.learned) == (4000, False)
    assert estimate.warnings == (
        f"benchmark file {bad} line 2: max_rss 'many' is not a number; left out of the history",
    )


def test_pattern_finds_files_and_their_wildcards(tmp_path):
    for name in ("benchmarks/train/a.tsv", "benchmarks/train/b.tsv", "benchmarks/train/nested/c.tsv"):
        write_runs(tmp_path / name, [(1.0, 1.0)])
    found = BenchmarkPattern.parse("benchmarks/train/{dataset,[^/]+}.tsv").files(tmp_path)
    assert [values for _, values in found] == [{"dataset": "a"}, {"dataset": "b"}]  # the constraint holds
    unconstrained = BenchmarkPattern.parse(PATTERN).files(tmp_path)
    assert {"dataset": "nested/c"} in [values for _, values in unconstrained]  # Snakemake's default `.+`


def test_a_wildcard_named_twice_in_a_pattern_takes_one_value_in_both_places(tmp_path):
    """As in Snakemake, `{dataset}` twice in one path is one value: a file whose two places differ is no file of the
    pattern (it would be learned from as the first place's dataset)."""
    for name in ("benchmarks/a/a.tsv", "benchmarks/a/b.tsv"):
        write_runs(tmp_path / name, [(1.0, 1.0)])
    found = BenchmarkPattern.parse("benchmarks/{dataset}/{dataset}.tsv").files(tmp_path)
    assert found == [(tmp_path / "benchmarks/a/a.tsv", {"dataset": "a"})]


def test_an_absolute_benchmark_path_is_read_where_it_is(tmp_path):
    """A module imported with an absolute `prefix:` has absolute benchmark and output paths: they crashed the
    resource function (ValueError from Path.relative_to) unless the working directory held them, when they matched
    nothing. Read where they are, once however many roots there are."""
    write_runs(tmp_path / "scratch/benchmarks/train/a.tsv", [(60.0, 700.0)])
    for directory in ("work", "work/archive"):
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
    estimator = ResourceHistory(
        LearnedResourceSettings(enabled=True, min_history=2, benchmark_roots=(".", "archive")),
        workdir=tmp_path / "work",
    )
    pattern = f"{tmp_path}/scratch/benchmarks/train/{{dataset}}.tsv"
    one_run = estimator.estimate("mem_mb", pattern, {"dataset": "a"}, default=4000)
    assert (one_run.value, one_run.learned) == (4000, False)  # one run, not once per root
    assert "1 run(s) with max_rss recorded in 1 benchmark file(s)" in one_run.explanation
    single_root = history(tmp_path / "work")
    learned = single_root.estimate("mem_mb", pattern, {"dataset": "a"}, default=4000)
    assert learned.learned and learned.value == memory(700.0, single_root.settings)
    assert learned.sources == (str(tmp_path / "scratch/benchmarks/train/a.tsv"),)


def test_a_benchmark_file_counts_once_however_many_roots_reach_it(tmp_path):
    """One run, reached through a root listed twice and through a link to its folder, is one run toward
    min_history, not three (the value stays the default until a second run is recorded)."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 700.0)])
    (tmp_path / "mirror").symlink_to(tmp_path, target_is_directory=True)
    estimator = history(tmp_path, min_history=2, benchmark_roots=(".", ".", "mirror"))
    one_run = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert (one_run.value, one_run.learned) == (4000, False), one_run.explanation
    assert "1 run(s) with max_rss recorded in 1 benchmark file(s)" in one_run.explanation
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 700.0), (61.0, 650.0)])
    two_runs = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert two_runs.learned and two_runs.value == memory(700.0, estimator.settings)


def test_a_benchmark_file_under_a_linked_folder_is_found_and_a_link_loop_ends(tmp_path):
    """A dataset's benchmark folder kept elsewhere (a link to scratch) holds the job's own file, which Snakemake
    reads and writes through the link: it was not found ("no benchmark history"). A link back up the tree is
    walked once, not forever."""
    pattern = "benchmarks/kd/{dataset}/{stage}.tsv"
    write_runs(tmp_path / "scratch/hcrl/vgae.tsv", [(60.0, 700.0)])
    (tmp_path / "work/benchmarks/kd").mkdir(parents=True)
    (tmp_path / "work/benchmarks/kd/hcrl").symlink_to(tmp_path / "scratch/hcrl", target_is_directory=True)
    (tmp_path / "scratch/hcrl/loop").symlink_to(tmp_path / "work/benchmarks", target_is_directory=True)
    estimator = history(tmp_path / "work")
    estimate = estimator.estimate("mem_mb", pattern, {"dataset": "hcrl", "stage": "vgae"}, default=4000)
    assert (estimate.value, estimate.learned) == (memory(700.0, estimator.settings), True), (
        estimate.explanation
    )
    assert estimate.sources == (str(tmp_path / "work/benchmarks/kd/hcrl/vgae.tsv"),)
    assert "same wildcards (dataset=hcrl, stage=vgae)" in estimate.explanation


def test_a_benchmark_folder_bind_mounted_inside_the_tree_is_walked_once(tmp_path, monkeypatch):
    """A folder bind-mounted a second time under the root has another real path, which os.path.realpath cannot
    see through: its files were found twice, and one run counted twice toward min_history. A folder is known by
    its (st_dev, st_ino), as simcal.progress knows it. The mount is simulated: os.stat gives the mount point the
    identity of the folder it shows."""
    write_runs(tmp_path / "benchmarks/train/a/run.tsv", [(60.0, 700.0)])
    write_runs(tmp_path / "benchmarks/mirror/a/run.tsv", [(60.0, 700.0)])  # what the mount would show
    train, mirror, real_stat = tmp_path / "benchmarks/train", tmp_path / "benchmarks/mirror", os.stat

    def stat(path, *args, **kwargs):
        return real_stat(train if os.fspath(path) == str(mirror) else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    found = BenchmarkPattern.parse("benchmarks/{group}/{dataset}/run.tsv").files(tmp_path)
    # One of the two paths, whichever the walk reaches first (the order of the folder's listing)
    assert [(path.relative_to(tmp_path).parts[2:], values["dataset"]) for path, values in found] == [
        (("a", "run.tsv"), "a")
    ]


def test_a_benchmark_root_that_is_a_bind_mount_of_another_counts_its_runs_once(tmp_path, monkeypatch):
    """Two benchmark roots, one a bind mount of the other, reach the same files under two real paths, which
    os.path.realpath cannot tell apart: one run counted twice toward min_history. A file is known by its
    (st_dev, st_ino). The mount is simulated: os.stat gives every path under it the identity of the path it shows."""
    write_runs(tmp_path / "work/benchmarks/train/a.tsv", [(60.0, 700.0)])
    write_runs(tmp_path / "mount/benchmarks/train/a.tsv", [(60.0, 700.0)])  # what the mount would show
    work, mount, real_stat = str(tmp_path / "work"), str(tmp_path / "mount"), os.stat

    def stat(path, *args, **kwargs):
        path = os.fspath(path)
        shown = work + path[len(mount) :] if path == mount or path.startswith(mount + os.sep) else path
        return real_stat(shown, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    estimator = history(tmp_path, min_history=2, benchmark_roots=("work", "mount"))
    one_run = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert (one_run.value, one_run.learned) == (4000, False), one_run.explanation
    assert "1 run(s) with max_rss recorded in 1 benchmark file(s)" in one_run.explanation


# --- which history --------------------------------------------------------------------------------------------
def test_a_history_folder_this_user_may_not_list_is_named_in_a_warning_not_skipped_silently(tmp_path):
    """os.walk skipped a folder it could not list without a word: its runs (here the larger peak) were left out and
    the job learned less memory than they used, where an unreadable file is named (simcal.progress names such a
    folder too). Root lists every folder, so the estimate runs without the capabilities that let it."""
    write_runs(tmp_path / "benchmarks/train/open/run.tsv", [(60.0, 100.0)])
    write_runs(tmp_path / "benchmarks/train/locked/run.tsv", [(60.0, 900.0)])
    child = (
        "import sys; from pathlib import Path; from resource_history import LearnedResourceSettings, "
        "ResourceHistory; e = ResourceHistory(LearnedResourceSettings(enabled=True), workdir=Path(sys.argv[1]))"
        ".estimate('mem_mb', 'benchmarks/train/{dataset}/run.tsv', {'dataset': 'new'}, 4000); "
        "print(e.value); print(*e.warnings, sep='\\n')"
    )
    argv = [sys.executable, "-c", child, str(tmp_path)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
        argv = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]
    (tmp_path / "benchmarks/train/locked").chmod(0)
    try:
        run = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
            timeout=60,
        )
    finally:
        (tmp_path / "benchmarks/train/locked").chmod(0o755)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        str(memory(100.0, LearnedResourceSettings())),
        f"cannot search {tmp_path / 'benchmarks/train/locked'} (Permission denied): the files under it are left "
        "out of the history",
    ]


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


# A kd_gat benchmark path as Snakemake 9.27.1 gives it to the resource functions under profiles/k8s
# (default-storage-provider azure, default-storage-prefix az://snakemake/kd-gat): its local copy of the blob.
REMOTE_PATTERN = (
    ".snakemake/storage/azure/snakemake/kd-gat/benchmarks/kd_gat/{dataset}/seed_{seed}/teacher/vgae.tsv"
)


def test_history_in_remote_storage_is_learned_from_where_it_was_copied_and_named_until_then(tmp_path):
    """profiles/k8s/README.md, "Learned resources": the driver of a Kubernetes run never downloads the benchmark
    files its Jobs write into Blob storage, so nothing is learned, and the explanation says why, until the blobs
    are copied (az storage blob download-batch keeps their names under its destination) into a root."""
    job = {"dataset": "a", "seed": "1"}
    missing = history(tmp_path, benchmark_roots=(".", "history")).estimate(
        "mem_mb", REMOTE_PATTERN, job, 4000
    )
    assert (missing.value, missing.learned) == (4000, False)
    assert "Snakemake's local copy of a file in remote storage" in missing.explanation
    assert "profiles/k8s/README.md 'Learned resources'" in missing.explanation
    blob = "kd-gat/benchmarks/kd_gat/a/seed_1/teacher/vgae.tsv"  # its name in the container `snakemake`
    write_runs(tmp_path / "history/.snakemake/storage/azure/snakemake" / blob, [(60.0, 700.0)])
    estimator = history(tmp_path, benchmark_roots=(".", "history"))
    copied = estimator.estimate("mem_mb", REMOTE_PATTERN, job, 4000)
    assert (copied.value, copied.learned) == (memory(700.0, estimator.settings), True)
    local = history(tmp_path).estimate("mem_mb", PATTERN, {"dataset": "a"}, 4000)  # no hint for a local path
    assert "remote storage" not in local.explanation
    readme = " ".join((REPO / "profiles/k8s/README.md").read_text().split())
    assert "--destination history/.snakemake/storage/azure/snakemake" in readme
    assert "`benchmark_roots: [., history]`" in readme


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


def test_a_file_of_wall_times_only_teaches_runtime_and_says_memory_cannot_be_learned(tmp_path):
    """Snakemake before 3.12.0 wrote benchmark files with only `s` and `h:m:s` (print(t, timedelta(seconds=t)));
    they were refused as a whole, runtime included. Their runs now teach runtime; for mem_mb the configured value
    stays and a warning names the file. Another header without max_rss is still no benchmark file."""
    old = tmp_path / "benchmarks/train/a.tsv"
    old.parent.mkdir(parents=True)
    old.write_text("s\th:m:s\n900.2501\t0:15:00.250100\n")
    (run,) = read_benchmark(old)
    assert (run.seconds, run.max_rss_mb, run.memory_recorded, run.line) == (900.2501, None, False, 2)
    estimator = history(tmp_path)
    runtime = estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120)
    assert (runtime.value, runtime.learned, runtime.warnings) == (math.ceil(900.2501 / 60 * 1.3), True, ())
    assert runtime.sources == (str(old),)
    mem = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert (mem.value, mem.learned) == (4000, False)
    assert mem.warnings == (
        f"benchmark file {old}: has only the 's' and 'h:m:s' columns (Snakemake before 3.12.0 measured no "
        "memory), so mem_mb cannot be learned from it; its runtime is",
    )
    assert "0 run(s) with max_rss recorded in 1 benchmark file(s)" in mem.explanation
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(60.0, 200.0)])  # today's format, memory measured
    wider = history(tmp_path).estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert wider.learned and wider.sources == (str(tmp_path / "benchmarks/train/b.tsv"),)
    assert wider.warnings == mem.warnings


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


@pytest.mark.parametrize("resource", ["mem_mb", "runtime"])
def test_a_margin_whose_product_with_the_peak_is_not_finite_is_refused_naming_it(tmp_path, resource):
    """margin has no maximum (the schema, the settings: a finite number >= 1): 1e308 x a peak of 1000 MB is inf,
    and ceil(inf) raised OverflowError in the rule's resource function, naming no key."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 1000.0)])
    with pytest.raises(SettingsError) as refused:
        history(tmp_path, margin=1e308).estimate(resource, PATTERN, {"dataset": "a"}, default=1)
    peak = "runtime peak (600 s)" if resource == "runtime" else "mem_mb peak (1000 MB)"
    assert str(refused.value) == (
        f"learned_resources.margin 1e+308 x the recorded {peak} is not a finite number; give a margin of a few "
        "(1.3 by default)"
    )
    # a large finite margin is still the documented arithmetic up to the most a job may ask for (1 PB, 10 years)
    large = history(tmp_path, margin=5e5).estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1)
    assert large.value == math.ceil((1000 + 900) * 5e5)


@pytest.mark.parametrize(
    ("resource", "margin", "asked"),
    [("mem_mb", 1e300, "1.9e+303 at attempt 1"), ("runtime", 1e300, "1e+301 at attempt 1"), ("mem_mb", 6e5, "1.14e+09 at attempt 1")],
)  # fmt: skip
def test_a_margin_asking_for_more_than_any_job_can_use_is_refused_naming_it(
    tmp_path, resource, margin, asked
):
    """margin 1e300 on a peak of 1000 MB asked the scheduler for mem_mb 1.9e303 (a 304-digit integer) and a
    runtime of 1e301 minutes. Past 1 PB of memory or 10 years of runtime a learned request is refused, naming the
    margin (and the overhead added to a memory peak)."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 1000.0)])
    with pytest.raises(SettingsError) as refused:
        history(tmp_path, margin=margin).estimate(resource, PATTERN, {"dataset": "a"}, default=1)
    if resource == "runtime":
        expected = (
            f"learned_resources.margin {margin:g} on the recorded runtime peak (600 s) asks for {asked}, more than "
            "the most a job may ask for, 5270400 min (10 years); give a margin of a few (1.3 by default)"
        )
    else:
        expected = (
            f"learned_resources.margin {margin:g} with learned_resources.mem_overhead_mb 900 on the recorded mem_mb "
            f"peak (1000 MB) asks for {asked}, more than the most a job may ask for, 1000000000 MB (1 PB); give a "
            "margin of a few (1.3 by default) and an overhead of a few hundred MB"
        )
    assert str(refused.value) == expected


@pytest.mark.parametrize(
    ("resource", "key"), [("mem_mb", "mem_overhead_mb"), ("gpu_mem_mb", "gpu_overhead_mb")]
)
def test_an_overhead_too_large_for_a_float_is_refused_naming_its_key(tmp_path, resource, key):
    """A 400-digit integer mem_overhead_mb or gpu_overhead_mb passed the settings' check (an integer >= 0) and
    raised OverflowError ("int too large to convert to float") in the scaling of a job's resources, naming no key.
    The config check refuses it now (at most 1 PB), and the scaling names the key where settings skip that check."""
    with pytest.raises(SettingsError) as refused:
        LearnedResourceSettings.from_config({"enabled": True, key: 10**400})
    assert str(refused.value) == (
        f"learned_resources.{key} must be an integer >= 0 and <= 1000000000 (1 PB), got 10000000... (401 digits)"
    )
    with pytest.raises(SettingsError) as refused:
        history(tmp_path, **{key: 10**400}).scale(resource, 1000.0, 1)
    assert str(refused.value) == (
        f"learned_resources.{key} 10000000... (401 digits) is too large to add to the recorded {resource} peak "
        "(1000 MB); give an integer >= 0 and <= 1000000000 (1 PB), a few hundred MB"
    )
    # the largest overhead the check takes still scales, with a margin of 1
    assert history(tmp_path, margin=1.0, **{key: 10**9}).scale(resource, 0.0, 1) == 10**9


def test_rounding_up_ignores_float_noise(tmp_path):
    """(100 + 300) x 1.1 is 440.00000000000006 in floats: the documented ceil gives 440, not 441."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 100.0)])
    assert (100 + 300) * 1.1 > 440
    estimator = history(tmp_path, margin=1.1, mem_overhead_mb=300)
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1).value == 440


def test_a_rewritten_benchmark_file_is_read_again(tmp_path):
    """Parsed files are cached per run of the workflow; a job that finished since rewrote its file, and the next
    estimate (e.g. a retry's) must see the new run, not the cached old one."""
    path = write_runs(tmp_path / "benchmarks/train/a.tsv", [(60.0, 100.0)])
    estimator = history(tmp_path)
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1).value == memory(
        100.0, estimator.settings
    )
    write_runs(path, [(60.0, 2500.0)])
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1).value == memory(
        2500.0, estimator.settings
    )


# --- input-size scaling ---------------------------------------------------------------------------------------
def test_memory_that_grows_with_input_is_scaled_to_the_new_input(tmp_path):
    # 30 MB + 25 MB per input MB, and a little noise: the peak (130) badly underestimates an 8 MB input (the
    # most the line is used for: SIZE_FACTOR x the largest recorded, 4 MB).
    for size, rss in [(1, 56.0), (2, 79.0), (3, 106.0), (4, 129.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(size * 30.0, rss)], input_mb=size)
    estimator = history(tmp_path)
    scaled = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000, input_size_mb=8.0)
    sizes, rss = numpy.array([1, 2, 3, 4]), numpy.array([56.0, 79.0, 106.0, 129.0])
    slope, intercept = numpy.polyfit(sizes, rss, 1)
    above = max(0.0, (rss - (intercept + slope * sizes)).max())  # the line raised to cover every run
    assert scaled.value == memory(intercept + slope * 8.0 + above, estimator.settings)
    assert "x input MB" in scaled.explanation and "at 8.0 MB" in scaled.explanation
    runtime = estimator.estimate("runtime", PATTERN, {"dataset": "big"}, default=1, input_size_mb=8.0)
    assert runtime.value == max(5, math.ceil(8 * 30.0 / 60 * 1.3))
    unknown_size = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000)
    assert unknown_size.value == memory(129.0, estimator.settings)  # no size for the job: the peak
    off = history(tmp_path, size_scaling=False)
    assert off.estimate("mem_mb", PATTERN, {"dataset": "big"}, 4000, input_size_mb=8.0).value == memory(
        129.0, off.settings
    )


def test_memory_unrelated_to_input_keeps_the_peak(tmp_path):
    # A model whose memory is set by its parameters, not the data: the line predicts no better than the peak.
    for size, rss in [(1, 400.0), (2, 395.0), (3, 410.0), (4, 398.0), (8, 402.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, rss)], input_mb=size)
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000, input_size_mb=6.0)
    assert estimate.value == memory(410.0, estimator.settings)
    assert "input-size line not better" in estimate.explanation
    # Far beyond the recorded sizes a constant says nothing either: the configured value.
    beyond = estimator.estimate("mem_mb", PATTERN, {"dataset": "big"}, default=4000, input_size_mb=100.0)
    assert (beyond.value, beyond.learned) == (
        4000,
        False,
    ) and "input-size line not better" in beyond.explanation


def test_fit_needs_three_sizes_and_compares_leave_one_out():
    assert size_fit([(1, 10.0), (1, 12.0), (2, 20.0)]) is None
    # Two sizes, twice each: every leave-one-out fit has a line, and still none is fitted.
    assert size_fit([(1, 10.0), (1, 12.0), (2, 20.0), (2, 22.0)]) is None
    line = size_fit([(1, 10.0), (2, 20.0), (3, 30.0)])
    assert line.better and line.at(10) == pytest.approx(100.0) and line.fit_error == pytest.approx(0.0)
    assert line.constant_error == pytest.approx((15 + 0 + 15) / 3) and line.cover == pytest.approx(0.0)


def test_a_line_that_predicts_the_runs_only_as_well_as_a_constant_is_not_used(tmp_path):
    """estimate's docstring: the line is used when its leave-one-out error is smaller than a constant's. At a tie
    the input size explains nothing the peak does not: the job gets the peak, not the line (here lower)."""
    for size, rss in [(1, 1000.0), (2, 1100.0), (3, 1800.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, rss)], input_mb=size)
    tie = size_fit([(1, 1000.0), (2, 1100.0), (3, 1800.0)])
    assert tie.slope > 0 and tie.fit_error == tie.constant_error == 500.0 and not tie.better
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=2.5)
    assert estimate.value == memory(1800.0, estimator.settings) > memory(tie.at(2.5), estimator.settings)
    assert "input-size line not better: leave-one-out error 500.0 vs 500.0" in estimate.explanation


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


@pytest.mark.parametrize(("resource", "column"), [("runtime", "s"), ("mem_mb", "max_rss")])
def test_a_run_beyond_any_real_one_is_left_out_with_a_warning_naming_its_file(tmp_path, resource, column):
    """A corrupt benchmark file with `s` or `max_rss` 1e308 (finite, so no parse error) made the learned runtime or
    mem_mb a number hundreds of digits long. It is left out as an unreadable file is: the others are learned
    from, and the warning names the file and line."""
    corrupt = tmp_path / "benchmarks/train/a.tsv"
    corrupt.parent.mkdir(parents=True)
    fields = {"s": "600", "max_rss": "500", column: "1e308"}
    corrupt.write_text(f"s\th:m:s\tmax_rss\n{fields['s']}\t0:10:00\t{fields['max_rss']}\n")
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(600.0, 500.0)])
    estimate = history(tmp_path).estimate(resource, PATTERN, {"dataset": "a"}, default=120)
    expected = (
        math.ceil(600 / 60 * 1.3) if resource == "runtime" else memory(500.0, LearnedResourceSettings())
    )
    assert (estimate.value, estimate.learned) == (expected, True)
    assert estimate.sources == (str(tmp_path / "benchmarks/train/b.tsv"),)
    assert estimate.warnings == (
        f"benchmark file {corrupt} line 2: {column} '1e308' is more than any run records (at most "
        f"{LARGEST[column]:g}); left out of the history",
    )


def test_a_root_starting_with_a_tilde_is_in_the_home_folder(tmp_path, monkeypatch):
    # "~/old run" was looked up as <working directory>/~/old run: "not a directory; skipped", nothing learned.
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    earlier = write_runs(tmp_path / "home/old run" / "benchmarks/train/a.tsv", [(600.0, 500.0)])
    estimate = history(tmp_path / "run", benchmark_roots=("~/old run",)).estimate(
        "mem_mb", PATTERN, {"dataset": "a"}, 4000
    )
    assert (estimate.learned, estimate.sources, estimate.warnings) == (True, (str(earlier),), ())


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
        # JSON as Python reads it: NaN, Infinity, and an integer beyond any float (math.isfinite overflowed).
        (f'{{"{GPU_PEAK_KEY}": NaN}}', f"{GPU_PEAK_KEY} nan is neither null"),
        (f'{{"{GPU_PEAK_KEY}": Infinity}}', f"{GPU_PEAK_KEY} inf is neither null"),
        (f'{{"{GPU_PEAK_KEY}": 1{"0" * 400}}}', f"{GPU_PEAK_KEY} 1{'0' * 39}... is neither null"),
        (
            f'{{"{GPU_PEAK_KEY}": 1e308}}',
            f"{GPU_PEAK_KEY} 1e+308 is more than any GPU holds (at most 1e+08 MB)",
        ),
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
        ({"margin": 0.5}, "learned_resources.margin must be a finite number >= 1"),
        ({"benchmark_roots": "archive"}, "learned_resources.benchmark_roots must be a list of strings"),
        ({"enabled": "yes"}, "learned_resources.enabled must be true or false"),
        ({"gpu_overhead_mb": -1}, "learned_resources.gpu_overhead_mb must be an integer >= 0"),
        ({"mem_overhead_mb": -1}, "learned_resources.mem_overhead_mb must be an integer >= 0"),
        ({"min_runtime": 0}, "learned_resources.min_runtime must be an integer >= 1 (minutes), got 0"),
        ({"min_history": 0}, "learned_resources.min_history must be an integer >= 1, got 0"),
        (
            {"benchmark_roots": []},
            "learned_resources.benchmark_roots must be a non-empty list of directories",
        ),
        ({"size_scaling": "no"}, "learned_resources.size_scaling must be true or false, got 'no'"),
    ],
)
def test_bad_settings_name_the_key(options, says):
    with pytest.raises(SettingsError, match=None) as error:
        LearnedResourceSettings.from_config(options)
    assert says in str(error.value)


def test_the_lowest_value_each_range_allows_is_accepted():
    """The bounds the messages state are inclusive: margin >= 1, overheads >= 0, min_history and min_runtime >= 1."""
    lowest = {"margin": 1.0, "min_history": 1, "mem_overhead_mb": 0, "gpu_overhead_mb": 0, "min_runtime": 1}
    settings = LearnedResourceSettings.from_config(lowest)
    assert {key: getattr(settings, key) for key in lowest} == lowest
    assert LearnedResourceSettings.from_config({"margin": 1}).margin == 1  # an integer margin is a number too


def test_a_log_line_is_said_the_first_time_only():
    message = f"learned resources: a line of this test {id(object())}"
    assert first_time(message) is True
    assert first_time(message) is False and first_time(message) is False
    assert first_time(f"{message} and another") is True


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"benchmark_roots": 5}, "learned_resources.benchmark_roots must be a list of strings, got 5"),
        ({"benchmark_roots": [".", 5]}, "learned_resources.benchmark_roots must be a list of strings"),
        ({"match_wildcards": None}, "learned_resources.match_wildcards must be a list of strings, got None"),
        ({"match_wildcards": "dataset"}, "learned_resources.match_wildcards must be a list of strings"),
        ({"margin": math.inf}, "learned_resources.margin must be a finite number >= 1, got inf"),
        ({"margin": math.nan}, "learned_resources.margin must be a finite number >= 1, got nan"),
        ({"margin": "1.3"}, "learned_resources.margin must be a finite number >= 1, got '1.3'"),
        ({"min_history": 1.5}, "learned_resources.min_history must be an integer >= 1, got 1.5"),
        (["enabled"], "learned_resources must be a mapping of settings (e.g. {enabled: true}), got list"),
        ("enabled", "learned_resources must be a mapping of settings (e.g. {enabled: true}), got str"),
        (5, "learned_resources must be a mapping of settings (e.g. {enabled: true}), got int 5"),
    ],
)
def test_settings_of_the_wrong_type_or_not_finite_name_the_key(section, says):
    """Not a bare TypeError or an overflow in math.ceil when a job's resources are first computed."""
    with pytest.raises(SettingsError) as error:
        LearnedResourceSettings.from_config(section)
    assert says in str(error.value)


def test_messages_show_the_pattern_without_constraints(tmp_path):
    estimate = history(tmp_path).estimate("mem_mb", "benchmarks/train/{dataset,a|b}.tsv", {"dataset": "a"}, 1)
    assert "for benchmarks/train/{dataset}.tsv" in estimate.explanation


def test_a_file_starting_with_a_blank_line_is_read_and_not_called_empty(tmp_path):
    """Blank lines between runs were skipped, but one before the header made the whole file "empty (no header
    line)" and left its runs out of the history; a file of blank lines only is still empty."""
    path = tmp_path / "benchmarks/train/a.tsv"
    path.parent.mkdir(parents=True)
    path.write_text("\n\ns\th:m:s\tmax_rss\n12.5\t0:00:12\t300.00\n")
    assert [(run.line, run.seconds, run.max_rss_mb) for run in read_benchmark(path)] == [(4, 12.5, 300.0)]
    path.write_text("\n\ns\th:m:s\tio_in\n1\t0:00:01\t3\n")
    with pytest.raises(BenchmarkFileError, match="line 3: the header has no 'max_rss' column"):
        read_benchmark(path)
    path.write_text("\n  \n")
    with pytest.raises(BenchmarkFileError, match="line 1: is empty"):
        read_benchmark(path)


def test_missing_value_dash_reads_as_not_recorded(tmp_path):
    """Snakemake writes a value it does not have (None) as `-` (BenchmarkRecord.to_tsv)."""
    record = BenchmarkRecord(running_time=30.0, max_rss=None, max_vms=None, max_uss=None, max_pss=None)
    record.data_collected, record.io_in, record.io_out, record.cpu_time, record.cpu_usage = True, 0, 0, 1, 1
    path = tmp_path / "benchmarks/train/a.tsv"
    path.parent.mkdir(parents=True)
    write_benchmark_records([record], str(path), False)
    assert path.read_text().splitlines()[1].split("\t")[2] == "-"
    (run,) = read_benchmark(path)
    assert (run.seconds, run.max_rss_mb) == (30.0, None)
    estimator = history(tmp_path)
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000).value == 4000
    assert estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120).learned


# --- runs resumed from partial work -------------------------------------------------------------------------------
def test_resumed_run_is_left_out_of_runtime_but_not_memory(tmp_path):
    own = write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 1000.0)])  # only the epochs after resuming
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(3000.0, 900.0)])
    mark = mark_resumed(own, "resumed_from_epoch 7")
    estimator = history(tmp_path)
    runtime = estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120)
    assert runtime.value == math.ceil(3000 / 60 * 1.3)  # b's whole run, not a's 600 s
    assert runtime.sources == (str(tmp_path / "benchmarks/train/b.tsv"),)
    assert "all wildcard values" in runtime.explanation
    assert "left out 1 run(s) resumed from partial work" in runtime.explanation
    assert f"{mark}: resumed_from_epoch 7" in runtime.explanation
    memory_estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000)
    assert memory_estimate.value == memory(1000.0, estimator.settings)  # its peak is a whole job's
    assert "left out" not in memory_estimate.explanation

    (tmp_path / "benchmarks/train/b.tsv").unlink()
    alone = estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120)
    assert (alone.value, alone.learned) == (120, False)
    assert "configured default: 0 run(s) with s recorded" in alone.explanation
    assert "left out 1 run(s) resumed from partial work" in alone.explanation

    clear_mark(own)  # the next run started afresh: its time is whole again
    assert not mark.exists()
    again = estimator.estimate("runtime", PATTERN, {"dataset": "a"}, default=120)
    assert again.value == max(5, math.ceil(600 / 60 * 1.3)) and "left out" not in again.explanation


def test_only_the_resumed_runs_of_the_files_learned_from_are_said_to_be_left_out(tmp_path):
    """Dataset b learns its runtime from its own whole run: the resumed run of dataset a was never a candidate, so
    the explanation does not count it as left out (it would for a job learning from every dataset)."""
    resumed = write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 1000.0)])
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(3000.0, 900.0)])
    mark_resumed(resumed, "resumed_from_epoch 7")
    estimator = history(tmp_path)
    own = estimator.estimate("runtime", PATTERN, {"dataset": "b"}, default=120)
    assert own.value == math.ceil(3000 / 60 * 1.3) and "same wildcards (dataset=b)" in own.explanation
    assert "left out" not in own.explanation
    every = estimator.estimate("runtime", PATTERN, {"dataset": "new"}, default=120)
    assert "left out 1 run(s) resumed from partial work" in every.explanation


def test_mark_helpers_describe_the_run_the_benchmark_holds(tmp_path):
    benchmark = tmp_path / "benchmarks/train/a.tsv"
    assert resumed_reason(benchmark) is None
    mark = mark_resumed(benchmark, "resumed\nafter epoch 3")
    assert mark == tmp_path / "benchmarks/train/a.tsv.resumed"
    assert mark.read_text() == "resumed after epoch 3\n"  # one line
    assert resumed_reason(benchmark) == "resumed after epoch 3"
    clear_mark(benchmark)
    clear_mark(benchmark)  # nothing to clear: no error
    assert resumed_reason(benchmark) is None and not mark.exists()
    with pytest.raises(ValueError, match="the reason is empty"):
        mark_resumed(benchmark, " \n")

    resumed = {"resumed_from_epoch": 4, "val_f1": 0.9}
    assert mark_if_resumed(benchmark, resumed, key="resumed_from_epoch") is resumed
    assert resumed_reason(benchmark) == "resumed_from_epoch 4"
    mark_if_resumed(str(benchmark), {"resumed_from_epoch": None}, key="resumed_from_epoch")  # a fresh run
    assert not mark.exists()
    mark_if_resumed(None, resumed, key="resumed_from_epoch")  # no benchmark: nothing to mark
    assert list(tmp_path.rglob("*.resumed")) == []


@pytest.mark.parametrize(
    ("mark", "reason", "suffix"),
    [(mark_resumed, resumed_reason, ".resumed"), (mark_restored, restored_reason, ".restored")],
)
def test_a_mark_is_replaced_whole_never_rewritten_in_place(tmp_path, mark, reason, suffix):
    """The marks were rewritten in place (Path.write_text: truncate, then write), so an estimate reading one while a
    job rewrote it saw an empty mark, or the end of the old line overwritten. Now a new file is renamed over the
    mark: a reader that opened the mark before the rewrite reads the whole line it opened, the next one reads the
    whole new line, no temporary file stays, and the mode is 0666 minus the umask (the project group reads it)."""
    benchmark = tmp_path / "benchmarks/train/a.tsv"
    previous = os.umask(0o002)
    try:
        mark(benchmark, "resumed_from_epoch 3")
        # an estimate that opened the mark just before the rewrite
        with open(f"{benchmark}{suffix}") as reader:
            mark(benchmark, "resumed_from_epoch 12")
            assert reader.read() == "resumed_from_epoch 3\n"
    finally:
        os.umask(previous)
    assert reason(benchmark) == "resumed_from_epoch 12"
    assert sorted(path.name for path in benchmark.parent.iterdir()) == [f"a.tsv{suffix}"]
    assert Path(f"{benchmark}{suffix}").stat().st_mode & 0o777 == 0o664


def test_a_restored_run_is_left_out_of_memory_and_runtime_and_its_mark_describes_the_run_recorded(tmp_path):
    """A job that copied its outputs from results kept earlier computed nothing: unlike a resumed run, its peak
    memory is no job's either (the next evaluation that computes is given what a copy took)."""
    own = write_runs(tmp_path / "benchmarks/train/a.tsv", [(2.0, 150.0)])
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(3000.0, 900.0)])
    mark_restored(own, "restored from\nthe result stash entry x")
    assert restored_reason(own) == "restored from the result stash entry x"  # one line
    estimator = history(tmp_path)
    for resource, base in (("mem_mb", 900.0), ("runtime", 3000.0)):
        estimate = estimator.estimate(resource, PATTERN, {"dataset": "a"}, default=1)
        assert estimate.sources == (str(tmp_path / "benchmarks/train/b.tsv"),), estimate.describe()
        assert estimate.value == (
            memory(base, estimator.settings) if resource == "mem_mb" else math.ceil(base / 60 * 1.3)
        )
        assert (
            f"left out 1 run(s) that restored their outputs from earlier results and computed nothing ({own}"
            ".restored: restored from the result stash entry x)"
        ) in estimate.explanation
    mark_restored(own, None)  # the next run computed its outputs: it is learned from again
    mark_restored(None, "x")  # no benchmark: nothing to mark
    assert restored_reason(own) is None and list(tmp_path.rglob("*.restored")) == []
    assert estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=1).value == memory(
        150.0, estimator.settings
    )


def test_evaluation_rules_pass_their_own_benchmark_path():
    """Each evaluation rule's `benchmark` param is its `benchmark:` file, where the wrapper puts a restore mark."""
    text = (REPO / "workflow/modules/evaluation/Snakefile").read_text()
    block = text.split("for variant in VARIANTS:", 1)[1].split("\nrule ", 1)[0]
    directive = re.search(r"^\s+benchmark:\n\s+(.+)$", block, re.M)
    param = re.search(r"^\s+benchmark=benchmark_of\((.+)\),$", block, re.M)
    assert directive and param and param.group(1) == directive.group(1).strip()


TRAINING_WRAPPERS = {"train_vgae": "vgae", "train_gat": "gat", "train_dqn": "dqn"}


class Section(dict):
    """snakemake.input/output/params as a wrapper reads them: by attribute, by name, and with get()."""

    def __getattr__(self, name):
        return self[name]


@pytest.mark.parametrize(("wrapper", "stage"), TRAINING_WRAPPERS.items())
def test_training_wrapper_marks_a_resumed_run_and_clears_a_fresh_one(tmp_path, monkeypatch, wrapper, stage):
    """The wrapper, run as Snakemake runs it (a `snakemake` global), with the library's run() replaced: what a run
    that resumed, then one that did not, leave next to the benchmark file."""
    import importlib

    import kdgat.logs

    module = importlib.import_module(f"kdgat.training.{stage}")
    calls, results = [], [{"resumed_from_epoch": 3}, {"resumed_from_epoch": None}]
    monkeypatch.setattr(module, "run", lambda **kwargs: calls.append(kwargs) or results[len(calls) - 1])
    monkeypatch.setattr(kdgat.logs, "configure", lambda log: None)  # leave pytest's log handlers alone
    benchmark = tmp_path / "benchmarks/train/a.tsv"
    names = ("train", "val", "metadata", "fit", "vgae", "gat")
    snakemake = type("Snakemake", (), {})()
    snakemake.input = Section({name: f"in/{name}" for name in names})
    snakemake.output = Section({name: f"out/{name}" for name in ("model", "metrics", "history")})
    snakemake.params = Section(settings={}, benchmark=str(benchmark))
    snakemake.log, snakemake.threads = [str(tmp_path / "log")], 1
    snakemake.resources, snakemake.rule = Section(), "rule"
    code = compile((REPO / "wrappers" / wrapper / "wrapper.py").read_text(), wrapper, "exec")

    exec(code, {"snakemake": snakemake})
    assert resumed_reason(benchmark) == "resumed_from_epoch 3"
    exec(code, {"snakemake": snakemake})
    assert resumed_reason(benchmark) is None and len(calls) == 2


class Named(Section):
    """A section of named items that Snakemake also lets a wrapper read by position."""

    def __getitem__(self, key):
        return list(self.values())[key] if isinstance(key, int) else super().__getitem__(key)


class Positional(list):
    """A rule's section of unnamed items as a wrapper reads it: by position, and without names."""

    def get(self, name, default=None):
        return default

    def items(self):
        return []


@pytest.mark.parametrize("wrapper", ["simulate", "calibrate"])
def test_simcal_wrappers_mark_a_run_resumed_from_finished_simulations_and_clear_a_fresh_one(
    tmp_path, monkeypatch, wrapper
):
    """A sweep or calibration killed at its walltime resumes from the simulations in <output>.partial/, and its
    benchmark then times only the rest: without a mark the simulate and calibrate rules (whose runtime is learned)
    learned that short time and asked for too little at the next run. The wrapper, run as Snakemake runs it, with
    the library call replaced: a run that resumed, then one that did not."""
    import pandas as pd

    import simcal.calibrate
    import simcal.logs
    import simcal.runner
    from simcal.runner import RunSummary

    def trials(resumed):
        table = pd.DataFrame({"loss": [1.0]})
        table.attrs["resumed_simulations"] = resumed
        return table

    calls = []
    if wrapper == "simulate":
        results = [RunSummary(total=8, executed=3, skipped=5), RunSummary(total=8, executed=8)]
        monkeypatch.setattr(
            simcal.runner, "simulate", lambda **kw: calls.append(kw) or results[len(calls) - 1]
        )
    else:
        results = [trials(5), trials(0)]
        monkeypatch.setattr(
            simcal.calibrate, "calibrate_files", lambda **kw: calls.append(kw) or results[len(calls) - 1]
        )
    monkeypatch.setattr(simcal.logs, "configure", lambda log: None)  # leave pytest's log handlers alone
    benchmark = tmp_path / "benchmarks/calibration/demo/run.tsv"
    snakemake = type("Snakemake", (), {})()
    if wrapper == "simulate":  # items by position
        snakemake.input, snakemake.output = Positional(["design.csv"]), Positional(["out.parquet"])
    else:
        snakemake.input = Named(observed="observed.csv")
        snakemake.output = Section(simulations="sims.parquet", trials="trials.parquet")
    snakemake.params = Section(
        model="simcal.models.sir:simulate", parameters={}, targets=[], benchmark=str(benchmark)
    )
    snakemake.log, snakemake.threads = [str(tmp_path / "log")], 1
    snakemake.resources, snakemake.rule = Section(), "rule"
    code = compile((REPO / "wrappers" / wrapper / "wrapper.py").read_text(), wrapper, "exec")

    exec(code, {"snakemake": snakemake, "__name__": "__main__"})
    assert resumed_reason(benchmark) == "resumed_simulations 5"
    exec(code, {"snakemake": snakemake, "__name__": "__main__"})
    assert resumed_reason(benchmark) is None and len(calls) == 2
    assert all("benchmark" not in call for call in calls)  # the wrapper's, not the library's


def test_the_calibration_modules_simulate_and_calibrate_rules_pass_their_own_benchmark_path():
    """Each rule's `benchmark` param is its `benchmark:` file, where the wrapper puts the mark."""
    text = (REPO / "workflow/modules/calibration/Snakefile").read_text()
    for rule in ("simulate", "calibrate"):
        block = re.search(rf"^rule {rule}:\n(.*?)(?=^rule )", text, re.M | re.S).group(1)
        directive = re.search(r"^\s+benchmark:\n\s+(.+)$", block, re.M).group(1).strip()
        param = re.search(r"^\s+benchmark=benchmark_of\((.+)\),$", block, re.M)
        assert param and param.group(1) == directive, rule


def test_kd_gat_training_rules_pass_their_own_benchmark_path():
    """Each training rule's `benchmark` param is its `benchmark:` file, where the wrapper puts the mark."""
    text = (REPO / "workflow/modules/kd_gat/Snakefile").read_text()
    blocks = re.split(r"^\s*(?=(?:use )?rule )", text, flags=re.M)
    checked = 0
    for block in blocks:
        directive = re.search(r"^\s+benchmark:\n\s+(.+)$", block, re.M)
        if not block.lstrip().startswith(("rule train_", "use rule train_")) or directive is None:
            continue
        param = re.search(r"^\s+benchmark=benchmark_of\(\s*(.+?),?\s*\),?$", block, re.M | re.S)
        assert param and param.group(1) == directive.group(1).strip(), block.splitlines()[0]
        checked += 1
    assert checked == 10  # 3 stages x 3 variants, and the sweep's GAT


# --- the job's input size against the recorded ones ---------------------------------------------------------------
def test_runs_at_a_much_smaller_input_do_not_replace_the_configured_value(tmp_path):
    """Three runs of dataset a at 5 MB say nothing about a new dataset with 2000 MB of input."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(90.0, 900.0)] * 3, input_mb=5)
    estimator = history(tmp_path)
    for resource, default in (("mem_mb", 2000), ("runtime", 30)):
        estimate = estimator.estimate(
            resource, PATTERN, {"dataset": "new"}, default=default, input_size_mb=2000.0
        )
        assert (estimate.value, estimate.learned) == (default, False)
        assert (
            f"the job's input of 2000.0 MB is more than {SIZE_FACTOR:g} x the largest input its 3 run(s) recorded "
            "(5.0 MB), and fewer than 3 input sizes recorded: not learned"
        ) in estimate.explanation
    # Up to SIZE_FACTOR x: the peak, scaled by the ratio above the largest recorded input; at or below it, the peak.
    scaled = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, 4000, input_size_mb=5 * SIZE_FACTOR)
    assert scaled.learned and scaled.value == memory(900.0 * SIZE_FACTOR, estimator.settings)
    assert (
        f"x {SIZE_FACTOR:.2f}, the job's input 10.0 MB over the largest recorded 5.0 MB" in scaled.explanation
    )
    smaller = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, 4000, input_size_mb=4.0)
    assert smaller.value == memory(900.0, estimator.settings)
    assert "(fewer than 3 input sizes recorded: not scaled)" in smaller.explanation
    # Below a megabyte sizes count as one: an empty input recorded, a tiny one now, is no larger job.
    write_runs(tmp_path / "benchmarks/train/e.tsv", [(90.0, 100.0)], input_mb=0)
    tiny = estimator.estimate("mem_mb", PATTERN, {"dataset": "e"}, 4000, input_size_mb=0.5)
    assert tiny.value == memory(100.0, estimator.settings) and "same wildcards" in tiny.explanation
    # size_scaling off: input sizes are not looked at.
    off = history(tmp_path, size_scaling=False)
    assert off.estimate("mem_mb", PATTERN, {"dataset": "new"}, 4000, input_size_mb=2000.0).value == memory(
        900.0, off.settings
    )


def test_an_input_above_the_largest_recorded_but_not_twice_it_scales_the_peak_by_the_ratio(tmp_path):
    """Larger than the largest input the runs recorded, but not SIZE_FACTOR times it: the peak times the ratio of the
    inputs (as if the measure grew in proportion to the input), for memory and runtime alike."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(600.0, 900.0)] * 3, input_mb=4)
    estimator = history(tmp_path)
    scaled = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, 4000, input_size_mb=6.0)
    assert scaled.learned and scaled.value == memory(900.0 * 1.5, estimator.settings)
    assert (
        "peak max_rss 900.0 x 1.50, the job's input 6.0 MB over the largest recorded 4.0 MB"
        in scaled.explanation
    )
    runtime = estimator.estimate("runtime", PATTERN, {"dataset": "new"}, 30, input_size_mb=6.0)
    assert runtime.value == math.ceil(600.0 * 1.5 / 60 * 1.3)


def test_too_small_own_history_gives_way_to_a_wider_one(tmp_path):
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(90.0, 900.0)], input_mb=5)
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(600.0, 3000.0)], input_mb=40)
    estimate = history(tmp_path).estimate(
        "mem_mb", PATTERN, {"dataset": "a"}, default=4000, input_size_mb=30.0
    )
    assert estimate.value == memory(3000.0, LearnedResourceSettings())
    assert "all wildcard values" in estimate.explanation
    assert (
        "not from same wildcards (dataset=a): the job's input of 30.0 MB is more than" in estimate.explanation
    )


def test_a_scope_that_would_hold_the_same_files_as_a_narrower_one_is_not_tried_again(tmp_path):
    """The scopes go from the job's own files to all of the rule's, each a different set of files: match_wildcards
    naming every wildcard of the pattern (dataset, the default, for a pattern of {dataset} alone) adds no
    'same (dataset=a)' scope, which would refuse the job's own runs a second time."""
    write_runs(tmp_path / "benchmarks/train/a.tsv", [(90.0, 900.0)], input_mb=5)
    write_runs(tmp_path / "benchmarks/train/b.tsv", [(600.0, 3000.0)], input_mb=40)
    estimator = history(tmp_path)
    assert estimator.settings.match_wildcards == ("dataset",)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "a"}, default=4000, input_size_mb=30.0)
    assert estimate.learned and "all wildcard values" in estimate.explanation
    assert estimate.explanation.count("the job's input of 30.0 MB is more than") == 1
    assert "same (dataset=a)" not in estimate.explanation


def test_input_size_line_below_the_smallest_input_where_it_goes_below_zero_falls_back_to_the_peak(tmp_path):
    # max_rss = -100 + 50 x input MB exactly: at 1 MB, below the smallest recorded input, the line says -50.
    for size in (3, 4, 5):
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, -100.0 + 50 * size)], input_mb=size)
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=1.0)
    assert estimate.value == memory(150.0, estimator.settings)
    assert (
        "(input-size line not used at 1 MB, outside the recorded 3-5 MB (up to 2 x the largest): not scaled)"
        in estimate.explanation
    )


def test_input_size_line_is_used_only_between_the_smallest_and_size_factor_times_the_largest_input(tmp_path):
    """Three runs at 10-30 KB fit a steep line (about 1100 MB per input MB): it holds between the smallest recorded
    input and SIZE_FACTOR x the largest; a 10 MB job gets the configured value, not the line's 11 GB."""
    runs = [(10 / 1024, 100.0), (20 / 1024, 115.0), (30 / 1024, 122.0)]
    for size, rss in runs:
        write_runs(tmp_path / f"benchmarks/train/d{size:.4f}.tsv", [(60.0, rss)], input_mb=size)
    fit = size_fit([(float(size), rss) for size, rss in runs])
    assert fit.better and fit.slope > 1000
    estimator = history(tmp_path)

    def estimate(size_mb: float):
        return estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=size_mb)

    smallest, largest = 10 / 1024, 30 / 1024
    for size in (smallest, 20 / 1024, SIZE_FACTOR * largest):
        inside = estimate(size)
        assert inside.value == memory(fit.at(size), estimator.settings) and "x input MB" in inside.explanation
    # Just beyond SIZE_FACTOR x the largest (still under the 1 MB floor): the peak, as without a line.
    beyond = estimate(SIZE_FACTOR * largest * 1.01)
    assert (
        beyond.value
        == memory(122.0, estimator.settings)
        < memory(fit.at(SIZE_FACTOR * largest * 1.01), estimator.settings)
    )
    assert (
        "input-size line not used at 0.0592 MB, outside the recorded 0.00977-0.0293 MB" in beyond.explanation
    )
    # Below the smallest: the peak, never less than a recorded run used.
    below = estimate(smallest * 0.99)
    assert (
        below.value == memory(122.0, estimator.settings) > memory(fit.at(smallest * 0.99), estimator.settings)
    )
    assert "input-size line not used at 0.00967 MB" in below.explanation
    # Far beyond: more than SIZE_FACTOR x the 1 MB floor, so not learned at all.
    far = estimate(10.0)
    assert (far.value, far.learned) == (4000, False)
    assert (
        "the job's input of 10.0 MB is more than 2 x the largest input its 3 run(s) recorded"
        in far.explanation
    )


def test_falling_line_is_never_used_and_says_why(tmp_path):
    falling = size_fit([(1, 30.0), (2, 20.0), (3, 10.0)])
    assert falling.fit_error == pytest.approx(0.0) and falling.constant_error > 0
    assert not falling.better  # a perfect fit, but memory that falls as the input grows is no rule to learn
    for size, rss in ((1, 300.0), (2, 200.0), (3, 100.0)):
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, rss)], input_mb=size)
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=2.5)
    assert estimate.value == memory(300.0, estimator.settings)
    assert "input-size line not used: slope -100 not positive" in estimate.explanation


# --- params the runs recorded -------------------------------------------------------------------------------------
def test_recorded_params_set_the_runs_own_wildcard_values_aside():
    def key(dataset, seed, epochs):
        """What --benchmark-extended records: a dict literal, with the repr of an object Snakemake cannot show."""
        params = (
            f"{{'settings': {{'seed': {seed}, 'epochs': {epochs}, 'lr': 0.1}}, "
            f"'checkpoint': 'checkpoints/{dataset}/seed_{seed}/last.pt', 'tracking': TrackingSettings(tags={{}})}}"
        )
        return recorded_params(params, repr({"dataset": dataset, "seed": str(seed)}))

    assert key("a", 1, 10) == key("b", 0, 10) == key("hcrl", 10, 10)
    assert key("a", 1, 10) != key("a", 1, 100)
    assert "checkpoints/{wildcard}/seed_{wildcard}/last.pt" in key("a", 1, 10)
    assert "'seed': '{seed}'" in key("a", 1, 10) and "'lr': 0.1" in key("a", 1, 10)  # 0.1's 1 is no seed
    assert "tracking" not in key("a", 1, 10)  # not a plain value: not compared, as Snakemake's params trigger
    assert recorded_params(None, None) is None and recorded_params("-", "-") is None
    assert recorded_params("not python", "{}") is None


def test_a_wildcard_value_inside_a_longer_one_leaves_the_longer_one_whole():
    """Wildcard values are set aside longest first: in a run of lr 1.5 and seed 1, the path's 1.5 is the lr, not the
    seed followed by '.5'."""
    recorded = recorded_params("{'out': 'results/1.5/seed_1/model.pt'}", repr({"lr": "1.5", "seed": "1"}))
    assert recorded == repr([("out", "results/{wildcard}/seed_{wildcard}/model.pt")])


def test_params_recorded_in_another_order_are_the_same_params():
    """The recorded params compare equal for runs made with the same settings, whatever order their dict lists
    them in (a rule whose params were reordered runs with the same settings)."""
    assert recorded_params("{'epochs': 10, 'lr': 0.1}", None) == recorded_params(
        "{'lr': 0.1, 'epochs': 10}", None
    )


def test_runs_made_with_other_params_are_named_in_a_warning(tmp_path):
    for dataset, epochs in (("a", 10), ("b", 10), ("c", 100)):
        write_runs(
            tmp_path / f"benchmarks/train/{dataset}.tsv",
            [(60.0, 500.0)],
            input_mb=1,
            params={"epochs": epochs, "out": f"results/{dataset}/model.pt"},
            wildcards={"dataset": dataset},
        )
    estimator = history(tmp_path)
    estimate = estimator.estimate("runtime", PATTERN, {"dataset": "new"}, default=120, input_size_mb=1.0)
    assert estimate.learned
    (warning,) = estimate.warnings
    assert (
        f"the 3 run(s) of {PATTERN} learned from (all wildcard values) were recorded with 2 different params"
        in warning
    )
    assert (
        str(tmp_path / "benchmarks/train/a.tsv") in warning
        and str(tmp_path / "benchmarks/train/c.tsv") in warning
    )
    (tmp_path / "benchmarks/train/c.tsv").unlink()
    assert estimator.estimate("runtime", PATTERN, {"dataset": "new"}, 120, input_size_mb=1.0).warnings == ()


def test_run_without_a_recorded_input_size_is_not_undercut_by_the_line(tmp_path):
    """A run made without --benchmark-extended cannot be placed against the line: fitted over the others only, the
    line at a small input asked for less than that run used. Such a history gives the peak, and says why."""
    for size, rss in [(1, 100.0), (2, 200.0), (3, 300.0)]:
        write_runs(tmp_path / f"benchmarks/train/d{size}.tsv", [(60.0, rss)], input_mb=size)
    write_runs(tmp_path / "benchmarks/train/plain.tsv", [(60.0, 5000.0)])  # size not recorded
    estimator = history(tmp_path)
    estimate = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=2.5)
    assert estimate.value == memory(5000.0, estimator.settings)
    assert "1 of 4 run(s) recorded no input size" in estimate.explanation
    # Only runs without sizes (plain benchmark files), the job's size known: the peak, not an error.
    for size in (1, 2, 3):
        (tmp_path / f"benchmarks/train/d{size}.tsv").unlink()
    plain = estimator.estimate("mem_mb", PATTERN, {"dataset": "new"}, default=4000, input_size_mb=900.0)
    assert plain.value == memory(5000.0, estimator.settings)
    assert "1 of 1 run(s) recorded no input size" in plain.explanation


def test_a_match_wildcard_that_no_rule_has_is_warned_about_with_the_closest_name():
    """A misspelt `match_wildcards` name would widen every history to all wildcard values without a word."""
    settings = LearnedResourceSettings(match_wildcards=("datset", "seed", "capture"))
    warnings = settings.unmatched_wildcards(["dataset", "seed", "variant", "dataset"])
    assert len(warnings) == 2, warnings
    assert "learned_resources.match_wildcards: 'datset' is a wildcard of no rule" in warnings[0]
    assert "did you mean 'dataset'?" in warnings[0]
    assert "'capture'" in warnings[1] and "did you mean" not in warnings[1]
    assert "the rules' wildcards: dataset, seed, variant" in warnings[1]
    assert LearnedResourceSettings().unmatched_wildcards(["dataset", "seed"]) == []
