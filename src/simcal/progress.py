"""Progress of a running sweep: log lines for people, ``<output>.progress.json`` for programs (``simcal status``).

The JSON file is rewritten atomically every ``progress_seconds`` while the sweep runs (``starting``, ``running``,
then ``closing`` once its output is written, while its cluster closes and its parts go: a SIGTERM then still fails
the job) and once more when it ends (state ``finished``, only once nothing of the job can fail any more; ``failed`` with
the error; ``stopped`` with the signal that stopped it, SIGTERM, SIGHUP or Ctrl-C's SIGINT, or saying that it was
cancelled), so a reader never sees a half-written file. It names the
sweep's process by its host, its PID and its start (``pid_start``): a PID alone may belong to another process by
the time it is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from folder_walk import walk_once
from simcal.tables import write_json
from wrapper_rules.filesystem_clock import filesystem_now

log = logging.getLogger(__name__)

SUFFIX = ".progress.json"

# States of a sweep whose process still works at it (a record of one whose process is gone is read as stopped)
LIVE = ("starting", "running", "closing")


def progress_path(output: str | Path) -> Path:
    return Path(f"{output}{SUFFIX}")


def _timestamp(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")


class Progress:
    """Counts of one output's distinct simulations (across the rounds of a calibration), reported every
    ``every_s``."""

    def __init__(self, output: str | Path, backend: str, every_s: float = 5.0):
        self.output, self.path, self.backend, self.every_s = (
            str(output),
            progress_path(output),
            backend,
            every_s,
        )
        self.total = self.done = self.failed = 0
        self.done_here = 0  # simulations finished by this process (the rate ignores resumed ones)
        self.started = time.time()
        # The rate counts from here, not from the cluster's start, on the monotonic clock: a step of the wall
        # clock (NTP, a VM resumed) made it huge (ETA 0) or tiny
        self.first_submit: float | None = None
        self.last = -math.inf
        self.state, self.message = "starting", None
        self.dashboard: str | None = None
        self.workers: int | None = None
        self.batch_size: int | None = None
        self.write_error: str | None = None  # the kind of error the last write failed with (None: it did not)
        # One write at a time (the sweep's and kept_fresh's thread), and none of a running state after finish
        self._lock = threading.RLock()
        self._written = -math.inf  # when the file was last written, on the monotonic clock

    def plan(self, total: int, already_done: int, already_failed: int) -> None:
        self.total += total
        self.done += already_done
        self.failed += already_failed
        self.state = "running"

    def advance(self, count: int, failed: int = 0) -> None:
        self.done += count
        self.done_here += count
        self.failed += failed

    def submitted(self) -> None:
        if self.first_submit is None:
            self.first_submit = time.monotonic()

    def rate(self) -> float:
        if self.first_submit is None:
            return 0.0
        return self.done_here / max(time.monotonic() - self.first_submit, 1e-9)

    def eta_s(self) -> float | None:
        rate = self.rate()
        return (self.total - self.done) / rate if rate > 0 else None

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        eta = self.eta_s()
        log.info(
            "simulations %d/%d (%.1f%%), %d failed, %s/s, ETA %s, workers %s, dashboard %s",
            self.done, self.total, 100 * self.done / max(self.total, 1), self.failed, format_rate(self.rate()),
            f"{eta:.0f}s" if eta is not None else "unknown", "unknown" if self.workers is None else self.workers,
            self.dashboard or "unavailable",
        )  # fmt: skip
        self.write()

    def finish(self, state: str, message: str | None = None) -> None:
        with self._lock:
            self.state, self.message = state, message
            self.write()

    @contextlib.contextmanager
    def kept_fresh(self) -> Iterator[Progress]:
        """Rewrite the file from a thread whenever it is ``every_s`` old while the block runs and the sweep is
        starting, running or closing. The sweep itself writes only as simulations come back: between a calibration's
        rounds (the targets, the sampler's next proposals) and while the results are merged, minutes may pass
        without one, and a reader on another host would call the sweep ``stale``."""
        stop = threading.Event()

        def rewrite() -> None:
            while not stop.wait(self.every_s / 2):
                with self._lock:
                    fresh = time.monotonic() - self._written < self.every_s
                    if self.state in LIVE and not fresh:
                        self.write()

        thread = threading.Thread(target=rewrite, name=f"progress {self.path.name}", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def snapshot(self) -> dict[str, Any]:
        now = time.time()
        eta = self.eta_s()
        return {
            "output": self.output,
            "state": self.state,
            "message": self.message,
            "done": self.done,
            "total": self.total,
            "failed": self.failed,
            # 4 significant digits: hours-long simulations run at 0.0003/s, which 3 decimals made 0
            "rate_per_s": float(f"{self.rate():.4g}"),
            "eta_s": None if eta is None or self.state != "running" else round(eta, 1),
            "backend": self.backend,
            "dashboard": self.dashboard,
            "workers": self.workers,
            "batch_size": self.batch_size,
            "started": _timestamp(self.started),
            "updated": _timestamp(now),
            "updated_epoch": now,
            "every_s": self.every_s,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_start": process_start(os.getpid()),
            "pid_namespace": pid_namespace(),
        }

    def write(self) -> None:
        with self._lock:
            self._written = time.monotonic()
            self._write()

    def _write(self) -> None:
        try:
            write_json(self.snapshot(), self.path, durable=False)  # rewritten every few seconds anyway
        except OSError as error:  # progress is a convenience: never fail a sweep over it
            # Once per kind of error (its message names a new temporary each time), not at every rewrite: a
            # day's sweep logged it some 17000 times
            kind = f"{type(error).__name__} {error.errno}"
            if kind != self.write_error:
                log.warning(
                    "cannot write %s: %s (the sweep goes on; tried again every rewrite)", self.path, error
                )
            self.write_error = kind
            return
        if self.write_error is not None:
            log.info("%s is written again", self.path)
            self.write_error = None


def find_progress_files(
    paths: Iterable[str | Path], missing: list[str] | None = None, unreadable: list[str] | None = None
) -> list[Path]:
    """Progress files named by ``paths``: a progress file, an output (its ``.progress.json``), or a directory
    (searched recursively); each once, where it was first found. A path with none (a directory with none in it or
    below included) raises FileNotFoundError, or,
    when ``missing`` is a list, adds what it would have said to it (the other paths are still searched). A path
    or a folder below a searched one that this user may not look into (no permission) raises its OSError, or,
    when ``unreadable`` is a list, is named there: the sweeps in it are not silently left out."""
    # By the file's (st_dev, st_ino): a folder and an output in it name one file twice, and a bind mount shows it
    # under a second real path, which Path.resolve() cannot see through
    found: dict[tuple[int, int] | Path, Path] = {}
    for raw in paths:
        path = Path(raw)
        folder = False
        try:
            folder = path.is_dir()
            if folder:
                refused_before = len(unreadable or [])
                # Empty: a path without a sweep, unless a folder below could not be searched (named already)
                named = _search(path, unreadable) or (None if len(unreadable or []) == refused_before else [])
            elif path.name.endswith(SUFFIX) and path.exists():
                named = [path]
            elif progress_path(path).exists():
                named = [progress_path(path)]
            else:
                named = None
        except OSError as error:  # a folder on the way this user may not enter: is_dir() and exists() raise
            if unreadable is None:
                raise
            unreadable.append(f"cannot search {path}: {error.strerror or error}")
            named = []
        if named is None:
            problem = (
                f"{path}: no sweep progress here (no file ending {SUFFIX} in this folder or below)"
                if folder
                else f"{path}: no sweep progress here (neither {progress_path(path).name} nor a directory)"
            )
            if missing is None:
                raise FileNotFoundError(problem)
            missing.append(problem)
            named = []
        for file in named:
            found.setdefault(_identity(file), file)
    return list(found.values())


def _identity(file: Path) -> tuple[int, int] | Path:
    """``(st_dev, st_ino)`` of the file; its resolved path when it is gone since it was found (reading it says so)."""
    try:
        info = os.stat(file)
    except OSError:
        return file.resolve()
    return info.st_dev, info.st_ino


def _search(folder: Path, unreadable: list[str] | None) -> list[Path]:
    """The progress files under ``folder``, sorted; a folder below it that cannot be listed raises, or is named in
    ``unreadable`` (Path.rglob skipped it without a word, and the sweeps in it with it)."""

    def refused(error: OSError) -> None:
        if unreadable is None:
            raise error
        unreadable.append(f"cannot search {error.filename}: {error.strerror or error}")

    # Links are followed (a workflow's results/ is often a link to scratch space, whose sweeps were left out
    # without a word); each folder is searched once, so a link to a folder above ends rather than loops.
    found = []
    for top, files in walk_once(folder, refused):
        found.extend(Path(top, name) for name in files if name.endswith(SUFFIX))
    return sorted(found)


NOT_A_RECORD = "not a sweep's progress record (a JSON object with state, done, total, ...)"
NUMBERS = (
    "done",
    "total",
    "failed",
    "rate_per_s",
    "eta_s",
    "updated_epoch",
    "every_s",
    "workers",
    "batch_size",
    "pid",
)

# What every record has held since the first: its output, its state and its counts (numbers: checked above)
REQUIRED = {"state": str, "done": (int, float), "total": (int, float), "output": str}

# States of a sweep whose process, and the Dask cluster it started, are gone.
ENDED = ("finished", "failed", "stopped")


def read_progress(path: Path) -> dict[str, Any]:
    """A progress file with its state made current: a ``running`` (``starting``, ``closing``) sweep whose process
    is gone (same host) is
    ``stopped``; one not updated for a long while is ``stale``; neither has an ETA. A sweep that has ended
    (``ENDED``) has no dashboard: its cluster is gone. Raises ValueError for a file
    that is not a sweep's record (not JSON, not an object, a count that is no number, no output, state, done or
    total).

    The process is the record's PID with the record's start (``pid_start``), so a live process that has since
    been given a dead sweep's PID is not taken for it; a record without a start (written before it was
    recorded, or where /proc is not) is judged by its PID alone. A sweep of another PID namespace (a container
    that has the host's name) is judged as one of another host: its PIDs are not this namespace's. Silence is counted on one clock: on the sweep's
    host, this host's clock since ``updated_epoch``; from another host, the file system's clock since the file's
    modification time (a shared file system stamps it at the write by its own clock: :func:`wrapper_rules.filesystem_clock.filesystem_now`),
    because the sweep's host's clock, and this host's, may be off from the file server's by any amount (this host's
    clock only where no folder can be made beside the file)."""
    with path.open("rb") as file:  # the time of the very file read, not of a rewrite that replaced it since
        text, modified = file.read(), os.fstat(file.fileno()).st_mtime
    info = json.loads(text)
    if not isinstance(info, dict):
        raise ValueError(f"{NOT_A_RECORD}: a JSON {type(info).__name__}")
    for key in NUMBERS:  # the table formats them as numbers: text there was a traceback
        value = info.get(key)
        if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
            raise ValueError(f"{NOT_A_RECORD}: {key} is {value!r}, not a number")
    start = info.get("pid_start")
    if start is not None and not isinstance(start, str):
        raise ValueError(f"{NOT_A_RECORD}: pid_start is {start!r}, not a string")
    space = info.get("pid_namespace")
    if space is not None and not isinstance(space, str):
        raise ValueError(f"{NOT_A_RECORD}: pid_namespace is {space!r}, not a string")
    for key, kind in REQUIRED.items():  # every record a sweep writes has them: {} was a sweep of Nones
        if not isinstance(info.get(key), kind):
            raise ValueError(f"{NOT_A_RECORD}: it has no {key}")
    try:
        if info.get("state") in LIVE:
            # A container that shares the host's name (Docker's --network host, a pod's hostNetwork) numbers its
            # processes apart: its PID 1 is not this host's. Its sweep is judged as another host's.
            here = info.get("host") == socket.gethostname() and space in (None, pid_namespace())
            if here:
                age = time.time() - float(info.get("updated_epoch", 0))
            else:
                age = (filesystem_now(path.parent) or time.time()) - modified
            if here and not _alive(int(info.get("pid", 0)), start):
                info["state"] = "stopped"
            elif age > max(60.0, 5 * float(info.get("every_s", 5))):
                info["state"] = "stale"
            if info["state"] in ("stopped", "stale"):  # its last estimate: like a finished sweep, it has none
                info["eta_s"] = None
        if info.get("state") in ENDED:
            # The cluster closed with the sweep: its link leads nowhere, or to whatever serves that port now
            # (the next sweep's dashboard on 8787)
            info["dashboard"] = None
    except (AttributeError, TypeError) as error:  # valid JSON, but not the object a sweep writes
        raise ValueError(f"{NOT_A_RECORD}: {type(error).__name__}: {error}") from error
    # Where this reader finds it: "output" is the path the sweep was given, relative to its own working directory
    # (a workflow's results/...), the same for the sweeps of two workflow directories
    info["progress_file"] = str(path)
    return info


def pid_namespace() -> str | None:
    """This process's PID namespace (``pid:[<inode>]``), or None where /proc does not say."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as ``<clock ticks after boot>@<boot id>`` (field 22 of /proc/<pid>/stat and
    /proc/sys/kernel/random/boot_id): with the PID, it names one process of a host for as long as the host runs.
    None where /proc does not say (another system, a process gone or hidden from this user)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    # Field 2, the command's name in parentheses, may itself hold spaces and parentheses: fields 3 on follow the
    # last ")"
    fields = stat[stat.rindex(b")") + 1 :].split()
    return f"{int(fields[19])}@{boot}"


