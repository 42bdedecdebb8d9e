"""Dask backends: a LocalCluster, a SLURM cluster from dask-jobqueue, or an existing scheduler.

Whatever the backend, ``dask_client`` yields a connected ``distributed.Client`` and, on every exit path
(success, exception, Ctrl-C, SIGTERM), closes what it started and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from simcal.contract import ContractError

log = logging.getLogger(__name__)

BACKENDS = ("local", "slurm", "scheduler")


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM/SIGHUP arrives, so context managers close clusters."""


@contextlib.contextmanager
def close_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Turn termination signals into an exception while the block runs (only possible in the main thread).

    SLURM jobs of a SLURMCluster are cancelled by ``cluster.close()``; a scheduler that kills the rule with
    SIGTERM would otherwise skip it and leave worker jobs running until their walltime.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def slurm_cluster_kwargs(options: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from the ``slurm`` backend options.

    Only cluster construction keys are returned; ``jobs`` and ``adaptive`` decide scaling (see ``slurm_scaling``).
    """
    known = {
        "account", "queue", "partition", "walltime", "cores", "memory", "processes", "job_extra_directives",
        "gpus", "interface", "local_directory", "log_directory", "job_script_prologue", "python", "jobs",
        "adaptive", "worker_extra_args", "job_cpu", "job_mem", "death_timeout",
    }  # fmt: skip
    unknown = set(options) - known
    if unknown:
        raise ContractError(
            f"calibration backend slurm: unknown options {sorted(unknown)}; known: {sorted(known)}"
        )
    if options.get("queue") and options.get("partition") and options["queue"] != options["partition"]:
        raise ContractError(
            "calibration backend slurm: give either 'queue' or 'partition', not two different ones"
        )
    kwargs: dict[str, Any] = {
        "cores": int(options.get("cores", 1)),
        "memory": str(options.get("memory", "4GB")),
        "processes": int(options.get("processes", 1)),
        "walltime": str(options.get("walltime", "01:00:00")),
    }
    queue = options.get("queue") or options.get("partition")
    if queue:
        kwargs["queue"] = str(queue)
    for key in ("account", "interface", "local_directory", "log_directory", "python", "job_cpu", "job_mem"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    # SIGKILL cannot be caught: workers whose scheduler vanished exit after this many seconds instead of
    # holding their allocation until the walltime.
    kwargs["death_timeout"] = options.get("death_timeout") or 60
    directives = [str(d) for d in options.get("job_extra_directives") or []]
    worker_args = [str(a) for a in options.get("worker_extra_args") or []]
    gpus = int(options.get("gpus") or 0)
    if gpus:
        # One GPU resource per worker process, so tasks asking resources={"GPU": 1} never share a device.
        directives.append(f"--gpus-per-node={gpus}")
        worker_args += ["--resources", f"GPU={max(1, gpus // kwargs['processes'])}"]
    kwargs["job_extra_directives"] = directives
    if worker_args:
        kwargs["worker_extra_args"] = worker_args
    if options.get("job_script_prologue"):
        kwargs["job_script_prologue"] = [str(line) for line in options["job_script_prologue"]]
    return kwargs


def slurm_scaling(options: Mapping[str, Any]) -> dict[str, Any]:
    """Either ``{"jobs": n}`` or ``{"minimum_jobs": a, "maximum_jobs": b}`` (adaptive)."""
    adaptive = options.get("adaptive")
    if adaptive:
        minimum, maximum = int(adaptive.get("minimum_jobs", 0)), int(adaptive.get("maximum_jobs", 1))
        if not 0 <= minimum <= maximum or maximum < 1:
            raise ContractError(
                f"calibration backend slurm: adaptive bounds {adaptive} need 0 <= minimum <= maximum, maximum >= 1"
            )
        return {"minimum_jobs": minimum, "maximum_jobs": maximum}
    return {"jobs": max(1, int(options.get("jobs", 1)))}


def make_slurm_cluster(options: Mapping[str, Any]):
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(**slurm_cluster_kwargs(options))
    scaling = slurm_scaling(options)
    if "jobs" in scaling:
        cluster.scale(jobs=scaling["jobs"])
    else:
        cluster.adapt(**scaling)
    return cluster


def scheduler_address(options: Mapping[str, Any]) -> str:
    address = options.get("address") or os.environ.get("DASK_SCHEDULER_ADDRESS")
    if not address:
        raise ContractError(
            "calibration backend scheduler: no address; set calibration.backend.scheduler.address "
            "or the DASK_SCHEDULER_ADDRESS environment variable"
        )
    return str(address)


def dashboard(client) -> str:
    try:
        link = client.dashboard_link
    except Exception:  # the dashboard needs bokeh; it is optional
        link = None
    return link or "unavailable (install bokeh for the Dask dashboard)"


@contextlib.contextmanager
def dask_client(
    backend: str = "local", options: Mapping[str, Any] | None = None, threads: int = 1
) -> Iterator[Any]:
    """A ``distributed.Client`` on the chosen backend; closes only what it started, on every exit path."""
    from distributed import Client, LocalCluster

    options = dict(options or {})
    if backend not in BACKENDS:
        raise ContractError(f"calibration backend {backend!r} is unknown; expected one of {list(BACKENDS)}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(close_on_signals())
        if backend == "scheduler":
            address = scheduler_address(options)
            # Connecting never owns the cluster: closing the client leaves the scheduler and workers running.
            client = stack.enter_context(Client(address, timeout=options.get("timeout", "30s")))
            log.info("connected to the existing Dask scheduler at %s", address)
        else:
            if backend == "local":
                workers = int(options.get("workers") or max(1, threads))
                cluster = stack.enter_context(
                    LocalCluster(
                        n_workers=workers,
                        threads_per_worker=int(options.get("threads_per_worker", 1)),
                        processes=bool(options.get("processes", True)),
                        dashboard_address=options.get("dashboard_address", ":0"),
                        memory_limit=options.get("memory_limit", "auto"),
                        silence_logs=logging.WARNING,
                    )
                )
                log.info("started a LocalCluster with %d worker(s)", workers)
            else:
                cluster = stack.enter_context(make_slurm_cluster(options))
                log.info("started a SLURMCluster; job script:\n%s", cluster.job_script())
            client = stack.enter_context(Client(cluster))
        log.info("Dask dashboard: %s", dashboard(client))
        yield client
