"""The changes of a job registry that the disk could not take (a full or failing disk under the state
directory): kept in memory, shown by every read, written again at the next write and every ``retry_s`` seconds,
and a running job's uncounted run marked by a file for ``recover`` (see ``simcal.service.registry``). Split from
``simcal.service.registry``, whose ``JobRegistry`` takes these methods from ``UnsavedChanges``; every public
name here is still importable from there."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simcal.tables import fsync_directory

if TYPE_CHECKING:
    from simcal.service.registry import Job

log = logging.getLogger("simcal.service.registry")  # the records keep the name they had there

# SQLite's primary result codes of a disk that is full or failing: a job's end is then kept in memory and retried.
UNWRITABLE = (10, 13)  # SQLITE_IOERR, SQLITE_FULL
ENDS = (
    "UPDATE jobs SET status = ?, finished = ?, done = COALESCE(?, done), failed = COALESCE(?, failed), "
    "resumed = COALESCE(?, resumed), results_path = COALESCE(?, results_path), error = ? "
    "WHERE id = ? AND status IN ('queued', 'running')"
)
# A running job back to the queue, ``? = 1`` not counting its interrupted attempt (a graceful stop, a lost scheduler),
# 0 counting it (a death of the service, found by ``recover``).
REQUEUE = (
    "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - ?, 0) WHERE id = ? AND status = 'running'"
)
ENDS_QUEUED = ENDS.replace(
    "status IN ('queued', 'running')", "status = 'queued'"
)  # a cancel before it started


def unwritable(error: sqlite3.Error) -> bool:
    """SQLite's error of a disk that is full or failing (not a bug of the SQL)."""
    return ((getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF) in UNWRITABLE


def marks_in(directory: Path) -> set[str]:
    """The jobs marked in ``directory`` (none where it is not one)."""
    try:
        return {entry.name for entry in directory.iterdir() if entry.is_file()}
    except OSError:
        return set()


def run_all(actions: list[Callable[[], None]]) -> None:
    """Run each action waiting for a job's end to be written; one that fails is logged and the others still run."""
    for action in actions:
        try:
            action()
        except Exception:  # noqa: BLE001 - one action's failure must not stop the others
            log.exception("an action waiting for a job's end to be written failed")


class UnsavedChanges:
    """``JobRegistry``'s methods for the changes kept in memory; they use its connection, lock and state (``_db``,
    ``_lock``, ``_unsaved``, ``_when_saved``, ``_requeued``, ``marks``, ``_marked``, ``_retry``, ``_retry_s``,
    ``_closed``, ``path``), which ``JobRegistry.__init__`` sets."""

    # -- jobs whose end is not written yet ----------------------------------------------------------------------

    def unsaved(self) -> list[str]:
        """The jobs whose end, or return to the queue, is shown but not yet written to disk."""
        with self._lock:
            return [*self._unsaved, *self._requeued]

    def when_saved(self, job_id: str, action: Callable[[], None]) -> None:
        """Run ``action`` once the job's end is on disk: now, unless it is waiting to be written."""
        with self._lock:
            if job_id in self._unsaved:
                self._when_saved.setdefault(job_id, []).append(action)
                return
        action()

    def save_unsaved(self) -> list[Callable[[], None]]:
        """Try again to write the ends that could not be written; the actions now due (run them outside the
        lock). Called at each write and by a timer while any end is waiting."""
        with self._lock:
            return self._save_unsaved()

    def _save_unsaved(self) -> list[Callable[[], None]]:
        due: list[Callable[[], None]] = []
        if self._closed:
            return due
        for job_id, values in list(self._unsaved.items()):
            try:
                self._db.execute(ENDS, (*values, job_id))
            except sqlite3.Error as error:
                if unwritable(error):
                    break  # still full: the timer or the next write tries again
                raise
            del self._unsaved[job_id]
            self._unmark(job_id)
            due.extend(self._when_saved.pop(job_id, []))
            log.info("job %s: its end (%s) is now written to %s", job_id, values[0], self.path)
        for job_id in list(self._requeued):
            try:
                self._save_requeue(job_id)
            except sqlite3.Error as error:
                if unwritable(error):
                    break
                raise
        return due

    def _save_requeue(self, job_id: str) -> None:
        """Write a job's return to the queue kept in memory; raises the disk's error."""
        self._db.execute(REQUEUE, (self._requeued[job_id], job_id))
        del self._requeued[job_id]
        self._unmark(job_id)
        log.info("job %s: its return to the queue is now written to %s", job_id, self.path)

    def _retry_later(self) -> None:
        if self._closed or (self._retry is not None and self._retry.is_alive()):
            return
        self._retry = threading.Timer(self._retry_s, self._retry_now)
        self._retry.daemon = True
        self._retry.start()

    def _retry_now(self) -> None:
        with self._lock:
            self._retry = None
            try:
                due = self._save_unsaved()
            except sqlite3.Error:
                log.exception("the job registry %s: writing the jobs' ends again failed", self.path)
                due = []
            if self._unsaved or self._requeued:
                self._retry_later()
        run_all(due)

    def _write_or_keep(
        self,
        job_id: str,
        sql: str,
        args: tuple[Any, ...],
        on_disk: tuple[str, ...],
        kept: dict[str, Any],
        value: Any,
        change: str,
        shown: str,
        uncounted: bool,
    ) -> bool:
        """Write one job's change (``sql`` with ``args``, a conditional UPDATE; under the lock): whether it applied.
        Where the disk cannot take it (``unwritable``), it applies if the job's status on disk is one of ``on_disk``
        (those ``sql`` changes): it is then kept in memory (``kept[job_id] = value``), shown by every read, tried
        again every ``retry_s`` and at the registry's next write (``_save_unsaved``), and logged, naming the
        ``change`` and how the job is ``shown``; a running job's run that the change does not count (``uncounted``:
        an end, or a requeue after a graceful stop or a lost scheduler) is marked (``_mark``) for ``recover``, which
        would find the job running on disk if the service stopped before the change is written. The one fallback of
        a job's end (``_end``) and of its return to the queue (``requeue``)."""
        try:
            applied = bool(self._db.execute(sql, args).rowcount)
        except sqlite3.Error as error:
            if not unwritable(error):
                raise
            row = self._db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row[0] not in on_disk:
                return False
            kept[job_id] = value
            if uncounted and row[0] == "running":
                self._mark(job_id)
            self._retry_later()
            log.error(
                "job %s %s, but the job registry %s cannot be written (%s): the service shows it %s and writes it "
                "every %g s and at the registry's next write until the disk takes it",
                job_id, change, self.path, error, shown, self._retry_s,
            )  # fmt: skip
            return True
        if applied:
            self._unmark(job_id)  # not running on disk any more
        return applied

    def _mark(self, job_id: str) -> None:
        """Record that the run of a running job whose change is kept in memory does not count: an empty file (no
        page of the registry, which the disk refused; a name in a directory made when the disk took it), so that
        recover does not count the run if the service stops before the change is written."""
        if job_id in self._marked:
            return
        try:
            self.marks.mkdir(exist_ok=True)
            os.close(os.open(self.marks / job_id, os.O_WRONLY | os.O_CREAT, 0o644))
            fsync_directory(self.marks)
        except OSError as error:
            log.error(
                "job %s: that its interrupted run does not count cannot be recorded in %s either (%s): if the "
                "service stops before its change is written, the next start counts the run as an attempt",
                job_id, self.marks, error,
            )  # fmt: skip
            return
        self._marked.add(job_id)

    def _unmark(self, job_id: str) -> None:
        """The job is no longer running on disk: its mark, if any, is dropped."""
        if job_id not in self._marked:
            return
        try:
            (self.marks / job_id).unlink(missing_ok=True)
            # Durable like the change that ended the run: a mark back after a power loss would not count the
            # job's next run if it died there too
            fsync_directory(self.marks)
        except OSError as error:
            log.error("job %s: its mark %s cannot be removed (%s)", job_id, self.marks / job_id, error)
            return
        self._marked.discard(job_id)

    def _end(
        self, job_id: str, values: tuple[Any, ...], only_queued: bool = False, uncounted: bool = True
    ) -> bool:
        """Write a job's end (the values of ENDS) if it is queued (or running, unless ``only_queued``); False when
        it was not. Where the disk cannot take it, the end is kept in memory (``_write_or_keep``), a running job's
        run marked as not counted unless the end is not that of a run (``uncounted``: recover's of a death)."""
        with self._lock:
            due = self._save_unsaved()
            if job_id in self._unsaved:
                ended = False
            else:
                # A job whose return to the queue is not written is queued, though running on disk: ENDS takes both.
                requeued = job_id in self._requeued
                queued_only = only_queued and not requeued
                sql = ENDS_QUEUED if queued_only else ENDS
                ended = self._write_or_keep(
                    job_id,
                    sql,
                    (*values, job_id),
                    ("queued",) if queued_only else ("queued", "running"),
                    self._unsaved,
                    values,
                    values[0],
                    values[0],
                    # A job queued again in memory ran nothing since: its mark stays as its requeue left it.
                    uncounted=uncounted and not requeued,
                )
                if ended:
                    self._requeued.pop(job_id, None)  # its end replaces its return to the queue
        run_all(due)
        return ended

    def _shown(self, job: Job) -> Job:
        """The job as it is, with its end that is not written yet."""
        if job.id in self._requeued:
            return replace(job, status="queued", attempts=max(job.attempts - self._requeued[job.id], 0))
        values = self._unsaved.get(job.id)
        if values is None:
            return job
        status, finished, done, failed, resumed, results_path, error = values
        return replace(
            job,
            status=status,
            finished=finished,
            done=job.done if done is None else done,
            failed=job.failed if failed is None else failed,
            resumed=job.resumed if resumed is None else resumed,
            results_path=results_path or job.results_path,
            error=error,
        )
