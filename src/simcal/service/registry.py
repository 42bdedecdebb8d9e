"""The job registry: one SQLite file under the state directory, so jobs outlive the service process.

A job is ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``. Every change is committed before
the API answers (WAL journal, ``synchronous=FULL``): a job the API accepted survives a crash of the service, and a
job found ``running`` at start-up was interrupted (see ``JobRegistry.recover``).

A job's end that cannot be written (a full or failing disk under the state directory) is kept in memory: every read
shows the job as it really ended, and the write is tried again at the registry's next write and every
``retry_s`` seconds until it is on disk (``JobRegistry.when_saved`` runs what must wait for it). A start that cannot
be written raises (``unwritable`` tells the disk's errors): the job stays queued, and its job thread tries again every
``retry_s`` seconds (``JobManager._start``). A running job's return to the queue (``requeue``, and ``recover`` at
start-up) that cannot be written is kept in memory as an end is: every read shows the job queued, it starts only once
its return and its start are on disk, and the write is tried again in the same way; one still unwritten when the
registry closes is found running, and queued again, by the next start's ``recover``. A return that does not count
the interrupted run (``requeue``'s), and a running job's end, kept in memory, is marked by an empty file named by
the job in ``<registry>-requeued/``, so that ``recover`` does not count the run either (where the mark cannot be
made, the log says so). That part (``JobRegistry``'s methods for the changes kept in memory) is in
``simcal.service.unsaved_changes``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simcal.service.owner_migration import move_bare_owners

# The changes the disk could not take (kept in memory, written again) are UnsavedChanges' methods, in a module of
# their own; the names it took from here are still importable from here.
from simcal.service.unsaved_changes import (  # noqa: F401
    ENDS,
    ENDS_QUEUED,
    REQUEUE,
    UNWRITABLE,
    UnsavedChanges,
    marks_in,
    run_all,
    unwritable,
)

log = logging.getLogger(__name__)

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
SCHEMA_VERSION = 2  # 2: a job's owner is its key, not the key's name (simcal.service.owner_migration)
RETRY_S = 5.0  # how often a job's end that could not be written is tried again
# Free space below which a "disk I/O error" at open is told as a full disk: SQLite's -shm file takes 32 KiB.
FULL_BELOW_BYTES = 1 << 20

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    idempotency_key TEXT,
    status TEXT NOT NULL,
    fn_ref TEXT NOT NULL,
    request TEXT NOT NULL,
    simulations INTEGER NOT NULL,
    submitted REAL NOT NULL,
    started REAL,
    finished REAL,
    done INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    resumed INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    results_path TEXT,
    error TEXT,
    trace TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""
# Indexes a registry made before them lacks, made when it is opened (IF NOT EXISTS: nothing written once there).
# jobs_owner: an owner's jobs in the order they were made (``list``), without reading every other owner's.
ADDED_INDEXES = {"jobs_owner": "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner)"}


@dataclass
class Job:
    id: str
    owner: str
    idempotency_key: str | None
    status: str
    fn_ref: str
    request_text: str  # the request as stored (JSON); ``request`` parses it when it is read
    simulations: int
    submitted: float
    started: float | None
    finished: float | None
    done: int
    failed: int
    resumed: int
    attempts: int
    results_path: str | None
    error: str | None
    trace: str | None
    # time.monotonic() of its start as this process counts it (JobRegistry.start), while it has not ended.
    running_since: float | None = field(default=None, compare=False)

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        values = dict(row)
        values["request_text"] = values.pop("request")
        return cls(**values)

    @functools.cached_property
    def request(self) -> dict[str, Any]:
        """The request, parsed only when read: a job of 400 000 parameter sets holds ~10 MB of it, which every
        status poll and job list parsed though only the job's runner and a replayed submission read it."""
        return json.loads(self.request_text)

    def duration_s(self, now: float | None = None) -> float | None:
        """Since its start: by this process's monotonic clock while it runs (a step of the wall clock, NTP after a
        suspended VM, moves no running job's duration); from the stored wall-clock times once it ended, or when
        no start in this process measures it."""
        if self.started is None:
            return None
        if self.finished is None and self.running_since is not None and now is None:
            return round(max(0.0, time.monotonic() - self.running_since), 3)
        end = self.finished if self.finished is not None else (now or time.time())
        return round(max(0.0, end - self.started), 3)  # never negative, whatever the clock did meanwhile

    def describe(self, progress: dict[str, int] | None = None) -> dict[str, Any]:
        """The job as the API shows it; ``progress`` overrides the stored counts while it runs."""
        counts = progress or {"done": self.done, "total": self.simulations, "failed": self.failed}
        return {
            "job_id": self.id,
            "status": self.status,
            "fn_ref": self.fn_ref,
            "progress": counts,
            "resumed": self.resumed,
            "submitted": _iso(self.submitted),
            "started": _iso(self.started),
            "finished": _iso(self.finished),
            "duration_s": self.duration_s(),
            "results_path": self.results_path,
            "error": self.error,
        }


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


