"""The next run's `mem_mb` and `runtime` of a job from its rule's benchmark history, and its `gpu_mem_mb` from the
GPU records its rule's earlier runs wrote (resource_history.gpu_records; `pattern` is then the record's path).

Which runs count, in this order (the first that holds at least `min_history` runs with the measure and passes the
input-size check below):

1. the job's own benchmark file (the same wildcard values, e.g. the same dataset), in every benchmark root;
2. the rule's files with the same values of `match_wildcards` (e.g. the same dataset, other sweep rows);
3. every file of the rule (all datasets).

A run whose benchmark file has a resume mark (``<benchmark>.resumed``, resource_history.resumed) is left out of
`runtime`: its `s` covers only the part after resuming. Memory still learns from it: a resumed job loads its data
and model and trains, where its peak is reached, so its `max_rss` is a whole job's; and the peak over the runs
cannot fall below a full run's.
A run whose benchmark file has a restore mark (``<benchmark>.restored``: the job copied its outputs from results
kept earlier, kdgat's evaluation stash) is left out of `mem_mb` and `runtime` alike: it computed nothing, and its
seconds and memory would give the next job that does compute (a retrained model) a fraction of what it needs.

From those runs the base figure is the peak (largest `max_rss` for memory, largest `s` for runtime), unless
`size_scaling` is on, the job's input size is known, every one of the runs recorded its own (``--benchmark-extended``:
a run without one cannot be placed against a line fitted over the others) at three or more different sizes, the line ``a + b * input_size_mb`` (least squares) rises (b > 0) and it predicts the runs
better than a constant does: each run left out in turn and predicted from the others by the line and by their
mean, the line's mean absolute error is smaller. Then, for a job whose input lies between the smallest input the runs
recorded and SIZE_FACTOR times the largest (no further: a line through runs at 10-30 KB says nothing about 10 MB),
the base is the line at the job's input size, raised by the largest amount any run lay above it (as the peak covers
every run, so does the raised line); outside that range, the job is treated as without a line.

Without that line, a peak says nothing about a much larger input: with `size_scaling` on, a job whose input is
more than SIZE_FACTOR (2) times the largest input the runs recorded (1 MB if less) does not learn from them (the next scope is
tried, else the configured value); one whose input is larger than that largest input, but not SIZE_FACTOR times,
gets the peak scaled by the ratio (as if the measure grew in proportion to the input: never less than the peak).
Runs that recorded no input size are not compared. Finally

    mem_mb  = ceil((base + mem_overhead_mb) * margin) * attempt
    runtime = max(min_runtime, ceil(base / 60 * margin)) * attempt      (minutes)
    gpu_mem_mb = ceil((base + gpu_overhead_mb) * margin) * attempt

GPU records hold no input sizes, so `gpu_mem_mb` is always learned from the peak. A run on the CPU records no GPU
peak (null) and teaches nothing.

Runs recorded with other params than the job's cannot be left out: Snakemake evaluates a job's resources without
its params. When the runs learned from recorded different params (--benchmark-extended, their own wildcard values
set aside: resource_history.benchmarks.recorded_params), a warning says so and names two of their files.

A benchmark file with only the `s` and `h:m:s` columns (Snakemake before 3.12.0) teaches runtime; for `mem_mb` a
warning names it, as memory cannot be learned from it.

No usable run: the rule's configured value (`default`) unchanged. Unreadable files, and files holding a value
beyond any run (resource_history.benchmarks.LARGEST: `s` = 1e308 would ask for a runtime hundreds of digits long),
are left out with a warning that names the file and line.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resource_history.benchmarks import (
    BenchmarkFileError,
    BenchmarkPattern,
    BenchmarkRun,
    read_benchmark,
    wildcard_at,
)
from resource_history.gpu_records import GPU_PEAK_KEY, read_gpu_record
from resource_history.resumed import mark_path, restored_mark_path, restored_reason, resumed_reason
from resource_history.settings import (
    MOST_MB,
    MOST_MINUTES,
    WHERE,
    LearnedResourceSettings,
    SettingsError,
    shown,
)


@dataclass(frozen=True)
class Measure:
    """What a resource is learned from: a BenchmarkRun field, its name in the file, and the files that hold it."""

    field: str
    column: str
    files: str  # what the files are called in messages
    read: Callable[[Path], list[BenchmarkRun]]
    whole_runs_only: bool = False  # a resumed run's figure is partial: leave it out
    computed_runs_only: bool = False  # a run that restored its outputs computed nothing: leave it out


MEASURES = {
    "mem_mb": Measure("max_rss_mb", "max_rss", "benchmark", read_benchmark, computed_runs_only=True),
    "runtime": Measure(
        "seconds", "s", "benchmark", read_benchmark, whole_runs_only=True, computed_runs_only=True
    ),
    "gpu_mem_mb": Measure("gpu_peak_mb", GPU_PEAK_KEY, "GPU record", read_gpu_record),
}
MIN_FIT_SIZES = 3
# A peak learned at input size S stands for jobs up to SIZE_FACTOR x S (scaled by the ratio above S); beyond, a
# constant model of the measure has nothing to say, and the configured value is safer than a guess. A fitted line
# is not extrapolated further either (nor below the smallest recorded input).
SIZE_FACTOR = 2.0
SIZE_FLOOR_MB = 1.0  # inputs below a megabyte count as one: 0.01 MB against 0 MB is no larger job
SHOWN_SOURCES = 4
# Under a default storage provider (profiles/k8s) a rule's benchmark path is Snakemake's local copy of the file in
# remote storage, .snakemake/storage/<provider>/<bucket>/<prefix>/..., which a driver whose jobs run elsewhere never
# fills: its history is found only where the files were copied.
STORAGE_COPIES = ".snakemake/storage/"
REMOTE_HINT = (
    " (Snakemake's local copy of a file in remote storage, which a run whose jobs write it elsewhere never "
    "downloads: copy the rule's files from the storage into a directory of learned_resources.benchmark_roots "
    "under this path, profiles/k8s/README.md 'Learned resources')"
)


@dataclass(frozen=True)
class Estimate:
    resource: str
    value: Any
    learned: bool
    explanation: str
    sources: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.resource}={self.value} {self.explanation}"


@dataclass(frozen=True)
class SizeFit:
    intercept: float
    slope: float
    cover: float  # the largest amount a run lay above the line (0 if none did)
    fit_error: float  # leave-one-out mean absolute error of the line
    constant_error: float  # the same for the mean of the other runs

    @property
    def better(self) -> bool:
        return self.slope > 0 and self.fit_error < self.constant_error

    def at(self, size_mb: float) -> float:
        """The line at this input size, raised to cover every run."""
        return self.intercept + self.slope * size_mb + self.cover


def least_squares(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if spread == 0:
        return None
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return mean_y - slope * mean_x, slope


def size_fit(points: list[tuple[float, float]]) -> SizeFit | None:
    """The line through (input size, measure) and how well it and a constant predict each point from the rest."""
    if len({x for x, _ in points}) < MIN_FIT_SIZES:
        return None
    fit_errors, constant_errors = [], []
    for index, (x, y) in enumerate(points):
        rest = points[:index] + points[index + 1 :]
        line = least_squares(rest)
        if line is None:
            return None
        fit_errors.append(abs(line[0] + line[1] * x - y))
        constant_errors.append(abs(sum(value for _, value in rest) / len(rest) - y))
    intercept, slope = least_squares(points)
    cover = max(0.0, *(y - (intercept + slope * x) for x, y in points))
    n = len(points)
    return SizeFit(intercept, slope, cover, sum(fit_errors) / n, sum(constant_errors) / n)


@dataclass
class ResourceHistory:
    """Estimates for one workflow run; parsed files are cached by (path, mtime, size)."""

    settings: LearnedResourceSettings
    workdir: Path = field(default_factory=Path.cwd)
    _parsed: dict = field(default_factory=dict, repr=False)

    def estimate(
        self,
        resource: str,
        pattern: str,
        wildcards: dict[str, str],
        default: Any,
        attempt: int = 1,
        input_size_mb: float | None = None,
    ) -> Estimate:
        if resource not in MEASURES:
            raise ValueError(
                f"learned resources: {resource!r} cannot be learned; expected one of {list(MEASURES)}"
            )
        measure = MEASURES[resource]
        parsed = BenchmarkPattern.parse(any_value_of(pattern, self.settings.match_wildcards))
        files, warnings = self.history_files(parsed)
        wildcards = {name: str(wildcards[name]) for name in parsed.names if name in wildcards}
        runs_of, resumed, restored = {}, {}, {}
        for path, _ in files:
            runs, warning = self.runs(path, measure)
            runs = [run for run in runs if getattr(run, measure.field) is not None]
            if runs and measure.computed_runs_only:
                reason = restored_reason(path)
                if reason is not None:
                    restored[path], runs = (len(runs), reason), []
            if runs and measure.whole_runs_only:
                reason = resumed_reason(path)
                if reason is not None:
                    resumed[path], runs = (len(runs), reason), []
            runs_of[path] = runs
            if warning:
                warnings.append(warning)
        chosen, refused = None, []
        for scope, selected in self.scopes(parsed, files, wildcards):
            runs = [run for path in selected for run in runs_of[path]]
            if len(runs) < self.settings.min_history:
                continue
            base, how = self.base_figure(runs, measure.field, measure.column, input_size_mb)
            if base is None:
                refused.append(f"{scope}: {how}")
                continue
            chosen = scope, selected, runs, base, how
            break
        candidates = [path for path, _ in files] if chosen is None else chosen[1]
        left_out = self.resumed_text(resumed, candidates) + self.restored_text(restored, candidates)
        if chosen is None:
            recorded = sum(len(runs) for runs in runs_of.values())
            if refused:
                why = "; ".join(refused)
            elif not files:
                why = f"no {measure.files} history in {self.roots_text()} for {parsed.display}"
                if parsed.text.startswith(STORAGE_COPIES):
                    why += REMOTE_HINT
            else:
                why = (
                    f"{recorded} run(s) with {measure.column} recorded in {len(files)} {measure.files} file(s) of "
                    f"{parsed.display}, fewer than min_history {self.settings.min_history}"
                )
            return Estimate(
                resource, default, False, f"(configured default: {why}{left_out})", (), tuple(warnings)
            )
        scope, selected, runs, base, how = chosen
        warnings += self.params_warnings(parsed, scope, runs)
        value = self.scale(resource, base, attempt)
        sources = tuple(str(path) for path in selected if runs_of[path])
        shown = ", ".join(sources[:SHOWN_SOURCES]) + (
            f" and {len(sources) - SHOWN_SOURCES} more" if len(sources) > SHOWN_SOURCES else ""
        )
        if resource == "runtime":
            arithmetic = f"max({self.settings.min_runtime}, ceil({base:.1f} s / 60 x margin {self.settings.margin})) min"
        else:
            overhead = self.overhead_mb(resource)
            arithmetic = f"ceil(({base:.1f} + {overhead}) MB x margin {self.settings.margin})"
        narrower = f"; not from {'; '.join(refused)}" if refused else ""
        explanation = (
            f"(learned from {len(runs)} run(s), {scope}: {how}; {arithmetic} x attempt {attempt}{left_out}"
            f"{narrower}; from {shown})"
        )
        return Estimate(resource, value, True, explanation, sources, tuple(warnings))

    @staticmethod
    def restored_text(restored: dict[Path, tuple[int, str]], paths: list[Path]) -> str:
        """How many runs of `paths` were left out as restored, and the first one's mark and reason."""
        return _left_out_text(
            restored,
            paths,
            "that restored their outputs from earlier results and computed nothing",
            restored_mark_path,
        )

    @staticmethod
    def resumed_text(resumed: dict[Path, tuple[int, str]], paths: list[Path]) -> str:
        """How many runs of `paths` were left out as resumed, and the first one's mark and reason."""
        return _left_out_text(
            resumed, paths, "resumed from partial work, whose time covers only the rest", mark_path
        )

    @staticmethod
    def params_warnings(pattern: BenchmarkPattern, scope: str, runs: list[BenchmarkRun]) -> list[str]:
        first_file = {}
        for run in runs:
            if run.params is not None:
                first_file.setdefault(run.params, run.path)
        if len(first_file) < 2:
            return []
        examples = list(first_file.values())[:2]
        return [
            f"the {len(runs)} run(s) of {pattern.display} learned from ({scope}) were recorded with "
            f"{len(first_file)} different params (their own wildcard values set aside), e.g. {examples[0]} and "
            f"{examples[1]}; the learned value covers all of them: move the files of runs whose settings no "
            "longer apply out of the benchmark roots"
        ]

    # -- history --------------------------------------------------------------------------------------------------
    def history_files(self, pattern: BenchmarkPattern) -> tuple[list[tuple[Path, dict]], list[str]]:
        """Every benchmark file of ``pattern`` under the roots, each once: a root listed twice, reached through a
        link or a bind mount, or an absolute pattern (the same files from every root) would count its runs twice
        toward min_history. A file is known by its ``(st_dev, st_ino)``, as folder_walk knows a folder: a bind
        mount gives it a second real path, which ``os.path.realpath`` cannot see through."""
        files, warnings, seen = [], [], set()
        for root in self.settings.benchmark_roots:
            directory = self.root_directory(root)
            if not directory.is_dir():
                warnings.append(f"learned_resources.benchmark_roots: {directory} is not a directory; skipped")
                continue
            for path, values in pattern.files(directory, warnings):
                if (identity := file_identity(path)) not in seen:
                    seen.add(identity)
                    files.append((path, values))
        return files, warnings

    def runs(self, path: Path, measure: Measure) -> tuple[list[BenchmarkRun], str | None]:
        try:
            stat = path.stat()
            key = (str(path), stat.st_mtime_ns, stat.st_size, measure.read)
        except OSError as error:
            return [], f"{measure.files} file {path}: cannot be read ({error}); left out of the history"
        if key not in self._parsed:
            try:
                self._parsed[key] = (measure.read(path), None)
            except BenchmarkFileError as error:
                self._parsed[key] = ([], f"{error}; left out of the history")
        runs, warning = self._parsed[key]
        if measure.column == "max_rss" and runs and not all(run.memory_recorded for run in runs):
            warning = (
                f"benchmark file {path}: has only the 's' and 'h:m:s' columns (Snakemake before 3.12.0 measured "
                "no memory), so mem_mb cannot be learned from it; its runtime is"
            )
        return runs, warning

    def scopes(self, pattern: BenchmarkPattern, files, wildcards: dict[str, str]):
        """(description, files) from the narrowest history to the widest, each a different set of files."""
        same_job = [path for path, values in files if values == wildcards]
        yield self.describe_scope("same wildcards", wildcards), same_job
        matched = [name for name in self.settings.match_wildcards if name in wildcards]
        if matched and len(matched) < len(pattern.names):
            same = [path for path, values in files if all(values.get(n) == wildcards[n] for n in matched)]
            yield self.describe_scope("same", {name: wildcards[name] for name in matched}), same
        if pattern.names:
            yield "all wildcard values", [path for path, _ in files]

    @staticmethod
    def describe_scope(label: str, values: dict[str, str]) -> str:
        shown = ", ".join(f"{name}={value}" for name, value in values.items())
        return f"{label} ({shown})" if shown else label

    def roots_text(self) -> str:
        return ", ".join(
            os.path.normpath(self.root_directory(root)) for root in self.settings.benchmark_roots
        )

    def root_directory(self, root: str) -> Path:
        """A root of learned_resources.benchmark_roots: relative to the working directory, ``~`` the home folder
        (not a folder named ``~`` in the working directory)."""
        return self.workdir / Path(root).expanduser()

    # -- arithmetic -----------------------------------------------------------------------------------------------
    def base_figure(
        self, runs: list[BenchmarkRun], measure: str, column: str, input_size_mb: float | None
    ) -> tuple[float | None, str]:
        """(base, how it was found), or (None, why these runs do not tell this job's needs)."""
        values = [getattr(run, measure) for run in runs]
        peak = max(values)
        how = f"peak {column} {peak:.1f}"
        if not self.settings.size_scaling or input_size_mb is None:
            return peak, how
        points = [(run.input_size_mb, getattr(run, measure)) for run in runs if run.input_size_mb is not None]
        # A run without its size cannot be placed against a line fitted over the others, which could then ask
        # for less than it used: the line is for histories whose every run recorded its size.
        unsized = len(runs) - len(points)
        sizes = [size for size, _ in points]
        fit = None if unsized else size_fit(points)  # (a leave-one-out fit: not made for nothing)
        if unsized:
            not_scaled = f"{unsized} of {len(runs)} run(s) recorded no input size"
        elif fit is None:
            not_scaled = f"fewer than {MIN_FIT_SIZES} input sizes recorded"
        elif fit.slope <= 0:
            not_scaled = f"input-size line not used: slope {fit.slope:.3g} not positive"
        elif not fit.better:
            not_scaled = (
                f"input-size line not better: leave-one-out error {fit.fit_error:.1f} vs "
                f"{fit.constant_error:.1f} for a constant, slope {fit.slope:.3g}"
            )
        elif not min(sizes) <= input_size_mb <= SIZE_FACTOR * max(sizes):
            # A line is known only where its runs were: three runs at 10-30 KB fit a slope of about 1 GB per MB,
            # which asks 11 GB for a 10 MB job. Outside, the job gets what it would without a line (below the
            # smallest input, the peak).
            not_scaled = (
                f"input-size line not used at {input_size_mb:.3g} MB, outside the recorded {min(sizes):.3g}-"
                f"{max(sizes):.3g} MB (up to {SIZE_FACTOR:g} x the largest)"
            )
        else:
            predicted = fit.at(input_size_mb)
            if predicted > 0:
                return predicted, (
                    f"{column} = {fit.intercept:.1f} + {fit.slope:.4g} x input MB + {fit.cover:.1f} (the largest "
                    f"run above the line) at {input_size_mb:.1f} MB = {predicted:.1f} (leave-one-out error "
                    f"{fit.fit_error:.1f} vs {fit.constant_error:.1f} for a constant)"
                )
            not_scaled = f"input-size line gives {predicted:.1f} at {input_size_mb:.1f} MB: not used"
        if not points:
            return peak, how + f" ({not_scaled}: not scaled)"
        largest = max(sizes)
        reference = max(largest, SIZE_FLOOR_MB)
        if input_size_mb > SIZE_FACTOR * reference:
            return None, (
                f"the job's input of {input_size_mb:.1f} MB is more than {SIZE_FACTOR:g} x the largest input its "
                f"{len(runs)} run(s) recorded ({largest:.1f} MB), and {not_scaled}: not learned"
            )
        if input_size_mb > reference:
            ratio = input_size_mb / reference
            return peak * ratio, how + (
                f" x {ratio:.2f}, the job's input {input_size_mb:.1f} MB over the largest recorded {largest:.1f} MB "
                f"({not_scaled})"
            )
        return peak, how + f" ({not_scaled}: not scaled)"

    def scale(self, resource: str, base: float, attempt: int) -> int:
        margin = self.settings.margin
        runtime = resource == "runtime"
        unit = "s" if runtime else "MB"
        overhead = 0 if runtime else self.overhead_mb(resource)
        key = f"{WHERE}.{'gpu_overhead_mb' if resource == 'gpu_mem_mb' else 'mem_overhead_mb'}"
        try:
            value = base / 60 * margin if runtime else (base + overhead) * margin
        except OverflowError:  # a 400-digit integer overhead: no float holds it, and the error named no key
            raise SettingsError(
                f"{key} {shown(overhead)} is too large to add to the recorded {resource} peak ({base:g} MB); give "
                f"an integer >= 0 and <= {MOST_MB} (1 PB), a few hundred MB"
            ) from None
        if not math.isfinite(value):  # margin 1e308: ceil(inf) raised OverflowError, naming no key
            raise SettingsError(
                f"{WHERE}.margin {margin:g} x the recorded {resource} peak ({base:g} {unit}) is not a finite "
                "number; give a margin of a few (1.3 by default)"
            )
        most, limit = (MOST_MINUTES, "min (10 years)") if runtime else (MOST_MB, "MB (1 PB)")
        if value * attempt > most:  # margin 1e300 asked for mem_mb 3.8e303, which no scheduler can give
            named = f"{WHERE}.margin {margin:g}" + ("" if runtime else f" with {key} {shown(overhead)}")
            raise SettingsError(
                f"{named} on the recorded {resource} peak ({base:g} {unit}) asks for {value * attempt:.3g} at "
                f"attempt {attempt}, more than the most a job may ask for, {most} {limit}; give a margin of a few "
                "(1.3 by default)" + ("" if runtime else " and an overhead of a few hundred MB")
            )
        if runtime:
            return max(self.settings.min_runtime, ceil(value)) * attempt
        return ceil(value) * attempt

    def overhead_mb(self, resource: str) -> int:
        return self.settings.gpu_overhead_mb if resource == "gpu_mem_mb" else self.settings.mem_overhead_mb


