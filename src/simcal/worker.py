"""What runs on a Dask worker: a batch of simulations, each guarded, turned into one table of rows.

Whatever a model does, every simulation of the batch becomes at least one row with its key columns and
parameters: the rows it returned (a dict of scalars, a DataFrame, a dict of tables), one row with empty outputs
when it returned an empty table, or a row with status ``failed`` and the error when it raised, broke the contract
or returned outputs that no Parquet part can hold (a complex column, a cell holding an empty dict). A simulation
running past ``timeout_s`` is interrupted and becomes a ``timeout`` row; one stuck in native code that cannot be
interrupted has its worker process ended (the driver reruns the rest of the batch).
"""

from __future__ import annotations

import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract import (
    ContractError,
    normalise_output,
    rename_clashing,
    resolve_callable,
    scalar_output,
    unique_names,
)
from simcal.tasks import Batch, SimTask

log = logging.getLogger(__name__)

KEY_COLUMNS = ["param_id", "replicate", "seed"]
STATUS_COLUMNS = ["status", "error", "duration_s"]
TIMEOUT_TOPIC = "simcal-timeout"  # Dask event topic: a worker about to end itself names the simulation first
FAILED_STATUSES = ("failed", "timeout", "crashed")

_MODELS: dict[str, Any] = {}


def cached_model(reference: str):
    """The model a reference names, imported once per process."""
    if reference not in _MODELS:
        _MODELS[reference] = resolve_callable(reference)
    return _MODELS[reference]


def interrupt_thread(ident: int, exception: type[BaseException]) -> None:
    """Raise ``exception`` in the thread ``ident`` at its next Python bytecode (not inside a native call)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exception))


class _TakenBack(BaseException):
    """What replaces an interrupt taken back by its own thread: heard at once and caught (take_back_interrupt)."""


def take_back_interrupt(ident: int) -> None:
    """Drop an interrupt sent to the thread ``ident`` and not yet delivered.

    In its own thread (the watchdog's and the batches' end()), the interrupt is replaced by one that is heard at
    once and caught here, not cleared: CPython 3.11 leaves its "an interrupt is pending" flag set after a clear
    (PyThreadState_SetAsyncExc with NULL), and under that flag a thread that is traced or profiled
    (sys.settrace, sys.setprofile, cProfile, coverage, a debugger) loops for ever at its next call."""
    thread = ctypes.c_ulong(ident)
    if ident == threading.get_ident():
        try:
            ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, ctypes.py_object(_TakenBack))
            # Not reached: heard as the call above returns (cleared here were it not).
            ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, None)
        except _TakenBack:
            return
    ctypes.pythonapi.PyThreadState_SetAsyncExc(thread, None)


class SimulationTimeout(BaseException):
    """Raised inside a simulation that ran past its timeout (a BaseException, so ``except Exception`` in a
    model does not swallow it)."""


class _Running:
    __slots__ = ("batch_key", "fired_at", "index", "started", "task", "timeout_s", "worker")

    def __init__(self, batch_key, index, task, timeout_s, worker):
        self.batch_key, self.index, self.task, self.timeout_s, self.worker = (
            batch_key, index, task, timeout_s, worker
        )  # fmt: skip
        self.started = time.monotonic()
        self.fired_at: float | None = None


class Watchdog:
    """One thread per process watching the simulations that run with a timeout.

    Past the timeout it raises SimulationTimeout in the simulation's thread (works while the model runs Python
    code). If the simulation is still running ``grace_s`` later (stuck in native code), it reports the simulation
    as a Dask event and ends the worker process, unless that process is the driver itself.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[int, _Running] = {}
        self.thread: threading.Thread | None = None
        self.may_exit = True

    def begin(self, batch_key: str, index: int, task: SimTask, timeout_s: float, worker: Any) -> None:
        with self.lock:
            self.running[threading.get_ident()] = _Running(batch_key, index, task, timeout_s, worker)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._watch, name="simcal-timeout-watchdog", daemon=True
                )
                self.thread.start()

    def end(self) -> bool:
        """Stop watching this thread's simulation; True when it had already been told to stop (timed out)."""
        ident = threading.get_ident()
        with self.lock:
            entry = self.running.pop(ident, None)
            fired = entry is not None and entry.fired_at is not None
            if fired:  # an interrupt sent but not yet delivered must not land in the next simulation
                take_back_interrupt(ident)
        return fired

    def _watch(self) -> None:
        while True:
            time.sleep(self._interval())
            now = time.monotonic()
            stuck = None
            with self.lock:
                for ident, entry in self.running.items():
                    if entry.fired_at is None and now - entry.started > entry.timeout_s:
                        entry.fired_at = now
                        interrupt_thread(ident, SimulationTimeout)
                    elif entry.fired_at is not None and now - entry.fired_at > grace_seconds(entry.timeout_s):
                        stuck = entry
            if stuck is not None and self.may_exit:
                self._end_process(stuck)

    def _interval(self) -> float:
        with self.lock:
            shortest = min((e.timeout_s for e in self.running.values()), default=1.0)
        return max(0.02, min(0.5, shortest / 4))

    def _end_process(self, entry: _Running) -> None:
        task = entry.task
        message = {
            "batch": entry.batch_key,
            "index": entry.index,
            "param_id": task.param_id,
            "replicate": task.replicate,
            "seed": task.seed,
            "timeout_s": entry.timeout_s,
            "worker": getattr(entry.worker, "address", None),
            "host": socket.gethostname(),
        }
        try:
            tell_scheduler(entry.worker, TIMEOUT_TOPIC, message)
        finally:
            # The simulation's thread cannot be stopped from Python: end the process (a nanny starts a new one).
            os._exit(70)


