"""Batches in flight on a Dask client: submitted, polled, and each outcome (rows, a dead worker, a timeout, a
cancel) turned into stored rows or smaller batches. ``simcal.runner.Simulator`` plans the batches and drives this;
the names here stay importable from ``simcal.runner``."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from simcal.backends import dashboard
from simcal.isolate import IsolationFailed
from simcal.outcomes import UNCONFIRMED_DEATHS, settle, timeout_error
from simcal.progress import Progress
from simcal.store import PartStore
from simcal.sweep_failures import describe_params
from simcal.tasks import Batch, SimTask, simulation_key
from simcal.worker import failure_rows, interrupt_batches, run_batch, storable_rows

if TYPE_CHECKING:
    from simcal.runner import Simulator

log = logging.getLogger("simcal.runner")  # the records keep the name they had in simcal.runner


# How long a cancel waits for the workers to confirm that they interrupted its running batches.
INTERRUPT_WAIT_S = 5.0
# Batches cancelled per Client.cancel call. Dask's scheduler (stimulus_cancel, distributed 2026.8) releases a call's
# keys once per key it cancels, a time quadratic in the call's size: 30,000 queued batches took it 78 s in one call
# and 13 s in calls of 500 (on this project's 2-core machine), during which no other job's task started.
DASK_CANCEL_CHUNK = 500


@dataclass
class RunSummary:
    total: int = 0
    executed: int = 0
    skipped: int = 0
    failed: int = 0
    batch_size: int = 0
    batches: int = 0
    frames: list[pd.DataFrame] = field(default_factory=list)

    @property
    def resumed_simulations(self) -> int:
        """The simulations a sweep found finished by an earlier run (resource_history.mark_if_resumed's key)."""
        return self.skipped


class Unit:
    """A batch in flight: its simulations, the Dask key it runs under, a time budget (probe only), and what is
    known about the worker deaths it was involved in (see ``simcal.outcomes.Deaths``)."""

    __slots__ = (
        "budget", "bystander_deaths", "deaths", "isolated", "isolation_failures", "key", "start_topic", "tasks",
        "unconfirmed",
    )  # fmt: skip

    def __init__(
        self, tasks: Sequence[SimTask], key: str, budget: float | None = None, start_topic: str = ""
    ):
        self.tasks, self.key, self.budget, self.start_topic = list(tasks), key, budget, start_topic
        self.deaths = self.unconfirmed = self.bystander_deaths = self.isolation_failures = 0
        self.isolated = False


class Execution:
    """Batches in flight on the client: results into parts, dead workers and timeouts into split batches and rows."""

    POLL_S = (0.001, 0.05)  # how often to look for finished batches: from quick to relaxed

    def __init__(
        self, simulator: Simulator, store: PartStore, summary: RunSummary, collect: bool, progress: Progress
    ):
        self.simulator, self.store, self.summary, self.collect, self.progress = (
            simulator, store, summary, collect, progress
        )  # fmt: skip
        self.settings = simulator.settings
        self.inflight: dict[str, tuple[Any, Unit]] = {}
        self.probe_durations: list[float] = []
        self.next_check = 0.0

    def run(self, units: list[Unit]) -> None:
        from distributed import as_completed

        client = self.simulator.client
        progress = self.progress
        progress.dashboard = dashboard(client)
        progress.batch_size = self.simulator.batch_size
        self.completed = as_completed()
        progress.submitted()
        # Simulations wait from now: time without a worker before (between a calibration's rounds) is not counted.
        self.simulator._last_worker_seen = time.monotonic()
        try:
            for unit in units:
                # Submitting 100,000 batches takes a minute: a cancel is heard between two of them.
                if self.simulator.cancel_event.is_set():
                    self._cancel_inflight()
                self._submit(unit)
            poll = self.POLL_S[0]
            while self.inflight:
                if self.simulator.cancel_event.is_set():
                    self._cancel_inflight()
                ready = self.completed.next_batch(block=False)
                for future in ready:
                    if self.simulator.cancel_event.is_set():  # thousands may be ready: each is a round trip
                        break  # the rest are still in flight: the cancel above, on the next turn, stops them
                    self._handle(future)
                if not ready:
                    time.sleep(poll)
                    poll = min(poll * 2, self.POLL_S[1])
                else:
                    poll = self.POLL_S[0]
                if time.monotonic() >= self.next_check:
                    self._check()
        except BaseException:
            # A run that stops on an error (a full disk, too many failures, an interrupt) leaves nothing running
            # on a cluster that outlives it (a scheduler's, the service's): whatever still holds its futures.
            # A client already broken cannot cancel: the error that stopped the run is what counts.
            with contextlib.suppress(Exception):
                self._stop_inflight()
            raise
        self.progress.report()

    def _cancel_inflight(self) -> None:
        self._stop_inflight()
        self.progress.report(force=True)
        self.simulator.check_cancelled()

    def _stop_inflight(self) -> None:
        """Cancel the batches in flight on the scheduler and interrupt those running on the workers."""
        if not self.inflight:
            return
        futures = [future for future, _ in self.inflight.values()]
        keys = list(self.inflight)
        self.inflight.clear()
        client = self.simulator.client
        # The last submitted first: Dask runs them in submission order, so the running batches are cancelled last,
        # once no queued one is left to take the worker their cancel frees (it would start after the interrupt).
        for end in range(len(futures), 0, -DASK_CANCEL_CHUNK):  # force: the keys are this run's own
            client.cancel(futures[max(0, end - DASK_CANCEL_CHUNK) : end], force=True)
        # Dask lets a running task run on: each worker interrupts the batches of these keys it is running. Not
        # waited for longer than INTERRUPT_WAIT_S: a worker whose model holds the GIL in native code answers late.
        asking = threading.Thread(target=_interrupt_on_workers, args=(client, keys), daemon=True)
        asking.start()
        asking.join(INTERRUPT_WAIT_S)

    def _submit(self, unit: Unit) -> None:
        client = self.simulator.client
        future = client.submit(
            run_batch,
            self.simulator.model_ref,
            Batch(unit.tasks, unit.key, start_topic=unit.start_topic, isolated=unit.isolated),
            unit.budget,
            self.settings.timeout_s,
            key=unit.key,
            pure=False,
        )
        self.inflight[unit.key] = (future, unit)
        self.completed.add(future)

    def _check(self) -> None:
        self.next_check = time.monotonic() + 1.0
        self.progress.workers = self.simulator.check_workers(waiting=bool(self.inflight))
        events = self.simulator.timeout_events()
        if events is not None and self.inflight:
            reported = events.poll()
            for key in [k for k in self.inflight if k in reported]:
                future, unit = self.inflight.pop(key)
                future.cancel()  # Dask would rerun it on another worker, where it would hang again
                self._timed_out(unit, reported[key])
        self.progress.report()

    def _handle(self, future) -> None:
        entry = self.inflight.pop(future.key, None)
        if entry is None:  # cancelled after a timeout report: already handled
            future.release()
            return
        _, unit = entry
        if future.status not in (
            "finished",
            "error",
            "cancelled",
        ):  # its result was lost and is being recomputed
            self.inflight[future.key] = entry
            self.completed.add(future)
            return
        try:
            outcome, value = settle(future)
            if outcome == "ok":
                self._finished(unit, value)
            elif outcome == "lost" and unit.unconfirmed + 1 < UNCONFIRMED_DEATHS:
                unit.unconfirmed += 1  # never blamed, but never retried for ever either
                unit.key = self.simulator.new_key()
                self._submit(unit)
            else:
                self._failed(unit, value)
        finally:
            future.release()

    def _failed(self, unit: Unit, exc: BaseException) -> None:
        from distributed.scheduler import KilledWorker

        events = self.simulator.timeout_events()
        reported = events.poll() if events is not None else {}
        if unit.key in reported:
            self._timed_out(unit, reported[unit.key])
            return
        verdict = self.simulator.deaths.judge(unit, exc)
        if verdict is None:  # raised outside the simulations' guard (e.g. rows that cannot be sent back)
            verdict = "split" if len(unit.tasks) > 1 else "failed"
        elif verdict == "retry" and isinstance(exc, IsolationFailed):
            # The worker's fault, not the simulation's: run it alone again, maybe on another worker.
            log.warning(
                "simulation param_id %s replicate %d: %s; running it alone again",
                unit.tasks[0].param_id, unit.tasks[0].replicate, exc,
            )  # fmt: skip
        if verdict == "isolate":
            log.warning(
                "simulation param_id %s replicate %d: its worker died; running it again alone, in a process of its "
                "own, to see whether it was the cause", unit.tasks[0].param_id, unit.tasks[0].replicate,
            )  # fmt: skip
        if verdict in ("retry", "isolate"):
            unit.key = self.simulator.new_key()
            self._submit(unit)
        elif verdict == "split":
            half = len(unit.tasks) // 2
            what = (
                "its worker died"
                if isinstance(exc, KilledWorker)
                else f"it failed ({type(exc).__name__}: {exc})"
            )
            log.warning(
                "a batch of %d simulations did not finish because %s; running it again in halves to isolate "
                "the culprit", len(unit.tasks), what,
            )  # fmt: skip
            topic = unit.start_topic or self.simulator.deaths.topic
            self._submit(self.simulator._unit(unit.tasks[:half], unit.budget, topic))
            self._submit(self.simulator._unit(unit.tasks[half:], unit.budget, topic))
        else:
            task = unit.tasks[0]
            if verdict == "crashed":
                status, error = "crashed", self.simulator.deaths.crash_error(unit, exc)
            elif isinstance(exc, IsolationFailed):
                status, error = "failed", self.simulator.deaths.isolation_error(unit, exc)
            else:
                status, error = "failed", f"{type(exc).__name__}: {exc}"
            log.error(
                "simulation param_id %s replicate %d (%s) %s: %s",
                task.param_id, task.replicate, describe_params(task.params), status, error,
            )  # fmt: skip
            self._record(unit.tasks, failure_rows(unit.tasks, status, error))

    def _timed_out(self, unit: Unit, event: Mapping[str, Any]) -> None:
        index = int(event.get("index", -1))
        culprit = unit.tasks[index] if 0 <= index < len(unit.tasks) else None
        if culprit is None or culprit.param_id != event.get("param_id"):
            # Never sent by simcal's workers. The batch was cancelled: run it again under a new key, which no
            # report names (_failed would look this report up again, and again, for ever).
            log.warning(
                "a timeout report names no simulation of batch %s (%s); running its %d simulations again",
                unit.key, dict(event), len(unit.tasks),
            )  # fmt: skip
            unit.key = self.simulator.new_key()
            self._submit(unit)
            return
        log.error(
            "simulation param_id %s replicate %d (%s) ran past timeout_s and was stopped with its worker",
            culprit.param_id, culprit.replicate, describe_params(culprit.params),
        )  # fmt: skip
        self._record([culprit], failure_rows([culprit], "timeout", timeout_error(dict(event))))
        others = [t for i, t in enumerate(unit.tasks) if i != index]
        if others:  # finished on the ended worker but never returned: run them again
            self._submit(self.simulator._unit(others, unit.budget, unit.start_topic))

    def _finished(self, unit: Unit, frame: pd.DataFrame) -> None:
        ran = set(
            zip(frame["param_id"].tolist(), frame["replicate"].tolist(), frame["seed"].tolist(), strict=True)
        )
        if ran.issuperset(map(simulation_key, unit.tasks)):  # the usual case: every simulation made rows
            done = unit.tasks
        else:
            done = [t for t in unit.tasks if t.key in ran]
        if unit.budget is not None:
            sims = frame.drop_duplicates(["param_id", "replicate", "seed"])
            ok = sims[sims["status"] == "ok"]
            # The probe's first simulation paid the worker's one-time costs (numba's compilation took 0.38 s of
            # a 0.00075 s SIR): timed warm where the probe ran others.
            first = unit.tasks[0]
            warm = ok[~((ok["param_id"] == first.param_id) & (ok["replicate"] == first.replicate))]
            self.probe_durations.extend((warm if len(warm) else ok)["duration_s"].tolist())
        elif len(done) < len(unit.tasks):  # never expected: every task of a batch makes rows
            missing = [t for t in unit.tasks if t.key not in ran]
            self._record(
                missing, failure_rows(missing, "failed", "InternalError: the batch returned no rows for it")
            )
        if done:
            self._record(done, frame)

    def _record(self, tasks: Sequence[SimTask], frame: pd.DataFrame) -> None:
        frame = self._write(tasks, frame)
        failed = self.store.failed_among(tasks)
        self.summary.executed += len(tasks)
        self.summary.failed += failed
        self.summary.batches += 1
        if self.collect:
            self.summary.frames.append(frame)
        self.progress.advance(len(tasks), failed)
        self.progress.report()

    def _write(self, tasks: Sequence[SimTask], frame: pd.DataFrame) -> pd.DataFrame:
        """Store the rows as a part and return what was stored. The workers send only rows a part can hold; rows
        that still cannot be stored (a service, an older worker) must not stop the sweep, nor every rerun of it:
        the simulations at fault become failed rows, or failing that, every simulation of the batch does."""
        try:
            self.store.write(frame, tasks)
            return frame
        except (OSError, MemoryError):  # the disk or the machine, not the rows: stop, the rerun resumes
            raise
        except Exception as error:  # noqa: BLE001 - whatever pandas or Arrow refuse
            log.error(
                "the rows of %d simulation(s) could not be stored (%s: %s); the simulations at fault are "
                "recorded as failed", len(tasks), type(error).__name__, error,
            )  # fmt: skip
        try:
            frame = storable_rows(frame, tasks, self.simulator.model_ref)
            self.store.write(frame, tasks)
            return frame
        except (OSError, MemoryError):
            raise
        except Exception as error:  # noqa: BLE001 - the rows themselves are unusable: keep the simulations
            frame = failure_rows(
                tasks, "failed", f"{type(error).__name__} while storing the simulation's rows: {error}"
            )
        self.store.write(frame, tasks)
        return frame


def _interrupt_on_workers(client: Any, keys: list[str]) -> None:
    """Ask every worker to interrupt the batches of these keys (``simcal.worker.interrupt_batches``)."""
    try:
        client.run(interrupt_batches, keys, on_error="ignore")
    except Exception as error:  # noqa: BLE001 - a cancel goes on without it: the batches then run to their end
        log.warning(
            "could not ask the workers to interrupt the cancelled batches (%s: %s)",
            type(error).__name__,
            error,
        )