def file_identity(path: Path) -> tuple[int, int] | str:
    """``(st_dev, st_ino)`` of the file; its real path when it cannot be looked at (gone since it was listed: its
    reading is then warned about, once)."""
    try:
        info = os.stat(path)
    except OSError:
        return os.path.realpath(path)
    return info.st_dev, info.st_ino


def any_value_of(pattern: str, names: tuple[str, ...]) -> str:
    """`pattern` with the constraint of each wildcard of `names` (match_wildcards) widened to any value of one path
    segment: the evaluation and preprocess modules constrain {dataset} to the datasets their config lists, and the
    history is of every dataset, also of those a config no longer lists (README: "all of the rule's files")."""
    parts, position = [], 0
    while (start := pattern.find("{", position)) >= 0:
        end, name, constraint = wildcard_at(pattern, start)
        parts += [
            pattern[position:start],
            f"{{{name},[^/]+}}" if constraint and name in names else pattern[start:end],
        ]
        position = end
    return "".join([*parts, pattern[position:]])


def ceil(value: float) -> int:
    """Rounded up, ignoring float noise: (100 + 300) * 1.1 is 440.00000000000006, and 440 is meant."""
    return math.ceil(round(value, 6))


def _left_out_text(marks: dict[Path, tuple[int, str]], paths: list[Path], why: str, mark_of) -> str:
    """ "; left out N run(s) <why> (<first mark>: <its reason>; and M more file(s))" for the marked ones of `paths`."""
    marked = [path for path in paths if path in marks]
    if not marked:
        return ""
    count = sum(marks[path][0] for path in marked)
    return f"; left out {count} run(s) {why} ({mark_of(marked[0])}: {marks[marked[0]][1]}" + (
        f"; and {len(marked) - 1} more file(s))" if len(marked) > 1 else ")"
    )