def grace_seconds(timeout_s: float) -> float:
    """How long a simulation may ignore its interrupt before its worker process is ended."""
    return max(1.0, 0.2 * timeout_s)


WATCHDOG = Watchdog()


class BatchCancelled(BaseException):
    """Raised inside a batch whose sweep was cancelled (a BaseException, so ``except Exception`` in a model does
    not swallow it)."""


class BatchInterrupted(Exception):
    """What a batch interrupted by its sweep's cancel raises instead of returning rows: its simulations are not
    finished, and no part may record them as if they were."""


class RunningBatches:
    """The batches running in this process, by Dask key, so that a cancelled sweep can interrupt its own.

    Dask cancels a task that waits, but lets a running one run to its end: a cancelled job of hour-long
    simulations would hold its workers for hours. ``interrupt`` raises BatchCancelled in the batch's thread (heard
    between two Python bytecodes of the model, as the timeout's interrupt: code in a native call runs on until it
    returns). Not while the batch imports its model (from ``begin`` to ``ready``): an import stopped half way
    leaves the model's package half imported in the process for good, failing every later batch of it there; a
    cancel heard meanwhile stops the batch at ``ready``. At most one interrupt is sent per batch; ``end`` takes back
    one not yet delivered, so that it never lands in the task the thread runs next."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, list] = {}  # key -> [thread ident, interrupted, ready (interrupts are sent)]

    def begin(self, key: str) -> None:
        with self.lock:
            self.running[key] = [threading.get_ident(), False, False]

    def ready(self, key: str) -> None:
        """From now on the batch's interrupt is sent to its thread; raises BatchCancelled at once when its sweep was
        cancelled before."""
        with self.lock:
            entry = self.running[key]
            entry[2] = True
            if entry[1]:
                raise BatchCancelled

    def end(self, key: str) -> bool:
        """Stop tracking the batch; True when it had been interrupted."""
        with self.lock:
            entry = self.running.pop(key, None)
            if entry is None or not entry[1]:
                return False
            if entry[2]:
                take_back_interrupt(entry[0])
            return True

    def interrupted(self, key: str) -> bool:
        """Whether the batch ``key`` was sent its interrupt (which a timeout's may have replaced or taken back)."""
        entry = self.running.get(key)
        return entry is not None and entry[1]

    def interrupt(self, keys: Sequence[str]) -> int:
        """Interrupt the batches of these keys running here; how many there were."""
        sent = 0
        with self.lock:
            for key in keys:
                entry = self.running.get(key)
                if entry is not None and not entry[1]:
                    entry[1] = True
                    if entry[2]:  # else heard at ready()
                        interrupt_thread(entry[0], BatchCancelled)
                    sent += 1
        return sent


RUNNING_BATCHES = RunningBatches()


def interrupt_batches(keys: Sequence[str]) -> int:
    """Run on every worker by a sweep that was cancelled (``Client.run``): interrupt its batches running there."""
    return RUNNING_BATCHES.interrupt(keys)


def tell_scheduler(worker: Any, topic: str, message: dict[str, Any], timeout_s: float = 10.0) -> bool:
    """Log an event on the scheduler and wait until it is there (the worker may die right after)."""
    if worker is None:
        return False
    try:
        from distributed.utils import sync

        sync(worker.loop, worker.scheduler.log_event, topic=topic, msg=message, callback_timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - best effort: the driver copes without the event
        return False


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
                renamed = rename_clashing(list(output), keys.keys() | _STATUS_SET)
                output = {renamed.get(k, k): v for k, v in output.items()}
            records.append({**keys, **output, **status_values})
        else:
            frames.append(_rename_clashes(output, keys))
            frame_keys.append({**keys, **status_values})
        if time_budget_s is not None:
            if index == 0 and status == "ok":
                # A process's first simulation pays one-time costs (imports, numba's compilation, caches): the
                # budget counts from its end, so that the probe also times the model warm.
                start = clock()
            elif clock() - start >= time_budget_s:
                break
    frame = _assemble(records, frames, frame_keys)
    # One check of the whole batch (cheap next to the simulations); only a batch that fails it is looked at
    # simulation by simulation, so that one bad output costs its own simulation, never the batch or the sweep.
    if storage_problem(frame) is None:
        return frame
    records, frames, frame_keys = _fail_unstorable(records, frames, frame_keys, batch, model_ref)
    return storable_rows(_assemble(records, frames, frame_keys), batch.tasks, model_ref)


_PLAIN_SCALARS = frozenset((float, int, str, bool, type(None)))


def _simulate(model, model_ref: str, params: dict[str, Any], seed: int) -> tuple[str, str | None, Any]:
    """(status, error, output): output is None (no rows), a dict of plain scalars or a non-empty DataFrame."""
    try:
        output = model(dict(params), seed)
        if type(output) is dict and all(
            type(k) is str and type(v) in _PLAIN_SCALARS for k, v in output.items()
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


_STATUS_SET = frozenset(STATUS_COLUMNS)


def _rename_clashes(frame: pd.DataFrame, keys: Mapping[str, Any]) -> pd.DataFrame:
    """Output columns named like key columns, parameters or status columns get an ``output_`` prefix (as often as
    needed to clash with none of those nor with the table's other columns), the same way as a dict's outputs."""
    if any(c in keys or c in _STATUS_SET for c in frame.columns):
        frame = frame.rename(columns=rename_clashing(list(frame.columns), keys.keys() | _STATUS_SET))
    return frame


def storage_problem(frame: pd.DataFrame) -> str | None:
    """Why no Parquet part could hold these rows, or None (see ``simcal.store.storage_problem``)."""
    from simcal.store import storage_problem as problem_of  # simcal.store imports this module

    return problem_of(frame)


def _fail_unstorable(records, frames, frame_keys, batch: Batch, reference: str):
    """The batch's rows with each simulation whose own outputs cannot be stored made a failed row naming the
    output column, checked on what the simulation returned (pandas may have widened a column of the whole batch,
    e.g. floats to complex)."""
    key_names = {  # what a failed row keeps of a simulation's record: no outputs
        (pid, replicate, seed): [*params, *KEY_COLUMNS, "duration_s"]
        for pid, replicate, seed, params in zip(*batch.columns(), strict=True)
    }
    kept_records = []
    for record in records:
        error = None
        if not all(type(v) in _PLAIN_SCALARS for v in record.values()):  # plain scalars can always be stored
            error = unstorable_error(pd.DataFrame([record]), reference)
        if error is None:
            kept_records.append(record)
        else:
            names = key_names[(record["param_id"], record["replicate"], record["seed"])]
            kept_records.append({**{n: record[n] for n in names}, "status": "failed", "error": error})
    kept_frames, kept_keys = [], []
    for frame, keys in zip(frames, frame_keys, strict=True):
        error = unstorable_error(frame, reference)
        if error is None:
            kept_frames.append(frame)
            kept_keys.append(keys)
        else:
            kept_records.append({**keys, "status": "failed", "error": error})
    return kept_records, kept_frames, kept_keys


def unstorable_error(rows: pd.DataFrame, reference: str = "model") -> str | None:
    """The error of a simulation whose rows cannot be stored, naming each output column at fault and what it
    holds; None when they can be stored."""
    problem = storage_problem(rows)
    if problem is None:
        return None
    faults = []
    for column in dict.fromkeys(rows.columns):
        alone = rows[[column]]
        column_problem = storage_problem(alone)
        if column_problem is not None:
            faults.append(
                f"output column {column!r} holding {_held(alone)}, which cannot be stored ({column_problem})"
            )
    if not faults:
        return f"ContractError: {reference} returned outputs that cannot be stored together ({problem})"
    return f"ContractError: {reference} returned " + "; ".join(faults) + "; " + _storable_hint(rows)


def _held(column: pd.DataFrame) -> str:
    dtype = column.dtypes.iloc[0]
    if not pd.api.types.is_object_dtype(dtype):
        return str(dtype)
    kinds = {
        type(v).__name__ for v in column.iloc[:, 0] if v is not None and not (type(v) is float and v != v)
    }
    return f"values of type {', '.join(sorted(kinds)) or 'None'}"


def _storable_hint(rows: pd.DataFrame) -> str:
    if any(dtype.kind == "c" for dtype in rows.dtypes if isinstance(dtype, np.dtype)):
        return "give the real and imaginary parts (or the absolute value) columns of their own"
    if any(isinstance(dtype, pd.SparseDtype) for dtype in rows.dtypes):
        return "return the column dense (Series.sparse.to_dense())"
    return "outputs must be numbers, strings, booleans or missing values"


def storable_rows(frame: pd.DataFrame, tasks: Sequence[SimTask], reference: str = "model") -> pd.DataFrame:
    """``frame``, or when it cannot be stored, the same rows with each simulation whose own rows cannot be
    stored replaced by one ``failed`` row naming the column (found by halving the simulations, so a few bad ones
    among many cost a few checks); when even that cannot be stored, a failed row for every simulation in it."""
    problem = storage_problem(frame)
    if problem is None:
        return frame
    rows_of: dict[tuple, list[int]] = {}
    for position, key in enumerate(row_keys(frame)):
        rows_of.setdefault(key, []).append(position)
    bad: dict[tuple, str] = {}

    def search(keys: list[tuple]) -> None:
        rows = frame.iloc[[position for key in keys for position in rows_of[key]]]
        rows = rows.loc[:, rows.notna().any()]  # a column these rows leave empty is another's (see emptied)
        if len(keys) == 1:
            error = unstorable_error(rows, reference)
            if error is not None:
                bad[keys[0]] = error
        elif storage_problem(rows) is not None:
            half = len(keys) // 2
            search(keys[:half])
            search(keys[half:])

    search(list(rows_of))
    task_of = {t.key: t for t in tasks}
    if bad:
        keep = [key not in bad for key in row_keys(frame)]
        kept = frame[keep]
        # A column only the failed simulations filled would keep its unstorable type (complex, say) while empty.
        emptied = [
            c
            for c in kept.columns
            if c not in _FIXED_COLUMNS and kept[c].isna().all() and storage_problem(kept[[c]]) is not None
        ]
        failed = failure_rows(
            [task_of.get(key) or SimTask(*key, {}) for key in bad], "failed", list(bad.values())
        )
        result = order_columns(pd.concat([kept.drop(columns=emptied), failed], ignore_index=True))
        if storage_problem(result) is None:
            return result
    # The fault lies in how the simulations' rows combine: none of them can be kept.
    everyone = [task_of.get(key) or SimTask(*key, {}) for key in rows_of]
    return failure_rows(
        everyone, "failed", f"ContractError: the rows of {reference} cannot be stored: {problem}"
    )


_FIXED_COLUMNS = frozenset(KEY_COLUMNS + STATUS_COLUMNS)


def row_keys(frame: pd.DataFrame):
    """(param_id, replicate, seed) of each row."""
    return zip(frame["param_id"].tolist(), frame["replicate"].tolist(), frame["seed"].tolist(), strict=True)


def _assemble(records, frames, frame_keys) -> pd.DataFrame:
    parts = []
    if frames:
        lengths = [len(f) for f in frames]
        stacked = pd.concat(frames, ignore_index=True)
        key_table = (
            pd.DataFrame.from_records(frame_keys)
            .loc[[i for i, n in enumerate(lengths) for _ in range(n)]]
            .reset_index(drop=True)
        )
        parts.append(pd.concat([key_table, stacked], axis=1))
    if records:
        parts.append(pd.DataFrame.from_records(records))
    result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return order_columns(_whole_numbers_kept(result, records, frames, frame_keys))


EXACT_IN_FLOAT = 2**53  # a 64-bit float holds every whole number up to this, and not every one beyond it


def _whole_numbers_kept(result: pd.DataFrame, records, frames, frame_keys) -> pd.DataFrame:
    """The batch's rows with every digit of whole numbers beyond 2**53 (an ID, a hash) that pandas put into a
    float column: beside a missing value or a failed simulation's row (then the column becomes nullable Int64), or
    beside a fractional number, where no numeric type holds both (then it stays as the values were, and
    ``part_table`` stores it as text, naming it)."""
    for column in result.columns:
        values = result[column]
        if isinstance(values, pd.DataFrame) or values.dtype.kind != "f":
            continue
        if (
            not np.nanmax(np.abs(values.to_numpy(dtype="float64", na_value=np.nan)), initial=0)
            >= EXACT_IN_FLOAT
        ):
            continue  # a rounded whole number is still at least 2**53: none was rounded
        given = _given_values(column, records, frames, frame_keys)
        if not any(_beyond_float(value) for value in given):
            continue
        whole = all(_missing(value) or _is_whole(value) for value in given)
        try:
            result[column] = pd.array(given, dtype="Int64") if whole else pd.Series(given, dtype=object)
        except (OverflowError, TypeError, ValueError):  # beyond int64 too: as the values were
            result[column] = pd.Series(given, dtype=object)
    return result


def _given_values(column: str, records, frames, frame_keys) -> list[Any]:
    """The column's values as the model (or the parameters) gave them, in ``_assemble``'s row order."""
    values: list[Any] = []
    for frame, keys in zip(frames, frame_keys, strict=True):
        held = frame[column] if column in frame.columns else None
        if isinstance(held, pd.Series):
            values.extend(held.tolist())
        else:
            values.extend([keys.get(column)] * len(frame))
    values.extend(record.get(column) for record in records)
    return values


def _is_whole(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _beyond_float(value: Any) -> bool:
    return _is_whole(value) and abs(int(value)) > EXACT_IN_FLOAT


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Key columns first, status columns last, typed the same way in every part."""
    ordered = (
        KEY_COLUMNS + [c for c in frame.columns if c not in KEY_COLUMNS + STATUS_COLUMNS] + STATUS_COLUMNS
    )
    frame = frame[ordered]
    frame["error"] = frame["error"].astype("string")
    frame["status"] = frame["status"].astype("string")
    frame["duration_s"] = frame["duration_s"].astype("float64")
    return frame


def failure_rows(tasks: Sequence[SimTask], status: str, error: str | list[str]) -> pd.DataFrame:
    """One row per simulation with its keys, parameters, the status and the error (one for all, or a list with
    one per simulation); no model outputs."""
    errors = error if isinstance(error, list) else [error] * len(tasks)
    records = [
        {
            **t.params,
            "param_id": t.param_id,
            "replicate": t.replicate,
            "seed": t.seed,
            "status": status,
            "error": text,
            "duration_s": float("nan"),
        }
        for t, text in zip(tasks, errors, strict=True)
    ]
    return order_columns(pd.DataFrame.from_records(records))
