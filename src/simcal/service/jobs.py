"""Jobs of the simulation service: what a request may ask for, and the threads that run jobs on the warm cluster.

A job runs ``simcal.runner.simulate`` (the simulate wrapper's own call) on the service's long-lived Dask client,
into ``<state dir>/jobs/<job id>/simulations.parquet``; its finished batches wait in ``simulations.parquet.partial``
like any sweep's. So a job has the wrapper's contract, seeds, failure rows and batching, and a job interrupted by
the service's death resumes from its finished parts when the service starts again (``JobRegistry.recover``).
The finished file is then published to the results store (a directory, or Azure Blob). The work directory of a
job that failed is kept (its parts hold the rows of the failed simulations, for inspection); those of jobs that
succeeded or were cancelled are removed.

What a request may ask for (``simcal.service.job_requests``), the full-disk checks (``simcal.service.full_disk``)
and the runs stopped by what is not the job's fault (``simcal.service.job_interruptions``, JobManager's base class)
live in modules of their own; their names are still importable from here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from simcal.progress import progress_path
from simcal.runner import Cancelled, simulate

# What a request may ask for (job_requests), the full-disk checks (full_disk) and the runs stopped by what is not the
# job's fault (job_interruptions: JobManager's base class) have modules of their own; every public name they had here
# is still importable from here (noqa: the names this module does not use itself).
from simcal.service.full_disk import FULL_DISK, PROBE_BYTES, disk_full, disk_takes_a_write  # noqa: F401
from simcal.service.job_interruptions import FULL_DISK_RETRY_MAX_S, REQUEUED, JobInterruptions  # noqa: F401
from simcal.service.job_requests import (  # noqa: F401
    FN_REF,
    MODULE,
    REQUEST_SETTINGS,
    PlannedJob,
    RequestRefused,
    ServiceConfig,
    check_fn_ref,
    plan_request,
)
from simcal.service.keys import name_of
from simcal.settings import SimulationSettings

log = logging.getLogger(__name__)

RESULT_KEYS = ["param_id", "replicate", "seed"]


# What a failed job's error says of its finished simulations, instead of the sweep's "kept in <output>.partial; a
# rerun skips them": a job is never run again from its parts, which are on the service's disk.
RERUN = (
    "A failed job is not resumed: submitting the request again runs every simulation again (settings."
    "max_failed_fraction: 1 lets a job finish with its failed simulations as rows of the results)."
)


def result_counts(path: Path) -> tuple[int, int]:
    """(simulations, failed simulations) in a finished results file."""
    table = pq.read_table(path, columns=[*RESULT_KEYS, "status"]).to_pandas().drop_duplicates(RESULT_KEYS)
    return len(table), int((table["status"] != "ok").sum())


class JobManager(JobInterruptions):
    """The queue of jobs and the threads that run them, ``max_concurrent_jobs`` at a time, on one Dask client."""

    def __init__(self, config: ServiceConfig, registry, cluster, results, telemetry):
        self.config, self.registry, self.cluster, self.results, self.telemetry = (
            config, registry, cluster, results, telemetry
        )  # fmt: skip
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._cancels: dict[str, threading.Event] = {}
        self._running: set[str] = set()  # jobs whose runner is running (see connection_lost)
        self._scheduler_losses: dict[str, int] = {}  # job -> runs of it that ended with the scheduler lost
        self._paused_by_disk: dict[str, int] = {}  # job -> its runs a full disk stopped, until one ends
        self._ended: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # Set the moment the service is asked to stop (SIGTERM, Ctrl-C: server.serve), before uvicorn waits for the
        # requests in flight: a synchronous request stops waiting for its job (which goes on at the next start).
        self.stop_asked = threading.Event()
        self._threads: list[threading.Thread] = []
        self._simulations_total = 0  # simulations of jobs ended since the service started (for /metrics)

    # -- life cycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        resumed, failed = self.registry.recover(self.config.max_job_attempts)
        for job_id in resumed:
            log.warning(
                "job %s was running when the service stopped: resuming it from its finished parts", job_id
            )
        for job_id in failed:
            log.error("job %s was running when the service stopped too often: marked failed", job_id)
        for job_id in self.registry.queued():
            self._queue.put(job_id)
        for index in range(self.config.max_concurrent_jobs):
            thread = threading.Thread(target=self._work, name=f"simcal-job-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; running ones are interrupted and queued again, to resume at the next start."""
        self._stopping.set()
        with self._lock:
            for event in self._cancels.values():
                event.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # -- requests ---------------------------------------------------------------------------------------------

    def submit(self, owner: str, plan: PlannedJob, idempotency_key: str | None = None):
        job, created = self.registry.create(
            owner,
            plan.fn_ref,
            plan.request,
            plan.simulations,
            idempotency_key,
            self.telemetry.current_context(),
        )
        if not created and job.request != json.loads(json.dumps(plan.request)):
            # The same key for another request is a client bug: answering with the first job would hand the
            # caller results of parameters it did not send.
            raise RequestRefused(
                422,
                f"Idempotency-Key {idempotency_key!r} was used for a different request (job {job.id}); "
                "send a new key for a new request",
            )
        if created:
            self._ended_event(job.id)
            self._queue.put(job.id)
            log.info(
                "job %s queued: %s, %d simulations (key %s)",
                job.id, plan.fn_ref, plan.simulations, name_of(owner),
            )  # fmt: skip
        return job, created

    def connection_lost(self) -> None:
        """The cluster lost its scheduler (``Cluster.on_lost``): the running jobs' runners wait on futures of a dead
        client, so they are interrupted; each is queued again and resumes from its parts once reconnected."""
        with self._lock:
            events = [self._cancels[job_id] for job_id in self._running if job_id in self._cancels]
        for event in events:
            event.set()

    def cancel(self, job_id: str, owner: str, wait_s: float = 10.0):
        job = self.registry.get(job_id, owner)
        if job is None or job.status in ("succeeded", "failed", "cancelled"):
            return job
        if job.status == "queued" and self.registry.cancel_queued(job_id, f"cancelled by {name_of(owner)}"):
            self._discard_work(job_id)  # the parts of a run interrupted before (a job queued again)
            self._signal_end(job_id)
            log.info("job %s cancelled while queued", job_id)
            return self.registry.get(job_id)
        # Set under the lock: a run that a full disk stops sees it, or has given its event up (_paused_by_full_disk).
        with self._lock:
            event = self._cancels.setdefault(job_id, threading.Event())
            event.set()
        self.wait(job_id, wait_s)
        return self.registry.get(job_id)

    def wait(self, job_id: str, timeout: float | None) -> bool:
        """Wait until the job has a final status; False on timeout."""
        return self._ended_event(job_id).wait(timeout)

    def ended(self, job_id: str) -> threading.Event:
        """The event set once the job has a final status (for waiters that must not block a thread)."""
        return self._ended_event(job_id)

    def live_progress(self, job) -> dict[str, int]:
        if job.status != "running":
            return {"done": job.done, "total": job.simulations, "failed": job.failed}
        try:
            record = json.loads(progress_path(self.output_of(job.id)).read_text())
            return {"done": int(record["done"]), "total": job.simulations, "failed": int(record["failed"])}
        except (OSError, ValueError, KeyError):
            return {"done": 0, "total": job.simulations, "failed": 0}

    def running_rate(self) -> float:
        """Simulations per second of the jobs running now (from their progress records)."""
        total = 0.0
        with self._lock:
            running = [job_id for job_id, event in self._cancels.items() if not event.is_set()]
        for job_id in running:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                total += float(json.loads(progress_path(self.output_of(job_id)).read_text())["rate_per_s"])
        return total

    # -- running jobs -----------------------------------------------------------------------------------------

    def work_dir(self, job_id: str) -> Path:
        return self.config.state_dir / "jobs" / job_id

    def output_of(self, job_id: str) -> Path:
        return self.work_dir(job_id) / "simulations.parquet"

    def _ended_event(self, job_id: str) -> threading.Event:
        # Registered before the registry is read: a job ending in between sets it (_signal_end).
        with self._lock:
            event = self._ended.setdefault(job_id, threading.Event())
        job = self.registry.get(job_id)
        if job is not None and job.status in ("succeeded", "failed", "cancelled"):
            event.set()
            # Ended already: nothing would pop it, and a long-lived service sees many such waits.
            with self._lock:
                if self._ended.get(job_id) is event:
                    del self._ended[job_id]
        return event

    def _finish(self, job_id: str, status: str, *, done: int, **fields) -> None:
        """Record a run's final status and add its simulations to the total in one step under the lock, so that
        a /metrics scrape (``counts_and_simulations``) never sees the job ended without its simulations."""
        with self._lock:
            if self.registry.finish(job_id, status, done=done, **fields):
                self._simulations_total += done

    def counts_and_simulations(self) -> tuple[dict[str, int], int]:
        """Jobs by status and the simulations of the jobs ended since the start, read together (see _finish)."""
        with self._lock:
            return self.registry.counts(), self._simulations_total

    def _signal_end(self, job_id: str) -> None:
        """Wake the waiters of a job that reached its final status. Its events are dropped (a long-lived service
        sees many jobs): a later waiter gets a new event, set at once from the registry."""
        with self._lock:
            event = self._ended.pop(job_id, None)
            self._cancels.pop(job_id, None)
        if event is not None:
            event.set()

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            try:
                self._run(job_id)
            except Exception:  # never lose the thread; _run records every failure it can
                log.exception("job %s: unexpected error in the job thread", job_id)

    def _client_for(self, job_id: str, cancel: threading.Event):
        """The Dask client once connected; None when the job stopped waiting (cancelled, or the service stops).
        The job stays queued meanwhile."""
        while not (cancel.is_set() or self._stopping.is_set()):
            with contextlib.suppress(TimeoutError):
                return self.cluster.client(timeout=1.0)
            job = self.registry.get(job_id)
            if job is None or job.status != "queued":
                return None
        return None

    def _run(self, job_id: str) -> None:
        if self._refused_now(job_id):
            return
        with self._lock:
            cancel = self._cancels.setdefault(job_id, threading.Event())
        client = self._client_for(job_id, cancel)
        if client is None and self._stopping.is_set():
            return  # still queued: it starts at the next start of the service
        started = client is not None and self._start(job_id, cancel)
        if started is None:
            return  # the service stops while the start waits for the registry's disk: still queued
        if not started:  # cancelled while it waited
            self.registry.finish(job_id, "cancelled", error="cancelled by request")
            self._discard_work(job_id)
            self._signal_end(job_id)
            return
        with self._lock:
            self._running.add(job_id)
        job = self.registry.get(job_id)
        request = job.request
        output = self.output_of(job_id)
        requeued = False
        attributes = {
            "simcal.job_id": job_id,
            "simcal.fn_ref": job.fn_ref,
            "simcal.simulations": job.simulations,
        }
        with self.telemetry.span("simcal.job", attributes, self.telemetry.link_to(job.trace)) as span:
            began = time.perf_counter()
            try:
                resumed = 0
                finished_before = output.exists() and not output.with_name(output.name + ".partial").exists()
                if not finished_before:  # else: the service died after finishing it, before publishing
                    with self._lock:
                        paused = job_id in self._paused_by_disk
                    if paused:  # a full disk's OSError pauses it again at once, before it plans (seconds)
                        disk_takes_a_write(self.work_dir(job_id))
                    settings = SimulationSettings.from_config(
                        {
                            **request["settings"],
                            "replicates": request["n_replicates"],
                            "progress_seconds": self.config.progress_seconds,
                            "no_worker_timeout_s": self.config.no_worker_timeout_s,
                        }
                    )
                    summary = simulate(
                        job.fn_ref,
                        pd.DataFrame(request["parameter_sets"]),
                        output,
                        settings,
                        backend=self.cluster.backend,
                        fixed_params=request["fixed"],
                        client=client,
                        cancel=cancel,
                        rerun=RERUN,
                    )
                    resumed = summary.skipped
                done, failed = result_counts(output)
                results_path = self.results.publish(output, job_id)
                self._finish(
                    job_id, "succeeded", done=done, failed=failed, resumed=resumed, results_path=results_path
                )
                self.telemetry.set(span, **{"simcal.status": "succeeded", "simcal.failed": failed})
                log.info(
                    "job %s succeeded: %d simulations (%d failed, %d resumed) in %.2f s",
                    job_id, done, failed, resumed, time.perf_counter() - began,
                )  # fmt: skip
                # Its finished file stays until its end is on disk: a restart before then publishes it again
                # (the registry still says running) instead of running every simulation again.
                self.registry.when_saved(job_id, lambda: self._discard_work(job_id))
            except Cancelled:
                if self._stopping.is_set():
                    self.registry.requeue(job_id)
                    log.info(
                        "job %s interrupted by the service's shutdown; it resumes at the next start", job_id
                    )
                    return
                lost = self._after_lost_connection(job_id, client)
                if requeued := lost == REQUEUED:
                    return
                if lost is not None:
                    self._fail(job_id, job, span, lost)
                    return
                self._cancelled(job_id, job, span)
            except Exception as error:  # noqa: BLE001 - a failed job is a status with its reason
                lost = self._after_lost_connection(job_id, client)
                if requeued := lost == REQUEUED:
                    return
                if lost is None and disk_full(error):
                    if requeued := self._paused_by_full_disk(job_id, error, cancel):
                        return
                    self._cancelled(job_id, job, span)  # cancelled as the full disk stopped the run
                    return
                self._fail(job_id, job, span, lost or f"{type(error).__name__}: {error}")
            finally:
                if not requeued:  # else its next run may have started already: its state is that run's
                    with self._lock:
                        self._running.discard(job_id)
                        self._scheduler_losses.pop(job_id, None)
                        self._paused_by_disk.pop(job_id, None)
                    if not self._stopping.is_set():
                        self._signal_end(job_id)

    def _refused_now(self, job_id: str) -> bool:
        """Fail a queued job whose model this service would refuse now (restarted with other --allow-models, or
        the model's module gone): its request was checked when it was accepted, and a job queued again across a
        restart ran a model taken off the allow-list."""
        job = self.registry.get(job_id)
        if job is None or job.status != "queued":
            return False
        try:
            check_fn_ref(job.fn_ref, self.config.allow_models)
        except RequestRefused as refused:
            message = (
                f"not run: {refused.message} (checked again as it was to start: the service's --allow-models or "
                "models changed since it was accepted)"
            )
            if self.registry.finish(job_id, "failed", error=message):
                log.error("job %s failed: %s", job_id, message)
            self._signal_end(job_id)
            return True
        return False

    def _cancelled(self, job_id: str, job, span) -> None:
        progress = self.live_progress(job)
        self._finish(
            job_id,
            "cancelled",
            done=progress["done"],
            failed=progress["failed"],
            error="cancelled by request",
        )
        self.telemetry.set(span, **{"simcal.status": "cancelled"})
        self._discard_work(job_id)
        log.info("job %s cancelled after %d of %d simulations", job_id, progress["done"], job.simulations)

    def _discard_work(self, job_id: str) -> None:
        """Remove the work directory of a job that succeeded or was cancelled: nothing reads it again (an ended job
        is never run again; a cancelled one's parts would stay under --state-dir for ever)."""
        shutil.rmtree(self.work_dir(job_id), ignore_errors=True)

    def _fail(self, job_id: str, job, span, message: str) -> None:
        progress = self.live_progress(job)
        self._finish(job_id, "failed", done=progress["done"], failed=progress["failed"], error=message)
        self.telemetry.set(span, **{"simcal.status": "failed"})
        self.telemetry.error(span, message)
        log.error("job %s failed: %s", job_id, message)
