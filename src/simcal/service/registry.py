"""The job registry: one SQLite file under the state directory, so jobs outlive the service process.

A job is ``queued`` → ``running`` → ``succeeded`` | ``failed`` | ``cancelled``. Every change is committed before
the API answers (WAL journal, ``synchronous=FULL``): a job the API accepted survives a crash of the service, and a
job found ``running`` at start-up was interrupted (see ``JobRegistry.recover``).
"""

from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")
SCHEMA_VERSION = 1

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
        if self.started is None:
            return None
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


class JobRegistry:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: job registry schema {version} is newer than this simcal knows "
                    f"({SCHEMA_VERSION}); run the newer simcal or another --state-dir"
                )
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _one(self, sql: str, args: Iterable[Any] = ()) -> Job | None:
        with self._lock:
            row = self._db.execute(sql, tuple(args)).fetchone()
        return None if row is None else Job.from_row(row)

    def _write(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, tuple(args)).rowcount

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
        return Job.from_row(row), created

    def get(self, job_id: str, owner: str | None = None) -> Job | None:
        if owner is None:
            return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return self._one("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner))

    def list(self, owner: str, status: str | None = None, limit: int = 100) -> list[Job]:
        sql, args = "SELECT * FROM jobs WHERE owner = ?", [owner]
        if status is not None:
            sql, args = sql + " AND status = ?", [*args, status]
        with self._lock:
            rows = self._db.execute(
                # In the order jobs were made (rowid), not by their clock times: a clock stepped back (NTP after a
                # suspended VM) put a new job behind older ones, and out of `simcal jobs list --limit 1`.
                sql + " ORDER BY rowid DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [Job.from_row(row) for row in rows]

    def queued(self) -> list[str]:
        with self._lock:
            rows = self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY rowid").fetchall()
        return [row[0] for row in rows]

    def start(self, job_id: str) -> bool:
        """queued → running (counts an attempt); False when the job is no longer queued (cancelled meanwhile)."""
        return bool(
            self._write(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, started = COALESCE(started, ?) "
                "WHERE id = ? AND status = 'queued'",
                (time.time(), job_id),
            )
        )

    def cancel_queued(self, job_id: str, error: str) -> bool:
        """queued → cancelled; False when the job is no longer queued (a job thread may have started it since it
        was read: a running job is stopped by its runner, which records the end)."""
        return bool(
            self._write(
                "UPDATE jobs SET status = 'cancelled', finished = ?, error = ? WHERE id = ? AND status = 'queued'",
                (time.time(), error, job_id),
            )
        )

    def requeue(self, job_id: str) -> None:
        """running → queued after a graceful stop of the service (the interrupted attempt does not count)."""
        self._write(
            "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0) WHERE id = ? AND status = 'running'",
            (job_id,),
        )

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
        """A queued or running job reaches a final status; False when it had one already."""
        assert status in FINAL, status
        return bool(
            self._write(
                "UPDATE jobs SET status = ?, finished = ?, done = COALESCE(?, done), failed = COALESCE(?, failed), "
                "resumed = COALESCE(?, resumed), results_path = COALESCE(?, results_path), error = ? "
                "WHERE id = ? AND status IN ('queued', 'running')",
                (status, time.time(), done, failed, resumed, results_path, error, job_id),
            )
        )

    def recover(self, max_attempts: int) -> tuple[list[str], list[str]]:
        """Jobs left ``running`` by a service that died: queued again to resume from their finished parts, or
        failed with the reason once they were interrupted ``max_attempts`` times. Returns (resumed, failed)."""
        resumed, failed = [], []
        with self._lock:
            rows = self._db.execute("SELECT id, attempts FROM jobs WHERE status = 'running'").fetchall()
        for job_id, attempts in rows:
            if attempts >= max_attempts:
                self.finish(
                    job_id,
                    "failed",
                    error=(
                        f"the service stopped {attempts} time(s) while this job was running (it may be what brings "
                        f"the service down); not resumed again (--max-job-attempts {max_attempts})"
                    ),
                )
                failed.append(job_id)
            else:
                self._write(
                    "UPDATE jobs SET status = 'queued' WHERE id = ? AND status = 'running'", (job_id,)
                )
                resumed.append(job_id)
        return resumed, failed

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        found = dict(rows)
        return {status: int(found.get(status, 0)) for status in STATUSES}
