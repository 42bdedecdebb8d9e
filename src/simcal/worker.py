"""What runs on a Dask worker: a batch of simulations, each guarded, turned into one table of rows.

Whatever a model does, every simulation of the batch becomes at least one row with its key columns and
parameters: the rows it returned (a dict of scalars, a DataFrame, a dict of tables), one row with empty outputs
when it returned an empty table, or a row with status ``failed`` and the error when it raised, broke the contract
or returned outputs that no Parquet part can hold (a complex column, a cell holding an empty dict). A simulation
running past ``timeout_s`` is interrupted and becomes a ``timeout`` row; one stuck in native code that cannot be
interrupted has its worker process ended (the driver reruns the rest of the batch).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from simcal.contract import (
    ContractError,
    normalise_output,
    rename_clashing,
    resolve_callable,
    scalar_output,
    unique_names,
)

# The rows of a batch (result_rows) and the timeout watchdog and batch interrupts (worker_interrupts) live in
# modules of their own; every public name they had here is still importable from here.
from simcal.result_rows import (
    EXACT_IN_FLOAT,
    FAILED_STATUSES,
    KEY_COLUMNS,
    PLAIN_SCALARS,
    STATUS_COLUMNS,
    STATUS_SET,
    assemble,
    fail_unstorable,
    failure_rows,
    order_columns,
    rename_clashes,
    row_keys,
    storable_rows,
    storage_problem,
    unstorable_error,
)
from simcal.tasks import Batch, SimTask
from simcal.worker_interrupts import (
    RUNNING_BATCHES,
    TIMEOUT_TOPIC,
    WATCHDOG,
    BatchCancelled,
    BatchInterrupted,
    RunningBatches,
    SimulationTimeout,
    Watchdog,
    grace_seconds,
    interrupt_batches,
    interrupt_thread,
    take_back_interrupt,
    tell_scheduler,
)

log = logging.getLogger(__name__)

MODELS: dict[str, Any] = {}  # this process's models by reference (cached_model); tests reset it


def cached_model(reference: str):
    """The model a reference names, imported once per process."""
    if reference not in MODELS:
        MODELS[reference] = resolve_callable(reference)
    return MODELS[reference]


def _current_worker() -> Any:
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):
        return None


def run_batch(
    model_ref: str,
    tasks: Sequence[SimTask] | Batch,
    time_budget_s: float | None = None,
    timeout_s: float | None = None,
) -> pd.DataFrame:
    """Run simulations one after another (on a worker); returns one table, at least one row per simulation.

    With ``time_budget_s`` it stops once that much time has passed since the first simulation ended (the timing
    probe; since the batch began where that one failed), having run at least one and, when the first succeeded,
    a second; the simulations it did not reach have no rows. With ``timeout_s`` each simulation is stopped after
    that long.
    A batch that its cancelled sweep interrupts (``interrupt_batches``) raises BatchInterrupted.
    """
    batch = tasks if isinstance(tasks, Batch) else Batch(tasks, driver=None)
    if not batch.key:  # run in process, not as a Dask task: no sweep can interrupt it by key
        return _run_batch(model_ref, batch, time_budget_s, timeout_s)
    # The interrupt may land anywhere from ready() on, even inside end(): each place is inside the outer try.
    try:
        RUNNING_BATCHES.begin(batch.key)
        try:
            # The model imported (once a process) before an interrupt may land, see RunningBatches; one that
            # cannot be imported makes the batch's failed rows, without a second try. An isolated batch's child
            # imports it.
            model = None if batch.isolated else _model_or_error(model_ref)
            RUNNING_BATCHES.ready(batch.key)
            if isinstance(model, ContractError):
                rows = _import_failure_rows(batch, model)
            else:
                rows = _run_batch(model_ref, batch, time_budget_s, timeout_s)
        finally:
            interrupted = RUNNING_BATCHES.end(batch.key)
    except BatchCancelled:
        RUNNING_BATCHES.end(batch.key)  # when it landed before end() had run
        interrupted = True
        # Heard between the watchdog's begin() and the guard, or as the simulation returned (before the watchdog's
        # end() dropped it), it left the thread watched: the timeout would strike the thread's next task, and past
        # the grace end the worker process.
        try:
            WATCHDOG.end()
        except SimulationTimeout:  # fired as it was being dropped (once per simulation): drop it now
            WATCHDOG.end()
    if interrupted:
        raise BatchInterrupted(f"batch {batch.key} was interrupted: its sweep was cancelled")
    return rows


def _model_or_error(model_ref: str) -> Callable[..., Any] | ContractError:
    """The model, or the error that stopped its import (e.g. its package is not installed on this worker)."""
    try:
        return cached_model(model_ref)
    except ContractError as error:
        return error


def _import_failure_rows(batch: Batch, error: ContractError) -> pd.DataFrame:
    where = f"on worker host {socket.gethostname()}: {error}"
    return failure_rows(batch.tasks, "failed", f"ContractError: {where}")


def _run_batch(
    model_ref: str, batch: Batch, time_budget_s: float | None, timeout_s: float | None
) -> pd.DataFrame:
    if batch.isolated:
        from simcal.isolate import run_isolated

        return run_isolated(model_ref, batch, time_budget_s, timeout_s, _current_worker())
    batch_key, driver, start_topic = batch.key, batch.driver, batch.start_topic
    model = _model_or_error(model_ref)
    if isinstance(model, ContractError):
        return _import_failure_rows(batch, model)
    worker = _current_worker() if timeout_s or start_topic else None
    if start_topic and worker is not None:
        tell_scheduler(worker, start_topic, {"batch": batch_key, "worker": worker.address})
    if timeout_s:
        WATCHDOG.may_exit = driver != (socket.gethostname(), os.getpid())
    records: list[dict[str, Any]] = []  # simulations with no table: one row each, built at once
    frames: list[pd.DataFrame] = []
    frame_keys: list[dict[str, Any]] = []
    clock = time.perf_counter
    start = clock()
    # The batch's columns, not a SimTask per simulation: a worker builds one only to watch it for its timeout.
    for index, (pid, replicate, seed, params) in enumerate(zip(*batch.columns(), strict=True)):
        began = clock()
        try:
            if timeout_s:
                WATCHDOG.begin(batch_key, index, SimTask(pid, replicate, seed, params), timeout_s, worker)
                try:
                    status, error, output = _simulate(model, model_ref, params, seed)
                finally:
                    if WATCHDOG.end():
                        raise SimulationTimeout
            else:
                status, error, output = _simulate(model, model_ref, params, seed)
        except SimulationTimeout:
            WATCHDOG.end()  # the interrupt may have landed before end() ran: stop watching in any case
            # A thread holds one pending interrupt: the timeout's may have replaced the cancel's, or taken it back.
            if batch_key and RUNNING_BATCHES.interrupted(batch_key):
                raise BatchCancelled from None
            status, error, output = (
                "timeout",
                f"SimulationTimeout: ran longer than timeout_s = {timeout_s:g} s",
                None,
            )
        # The key columns last: they win over anything in params (reserved names are refused on input anyway).
        keys = {**params, "param_id": pid, "replicate": replicate, "seed": seed}
        status_values = {"status": status, "error": error, "duration_s": clock() - began}
        if output is None:
            records.append({**keys, **status_values})
        elif type(output) is dict:
            if not output.keys().isdisjoint(keys) or not output.keys().isdisjoint(STATUS_COLUMNS):
                renamed = rename_clashing(list(output), keys.keys() | STATUS_SET)
                output = {renamed.get(k, k): v for k, v in output.items()}
            records.append({**keys, **output, **status_values})
        else:
            frames.append(rename_clashes(output, keys))
            frame_keys.append({**keys, **status_values})
        if time_budget_s is not None:
            if index == 0 and status == "ok":
                # A process's first simulation pays one-time costs (imports, numba's compilation, caches): the
                # budget counts from its end, so that the probe also times the model warm.
                start = clock()
            elif clock() - start >= time_budget_s:
                break
    frame = assemble(records, frames, frame_keys)
    # One check of the whole batch (cheap next to the simulations); only a batch that fails it is looked at
    # simulation by simulation, so that one bad output costs its own simulation, never the batch or the sweep.
    if storage_problem(frame) is None:
        return frame
    records, frames, frame_keys = fail_unstorable(records, frames, frame_keys, batch, model_ref)
    return storable_rows(assemble(records, frames, frame_keys), batch.tasks, model_ref)


def _simulate(model, model_ref: str, params: dict[str, Any], seed: int) -> tuple[str, str | None, Any]:
    """(status, error, output): output is None (no rows), a dict of plain scalars or a non-empty DataFrame."""
    try:
        output = model(dict(params), seed)
        if type(output) is dict and all(
            type(k) is str and type(v) in PLAIN_SCALARS for k, v in output.items()
        ):  # the usual dict of plain scalars: nothing to convert
            return "ok", None, output
        if isinstance(output, Mapping) and not any(
            isinstance(v, pd.DataFrame | pd.Series) for v in output.values()
        ):
            names = unique_names([str(k) for k in output])  # 1 and "1" are two outputs, not one
            return (
                "ok",
                None,
                {
                    name: scalar_output(v, name, model_ref)
                    for name, v in zip(names, output.values(), strict=True)
                },
            )
        frame = normalise_output(output, model_ref)
        return "ok", None, (frame if len(frame) else None)
    # Any model error is a result row; SystemExit and KeyboardInterrupt too (raised by the model in its worker
    # thread, they would end the worker process and read as a crash). SimulationTimeout is left to the caller.
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # noqa: BLE001
        return "failed", f"{type(exc).__name__}: {exc}", None


__all__ = [
    "EXACT_IN_FLOAT",
    "FAILED_STATUSES",
    "KEY_COLUMNS",
    "RUNNING_BATCHES",
    "STATUS_COLUMNS",
    "TIMEOUT_TOPIC",
    "WATCHDOG",
    "BatchCancelled",
    "BatchInterrupted",
    "RunningBatches",
    "SimulationTimeout",
    "Watchdog",
    "cached_model",
    "failure_rows",
    "grace_seconds",
    "interrupt_batches",
    "interrupt_thread",
    "order_columns",
    "row_keys",
    "run_batch",
    "storable_rows",
    "storage_problem",
    "take_back_interrupt",
    "tell_scheduler",
    "unstorable_error",
]
