"""Stopping simulations on a worker: the watchdog that interrupts a simulation past its timeout (and ends the
worker process when it cannot be interrupted), and the interrupts of a cancelled sweep's running batches.
Split from ``simcal.worker``, from which every public name here is still importable."""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from simcal.tasks import SimTask

TIMEOUT_TOPIC = "simcal-timeout"  # Dask event topic: a worker about to end itself names the simulation first


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
