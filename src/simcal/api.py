"""Single simulations from notebooks and scripts, ModelOps style: ``submit`` returns a future, ``gather`` a table.

The same contract, seeds and failure rows as a sweep (``simcal.runner.simulate``), on any backend::

    with SimulationService(backend="local", threads=2) as service:
        futures = [service.submit("simcal.models.sir:simulate", {"beta": b, "gamma": 0.1}) for b in (0.2, 0.3)]
        table = service.gather(futures)   # rows with param_id, replicate, seed, parameters, outputs, status, error

``submit`` and ``gather`` also exist as functions working on an existing ``distributed.Client`` (the default one
of the session when none is given). Nothing is written to disk: a crashed worker or a timeout is a row, as in a
sweep, but there is no resume. Worker deaths are handled as in a sweep: a cluster the service starts runs Dask
with allowed-failures 0; a simulation whose worker died runs again alone in a process of its own, and is recorded
as crashed once that process has died more than ``settings.allowed_failures`` times.

Backends: ``local``, ``slurm`` and ``scheduler`` (``simcal.backends``) run each simulation as a Dask task at once.
``service`` sends them to a simulation service (``simcal.service``; URL and key from ``SIMCAL_SERVICE_URL`` and
``SIMCAL_API_KEY``, options as ``calibration.backend.service``): submitted simulations wait until the first
``gather``, ``result``, ``done`` or ``flush`` and then go per model as the jobs a sweep of them would go as
(within the service's ``--max-simulations`` per job and ``--request-max-bytes`` per request), whose rows are the
same as a sweep's. The service derives
every seed from ``settings`` (master seed, param_id, replicate), so an explicit ``seed`` is accepted there only
when it is that seed.
"""

from __future__ import annotations

import contextlib
import queue
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from simcal.api_service import (  # noqa: F401 - ServiceJob: a part's public names stay importable from here
    ServiceJob,
    ServiceSimulationFuture,
    gather_from_service,
    send_queued,
)
from simcal.backends import SERVICE_BACKEND, dask_client
from simcal.contract import (
    ContractError,
    canonical_params,
    is_whole_number,
    param_id,
    replicate_seed,
    resolve_model,
)
from simcal.outcomes import UNCONFIRMED_DEATHS, Deaths, TimeoutEvents, settle_all, timeout_error
from simcal.settings import SimulationSettings
from simcal.space import check_parameter_sets
from simcal.store import gathered_frame
from simcal.tables import reject_reserved
from simcal.tasks import Batch, SimTask
from simcal.worker import failure_rows, run_batch

POLL_S = 0.5  # how often gather asks the scheduler about timeouts (while a simulation it waits for has one)


class SimulationFuture:
    """One submitted simulation: its task (keys, parameters, seed) and the Dask future running it.

    After a worker death ``gather`` may resubmit it (see ``simcal.outcomes.Deaths``), replacing ``future``.
    """

    __slots__ = (
        "allowed_failures", "cancelled", "client", "deaths", "future", "isolated", "key", "model_ref", "start_topic",
        "task", "tasks", "timeout_s", "unconfirmed", "bystander_deaths", "isolation_failures",
    )  # fmt: skip

    def __init__(self, client: Any, model_ref: str, task: SimTask, settings: SimulationSettings):
        self.client, self.model_ref, self.task, self.tasks = client, model_ref, task, [task]
        self.timeout_s, self.allowed_failures = settings.timeout_s, settings.allowed_failures
        self.start_topic, self.deaths, self.unconfirmed, self.isolated = "", 0, 0, False
        self.bystander_deaths = self.isolation_failures = 0
        self.key, self.future, self.cancelled = "", None, False
        self.start()

    def start(self) -> None:
        task = self.task
        self.key = f"simcal-sim-{_TOKEN}-{task.param_id}-{task.replicate}-{secrets.token_hex(4)}"
        batch = Batch([task], self.key, start_topic=self.start_topic, isolated=self.isolated)
        self.future = self.client.submit(
            run_batch, self.model_ref, batch, None, self.timeout_s, key=self.key, pure=False
        )

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> pd.DataFrame:
        """This simulation's rows (waits for it)."""
        return gather([self])

    def cancel(self) -> None:
        """Stop it; ``gather`` then gives its row as failed, saying it was cancelled."""
        self.cancelled = True
        self.future.cancel()

    def __repr__(self) -> str:
        return (
            f"<SimulationFuture {self.model_ref} param_id={self.task.param_id} replicate={self.task.replicate} "
            f"seed={self.task.seed} status={self.future.status}>"
        )


