"""Single simulations from notebooks and scripts, ModelOps style: ``submit`` returns a future, ``gather`` a table.

The same contract, seeds and failure rows as a sweep (``simcal.runner.simulate``), on any backend::

    with SimulationService(backend="local", threads=2) as service:
        futures = [service.submit("simcal.models.sir:simulate", {"beta": b, "gamma": 0.1}) for b in (0.2, 0.3)]
        table = service.gather(futures)   # rows with param_id, replicate, seed, parameters, outputs, status, error

``submit`` and ``gather`` also exist as functions working on an existing ``distributed.Client`` (the default one
of the session when none is given). Nothing is written to disk: a crashed worker or a timeout is a row, as in a
sweep, but there is no resume.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from simcal.backends import dask_client
from simcal.contract import canonical_params, param_id, replicate_seed, resolve_callable
from simcal.outcomes import TimeoutEvents, crash_error, timeout_error
from simcal.settings import SimulationSettings
from simcal.tables import reject_reserved
from simcal.tasks import Batch, SimTask
from simcal.worker import failure_rows, run_batch

POLL_S = 0.5


class SimulationFuture:
    """One submitted simulation: its task (keys, parameters, seed) and the Dask future running it."""

    __slots__ = ("client", "future", "model_ref", "task", "timeout_s")

    def __init__(self, client: Any, future: Any, model_ref: str, task: SimTask, timeout_s: float | None):
        self.client, self.future, self.model_ref, self.task, self.timeout_s = (
            client, future, model_ref, task, timeout_s
        )  # fmt: skip

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
    task = _task(params, seed, replicate, settings)
    key = f"simcal-sim-{task.param_id}-{task.replicate}-{secrets.token_hex(4)}"
    future = client.submit(
        run_batch, fn_ref, Batch([task], key), None, settings.timeout_s, key=key, pure=False
    )
    return SimulationFuture(client, future, fn_ref, task, settings.timeout_s)


def gather(futures: Iterable[SimulationFuture]) -> pd.DataFrame:
    """Wait for the simulations and return all their rows; a simulation that failed, timed out or killed its
    worker is a row with its status and error, never an exception."""
    from distributed import wait
    from distributed.scheduler import KilledWorker

    futures = list(futures)
    if not futures:
        return pd.DataFrame()
    timed_out: dict[str, dict[str, Any]] = {}
    watched = [f for f in futures if f.timeout_s]
    events = {id(f.client): TimeoutEvents(f.client) for f in watched}
    while True:
        pending = [f for f in futures if not f.future.done()]
        if not pending:
            break
        try:
            wait([f.future for f in pending], timeout=POLL_S if watched else None)
        except TimeoutError:
            pass
        for future in watched:
            report = events[id(future.client)].poll().get(future.future.key)
            if report is not None and future.future.key not in timed_out:
                timed_out[future.future.key] = report
                future.future.cancel()  # Dask would rerun it on another worker, where it would hang again
    frames = []
    for future in futures:
        dask_future, task = future.future, future.task
        if dask_future.key in timed_out:
            frames.append(failure_rows([task], "timeout", timeout_error(timed_out[dask_future.key])))
        elif dask_future.status == "finished":
            frames.append(dask_future.result())
        elif dask_future.status == "cancelled":
            frames.append(failure_rows([task], "failed", "CancelledError: the simulation was cancelled"))
        else:
            error = dask_future.exception()
            if isinstance(error, KilledWorker):
                frames.append(failure_rows([task], "crashed", crash_error(error)))
            else:
                frames.append(failure_rows([task], "failed", f"{type(error).__name__}: {error}"))
    return pd.concat(frames, ignore_index=True)


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
            self._client = self._stack.enter_context(
                dask_client(self.backend, self.backend_options, self.threads, self.settings.allowed_failures)
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