class JobRegistry(UnsavedChanges):
    def __init__(self, path: str | Path, retry_s: float = RETRY_S):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        # Jobs whose end could not be written: id -> the values of ENDS, and what waits until it is written.
        self._unsaved: dict[str, tuple[Any, ...]] = {}
        self._when_saved: dict[str, list[Callable[[], None]]] = {}
        # Running jobs whose return to the queue could not be written: id -> REQUEUE's first value.
        self._requeued: dict[str, int] = {}
        # Jobs running on disk whose kept change (an end, a requeue not counting the run) says their run does not
        # count: an empty file each, named by the job, so that the next start's recover, which finds them running on
        # disk, does not count the run either (``_mark``). The next start queues each of them again.
        self.marks = self.path.with_name(self.path.name + "-requeued")
        self._marked = marks_in(self.marks)
        with contextlib.suppress(OSError):  # made now, while the disk may take it; ``_mark`` tries again
            self.marks.mkdir(exist_ok=True)
        self._retry_s = retry_s
        self._retry: threading.Timer | None = None
        # Job.running_since of the jobs started here, until they end.
        self._running_since: dict[str, float] = {}
        self._closed = False
        with self._lock:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as error:
                self._db.close()
                raise self._open_error(error) from error
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: job registry schema {version} is newer than this simcal knows "
                    f"({SCHEMA_VERSION}); run the newer simcal or another --state-dir"
                )
            self._db.executescript(SCHEMA)  # IF NOT EXISTS: writes nothing to a registry already made
            if version == 0:  # only a new one: opening a registry on a full disk must not need a write
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")  # an older one: move_bare_owners
            self._add_indexes()

    def _open_error(self, error: sqlite3.OperationalError) -> sqlite3.OperationalError:
        """SQLite's "disk I/O error" at the first statement, said as what it is where the disk is (nearly) full:
        every open of a registry in WAL mode makes its -wal and -shm files beside it (a clean close removes
        them), and a disk without room for them stops the open before the registry's own code runs."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return error
        free = stats.f_bavail * stats.f_frsize
        if free >= FULL_BELOW_BYTES:
            return error
        return sqlite3.OperationalError(
            f"{self.path}: the job registry cannot be opened ({error}): its disk has {free:,} bytes free, and SQLite "
            f"makes its {self.path.name}-wal and {self.path.name}-shm files beside it at every open; free space "
            "there, or give another --state-dir, and start again"
        )

    def _add_indexes(self) -> None:
        """Make the indexes an older registry lacks. A disk that cannot take one now (full, read-only) leaves the
        registry as it was, said in a warning: the queries work without it, and the next start tries again."""
        for name, sql in ADDED_INDEXES.items():
            try:
                self._db.execute(sql)
            except sqlite3.OperationalError as error:
                log.warning(
                    "%s: the job registry's index %s could not be made (%s); it works without it, more slowly, "
                    "and the next start of the service makes it",
                    self.path, name, error,
                )  # fmt: skip

    def move_bare_owners(self, owners: dict[str, str], keys_file: str) -> None:
        """A registry of schema 1 gives its jobs to the keys of their names now (owner_migration), once."""
        with self._lock:
            move_bare_owners(self._db, self.path, owners, keys_file, SCHEMA_VERSION)

    @property
    def retry_s(self) -> float:
        """How often a write the disk could not take is tried again (a job's end here, a start by the job thread)."""
        return self._retry_s

    def close(self) -> None:
        try:
            saved = self.save_unsaved()
        except sqlite3.Error:  # closing goes on: the ends still unsaved are named below
            log.exception("the job registry %s: writing the jobs' ends again failed", self.path)
            saved = []
        with self._lock:
            self._closed = True
            if self._retry is not None:
                self._retry.cancel()
            for job_id, values in self._unsaved.items():
                marked = (
                    f", not counting its run ({self.marks / job_id} says so)"
                    if job_id in self._marked
                    else ""
                )
                log.error(
                    "job %s: its end (%s) is still not written to %s; the next start of the service queues it "
                    "again%s (a job that succeeded is published again from its finished file, without running "
                    "again; a failed or cancelled one runs again)", job_id, values[0], self.path, marked,
                )  # fmt: skip
            for job_id, uncount in self._requeued.items():
                if not uncount:  # recover's, of a run the service's death interrupted
                    counted = "counting its interruption, a death of the service, once as this start did"
                elif job_id in self._marked:
                    counted = f"not counting the interrupted run ({self.marks / job_id} says so)"
                else:
                    counted = (
                        "counting the interrupted run as an attempt (that it does not count is not recorded)"
                    )
                log.error(
                    "job %s: its return to the queue is still not written to %s; the next start of the service "
                    "finds it running and queues it again, %s",
                    job_id, self.path, counted,
                )  # fmt: skip
            self._db.close()
        run_all(saved)

    # -- reads and writes ---------------------------------------------------------------------------------------

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Job | None:
        with self._lock:
            row = self._db.execute(sql, tuple(args)).fetchone()
            return None if row is None else self._shown(Job.from_row(row))

    def _write(self, sql: str, args: Iterable[Any] = (), job_id: str | None = None) -> int:
        """Run a write (after the ends waiting to be written); 0 without running it for ``job_id`` whose end is
        shown but not written (it has ended: no other change applies to it)."""
        with self._lock:
            due = self._save_unsaved()
            ended = job_id is not None and job_id in self._unsaved
            count = 0 if ended else self._db.execute(sql, tuple(args)).rowcount
        run_all(due)
        return count

    def create(
        self,
        owner: str,
        fn_ref: str,
        request: dict[str, Any],
        simulations: int,
        idempotency_key: str | None = None,
        trace: str | None = None,
    ) -> tuple[Job, bool]:
        """A new queued job, or (with an idempotency key already used by this owner) the job made then, and
        whether it is new."""
        job_id = uuid.uuid4().hex
        with self._lock:
            due = self._save_unsaved()
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, owner, idempotency_key, status, fn_ref, request, simulations, "
                    "submitted, trace) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                    (
                        job_id,
                        owner,
                        idempotency_key,
                        fn_ref,
                        json.dumps(request),
                        simulations,
                        time.time(),
                        trace,
                    ),
                )
                created = True
            except sqlite3.IntegrityError:
                if idempotency_key is None:
                    raise
                created = False
            if created:
                row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            else:
                row = self._db.execute(
                    "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?", (owner, idempotency_key)
                ).fetchone()
            job = self._shown(Job.from_row(row))
        run_all(due)
        return job, created

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        if owner is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner))

    def list(self, owner: str, status: str | None = None, limit: int = 100) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE owner = ?", [owner]
        with self._lock:
            if status is not None:  # as shown: a job whose end or requeue is not written has its status
                shown = self._shown_statuses()
                ended = [job_id for job_id, shown_status in shown.items() if shown_status == status]
                others = list(shown)
                sql = (
                    f"{sql} AND ((status = ? AND id NOT IN ({','.join('?' * len(others))})) "
                    f"OR id IN ({','.join('?' * len(ended))}))"
                )
                args = [*args, status, *others, *ended]
            rows = self._db.execute(
                # In the order jobs were made (rowid), not by their clock times: a clock stepped back (NTP after a
                # suspended VM) put a new job behind older ones, and out of `simcal jobs list --limit 1`.
                sql + " ORDER BY rowid DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
            return [self._shown(Job.from_row(row)) for row in rows]

    def _shown_statuses(self) -> dict[str, str]:
        """The status shown of each job whose change is not written yet."""
        return {
            **{job_id: values[0] for job_id, values in self._unsaved.items()},
            **dict.fromkeys(self._requeued, "queued"),
        }

    def queued(self) -> list[str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, status FROM jobs WHERE status IN ('queued', 'running') ORDER BY rowid"
            ).fetchall()
            shown = self._shown_statuses()
            return [job_id for job_id, status in rows if shown.get(job_id, status) == "queued"]

    def start(self, job_id: str) -> bool:
        """queued → running (counts an attempt); False when the job is no longer queued (cancelled meanwhile). A job
        whose return to the queue is not written yet starts once it is: the disk's error is raised until then."""
        with self._lock:
            if job_id in self._requeued:
                self._save_requeue(job_id)  # raises while the disk cannot take it
        wall, began = time.time(), time.monotonic()
        started = bool(
            self._write(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = COALESCE(started, ?) "
                "WHERE id = ? AND status = 'queued'",
                (wall, job_id),
                job_id,
            )
        )
        if started:
            with self._lock:
                first = self._db.execute("SELECT started FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
            # Counted on from here by the monotonic clock; a first start in an earlier run of the service (kept by
            # COALESCE) adds what the stored wall-clock times say of it. A start here before keeps its count.
            self._running_since.setdefault(job_id, began - max(0.0, wall - first))
        return started

    def _shown(self, job: Job) -> Job:
        shown = super()._shown(job)
        since = self._running_since.get(job.id)
        return shown if since is None else replace(shown, running_since=since)

    def cancel_queued(self, job_id: str, error: str) -> bool:
        """queued → cancelled; False when the job is no longer queued (a job thread may have started it since it
        was read: a running job is stopped by its runner, which records the end)."""
        ended = self._end(job_id, ("cancelled", time.time(), None, None, None, None, error), only_queued=True)
        return self._ended(job_id, ended)

    def requeue(self, job_id: str, count_attempt: bool = False) -> bool:
        """running → queued: after a graceful stop of the service or a lost scheduler (the interrupted attempt does
        not count), or a death of the service (``recover``: it counts). False when the job was not running. Where the
        disk cannot take it, the job is shown queued at once and the change written later, as an end is."""
        uncount = 0 if count_attempt else 1
        with self._lock:
            due = self._save_unsaved()
            if job_id in self._unsaved or job_id in self._requeued:
                requeued = False  # ended (its end not written yet), or queued already
            else:
                requeued = self._write_or_keep(
                    job_id,
                    REQUEUE,
                    (uncount, job_id),
                    ("running",),
                    self._requeued,
                    uncount,
                    "goes back to the queue",
                    "queued, starts it only once the disk takes writes,",
                    uncounted=bool(uncount),
                )
        run_all(due)
        return requeued

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        done: int | None = None,
        failed: int | None = None,
        resumed: int | None = None,
        results_path: str | None = None,
        error: str | None = None,
    ) -> bool:
        """A queued or running job reaches a final status; False when it had one already. Where the disk cannot take
        it, the job shows its end at once and it is written later (``when_saved``)."""
        assert status in FINAL, status
        return self._ended(
            job_id, self._end(job_id, (status, time.time(), done, failed, resumed, results_path, error))
        )

    def _ended(self, job_id: str, ended: bool) -> bool:
        if ended:  # its duration is the stored times' from now on
            self._running_since.pop(job_id, None)
        return ended

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Jobs left ``running`` by a service that died: queued again to resume from their finished parts, or
        failed with the reason once they were interrupted ``max_attempts`` times. A job whose end, or return to the
        queue not counting its run (a graceful stop, a lost scheduler), was kept in memory when the service stopped,
        and marked so (``_mark``), is queued again without counting that run. Returns (resumed, failed)."""
        resumed, failed = [], []
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
            for job_id in self._marked - {job_id for job_id, _ in rows}:
                self._unmark(job_id)  # its return was written after all: a later death of it counts
        for job_id, attempts in rows:
            uncount = 1 if job_id in self._marked else 0
            deaths = attempts - uncount
            if deaths >= max_attempts:
                error = (
                    f"the service stopped {deaths} time(s) while this job was running (it may be what brings the "
                    f"service down); not resumed again (--max-job-attempts {max_attempts})"
                )
                # Not a run that ended: a death, which a mark would uncount should the service stop before this end
                # is written.
                self._end(job_id, ("failed", time.time(), None, None, None, None, error), uncounted=False)
                failed.append(job_id)
            elif self.requeue(job_id, count_attempt=not uncount):  # a death counted stays counted
                resumed.append(job_id)
        return resumed, failed

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
            found = {status: int(count) for status, count in rows}
            for job_id, shown in self._shown_statuses().items():
                row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
                found[row[0]] -= 1
                found[shown] = found.get(shown, 0) + 1
        return {status: found.get(status, 0) for status in STATUSES}
