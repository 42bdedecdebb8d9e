"""Marks of runs that resumed from partial work, whose benchmark `s` covers only the part after resuming.

Snakemake writes a job's benchmark file only when the job succeeds: a job killed at its time limit leaves none,
and the attempt that resumes from its checkpoint records only the remaining time. Such a job writes
``<benchmark>.resumed`` (a one-line reason) with `mark_resumed`, and removes it with `clear_mark` when it did not
resume, so that the mark always describes the run the benchmark file holds (the next successful run overwrites
that file). The estimator leaves marked runs out of learning `runtime` (resource_history.estimate).

A job that restored its outputs from results kept earlier (kdgat's evaluation stash) writes
``<benchmark>.restored`` with `mark_restored`: it computed nothing, so its run is left out of `mem_mb` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from output_locks import write_text_atomically

SUFFIX = ".resumed"


def mark_path(benchmark_path: str | Path) -> Path:
    return Path(f"{benchmark_path}{SUFFIX}")


def mark_resumed(benchmark_path: str | Path, reason: str) -> Path:
    """Say that the run about to be recorded in `benchmark_path` resumed from partial work; returns the mark."""
    reason = " ".join(str(reason).split())
    if not reason:
        raise ValueError(f"mark_resumed({str(benchmark_path)!r}): the reason is empty")
    return _write_mark(mark_path(benchmark_path), reason)


def clear_mark(benchmark_path: str | Path) -> None:
    """The run about to be recorded in `benchmark_path` did not resume: drop a mark an earlier run left."""
    mark_path(benchmark_path).unlink(missing_ok=True)


def resumed_reason(benchmark_path: str | Path) -> str | None:
    """The reason in the benchmark file's mark, or None without one (or an unreadable one: "resumed")."""
    return _mark_text(mark_path(benchmark_path), "resumed")


def mark_if_resumed(benchmark_path: str | Path | None, result: Any, key: str) -> Any:
    """Mark or clear `benchmark_path` by a job's `result`: it resumed where its `key` (where it resumed from, or
    how much it resumed) is set and not 0; nothing without a benchmark path. `key` is read as an item of a mapping,
    an entry of a pandas DataFrame's ``attrs``, else an attribute. Returns `result`, so that a wrapper's one
    library call can be ``mark_if_resumed(path, run(...), key)``."""
    if benchmark_path:
        if isinstance(result, Mapping):
            resumed_from = result.get(key)
        elif isinstance(getattr(result, "attrs", None), Mapping):
            resumed_from = result.attrs.get(key)
        else:
            resumed_from = getattr(result, key, None)
        if resumed_from is None or resumed_from == 0:
            clear_mark(benchmark_path)
        else:
            mark_resumed(benchmark_path, f"{key} {resumed_from}")
    return result


# A run that restored its outputs from results kept earlier (kdgat's evaluation stash) computed nothing: neither
# its seconds nor its memory are a job's, so it is left out of every measure read from benchmark files.
RESTORED_SUFFIX = ".restored"


def restored_mark_path(benchmark_path: str | Path) -> Path:
    return Path(f"{benchmark_path}{RESTORED_SUFFIX}")


def mark_restored(benchmark_path: str | Path | None, restored_from: str | None) -> None:
    """Say whether the run about to be recorded in `benchmark_path` restored its outputs (``restored_from``: from
    where, one line) instead of computing them; None: it computed them, so a mark an earlier run left is dropped.
    Nothing without a benchmark path."""
    if not benchmark_path:
        return
    if restored_from is None:
        restored_mark_path(benchmark_path).unlink(missing_ok=True)
    else:
        _write_mark(restored_mark_path(benchmark_path), " ".join(str(restored_from).split()))


def restored_reason(benchmark_path: str | Path) -> str | None:
    """Where the run the benchmark file holds restored its outputs from, or None when it computed them."""
    return _mark_text(restored_mark_path(benchmark_path), "restored")


def _write_mark(path: Path, line: str) -> Path:
    """Write a mark's one line beside its benchmark file (its folder made if need be), atomically: a reader (the
    estimate of another job's resources) sees the earlier mark or this one, never an empty mark, which it would
    read as no reason at all; 0666 minus the umask, so the project group reads it as the benchmark file."""
    return write_text_atomically(path, line + "\n")


def _mark_text(path: Path, unreadable: str) -> str | None:
    """A mark's one line; None without the mark; ``unreadable`` for an empty or unreadable one."""
    if not path.exists():
        return None
    try:
        return path.read_text().strip() or unreadable
    except (OSError, UnicodeDecodeError):
        return unreadable
