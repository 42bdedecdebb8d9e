"""Snakemake benchmark files: where a rule's files are (from its `benchmark:` pattern) and what one records.

A benchmark file is tab-separated with a header; each row is one run of the job (several with `repeat()`):
``s`` (wall seconds) and ``max_rss`` (peak resident memory in MB, ``NA`` when the job ended before the first
sample) are always there; with ``--benchmark-extended`` Snakemake adds ``input_size_mb``, a dict of the job's
input files and their sizes in MB, and ``wildcards`` and ``params``, the job's as Python dict literals (a param
Snakemake cannot show as a plain value appears as its repr, e.g. ``TrackingSettings(...)``). ``-`` is a value
Snakemake could not give (None).

A benchmark path ending in ``.jsonl`` Snakemake writes as JSON Lines instead: one JSON object per run, no header,
the same fields, numbers as JSON numbers (``"NA"`` as above, ``null`` for None) and the dicts as JSON objects, read
here as the same runs. A param Snakemake cannot write as JSON it writes as its ``str()``, a plain string, which is
then compared as one.

Snakemake before 3.12.0 (2017) measured wall time only: its files have just the ``s`` and ``h:m:s`` columns. Their
runs are read with ``memory_recorded`` False, so they teach runtime and, with a warning, no memory.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from folder_walk import walk_once
from wrapper_rules import InputError

MISSING = {"NA", "-", ""}
# Larger than any run records: a year of wall time; 100 TB of memory (the largest single machines hold tens of TB,
# the largest GPUs a few hundred GB); an exabyte of input. A field beyond is corrupt (1e308, a misplaced byte
# count), and a figure learned from it would ask for the impossible: its file is left out like any corrupt one.
LARGEST = {"s": 366 * 24 * 3600.0, "max_rss": 1e8, "input_size_mb": 1e12}
LARGEST_MB = LARGEST["max_rss"]
# The whole header of a file written by Snakemake before 3.12.0, which measured no memory.
TIME_ONLY_HEADER = ["s", "h:m:s"]


class BenchmarkFileError(ValueError, InputError):
    """A benchmark file (or another record of a run, `kind`) that cannot be read; the message names the file and,
    where it applies, the line."""

    def __init__(
        self, path: str | Path, message: str, line: int | None = None, kind: str = "benchmark file"
    ) -> None:
        where = f"{path}" if line is None else f"{path} line {line}"
        super().__init__(f"{kind} {where}: {message}")
        self.path = str(path)
        self.line = line


@dataclass(frozen=True)
class BenchmarkRun:
    """A run of one job: a row of a benchmark file, or a job's own GPU record (resource_history.gpu_records)."""

    path: str
    line: int | None  # None for a record that is a whole file
    seconds: float | None
    max_rss_mb: float | None
    input_size_mb: float | None  # sum over the job's input files; None without --benchmark-extended
    gpu_peak_mb: float | None = None  # the job's CUDA peak; benchmark files have none
    params: str | None = None  # recorded_params(): comparable text, None where not recorded
    memory_recorded: bool = True  # False: a file with no max_rss column (Snakemake before 3.12.0)


def read_benchmark(path: str | Path) -> list[BenchmarkRun]:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise BenchmarkFileError(path, f"cannot be read ({error})") from None
    lines = text.splitlines()
    # Snakemake chooses the format by the path's suffix alone (snakemake.benchmark.write_benchmark_records).
    rows = jsonl_rows(path, lines) if str(path).endswith(".jsonl") else tsv_rows(path, lines)
    runs = []
    for number, row, time_only in rows:
        seconds = number_or_missing(row["s"], path, number, "s")
        if seconds is None:
            raise BenchmarkFileError(path, "the 's' (wall seconds) field is empty", line=number)
        runs.append(
            BenchmarkRun(
                path=str(path),
                line=number,
                seconds=seconds,
                max_rss_mb=None if time_only else number_or_missing(row["max_rss"], path, number, "max_rss"),
                input_size_mb=input_size(row.get("input_size_mb"), path, number),
                params=recorded_params(row.get("params"), row.get("wildcards")),
                memory_recorded=not time_only,
            )
        )
    if not runs:
        raise BenchmarkFileError(path, "has a header but no runs")
    return runs


