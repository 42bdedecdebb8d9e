"""Run many simulations on Dask in batches into one Parquet file, losing none and inventing none.

``simulate`` plans every parameter set × replicate (with its param_id and seed), skips what earlier runs already
finished (``simcal.store``), times a probe on the workers to choose a batch size, and sends one Dask task per
batch (``simcal.worker.run_batch``). Every planned simulation ends as rows in the output, whatever the model did:

- returned rows, or an empty table (one row, empty outputs), status ``ok``;
- raised or broke the contract: status ``failed`` with the error;
- ran past ``timeout_s``: status ``timeout``;
- killed its worker (segfault, ``os._exit``, memory limit): the batch is split in halves, again and again, until
  the simulation that kills its worker is alone; a single simulation whose worker died runs again alone, in a
  child process of the worker (``simcal.isolate``), so that on a worker of several threads the simulations that
  merely ran beside the culprit are not blamed. Once its own process has died more than ``allowed_failures``
  times it is recorded with status ``crashed`` (see ``simcal.outcomes.Deaths``), and every other simulation of
  the batch keeps its result. When the worker could not run it alone (``IsolationFailed``: a full disk, no process
  to be had), it is tried again, and then recorded as ``failed`` saying so, not as crashed.

The model never runs in the driver's process (unless the local backend is told to use threads, ``processes:
false``). Progress goes to the log and to ``<output>.progress.json`` (see ``simcal status``).

Fail-fast (``simulate``, unless ``max_failed_fraction`` is 1): when every simulation of a probe failed and they
cover at least two parameter sets (or the only one planned), the sweep stops at once with their errors instead of
running the rest. With the automatic batch size the probe is the timing probe; when it covered a single parameter
set (one worker thread and a model slower than ``probe_seconds`` time a single simulation), the first simulation
of another set runs too before the rule decides. With a fixed ``batch_size`` the batches holding the first
simulation of the first two parameter sets run first as the probe (the batches stay the same; the others wait for
them).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from output_locks import output_lock
from simcal.backends import SERVICE_BACKEND, Terminated, check_backend, dask_client, worker_count

# The batches in flight (batch_execution), why a sweep stops early (sweep_failures) and its plan (sweep_plan) live
# in modules of their own; every name they had here is still importable from here. A test that patches one of
# their constants or functions patches it where it is defined and used.
from simcal.batch_execution import DASK_CANCEL_CHUNK, INTERRUPT_WAIT_S, Execution, RunSummary, Unit
from simcal.contract import mapping_of, resolve_model
from simcal.files import refuse_text_name
from simcal.outcomes import Deaths, TimeoutEvents
from simcal.progress import Progress
from simcal.settings import SimulationSettings, sweep_plan_record
from simcal.space import check_fixed, check_parameter_sets
from simcal.store import PartStore, read_results
from simcal.sweep_failures import (
    Cancelled,
    NoWorkers,
    TooManyFailures,
    check_failures,
    raise_if_cancelled,
)
from simcal.sweep_plan import (
    CANCEL_CHUNK,
    checked,
    plan_manifest,
    planned_parameter_sets,
    planned_parameter_sets_and_names,
)

# The timing probe, the batch size it chooses and the fail-fast probe are Simulator's base class, SweepProbe.
from simcal.sweep_probe import PROBE_TASKS, SweepProbe
from simcal.tasks import Batch, SimTask, plan_tasks, simulation_key
from simcal.worker import KEY_COLUMNS, STATUS_COLUMNS, run_batch

log = logging.getLogger(__name__)


__all__ = [
    "CANCEL_CHUNK",
    "DASK_CANCEL_CHUNK",
    "INTERRUPT_WAIT_S",
    "KEY_COLUMNS",
    "STATUS_COLUMNS",
    "Batch",
    "Cancelled",
    "NoWorkers",
    "PROBE_TASKS",
    "PartStore",
    "RunSummary",
    "SimTask",
    "SimulationSettings",
    "Simulator",
    "TooManyFailures",
    "check_failures",
    "plan_manifest",
    "plan_tasks",
    "planned_parameter_sets",
    "read_results",
    "run_batch",
    "simulate",
]


def _signal_name(stop: BaseException) -> str:
    """The signal a ``Terminated`` (code 128 + the signal) or a ``KeyboardInterrupt`` (SIGINT) stands for."""
    if isinstance(stop, KeyboardInterrupt):
        return "SIGINT (Ctrl-C)"
    try:
        return signal.Signals(int(stop.code) - 128).name
    except (TypeError, ValueError):
        return f"a signal (exit code {stop.code})"


class Simulator(SweepProbe):
    """One model on one Dask backend; the client starts on first need and lives until the ``with`` block ends.

    ``cancel`` (a ``threading.Event``, also set by ``cancel()``) stops a run from another thread: the batches in
    flight are cancelled on the scheduler and ``run`` raises ``Cancelled``. The ``service`` backend sends the
    simulations to a simulation service (``simcal.service.remote``) instead of a Dask cluster.
    """

    def __init__(
        self,
        model_ref: str,
        settings: SimulationSettings | None = None,
        backend: str = "local",
        backend_options: Mapping[str, Any] | None = None,
        threads: int = 1,
        client: Any = None,
        cancel: threading.Event | None = None,
        rerun: str | None = None,
    ):
        resolve_model(model_ref)  # a bad reference or signature fails here, before any cluster starts
        self.rerun = rerun  # what a failure's message says of the finished simulations (see check_failures)
        self.model_ref = model_ref
        self.settings = settings or SimulationSettings()
        self.backend, self.threads = backend, threads
        self.backend_options = mapping_of(backend_options, f"calibration.backend.{backend}")
        self._client = client
        self._stack = contextlib.ExitStack()  # the cluster
        # The progress file's rewriting thread: it stops after the last record, once the cluster has closed and
        # the steps of after_close have run
        self._fresh = contextlib.ExitStack()
        self._after_close: list[Callable[[], object]] = []
        self._on_failure: list[Callable[[BaseException], object]] = []
        self.batch_size = self.settings.batch_size
        self._seconds_per_simulation: float | None = (
            None  # from the timing probe, for later runs' batch sizes
        )
        self.progress: Progress | None = None
        self._token = secrets.token_hex(4)
        self._counter = itertools.count()
        self._timeouts: TimeoutEvents | None = None
        self._deaths: Deaths | None = None
        self._counted: set[tuple[str, int, int]] = set()  # simulations already in the progress totals
        # Simulations of this run found finished by an earlier one (its parts): not a calibration's refine round
        # asking again for what this run simulated. A resumed job's benchmark times only the rest.
        self.resumed = 0
        self._last_worker_seen = time.monotonic()
        self.cancel_event = cancel if cancel is not None else threading.Event()

    def cancel(self) -> None:
        """Stop the run in progress (from any thread); see ``Cancelled``."""
        self.cancel_event.set()

    def check_cancelled(self) -> None:
        raise_if_cancelled(self.cancel_event, self.model_ref)

    def __enter__(self) -> Simulator:
        return self

    def after_close(self, step: Callable[[], object]) -> None:
        """Run ``step`` once the block has ended without an error and the cluster has closed (simulate and calibrate
        drop their parts so). Until every such step has run the progress file says ``closing``, then
        ``finished``; a stop or an error while the cluster closes or a step runs is recorded as the block's own
        would be."""
        self._after_close.append(step)

    def on_failure(self, step: Callable[[BaseException], object]) -> None:
        """Run ``step(error)`` when the block, the cluster's close or an after_close step fails or is stopped, before
        the progress file records it (a note the step adds to the error is in the record). A step that raises is
        logged, and the error recorded and raised as it was."""
        self._on_failure.append(step)

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc is None:
                self._close_then_finish()
            else:
                try:
                    self._record_end(exc)
                finally:
                    self._stack.close()
        finally:
            self._fresh.close()

    def _close_then_finish(self) -> None:
        """The work is done: ``closing`` while the cluster closes and the after_close steps run (seconds; a
        SIGTERM then still fails the job), ``finished`` only after them."""
        if self.progress is not None:
            self.progress.finish("closing")
        try:
            self._stack.close()
            for step in self._after_close:
                step()
        except BaseException as error:
            self._record_end(error)
            raise
        self._record_end(None)

    def _record_end(self, exc: BaseException | None) -> None:
        for step in self._on_failure if exc is not None else ():
            try:
                step(exc)
            except Exception:  # noqa: BLE001 - the error that ended the run is the one to report
                log.exception("while recording that the run ended by %s", type(exc).__name__)
        if self.progress is None:
            return
        notes = "".join(f" {note}" for note in getattr(exc, "__notes__", ()))
        if exc is None:
            self.progress.finish("finished")
        elif isinstance(exc, Terminated | KeyboardInterrupt):  # a stop, as a SIGKILLed sweep's is
            self.progress.finish("stopped", f"stopped by {_signal_name(exc)}{notes}"[:2000])
        # asked to stop (a service job's cancel): nothing went wrong either, and a rerun resumes
        elif isinstance(exc, Cancelled):
            self.progress.finish("stopped", f"stopped by a cancel: {exc}{notes}"[:2000])
        else:
            self.progress.finish("failed", f"{type(exc).__name__}: {exc}{notes}"[:2000])

    @property
    def client(self):
        if self._client is None:
            # allowed_failures=0: Dask reports every worker death at once, and Deaths decides whom to blame.
            self._client = self._stack.enter_context(
                dask_client(self.backend, self.backend_options, self.threads, allowed_failures=0)
            )
            self._last_worker_seen = time.monotonic()
            if self.backend == "scheduler":
                log.info(
                    "worker deaths: the existing scheduler first reruns a task per its own "
                    "distributed.scheduler.allowed-failures, then simulation.allowed_failures applies"
                )
        return self._client

    @property
    def deaths(self) -> Deaths:
        if self._deaths is None:
            self._deaths = Deaths(self.client, self._token, self.settings.allowed_failures)
        return self._deaths

    # -- planning ---------------------------------------------------------------------------------------------

    def run(
        self, tasks: Sequence[SimTask], store: PartStore, collect: bool = False, fail_fast: bool = False
    ) -> RunSummary:
        """Run the simulations of ``tasks`` not yet in ``store``; with ``collect`` also return every row of
        ``tasks`` (resumed ones read back from the parts). ``fail_fast`` stops when every simulation of the timing
        probe failed."""
        self.check_cancelled()
        store.expect(tasks)
        remaining = store.not_done(tasks)
        summary = RunSummary(total=len(tasks), skipped=len(tasks) - len(remaining))
        progress = self._progress_for(store)
        counted = self._counted
        new = [t for t in tasks if t.key not in counted] if counted else list(tasks)  # a calibration round
        counted.update(map(simulation_key, new))  # may repeat earlier ones
        already = [t for t in new if store.is_done(t)] if summary.skipped else []
        self.resumed += len(already)
        progress.plan(len(new), len(already), store.failed_among(already))
        if summary.skipped:
            log.info(
                "resuming: %d of %d simulations already done in %s",
                summary.skipped,
                len(tasks),
                store.partial,
            )
            if collect:
                summary.frames.extend(store.read(t for t in tasks if store.is_done(t)))
        if remaining and self.backend == SERVICE_BACKEND:
            from simcal.service.remote import run_on_service

            # Each finished service job's rows go into the parts at once (what an interruption keeps).
            run_on_service(
                self, tasks, remaining, progress, Execution(self, store, summary, collect, progress)._record,
                str(Path(store.output).resolve()),
            )  # fmt: skip
        elif remaining:
            execution = Execution(self, store, summary, collect, progress)
            fail_fast = fail_fast and self.settings.max_failed_fraction < 1
            if self.settings.batch_size is None:
                if self._seconds_per_simulation is None:
                    remaining = self._probe(execution, remaining, store, summary, fail_fast)
                else:  # a later run (a calibration round): the probe's timing, this run's size
                    self.batch_size = self._auto_batch_size(len(remaining))
            if remaining:
                summary.batch_size = self.batch_size
                size = self.batch_size
                units = [self._unit(remaining[i : i + size]) for i in range(0, len(remaining), size)]
                if fail_fast and self.settings.batch_size is not None:
                    units = self._run_first_batches(execution, units, store)
                execution.run(units)
        progress.report(force=True)
        return summary

    def _unit(self, tasks: Sequence[SimTask], budget: float | None = None, start_topic: str = "") -> Unit:
        return Unit(tasks, self.new_key(), budget, start_topic)

    def new_key(self) -> str:
        return f"simcal-batch-{self._token}-{next(self._counter)}"

    def _progress_for(self, store: PartStore) -> Progress:
        if self.progress is None or self.progress.output != str(store.output):
            self.progress = Progress(store.output, self.backend, self.settings.progress_seconds)
            # Fresh while the simulator is open, through the rounds' targets, the final merge, the cluster's close
            # and the after_close steps too; stopped after __exit__ has written the end
            self._fresh.enter_context(self.progress.kept_fresh())
            self._counted = set()
        return self.progress

    # -- watching the cluster ---------------------------------------------------------------------------------

    def check_workers(self, waiting: bool) -> int:
        """Workers connected now; raises NoWorkers when none has been for no_worker_timeout_s while work waits."""
        count = worker_count(self.client)
        now = time.monotonic()
        if count or not waiting:
            self._last_worker_seen = now
        elif now - self._last_worker_seen > self.settings.no_worker_timeout_s:
            raise NoWorkers(
                f"no Dask worker has been connected for {now - self._last_worker_seen:.0f} s "
                f"(simulation.no_worker_timeout_s = {self.settings.no_worker_timeout_s:g}) while simulations were "
                f"waiting; backend {self.backend}: {_no_worker_hint(self.backend, self.backend_options)}"
            )
        return count

    def timeout_events(self) -> TimeoutEvents | None:
        if self.settings.timeout_s is None:
            return None
        if self._timeouts is None:
            self._timeouts = TimeoutEvents(self.client)
        return self._timeouts


def _no_worker_hint(backend: str, options: Mapping[str, Any]) -> str:
    if backend == "slurm":
        return (
            "the worker jobs are pending or fail at start; check `squeue --me` (account, partition, walltime, "
            f"memory) and the job logs in {options.get('log_directory') or 'the working directory'}"
        )
    if backend == "scheduler":
        return "check that workers are running and connected to the scheduler"
    return "the LocalCluster's workers keep dying; see the log for their errors (memory limit?)"


def simulate(
    model_ref: str,
    parameters: str | Path | pd.DataFrame,
    output: str | Path,
    settings: SimulationSettings | Mapping[str, Any] | None = None,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    threads: int = 1,
    fixed_params: Mapping[str, Any] | None = None,
    client: Any = None,
    cancel: threading.Event | None = None,
    rerun: str | None = None,
) -> RunSummary:
    """Run every parameter set × replicate and write one Parquet file at ``output``.

    Raises TooManyFailures when more than ``max_failed_fraction`` of the simulations failed (the finished ones stay
    in ``<output>.partial`` for the rerun; ``rerun``, when given, is what the message says of them instead: see
    ``check_failures``), NoWorkers when the cluster has had no worker for too long, and Cancelled once ``cancel``
    is set (the finished simulations stay in the parts). A cancel takes effect while the sweep is planned too:
    between its phases and between chunks of ``CANCEL_CHUNK`` parameter sets or simulations within them.
    """
    if not isinstance(settings, SimulationSettings):
        settings = SimulationSettings.from_config(settings)
    refuse_text_name(output, "simulations")
    resolve_model(model_ref)
    # The backend and its options before the parts directory or the progress file is made
    check_backend(backend, backend_options, threads, client)
    # Planning a large table takes seconds (more on a busy service): a cancel is heard between its phases and
    # between chunks within them, not only once the simulations start.
    check = functools.partial(raise_if_cancelled, cancel, model_ref)
    check()
    sets, where, row_name = planned_parameter_sets_and_names(parameters, fixed_params)
    check()
    check_fixed(model_ref, dict(fixed_params or {}))  # named as fixed, not as the table's first row
    # A misspelt column or an out-of-bounds value stops here, naming the row as every message about a row does
    # (a file's line, a DataFrame's row and index label), before any cluster starts. An Integer's 20.0 becomes 20.
    sets = check_parameter_sets(model_ref, sets, where, checked(map(row_name, range(len(sets))), check))
    tasks = plan_tasks(sets, settings.replicates, settings.seed, settings.common_random_numbers, check)
    manifest = plan_manifest(
        model_ref, tasks, settings, check=check, sweep_plan=sweep_plan_record(fixed_params, settings)
    )
    check()
    began = time.perf_counter()
    # One sweep at a time per output: a second one's plan would delete the first's parts (not in its plan) while
    # the first runs, and the first would then publish what was left as if finished. Only a holder writes the
    # output, so the holder removes the temporary file (as big as the output) of a run killed while publishing.
    with output_lock(output, "sweep output", stale_temporaries=True):
        store = PartStore(output, manifest, settings.rerun_failed, check, timeout_s=settings.timeout_s)
        with Simulator(
            model_ref, settings, backend, backend_options, threads, client, cancel, rerun
        ) as simulator:
            summary = simulator.run(tasks, store, fail_fast=True)
            check_failures(store, settings.max_failed_fraction, rerun)
            store.finalize(drop_parts=False)
            # The parts go only once the cluster has closed (seconds): a SIGTERM then fails the job, Snakemake
            # deletes the output, and the rerun resumes every simulation from the parts instead of running them all
            # again. The progress file says finished only after that.
            simulator.after_close(store.drop_parts)
    log.info(
        "wrote %s: %d simulations (%d run now, %d resumed) in %.2f s, %s",
        output, summary.total, summary.executed, summary.skipped, time.perf_counter() - began,
        _batching(summary, backend),
    )  # fmt: skip
    return summary


def _batching(summary: RunSummary, backend: str) -> str:
    """How the sweep's simulations were batched, for its last log line: a service chose its own batches (the
    summary's batch size is 0 there), which the driver does not know."""
    if backend == SERVICE_BACKEND and summary.executed:
        return "batches chosen by the service"
    return f"batch size {summary.batch_size}"
