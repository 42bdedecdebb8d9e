"""The ``service`` backend of ``simcal.api``: the simulations ``SimulationService.submit`` queues, the jobs of the
simulation service they go as (``send_queued``, at the first ``flush``) and their rows (``gather_from_service``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from simcal.contract import ContractError
from simcal.settings import SimulationSettings
from simcal.tasks import SimTask

if TYPE_CHECKING:
    from simcal.api import SimulationService


def gather_from_service(futures: list[ServiceSimulationFuture]) -> dict[int, pd.DataFrame]:
    """The rows of simulations for the service backend (none of them cancelled): sends what is queued, then
    waits for each job once."""
    for service in {id(f.service): f.service for f in futures}.values():
        service.flush()
    refused = [f for f in futures if f.send_error is not None]
    if refused:
        raise refused[0].send_error
    unsent = [f for f in futures if f.job is None]
    if unsent:
        raise ContractError(
            f"{unsent[0]!r} was never sent: its SimulationService was closed first; gather inside the `with` block"
        )
    stranded = [f for f in futures if not f.job.fetched and f.job.job.client.closed]
    if stranded:
        raise ContractError(
            f"{stranded[0]!r} cannot be gathered: its SimulationService was closed before the job's rows were "
            "fetched (the job may still run on the service); gather inside the `with` block"
        )
    return {id(sim): sim.job.rows_for(sim.task) for sim in futures}


class ServiceSimulationFuture:
    """One simulation for the ``service`` backend: queued by ``SimulationService.submit``, sent with the others
    of its model at the first ``flush`` (which ``gather``, ``result`` and ``done`` call), in one of their jobs."""

    def __init__(self, service: SimulationService, model_ref: str, task: SimTask):
        self.service, self.model_ref, self.task = service, model_ref, task
        self.job: ServiceJob | None = None
        self.send_error: Exception | None = None  # why the service did not take its job (see flush)
        self.cancelled = False

    def done(self) -> bool:
        """Whether it has ended: sends the queue, then asks the service about its job. Also True once it can no
        longer end otherwise, as a Dask backend's future is done (cancelled) once its client is closed: when it
        was cancelled, the service refused its job, or its ``SimulationService`` was closed before its rows were
        fetched; ``result()`` then says why it has no rows."""
        if self.cancelled or self.send_error is not None:
            return True
        self.service.flush()
        return self.job is None or self.job.done()  # None: close() dropped it unsent

    def result(self) -> pd.DataFrame:
        """This simulation's rows (sends the queue, then waits for its job)."""
        from simcal.api import gather

        return gather([self])

    def cancel(self) -> None:
        """Drop it if it was not sent yet; once sent, its job is cancelled when every simulation in it is. A second
        cancel does nothing."""
        if self.cancelled:
            return
        self.cancelled = True
        self.service.forget(self)
        if self.job is not None:
            self.job.unwanted_one()

    def __repr__(self) -> str:
        state = (
            "cancelled" if self.cancelled
            else "refused" if self.send_error is not None
            else "queued" if self.job is None
            else f"job {self.job.job.id}"
        )  # fmt: skip
        return (
            f"<ServiceSimulationFuture {self.model_ref} param_id={self.task.param_id} "
            f"replicate={self.task.replicate} seed={self.task.seed} {state}>"
        )


class ServiceJob:
    """One job of the simulation service and the futures whose simulations it runs."""

    def __init__(
        self, job: Any, tasks: list[SimTask], futures: list[ServiceSimulationFuture], options: dict[str, Any]
    ):
        self.job, self.tasks, self.futures, self.options = job, tasks, futures, options
        self._rows: dict[tuple, pd.DataFrame] | None = None  # by simulation key, once the job has finished
        # Its futures not cancelled, counted: a scan of them per cancel made cancelling a job's n futures n^2/2 reads
        self._wanted = sum(not future.cancelled for future in futures)

    @property
    def fetched(self) -> bool:
        return self._rows is not None

    def done(self) -> bool:
        """True when its rows were fetched, its status is final, or its HTTP client is closed (nothing to ask)."""
        from simcal.service.client import FINAL

        return self.fetched or self.job.client.closed or self.job.status()["status"] in FINAL

    def rows_for(self, task: SimTask) -> pd.DataFrame:
        """One simulation's rows; the first call waits for the job and fetches the rows of all its simulations
        (raises ``ServiceJobFailed`` if the job failed)."""
        from simcal.service.remote import finish_job

        if self._rows is None:
            rows = finish_job(self.job, self.tasks, self.options)  # a row per task at least
            by_key = rows.groupby(["param_id", "replicate", "seed"], sort=False)
            self._rows = {key: group.reset_index(drop=True) for key, group in by_key}
        return self._rows[task.key]

    def unwanted_one(self) -> None:
        """One of its futures was cancelled (once each): the job is cancelled with the last of them, unless its rows
        were fetched already."""
        self._wanted -= 1
        if self._wanted == 0 and self._rows is None:
            self.job.cancel()


def send_queued(
    queued: Sequence[ServiceSimulationFuture],
    client: Any,
    settings: SimulationSettings,
    options: dict[str, Any],
    limits: Any,
) -> None:
    """Send ``queued`` through ``client`` (a ``SimulationClient``): per model, as the jobs a sweep of them would go
    as (``service_chunks``), each within the service's ``limits`` per job (``job_limits``); each future gets its
    job, or the error that refused its model's (raised once every other model's are sent)."""
    from simcal.service.remote import RequestSize, ServiceLimits, send_tasks, service_chunks

    by_model: dict[str, list[ServiceSimulationFuture]] = {}
    for future in queued:
        by_model.setdefault(future.model_ref, []).append(future)
    refused: Exception | None = None
    for model_ref, futures in by_model.items():
        by_key: dict[tuple, list[ServiceSimulationFuture]] = {}  # a simulation submitted twice is one task
        for future in futures:
            by_key.setdefault(future.task.key, []).append(future)
        tasks = [same[0].task for same in by_key.values()]
        try:
            per_job, max_bytes = limits or ServiceLimits()
            chunks = service_chunks(
                tasks,
                per_job,
                f"the simulation service {client.url}",
                "submit no replicate above {highest}",
                max_bytes=max_bytes,
                size=RequestSize(model_ref, settings),
            )
            for chunk in chunks:  # its futures by key: a scan of the whole queue per job made O(jobs x queue)
                in_job = [future for task in chunk for future in by_key[task.key]]
                job = send_tasks(client, model_ref, chunk, settings, limits=limits, sweep=False)
                service_job = ServiceJob(job, chunk, in_job, options)
                for future in in_job:
                    future.job = service_job
        except Exception as error:  # noqa: BLE001 - raised below, once the other models are sent
            # Their result() raises it too (not "never sent"); one model refused loses no other's simulations.
            for future in futures:
                if future.job is None:
                    future.send_error = error
            refused = refused or error
    if refused is not None:
        raise refused