def tsv_rows(path, lines: list[str]):
    """(line number, {column: text}, time only) of each run of a tab-separated file."""
    # Blank lines are skipped before the header as between runs (a file written by hand may start with one).
    first = next((number for number, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise BenchmarkFileError(path, "is empty (no header line)", line=1)
    header = lines[first].split("\t")
    time_only = header == TIME_ONLY_HEADER
    for column in ("s",) if time_only else ("s", "max_rss"):
        if column not in header:
            raise BenchmarkFileError(
                path, f"the header has no {column!r} column: {lines[first]!r}", line=first + 1
            )
    for number, line in enumerate(lines[first + 1 :], start=first + 2):
        if not line.strip():
            continue
        values = line.split("\t")
        if len(values) != len(header):
            raise BenchmarkFileError(
                path, f"{len(values)} fields where the header has {len(header)}", line=number
            )
        yield number, dict(zip(header, values, strict=True)), time_only


def jsonl_rows(path, lines: list[str]):
    """The same of a JSONL file: one JSON object per run, no header; its values as a TSV file writes them."""
    if not any(line.strip() for line in lines):
        raise BenchmarkFileError(path, "is empty (no runs)", line=1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise BenchmarkFileError(path, f"is not JSON ({error})", line=number) from None
        if not isinstance(row, dict):
            raise BenchmarkFileError(path, f"is not a JSON object: {line.strip()!r}", line=number)
        for field in ("s", "max_rss"):
            if field not in row:
                raise BenchmarkFileError(path, f"has no {field!r} field: {line.strip()!r}", line=number)
        yield number, {key: as_text(value) for key, value in row.items()}, False


def as_text(value) -> str | None:
    """A JSON value as the TSV writer shows it: None as "-", a dict (wildcards, params, input sizes) as Python's
    literal; anything else that is no number (true, a list) as JSON, which the number parser then names."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return repr(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return repr(value)
    return json.dumps(value)


def number_or_missing(text: str, path, line: int, column: str) -> float | None:
    if text.strip() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise BenchmarkFileError(path, f"{column} {text!r} is not a number", line=line) from None
    if not math.isfinite(value) or value < 0:
        raise BenchmarkFileError(path, f"{column} {text!r} is not a finite number >= 0", line=line)
    if column in LARGEST and value > LARGEST[column]:
        raise BenchmarkFileError(
            path, f"{column} {text!r} is more than any run records (at most {LARGEST[column]:g})", line=line
        )
    return value


def input_size(text: str | None, path, line: int) -> float | None:
    """The sum of --benchmark-extended's ``{'file': size_mb, ...}``."""
    if text is None or text.strip() in MISSING:
        return None
    try:
        sizes = [float(size) for size in ast.literal_eval(text).values()]
    except (ValueError, TypeError, SyntaxError, AttributeError, OverflowError, MemoryError, RecursionError):
        raise BenchmarkFileError(
            path, f"input_size_mb {text!r} is not a dict of file sizes in MB", line=line
        ) from None
    total = sum(sizes)
    if not all(math.isfinite(size) and size >= 0 for size in sizes) or not total <= LARGEST["input_size_mb"]:
        raise BenchmarkFileError(
            path,
            f"input_size_mb {text!r} is not a dict of finite sizes >= 0 summing to at most "
            f"{LARGEST['input_size_mb']:g} MB",
            line=line,
        )
    return float(total)


def recorded_params(params: str | None, wildcards: str | None) -> str | None:
    """The params a run recorded (--benchmark-extended) as text that compares equal for runs made with the same
    settings: the run's own wildcard values are set aside (a path holding ``{dataset}`` differs per dataset by
    design), and so are values that are no plain literals, as Snakemake's own params rerun trigger leaves them
    out. None where the run recorded no params or they cannot be read: such a run is compared with none."""
    if params is None or params.strip() in MISSING:
        return None
    try:
        tree = ast.parse(params.strip(), mode="eval").body
        values = {} if wildcards is None or wildcards.strip() in MISSING else ast.literal_eval(wildcards)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(tree, ast.Dict) or not isinstance(values, dict):
        return None
    values = {str(name): str(value) for name, value in values.items() if str(value)}
    kept = {}
    for key, value in zip(tree.keys, tree.values, strict=True):
        try:
            kept[str(ast.literal_eval(key))] = without_wildcards(ast.literal_eval(value), values)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # e.g. a settings object's repr: not compared
    return repr(sorted(kept.items()))


def without_wildcards(value, wildcards: dict[str, str], key: str | None = None):
    """`value` with each wildcard value inside a string replaced by ``{wildcard}`` (two wildcards may share a
    value), and a number under a key named after its wildcard (a ``seed`` setting) by ``{name}``."""
    if isinstance(value, dict):
        return {str(k): without_wildcards(v, wildcards, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_wildcards(item, wildcards) for item in value]
    if isinstance(value, set | frozenset):
        return sorted(repr(without_wildcards(item, wildcards)) for item in value)
    if isinstance(value, str) and wildcards:
        # Longest first, and only whole tokens: seed "1" must not eat the 1 of "seed_10" or of "v1".
        alternatives = "|".join(
            re.escape(text) for text in sorted(set(wildcards.values()), key=len, reverse=True)
        )
        return re.sub(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", "{wildcard}", value)
    if key in wildcards and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            if float(wildcards[key]) == value:
                return f"{{{key}}}"
        except ValueError:
            pass
    return value


# --- finding a rule's benchmark files from its pattern ----------------------------------------------------------
@dataclass(frozen=True)
class BenchmarkPattern:
    """A `benchmark:` path with wildcards, e.g. ``benchmarks/kd_gat/{dataset}/teacher/vgae.tsv``."""

    text: str
    display: str  # the text without wildcard constraints, for messages
    names: tuple[str, ...]
    regex: re.Pattern
    fixed_prefix: str  # the directory part before the first wildcard

    @classmethod
    def parse(cls, text: str) -> BenchmarkPattern:
        parts, shown, names, position = [], [], [], 0
        first_wildcard = None
        while position < len(text):
            start = text.find("{", position)
            if start < 0:
                parts.append(re.escape(text[position:]))
                shown.append(text[position:])
                break
            parts.append(re.escape(text[position:start]))
            shown.append(text[position:start])
            first_wildcard = start if first_wildcard is None else first_wildcard
            end, name, constraint = wildcard_at(text, start)
            shown.append(f"{{{name}}}")
            if name in names:
                parts.append(f"(?P={name})")
            else:
                parts.append(f"(?P<{name}>{constraint or '.+'})")
                names.append(name)
            position = end
        prefix = text if first_wildcard is None else text[:first_wildcard]
        return cls(text, "".join(shown), tuple(names), re.compile("".join(parts)), os.path.dirname(prefix))

    def match(self, relative_path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(relative_path)
        return None if found is None else found.groupdict()

    @property
    def absolute(self) -> bool:
        """An absolute pattern (e.g. from a module's absolute `prefix:`) names the same files in every root."""
        return os.path.isabs(self.text)

    def files(
        self, root: str | Path, unreadable: list[str] | None = None
    ) -> list[tuple[Path, dict[str, str]]]:
        """Files under `root` whose path relative to it matches the pattern, with their wildcard values; for an
        absolute pattern, the files it matches wherever `root` is. A folder below that cannot be listed raises, or
        is named in ``unreadable`` (as simcal.progress does): os.walk skipped it, and its runs, without a word."""

        def refused(error: OSError) -> None:
            if isinstance(error, FileNotFoundError):
                return  # not made yet (no run so far) or gone since it was listed: no history there
            if unreadable is None:
                raise error
            unreadable.append(
                f"cannot search {error.filename} ({error.strerror or error}): the files under it are left out "
                "of the history"
            )

        root = Path(root)
        start = root / self.fixed_prefix  # an absolute prefix replaces the root
        if not self.names:
            path = root / self.text
            return [(path, {})] if path.is_file() else []
        found = []
        # Through links, as Snakemake reads and writes the files (a dataset's folder linked to scratch); each
        # folder once, so that a link back up the tree ends and a bind-mounted one counts its runs once.
        for directory, filenames in walk_once(start, refused):
            for filename in filenames:
                path = Path(directory) / filename
                name = path.as_posix() if self.absolute else path.relative_to(root).as_posix()
                wildcards = self.match(name)
                if wildcards is not None:
                    found.append((path, wildcards))
        return sorted(found, key=lambda item: str(item[0]))


def wildcard_at(text: str, start: int) -> tuple[int, str, str | None]:
    """(end, name, constraint) of the wildcard `{name}` or `{name,regex}` starting at `start`."""
    depth, position = 0, start
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                inner = text[start + 1 : position]
                name, _, constraint = inner.partition(",")
                name = name.strip()
                if not name.isidentifier():
                    raise ValueError(f"benchmark pattern {text!r}: {{{inner}}} is not a wildcard")
                return position + 1, name, constraint.strip() or None
        position += 1
    raise ValueError(f"benchmark pattern {text!r}: unclosed '{{' at position {start}")