_TOKEN = secrets.token_hex(4)  # names this process's simulations in Dask keys and start confirmations


def _check_whole_number(name: str, value: Any) -> None:
    """``submit``'s check of ``seed`` and ``replicate`` (None: not given)."""
    if value is not None and not is_whole_number(value, 0):  # 7.0 is taken (int() makes it 7)
        raise ContractError(f"submit: {name} must be a whole number >= 0, got {value!r}")


def _task(
    fn_ref: str, params: Mapping[str, Any], seed: int | None, replicate: int, settings: SimulationSettings
) -> SimTask:
    if not isinstance(params, Mapping):  # a list gave IndexError, None TypeError, neither naming params
        raise ContractError(
            f"submit(params) must be a mapping of parameter names to values, got {type(params).__name__}"
        )
    reject_reserved(params, "submit(params)")
    _check_whole_number("replicate", replicate)
    _check_whole_number("seed", seed)
    # A sweep's seeds lie below 2**32; a model may hand its seed to a 32-bit seeder.
    if seed is not None and seed >= 2**32:
        raise ContractError(f"submit: seed must be below 2**32 (as every seed of a sweep is), got {seed!r}")
    # Beyond int64 the rows could not be gathered (pyarrow's OverflowError lost every row of that gather)
    if replicate >= 2**63:
        raise ContractError(
            "submit: replicate must be a whole number from 0 to 2**63 - 1 (the rows' replicate column is int64), "
            f"got {replicate!r}"
        )
    try:
        plain = canonical_params(params)
    except ContractError as error:
        raise ContractError(f"submit(params): {error}") from error
    pid = param_id(plain, already_canonical=True)
    # An Integer's 20.0 reaches the model as 20 (the same param_id: 20.0 and 20 hash alike)
    (plain,) = check_parameter_sets(fn_ref, [plain], "submit(params)", [f"param_id {pid}"])
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
    resolve_model(fn_ref)  # a bad reference or signature fails here, not on a worker
    if client is None:
        from distributed import default_client

        client = default_client()
    if getattr(client, "status", None) in ("closing", "closed"):  # Dask's ClosedClientError named neither
        raise ContractError(
            f"submit(): its Dask client is {client.status} (a SimulationService closes the cluster it started on "
            "leaving its `with` block; submit inside it)"
        )
    return SimulationFuture(client, fn_ref, _task(fn_ref, params, seed, replicate, settings), settings)


def gather(futures: Iterable[SimulationFuture | ServiceSimulationFuture]) -> pd.DataFrame:
    """Wait for the simulations and return all their rows, in the order of ``futures``, with the columns and
    dtypes ``read_results`` gives a sweep's rows; a simulation that failed, timed out or killed its worker is a
    row with its status and error, never an exception."""
    kinds = (SimulationFuture, ServiceSimulationFuture)
    if isinstance(futures, kinds):
        raise ContractError("gather takes a list of futures, got one: gather([future]) or future.result()")
    futures = list(futures)
    wrong = [f for f in futures if not isinstance(f, kinds)]
    if wrong:
        raise ContractError(
            f"gather takes the futures submit() returns, got {type(wrong[0]).__name__} {wrong[0]!r}"
        )
    if not futures:
        return pd.DataFrame()
    outcome = {id(f): failure_rows([f.task], "failed", CANCELLED) for f in futures if f.cancelled}
    live = [f for f in futures if not f.cancelled]
    remote = [f for f in live if isinstance(f, ServiceSimulationFuture)]
    if remote:
        outcome.update(gather_from_service(remote))
    if len(remote) < len(live):
        outcome.update(_gather_from_dask([f for f in live if not isinstance(f, ServiceSimulationFuture)]))
    # Typed as read_results gives a sweep's rows (text as "str" with NaN, mixed columns as text, ...)
    return gathered_frame([outcome[id(f)] for f in futures])


CANCELLED = "Cancelled: SimulationFuture.cancel() was called before its rows were gathered"


def _gather_from_dask(futures: list[SimulationFuture]) -> dict[int, pd.DataFrame]:
    """The rows of simulations running on Dask (none of them cancelled). Each future, when it ends, is handed to a
    queue by Dask (``add_done_callback``) and gather sleeps on that queue until one ends, or until the next look at
    the timeouts (every ``POLL_S``, only while a simulation has one): it wakes for what ended, never to poll. A
    pass takes all that ended by then and fetches their rows together (``settle_all``): it costs what ended, not
    what runs."""
    closed = [f for f in futures if f.client.status != "running"]
    if closed:
        raise ContractError(
            f"{closed[0]!r} cannot be gathered: its Dask client is {closed[0].client.status} (a SimulationService "
            "closes the cluster it started on leaving its `with` block; gather inside it)"
        )
    # A future listed twice is waited for once (gather shows its rows twice).
    futures = list({id(f): f for f in futures}.values())
    outcome: dict[int, pd.DataFrame] = {}
    open_ = {sim.key: sim for sim in futures}  # by the Dask key of its current run
    # Dask futures that ended, put there by Dask's callback thread
    ended: queue.SimpleQueue = queue.SimpleQueue()
    for sim in futures:
        sim.future.add_done_callback(ended.put)
    timeouts = {id(f.client): TimeoutEvents(f.client) for f in futures if f.timeout_s}

    def again(sim: SimulationFuture) -> None:  # its earlier run's key stays in open_, for no simulation
        sim.start()
        open_[sim.key] = sim
        sim.future.add_done_callback(ended.put)

    next_check = 0.0
    while len(outcome) < len(futures):
        ready = _ended(ended, max(0.0, next_check - time.monotonic()) if timeouts else None)
        # Timeouts every POLL_S, and before a failed run is judged (its worker reports a timeout before it ends)
        if time.monotonic() >= next_check or any(f.status != "finished" for f in ready):
            next_check = time.monotonic() + POLL_S
            for key, report in [kv for events in timeouts.values() for kv in list(events.poll().items())]:
                sim = open_.get(key)
                if sim is not None and sim.key == key and sim.timeout_s and id(sim) not in outcome:
                    sim.future.cancel()  # Dask would rerun it on another worker, where it would hang again
                    outcome[id(sim)] = failure_rows(sim.tasks, "timeout", timeout_error(report))
        # Not a future of an earlier run (restarted), nor of one that timed out above
        done = [sim for f in ready if (sim := open_[f.key]).future is f and id(sim) not in outcome]
        # The finished ones' rows in one fetch per client, not a round trip each
        for sim, (end, value) in zip(done, settle_all([sim.future for sim in done]), strict=True):
            if end == "ok":
                outcome[id(sim)] = value
            elif end == "lost" and sim.unconfirmed + 1 < UNCONFIRMED_DEATHS:
                sim.unconfirmed += 1  # its result vanished with a dead worker: run it again
                again(sim)
            else:
                deaths = Deaths(sim.client, _TOKEN, sim.allowed_failures)
                verdict = deaths.judge(sim, value)
                if verdict is None:
                    outcome[id(sim)] = failure_rows(sim.tasks, "failed", f"{type(value).__name__}: {value}")
                elif verdict == "crashed":
                    outcome[id(sim)] = failure_rows(sim.tasks, "crashed", deaths.crash_error(sim, value))
                elif verdict == "failed":  # it could not be run alone (IsolationFailed), a few times
                    outcome[id(sim)] = failure_rows(sim.tasks, "failed", deaths.isolation_error(sim, value))
                else:
                    again(sim)  # a single simulation is never split: it runs again, isolated
    return outcome


def _ended(ended: queue.SimpleQueue, timeout: float | None) -> list:
    """The futures in ``ended``: waits up to ``timeout`` seconds (None: until one ends) for the first, then takes
    every one there is without waiting."""
    try:
        ready = [ended.get(timeout=timeout)]
    except queue.Empty:
        return []
    while True:
        try:
            ready.append(ended.get_nowait())
        except queue.Empty:
            return ready


class SimulationService:
    """A backend (local, slurm, scheduler or service) for single simulations; closes what it started on exit."""

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
        # Insertion-ordered, by identity: a cancel drops its future in one step (a list was scanned per cancel, so
        # cancelling a queue of n futures took n^2/2 comparisons)
        self._queued: dict[ServiceSimulationFuture, None] = {}
        self._limits: Any = None  # the service's limits per job, once asked (see _job_limits)
        self._limits_known = False
        if backend == SERVICE_BACKEND:
            from simcal.service.remote import checked_options

            checked_options(self.backend_options)  # an unknown option fails here, naming the allowed ones

    @property
    def client(self):
        """The Dask client (``local``, ``slurm``, ``scheduler``), or the service's HTTP client (``service``)."""
        if self._client is None:
            if self.backend == SERVICE_BACKEND:
                from simcal.service.client import SimulationClient

                self._client = self._stack.enter_context(SimulationClient(self.backend_options.get("url")))
            else:
                # As in a sweep: Dask reports every worker death at once (allowed-failures 0) and simcal counts
                # them against settings.allowed_failures (simcal.outcomes.Deaths); both limits would multiply.
                self._client = self._stack.enter_context(
                    dask_client(self.backend, self.backend_options, self.threads, allowed_failures=0)
                )
        return self._client

    def submit(
        self, fn_ref: str, params: Mapping[str, Any], seed: int | None = None, replicate: int = 0
    ) -> SimulationFuture | ServiceSimulationFuture:
        if self.backend != SERVICE_BACKEND:
            return submit(
                fn_ref, params, seed, replicate=replicate, client=self.client, settings=self.settings
            )
        resolve_model(fn_ref)
        task = _task(fn_ref, params, None, replicate, self.settings)
        _check_whole_number("seed", seed)  # as on the other backends, before comparing it with the service's
        if seed is not None and int(seed) != task.seed:
            raise ContractError(
                f"submit(seed={seed}): the simulation service derives each seed from the settings' seed and "
                f"common_random_numbers, param_id and replicate (here {task.seed}, as in a sweep); leave seed out, "
                "or use a Dask backend (local, slurm, scheduler) for seeds of your own"
            )
        future = ServiceSimulationFuture(self, fn_ref, task)
        self._queued[future] = None
        return future

    def flush(self) -> None:
        """Send the queued simulations of the ``service`` backend (nothing to do otherwise): per model, as the jobs
        a sweep of them would go as (``service_chunks``), each within the service's simulations and request bytes
        per job."""
        from simcal.service.remote import checked_options

        queued, self._queued = list(self._queued), {}
        if not queued:
            return
        options = checked_options(self.backend_options)
        try:
            limits = self._job_limits()
        except Exception as error:
            for future in queued:
                future.send_error = error  # their result() raises it too, not "never sent"
            raise
        send_queued(queued, self.client, self.settings, options, limits)

    def _job_limits(self) -> Any:
        """The service's limits per job (``job_limits``: ``GET /v1/limits``), asked once per ``SimulationService``."""
        from simcal.service.remote import job_limits

        if not self._limits_known:
            self._limits, self._limits_known = job_limits(self.client), True
        return self._limits

    def forget(self, future: ServiceSimulationFuture) -> None:
        self._queued.pop(future, None)

    def gather(self, futures: Iterable[SimulationFuture | ServiceSimulationFuture]) -> pd.DataFrame:
        return gather(futures)

    def close(self) -> None:
        self._queued.clear()
        self._stack.close()

    def __enter__(self) -> SimulationService:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