def _alive(pid: int, start: str | None = None) -> bool:
    """Whether process ``pid`` runs, and is the one that started at ``start`` (when given and /proc says)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: beyond any pid the system can have
        return False
    except PermissionError:  # another user's: it runs
        pass
    if start is None:
        return True
    now = process_start(pid)
    return now is None or now == start  # None: not to be told (hidden, or ended just now): as the PID says


def format_rate(per_s: float) -> str:
    """A rate for people: one decimal, or two significant digits below 0.1 (never 0.0 for a slow sweep)."""
    return f"{per_s:.1f}" if per_s >= 0.1 or per_s == 0 else f"{per_s:.2g}"


def _output_here(row: dict[str, Any]) -> str:
    """The output as the reader finds it (next to its progress file), else as the sweep named it."""
    found = str(row.get("progress_file") or "")
    return found[: -len(SUFFIX)] if found.endswith(SUFFIX) else str(row.get("output"))


def format_messages(rows: list[dict[str, Any]], width: int = 300) -> list[str]:
    """``<output>: <message>`` for each sweep whose record has one (why it failed or stopped), its first line cut at
    ``width`` characters: the table has no room for it (--json gives it whole)."""
    lines = []
    for row in rows:
        message = str(row.get("message") or "").strip()
        if message:
            first = message.splitlines()[0]
            cut = first if len(first) <= width and first == message else first[:width].rstrip() + " ..."
            lines.append(f"{_output_here(row)}: {cut}")
    return lines


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of sweeps, one line each."""
    header = [
        "STATE",
        "DONE",
        "TOTAL",
        "FAILED",
        "RATE/S",
        "ETA",
        "BACKEND",
        "WORKERS",
        "UPDATED",
        "OUTPUT",
        "DASHBOARD",
    ]
    lines = [header]
    for row in rows:
        eta = row.get("eta_s")
        lines.append(
            [
                str(row.get("state")),
                str(row.get("done")),
                str(row.get("total")),
                str(row.get("failed")),
                format_rate(float(row.get("rate_per_s") or 0)),
                "-" if eta is None else f"{float(eta):.0f}s",
                str(row.get("backend")),
                "-" if row.get("workers") is None else str(row.get("workers")),
                str(row.get("updated")),
                _output_here(row),
                str(row.get("dashboard") or "-"),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )
