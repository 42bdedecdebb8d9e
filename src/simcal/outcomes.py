"""What the driver makes of a batch that returned no table: whom to blame for a dead worker, the texts of crash
and timeout rows, and the timeout events workers send before ending themselves."""

from __future__ import annotations

from concurrent.futures import CancelledError
from typing import Any

from simcal.worker import TIMEOUT_TOPIC

UNCONFIRMED_DEATHS = 3  # deaths without a start confirmation (a lost event) count as real after this many


class Deaths:
    """Decides what happens to a batch whose worker died (Dask's KilledWorker).

    Dask blames every task assigned to a dying worker, also those only queued behind the one that killed it. So
    the first death of a batch only makes it a suspect: it is rerun (split in halves if it holds several
    simulations) with a ``start_topic``, so the worker confirms on the scheduler that it started it. A death
    counts against a suspect only when it had started on the worker that died. Beyond ``allowed_failures``
    counted deaths a suspect is split, and a single simulation is recorded as crashed.

    A unit is anything with ``tasks``, ``key``, ``start_topic``, ``deaths`` and ``unconfirmed`` attributes.
    """

    def __init__(self, client: Any, token: str, allowed_failures: int):
        self.client, self.allowed = client, allowed_failures
        self.topic = f"simcal-start-{token}"

    def verdict(self, unit: Any, exc: BaseException) -> str:
        """``retry`` (same simulations), ``split`` (halves) or ``crashed``; updates the unit's counters."""
        if not unit.start_topic:
            unit.start_topic = self.topic
            return "split" if len(unit.tasks) > 1 else "retry"
        worker = getattr(getattr(exc, "last_worker", None), "address", None)
        if not self.started(unit.key, worker):
            unit.unconfirmed += 1
            if unit.unconfirmed < UNCONFIRMED_DEATHS:
                return "retry"
        unit.deaths += 1
        if unit.deaths <= self.allowed:
            return "retry"
        return "split" if len(unit.tasks) > 1 else "crashed"

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
        """The error of a simulation that killed the workers running it, naming the limits that were reached."""
        worker = getattr(getattr(exc, "last_worker", None), "address", "unknown")
        dask_limit = getattr(exc, "allowed_failures", 0)
        also = (
            f"; each time the scheduler had first rerun it per its distributed.scheduler.allowed-failures = "
            f"{dask_limit}"
            if dask_limit
            else ""
        )
        return (
            f"WorkerDied: the worker process died {unit.deaths} time(s) while this simulation was confirmed running "
            f"on it (limit: simulation.allowed_failures = {self.allowed}{also}; not counted: the first death, which "
            f"made it a suspect before starts were confirmed; last worker {worker}). A crash in native code, "
            "os._exit or the worker's memory limit are the usual causes"
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
