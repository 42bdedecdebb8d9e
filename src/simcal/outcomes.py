"""What the driver makes of a batch that returned no table: whom to blame for a dead worker, the texts of crash
and timeout rows, and the timeout events workers send before ending themselves."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import CancelledError
from typing import Any

from simcal.isolate import IsolationFailed, SimulationCrashed
from simcal.worker import TIMEOUT_TOPIC

UNCONFIRMED_DEATHS = 3  # deaths without a start confirmation (a lost event) count as real after this many
BYSTANDER_DEATHS = 10  # worker deaths an isolated simulation may live through before it is given up
# Tries to run a simulation alone that may fail for the worker's reasons (IsolationFailed: its disk full, no process
# to be had) before it is recorded as failed: another worker, or the same one freed, may do; a cluster whose every
# worker is out of disk must not have it rerun for ever.
ISOLATION_FAILURES = 3


class Deaths:
    """Decides what happens to a batch whose worker died (Dask's KilledWorker), or whose isolated run crashed.

    Dask blames every task assigned to a dying worker: those only queued behind the one that killed it, and on a
    worker of several threads those running beside it. So a death only makes a batch a suspect:

    - a batch of several simulations is rerun (split in halves) with a ``start_topic``, so the worker confirms on
      the scheduler that it started it; a death counts against it only when it had started on the worker that
      died, and beyond ``allowed_failures`` counted deaths it is split again;
    - a single simulation is rerun ``isolated``: alone, in a child process of the worker (``simcal.isolate``).
      Only a death of that process (``SimulationCrashed``) counts against it; beyond ``allowed_failures`` of
      those it is recorded as crashed. A death of the worker meanwhile is another simulation's doing: it is
      rerun, at most ``BYSTANDER_DEATHS`` times. When it could not be run alone at all (``IsolationFailed``: the
      worker's disk or process table, not the model), it is rerun alone, and after ``ISOLATION_FAILURES`` such
      tries recorded as failed (``rerun_failed`` runs it again), never as crashed.

    A unit is anything with ``tasks``, ``key``, ``start_topic``, ``isolated``, ``deaths``, ``unconfirmed``,
    ``bystander_deaths`` (its own count, so that lost results, counted in ``unconfirmed``, do not use it up) and
    ``isolation_failures`` attributes.
    """

    def __init__(self, client: Any, token: str, allowed_failures: int):
        self.client, self.allowed = client, allowed_failures
        self.topic = f"simcal-start-{token}"

    def judge(self, unit: Any, exc: BaseException) -> str | None:
        """The verdict on a unit whose batch ended with ``exc``, for the sweep and for submit/gather alike: a worker
        death (``verdict``), a death of the process running it alone (``isolated_verdict``) or a failure to run it
        alone (``isolation_verdict``); None for any other error, which is the caller's to record."""
        from distributed.scheduler import KilledWorker

        if isinstance(exc, KilledWorker):
            return self.verdict(unit, exc)
        if isinstance(exc, SimulationCrashed):
            return self.isolated_verdict(unit)
        if isinstance(exc, IsolationFailed):
            return self.isolation_verdict(unit)
        return None

    def verdict(self, unit: Any, exc: BaseException) -> str:
        """``retry`` (same simulations), ``isolate`` (a single simulation, from now on run alone), ``split``
        (halves) or ``crashed``, after its worker died; updates the unit's counters and ``isolated``."""
        if unit.isolated:  # its own process did not die (that would be SimulationCrashed): not its doing
            unit.bystander_deaths += 1
            return "retry" if unit.bystander_deaths < BYSTANDER_DEATHS else "crashed"
        if len(unit.tasks) == 1:
            unit.isolated = True
            return "isolate"
        if not unit.start_topic:
            unit.start_topic = self.topic
            return "split"
        worker = getattr(getattr(exc, "last_worker", None), "address", None)
        if not self.started(unit.key, worker):
            unit.unconfirmed += 1
            if unit.unconfirmed < UNCONFIRMED_DEATHS:
                return "retry"
        unit.deaths += 1
        return "retry" if unit.deaths <= self.allowed else "split"

    def isolated_verdict(self, unit: Any) -> str:
        """``retry`` or ``crashed``, after the process running the unit alone died (SimulationCrashed)."""
        unit.deaths += 1
        return "retry" if unit.deaths <= self.allowed else "crashed"

    def isolation_verdict(self, unit: Any) -> str:
        """``retry`` or ``failed``, after the unit could not be run alone (IsolationFailed): not counted as a death."""
        unit.isolation_failures += 1
        return "retry" if unit.isolation_failures < ISOLATION_FAILURES else "failed"

    @staticmethod
    def isolation_error(unit: Any, exc: IsolationFailed) -> str:
        """The error of a simulation recorded as failed because it could not be run alone."""
        return (
            f"IsolationFailed: {exc}; so {unit.isolation_failures} time(s), the limit (it was run alone because its "
            "worker had died). The model itself was not seen to fail: the worker's disk, directory or process table "
            "failed around it; once they are fixed, a rerun with simulation.rerun_failed: true runs it again"
        )

    def started(self, key: str, worker: str | None) -> bool:
        try:
            events = self.client.get_events(self.topic)
        except Exception:  # noqa: BLE001 - no events: the death counts as unconfirmed
            return False
        return any(
            isinstance(m, dict) and m.get("batch") == key and (worker is None or m.get("worker") == worker)
            for _, m in events
        )

    def crash_error(self, unit: Any, exc: BaseException) -> str:
        """The error of a simulation recorded as crashed, naming what died and the limit that was reached."""
        if isinstance(exc, SimulationCrashed):
            return (
                f"SimulationCrashed: {exc}; that process died {unit.deaths} time(s) (limit: "
                f"simulation.allowed_failures = {self.allowed}; the death of the worker it shared, which only made it "
                "a suspect, is not counted). A crash in native code, os._exit or the memory limit are the usual "
                "causes"
            )
        worker = getattr(getattr(exc, "last_worker", None), "address", "unknown")
        return (
            f"WorkerDied: its worker died {unit.bystander_deaths} time(s) while it ran alone in a process of its own, "
            f"which never died (limit: {BYSTANDER_DEATHS}; last worker {worker}): another simulation on that "
            "worker, or the machine, ended the worker each time, so this one was never seen to finish"
        )


def settle(future: Any) -> tuple[str, Any]:
    """How a batch that Dask calls done ended: ``("ok", table)``, ``("error", exception)``, or ``("lost",
    exception)`` when it finished but its result vanished before it was fetched (it lived on a worker that died
    since) or Dask cancelled it on its own. A lost batch did nothing wrong: it is run again, not blamed.
    """
    if future.status == "finished":
        try:
            return "ok", future.result()
        except Exception as exc:  # noqa: BLE001
            return "lost", exc
    try:
        error = future.exception()  # only called once the future is done: returns at once
    except Exception as exc:  # noqa: BLE001 - some versions raise the CancelledError instead
        return "lost", exc
    if future.status == "cancelled":
        return "lost", error or CancelledError(f"Dask cancelled the batch {future.key}")
    return "error", error or RuntimeError(f"the batch ended as {future.status!r} without an error")


def settle_all(futures: Sequence[Any]) -> list[tuple[str, Any]]:
    """``settle`` for many batches that Dask calls done, in their order, fetching the tables of the finished ones
    with one ``gather`` per client instead of a round trip each (1,000 simulations: 9.3 s against 1.0 s). A
    finished batch whose table could not be fetched is ``lost``, as ``settle`` has it; when the ``gather`` itself
    fails, each batch of that client is settled alone."""
    settled: list[tuple[str, Any] | None] = [None] * len(futures)
    by_client: dict[int, tuple[Any, dict[int, Any]]] = {}
    for index, future in enumerate(futures):
        if future.status == "finished":
            by_client.setdefault(id(future.client), (future.client, {}))[1][index] = future
    for client, finished in by_client.values():
        try:  # skip: a batch whose result vanished is None here (a dict keeps the places), not the gather's error
            tables = client.gather(finished, errors="skip")
        except Exception:  # noqa: BLE001 - settled one by one below, as before
            continue
        for index, future in finished.items():
            table = tables.get(index)
            settled[index] = ("ok", table) if table is not None else ("lost", _lost_error(future))
    return [outcome or settle(future) for outcome, future in zip(settled, futures, strict=True)]


def _lost_error(future: Any) -> BaseException:
    """Why a finished batch's table could not be fetched (what its ``result()`` would have raised)."""
    try:
        error = future.exception()  # done (Dask skipped it as erred or cancelled): returns at once
    except Exception as exc:  # noqa: BLE001 - some versions raise the CancelledError instead
        return exc
    return error or CancelledError(f"the result of the batch {future.key} was lost before it was fetched")


def timeout_error(event: dict[str, Any]) -> str:
    return (
        f"SimulationTimeout: ran longer than timeout_s = {event.get('timeout_s', 0):g} s and could not be "
        f"interrupted (stuck in native code), so its worker process was ended ({event.get('worker')})"
    )


class TimeoutEvents:
    """Timeout reports from workers (Dask events), looked up by batch key."""

    def __init__(self, client: Any):
        self.client = client
        self.by_batch: dict[str, dict[str, Any]] = {}

    def poll(self) -> dict[str, dict[str, Any]]:
        try:
            events = self.client.get_events(TIMEOUT_TOPIC)
        except Exception:  # noqa: BLE001 - a scheduler that refuses or lost the events: crash handling remains
            return self.by_batch
        for _, message in events:
            if isinstance(message, dict) and message.get("batch"):
                self.by_batch.setdefault(message["batch"], message)
        return self.by_batch
