"""Single simulations from notebooks and scripts, ModelOps style: ``submit`` returns a future, ``gather`` a table.

The same contract, seeds and failure rows as a sweep (``simcal.runner.simulate``), on any backend::

    with SimulationService(backend="local", threads=2) as service:
        futures = [service.submit("simcal.models.sir:simulate", {"beta": b, "gamma": 0.1}) for b in (0.2, 0.3)]
        table = service.gather(futures)   # rows with param_id, replicate, seed, parameters, outputs, status, error

``submit`` and ``gather`` also exist as functions working on an existing ``distributed.Client`` (the default one
of the session when none is given). Nothing is written to disk: a crashed worker or a timeout is a row, as in a
sweep, but there is no resume. Worker deaths are counted as in a sweep: a cluster the service starts runs Dask
with allowed-failures 0, and a simulation is recorded as crashed once it has killed the worker running it more than
``settings.allowed_failures`` times.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from simcal.backends import dask_client
from simcal.contract import canonical_params, param_id, replicate_seed, resolve_callable
from simcal.outcomes import UNCONFIRMED_DEATHS, Deaths, TimeoutEvents, settle, timeout_error
from simcal.settings import SimulationSettings
from simcal.tables import reject_reserved
from simcal.tasks import Batch, SimTask
from simcal.worker import failure_rows, run_batch

POLL_S = 0.5


class SimulationFuture:
    """One submitted simulation: its task (keys, parameters, seed) and the Dask future running it.

    After a worker death ``gather`` may resubmit it (see ``simcal.outcomes.Deaths``), replacing ``future``.
    """

    __slots__ = (
        "allowed_failures", "client", "deaths", "future", "key", "model_ref", "start_topic", "task", "tasks",
        "timeout_s", "unconfirmed",
    )  # fmt: skip

    def __init__(self, client: Any, model_ref: str, task: SimTask, settings: SimulationSettings):
        self.client, self.model_ref, self.task, self.tasks = client, model_ref, task, [task]
        self.timeout_s, self.allowed_failures = settings.timeout_s, settings.allowed_failures
        self.start_topic, self.deaths, self.unconfirmed = "", 0, 0
        self.key, self.future = "", None
        self.start()

    def start(self) -> None:
        task = self.task
        self.key = f"simcal-sim-{_TOKEN}-{task.param_id}-{task.replicate}-{secrets.token_hex(4)}"
        batch = Batch([task], self.key, start_topic=self.start_topic)
        self.future = self.client.submit(
            run_batch, self.model_ref, batch, None, self.timeout_s, key=self.key, pure=False
        )

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> pd.DataFrame:
        """This simulation's rows (waits for it)."""
        return gather([self])

    def cancel(self) -> None:
        self.future.cancel()

    def __repr__(self) -> str:
        return (
            f"<SimulationFuture {self.model_ref} param_id={self.task.param_id} replicate={self.task.replicate} "
            f"seed={self.task.seed} status={self.future.status}>"
        )


_TOKEN = secrets.token_hex(4)  # names this process's simulations in Dask keys and start confirmations


def _task(
    params: Mapping[str, Any], seed: int | None, replicate: int, settings: SimulationSettings
) -> SimTask:
    reject_reserved(params, "submit(params)")
    plain = canonical_params(params)
    pid = param_id(plain, already_canonical=True)
    if seed is None:
        seed = replicate_seed(pid, replicate, settings.seed, settings.common_random_numbers)
    return SimTask(pid, int(replicate), int(seed), plain)


def submit(
    fn_ref: str,
    params: Mapping[str, Any],
    seed: int | None = None,
    *,
    replicate: int = 0,
    client: Any = None,
    settings: SimulationSettings | Mapping[str, Any] | None = None,
) -> SimulationFuture:
    """Run ``fn_ref(params, seed)`` on a worker. Without ``seed`` it derives from (master seed, param_id,
    replicate) exactly as in a sweep with the same settings."""
    if not isinstance(settings, SimulationSettings):
        settings = SimulationSettings.from_config(settings)
    resolve_callable(fn_ref)  # a bad reference fails here, not on a worker
    if client is None:
        from distributed import default_client

        client = default_client()
    return SimulationFuture(client, fn_ref, _task(params, seed, replicate, settings), settings)


def gather(futures: Iterable[SimulationFuture]) -> pd.DataFrame:
    """Wait for the simulations and return all their rows; a simulation that failed, timed out or killed its
    worker is a row with its status and error, never an exception."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    futures = list(futures)
    if not futures:
        return pd.DataFrame()
    outcome: dict[int, pd.DataFrame] = {}
    timeouts = {id(f.client): TimeoutEvents(f.client) for f in futures if f.timeout_s}
    while len(outcome) < len(futures):
        open_ = [f for f in futures if id(f) not in outcome]
        try:
            wait([f.future for f in open_], timeout=POLL_S, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        reports = {client: events.poll() for client, events in timeouts.items()}
        for sim in open_:
            report = reports[id(sim.client)].get(sim.key) if sim.timeout_s else None
            if report is not None:
                sim.future.cancel()  # Dask would rerun it on another worker, where it would hang again
                outcome[id(sim)] = failure_rows(sim.tasks, "timeout", timeout_error(report))
            elif sim.future.done():
                ended, value = settle(sim.future)
                if ended == "ok":
                    outcome[id(sim)] = value
                elif ended == "lost" and sim.unconfirmed + 1 < UNCONFIRMED_DEATHS:
                    sim.unconfirmed += 1  # its result vanished with a dead worker: run it again
                    sim.start()
                elif not isinstance(value, KilledWorker):
                    outcome[id(sim)] = failure_rows(sim.tasks, "failed", f"{type(value).__name__}: {value}")
                else:
                    deaths = Deaths(sim.client, _TOKEN, sim.allowed_failures)
                    if deaths.verdict(sim, value) == "crashed":
                        outcome[id(sim)] = failure_rows(sim.tasks, "crashed", deaths.crash_error(sim, value))
                    else:
                        sim.start()  # a single simulation is never split: "split" and "retry" both run it again
    return pd.concat([outcome[id(f)] for f in futures], ignore_index=True)


class SimulationService:
    """A backend (local, slurm or scheduler) for single simulations; closes what it started on exit."""

    def __init__(
        self,
        backend: str = "local",
        backend_options: Mapping[str, Any] | None = None,
        threads: int = 1,
        settings: SimulationSettings | Mapping[str, Any] | None = None,
        client: Any = None,
    ):
        self.settings = (
            settings if isinstance(settings, SimulationSettings) else SimulationSettings.from_config(settings)
        )
        self.backend, self.backend_options, self.threads = backend, dict(backend_options or {}), threads
        self._client = client
        self._stack = contextlib.ExitStack()

    @property
    def client(self):
        if self._client is None:
            # As in a sweep: Dask reports every worker death at once (allowed-failures 0) and simcal counts them
            # against settings.allowed_failures (simcal.outcomes.Deaths); both limits at once would multiply.
            self._client = self._stack.enter_context(
                dask_client(self.backend, self.backend_options, self.threads, allowed_failures=0)
            )
        return self._client

    def submit(
        self, fn_ref: str, params: Mapping[str, Any], seed: int | None = None, replicate: int = 0
    ) -> SimulationFuture:
        return submit(fn_ref, params, seed, replicate=replicate, client=self.client, settings=self.settings)

    def gather(self, futures: Iterable[SimulationFuture]) -> pd.DataFrame:
        return gather(futures)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> SimulationService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
