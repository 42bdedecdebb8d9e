"""The runs of a service job stopped by what is not the job's fault, and how the job goes on: a start waiting while
the job registry's disk takes no writes, a run a full disk under --state-dir stopped (paused and tried again), a run
that lost the Dask scheduler (queued again). A base class of ``simcal.service.jobs.JobManager`` (split from it),
whose attributes these methods read: ``config``, ``registry``, ``_lock``, ``_queue``, ``_stopping``, ``_running``,
``_cancels``, ``_scheduler_losses`` and ``_paused_by_disk``."""

from __future__ import annotations

import logging
import sqlite3
import threading

from simcal.service.registry import unwritable

log = logging.getLogger("simcal.service.jobs")  # the records keep the name they had in simcal.service.jobs

REQUEUED = "requeued"  # what JobManager._after_lost_connection says of a job it queued again
FULL_DISK_RETRY_MAX_S = 60.0  # the longest wait between tries of a job a full disk paused


class JobInterruptions:
    """The interruptions of ``JobManager``'s runs (see the module's docstring); not used on its own."""

    def _start(self, job_id: str, cancel: threading.Event) -> bool | None:
        """``registry.start``, waiting while the registry's disk cannot take it (full or failing): the job stays
        queued, nothing of it runs (its parts would go to the same disk), and the start is tried again every
        ``retry_s`` until the disk takes it. False when the job is no longer queued (cancelled: a cancel of a
        queued job is kept in memory, as an end is) or its runner was told to stop; None when the service stops
        meanwhile (the job stays queued and starts at the next start)."""
        waited = False
        while True:
            try:
                started = self.registry.start(job_id)
            except sqlite3.Error as error:
                if not unwritable(error):
                    raise
                if not waited:
                    log.error(
                        "job %s cannot start: the job registry %s cannot be written (%s); it stays queued and "
                        "starts once the disk takes writes (tried again every %g s)",
                        job_id, self.registry.path, error, self.registry.retry_s,
                    )  # fmt: skip
                    waited = True
                cancel.wait(self.registry.retry_s)
                if self._stopping.is_set():
                    return None
                if cancel.is_set():
                    return False
                continue
            if waited and started:
                log.info("job %s: the job registry takes writes again; starting it", job_id)
            return started

    def _paused_by_full_disk(self, job_id: str, error: BaseException, cancel: threading.Event) -> bool:
        """A run stopped by a full disk under --state-dir (its parts, its results file): not the job's fault, and
        failing it would throw its finished simulations away. The job goes back to the queue, the run not counted,
        and is put up to run again after ``retry_s``, the wait doubling with each run the full disk stops, to at
        most FULL_DISK_RETRY_MAX_S; it resumes from its parts. While the disk stays full each try stops at a probe
        written under the job's directory (``disk_takes_a_write``), before the job is planned again, or waits for
        its start to be written (``_start``). Logged as an ERROR the first time, then one INFO line a try. A cancel
        ends it: one heard while the run stopped (``cancel`` set, the service not stopping), before the job is
        queued again, returns False (the caller ends it cancelled); one heard later finds it queued, or sets the
        event its next run takes. True: queued again."""
        with self._lock:  # before it is queued: its next run gets a new cancel event
            if cancel.is_set() and not self._stopping.is_set():
                return False
            self._running.discard(job_id)
            self._cancels.pop(job_id, None)
            stopped = self._paused_by_disk[job_id] = self._paused_by_disk.get(job_id, 0) + 1
        self.registry.requeue(job_id)
        # The doubling capped: 2 ** 1024 is no float, the 1025th try's (some 17 hours at the service's 5 s and 60 s).
        wait_s = min(self.registry.retry_s * 2 ** min(stopped - 1, 64), FULL_DISK_RETRY_MAX_S)
        if not self._stopping.is_set():
            retry = threading.Timer(wait_s, self._queue.put, (job_id,))
            retry.daemon = True
            retry.start()
        if stopped == 1:
            log.error(
                "job %s paused: the disk under --state-dir is full (%s: %s); it went back to the queue and resumes "
                "from its finished simulations once the disk takes them (tried again after %g s, the wait doubling "
                "to at most %g s)",
                job_id, type(error).__name__, error, wait_s, FULL_DISK_RETRY_MAX_S,
            )  # fmt: skip
        else:
            log.info("job %s still paused: the disk is still full; next try in %g s", job_id, wait_s)
        return True

    def _after_lost_connection(self, job_id: str, client) -> str | None:
        """For a run that ended with its Dask client no longer running (the scheduler was lost): REQUEUED when the
        job was queued again, without counting an attempt, to resume from its parts once the cluster has
        reconnected; the reason to fail it instead when the scheduler was lost during ``max_job_attempts`` of its
        runs (as a service death counts: it may be what brings the scheduler down). None when the client is fine
        or the service is stopping."""
        if client.status == "running" or self._stopping.is_set():
            return None
        with self._lock:
            losses = self._scheduler_losses[job_id] = self._scheduler_losses.get(job_id, 0) + 1
        if losses >= self.config.max_job_attempts:  # the run's end (_run's finally) forgets its count
            return (
                f"the connection to the Dask scheduler was lost during {losses} run(s) of this job (it may be what "
                f"brings the scheduler down); not queued again (--max-job-attempts {self.config.max_job_attempts}); "
                "its finished simulations stay in its directory"
            )
        self.registry.requeue(job_id)
        with self._lock:  # before it is queued: its next run must get a new cancel event; its waiters wait on
            self._running.discard(job_id)
            self._cancels.pop(job_id, None)
        self._queue.put(job_id)
        log.warning(
            "job %s interrupted: the connection to the Dask scheduler was lost (%s); it resumes from its parts once "
            "reconnected", job_id, client.status,
        )  # fmt: skip
        return REQUEUED
