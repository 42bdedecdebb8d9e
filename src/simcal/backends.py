"""Dask backends: a LocalCluster, a SLURM cluster from dask-jobqueue, or an existing scheduler.

Whatever the backend, ``dask_client`` yields a connected ``distributed.Client`` and, on every exit path
(success, exception, Ctrl-C, SIGTERM), closes what it started and nothing else. SLURM worker jobs retire
before their walltime (``--lifetime``) and adaptive scaling submits their replacements; a small reaper process
cancels them if the driver is killed outright (SIGKILL), when no cleanup code can run.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import wrapper_rules
from simcal.contract import ContractError, is_whole_number, mapping_of, reject_unknown_keys
from simcal.open_files import ensure_open_files

log = logging.getLogger(__name__)

BACKENDS = ("local", "slurm", "scheduler")
# Not a Dask backend: the simulations go to a simulation service (simcal.service.remote), whose own Dask
# cluster runs them. The runner's Simulator sends them there instead of opening a client.
SERVICE_BACKEND = "service"
# Thread workers are for debugging (a breakpoint in the model, state that does not pickle); what they give up:
THREAD_WORKERS_WARNING = (
    "backend.local.processes is false: the workers are threads of this process, so a model that crashes it "
    "(segfault, os._exit, out of memory) ends this job with every unsaved batch, and a simulation stuck in native "
    "code past timeout_s cannot be ended; use worker processes (the default) for real sweeps"
)


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM/SIGHUP arrives, so context managers close clusters and atomic writes
    remove their temporary files; its code is 128 + the signal. ``cluster``: whether a Dask cluster was open (and
    has been closed) when it arrived."""

    cluster = True


@contextlib.contextmanager
def close_on_signals(
    signals: tuple[int, ...] = tuple(wrapper_rules.TERMINATION_CAUSES), cluster: bool = True
) -> Iterator[None]:
    """Turn termination signals into an exception while the block runs (only possible in the main thread), then
    give the handlers found back: blocks nest, the innermost one's handler answers.

    SLURM jobs of a SLURMCluster are cancelled by ``cluster.close()``; a scheduler that kills the rule with
    SIGTERM would otherwise skip it and leave worker jobs running until their walltime. ``cluster=False``: the
    block opens no cluster (a wrapper's whole run, ``logs.failure_logged``), which the exception says, a Ctrl-C's
    ``KeyboardInterrupt`` too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        stop = Terminated(128 + signum)
        stop.cluster = cluster
        raise stop

    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    except KeyboardInterrupt as interrupt:
        # Ctrl-C stays Python's own exception; the innermost block marks it, so that its log line says whether a
        # cluster was open (closed by now: the cluster's with-statements, inside the block, unwound first).
        if not hasattr(interrupt, "cluster"):
            interrupt.cluster = cluster
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


SLURM_OPTIONS = {
    "account", "queue", "partition", "walltime", "cores", "memory", "processes", "job_extra_directives",
    "gpus", "interface", "local_directory", "log_directory", "job_script_prologue", "python", "jobs",
    "adaptive", "worker_extra_args", "job_cpu", "job_mem", "death_timeout", "lifetime", "lifetime_stagger",
}  # fmt: skip
WHERE_SLURM = "calibration.backend.slurm"
# A LocalCluster drops a worker for good when its restarted process has not joined within Dask's
# distributed.deploy.lost-worker-timeout (15 s). Crash isolation ends workers on purpose, and on a loaded machine a
# restart (a new Python, the model's imports) can take longer: the sweep would go on one worker short.
LOCAL_LOST_WORKER_TIMEOUT = "300s"
LOCAL_OPTIONS = ("workers", "threads_per_worker", "processes", "dashboard_address", "memory_limit")
WHERE_LOCAL = "calibration.backend.local"
SCHEDULER_OPTIONS = ("address", "timeout")


# The walltimes sbatch reads as no time limit besides 0 in any of its forms (slurm_opt.c: time_str2mins).
NO_LIMIT = ("UNLIMITED", "INFINITE")


def walltime_seconds(walltime: str) -> int | None:
    """SLURM's time formats (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) in seconds; None for no time limit, as
    sbatch reads 0 in any form ("A time limit of zero requests that no time limit be imposed", sbatch --time) and
    UNLIMITED or INFINITE."""
    if str(walltime).strip().upper() in NO_LIMIT:
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", str(walltime).strip())
    if not match:
        raise ContractError(
            f"{WHERE_SLURM}.walltime {walltime!r}: expected HH:MM:SS, MM:SS, MM or D-HH:MM:SS (0, UNLIMITED or "
            "INFINITE: no time limit)"
        )
    days, first, second, third = match.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
        total = int(days) * 86400 + hours * 3600 + minutes * 60 + seconds
    elif third is not None:  # HH:MM:SS
        total = int(first) * 3600 + int(second) * 60 + int(third)
    elif second is not None:  # MM:SS
        total = int(first) * 60 + int(second)
    else:
        total = int(first) * 60  # MM
    return total or None


def _seconds(value: Any, key: str) -> float:
    from dask.utils import parse_timedelta

    try:
        seconds = parse_timedelta(value, default="seconds")
    except (TypeError, ValueError, KeyError) as error:
        raise ContractError(
            f"{WHERE_SLURM}.{key} {value!r}: expected seconds or a duration like '50m'"
        ) from error
    if seconds is None or seconds <= 0:
        raise ContractError(f"{WHERE_SLURM}.{key} {value!r}: must be a positive duration")
    return float(seconds)


def worker_lifetime(options: Mapping[str, Any]) -> tuple[int, int] | None:
    """(lifetime, stagger) in seconds: workers retire gracefully at lifetime ± stagger, before the walltime
    ends their job, so adaptive scaling replaces them instead of losing them; None where no walltime ends them (0,
    UNLIMITED or INFINITE: walltime_seconds) and no ``lifetime`` is set: they are not retired.

    Defaults: a stagger of 5% of the walltime (at most 5 min; of the lifetime without a walltime) and a margin of
    15% (20 s to 10 min) before it, room for the worker's start-up before its lifetime counts and for its graceful
    close after.
    """
    walltime = walltime_seconds(options.get("walltime", "01:00:00"))
    lifetime = _seconds(options["lifetime"], "lifetime") if options.get("lifetime") else None
    if walltime is None and lifetime is None:
        return None
    stagger = (
        _seconds(options["lifetime_stagger"], "lifetime_stagger")
        if options.get("lifetime_stagger")
        else min(300.0, 0.05 * (walltime or lifetime))
    )
    if lifetime is None:
        lifetime = walltime - min(600.0, max(20.0, 0.15 * walltime)) - stagger
    if lifetime <= 0 or (walltime is not None and lifetime + stagger >= walltime):
        raise ContractError(
            f"{WHERE_SLURM}: lifetime ({lifetime:.0f} s) + lifetime_stagger ({stagger:.0f} s) must be positive and "
            f"shorter than the walltime {options.get('walltime', '01:00:00')} ({walltime} s), or workers end at "
            "their walltime instead of being replaced"
        )
    return int(lifetime), int(stagger)


def _whole_number(
    options: Mapping[str, Any], key: str, default: int, minimum: int, where: str = WHERE_SLURM
) -> int:
    """A whole-number option (the module's schema checks it too; the wrapper and the library alone do not)."""
    value = options.get(key)
    if value is None:
        return default
    if not is_whole_number(value, minimum):
        raise ContractError(f"{where}.{key} {value!r}: expected a whole number >= {minimum}")
    return int(value)


def _lines(options: Mapping[str, Any], key: str) -> list[str]:
    """A list-of-strings option; a single string would otherwise become one line per character."""
    value = options.get(key) or []
    if not isinstance(value, list | tuple):
        raise ContractError(f"{WHERE_SLURM}.{key} {value!r}: expected a list of strings")
    return [str(line) for line in value]


def slurm_cluster_kwargs(options: Mapping[str, Any], job_name: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from the ``slurm`` backend options.

    Only cluster construction keys are returned; ``jobs`` and ``adaptive`` decide scaling (see ``slurm_scaling``).
    """
    unknown = set(options) - SLURM_OPTIONS
    if unknown:
        raise ContractError(
            f"{WHERE_SLURM}: unknown options {sorted(unknown)}; known: {sorted(SLURM_OPTIONS)}"
        )
    if options.get("queue") and options.get("partition") and options["queue"] != options["partition"]:
        raise ContractError(f"{WHERE_SLURM}: give either 'queue' or 'partition', not two different ones")
    kwargs: dict[str, Any] = {
        "cores": _whole_number(options, "cores", 1, 1),
        "memory": str(options.get("memory", "4GB")),
        "processes": _whole_number(options, "processes", 1, 1),
        "walltime": str(options.get("walltime", "01:00:00")),
    }
    if job_name:
        kwargs["job_name"] = job_name
    queue = options.get("queue") or options.get("partition")
    if queue:
        kwargs["queue"] = str(queue)
    for key in ("account", "interface", "log_directory", "python", "job_cpu", "job_mem"):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    _quote_worker_command_paths(options, kwargs)
    # Workers whose scheduler vanished (the driver was killed) exit after this many seconds instead of holding
    # their allocation until the walltime.
    kwargs["death_timeout"] = options.get("death_timeout") or 60
    directives = _lines(options, "job_extra_directives")
    worker_args = _lines(options, "worker_extra_args")
    gpus = _whole_number(options, "gpus", 0, 0)
    if gpus:
        # One GPU resource per worker process, so tasks asking resources={"GPU": 1} never share a device.
        directives.append(f"--gpus-per-node={gpus}")
        worker_args += ["--resources", f"GPU={max(1, gpus // kwargs['processes'])}"]
    retired = worker_lifetime(options)
    if retired is not None:  # else no walltime ends a worker, and none is retired
        worker_args += ["--lifetime", f"{retired[0]}s", "--lifetime-stagger", f"{retired[1]}s"]
    kwargs["job_extra_directives"] = directives
    kwargs["worker_extra_args"] = worker_args
    if options.get("job_script_prologue"):
        kwargs["job_script_prologue"] = _lines(options, "job_script_prologue")
    return kwargs


def _quote_worker_command_paths(options: Mapping[str, Any], kwargs: dict[str, Any]) -> None:
    """dask-jobqueue writes the worker command into the job script joined with spaces, unquoted: a Python or
    local_directory path with a space ('/home/me/my project/.venv/bin/python') was split into words by bash and no
    worker started. Both are quoted here (a ``python`` option is a command as written: the user quotes it), and a
    log_directory with whitespace is refused: it goes unquoted into #SBATCH -e/-o lines and, as written, to
    os.makedirs, so no quoting serves both."""
    import dask.config  # where the cluster is made, as dask_jobqueue is

    if options.get("python") is None and dask.config.get("jobqueue.slurm.python", None) is None:
        kwargs["python"] = shlex.quote(sys.executable)
    if options.get("local_directory") is not None:
        kwargs["local_directory"] = shlex.quote(str(options["local_directory"]))
    if re.search(r"\s", str(options.get("log_directory") or "")):
        raise ContractError(
            f"{WHERE_SLURM}.log_directory {options['log_directory']!r} contains whitespace, which dask-jobqueue "
            "writes unquoted into the job script's #SBATCH -e/-o lines: choose a folder without spaces"
        )


def slurm_scaling(options: Mapping[str, Any]) -> dict[str, int]:
    """Adaptive bounds ``{"minimum_jobs": a, "maximum_jobs": b}``; a fixed ``jobs: n`` is adaptive between n and
    n, so that jobs retiring at their lifetime are replaced."""
    adaptive = options.get("adaptive")
    if adaptive is not None and not isinstance(adaptive, Mapping):
        raise ContractError(
            f"{WHERE_SLURM}.adaptive {adaptive!r}: expected {{minimum_jobs, maximum_jobs}} or null"
        )
    if adaptive:
        where = f"{WHERE_SLURM}.adaptive"
        reject_unknown_keys(adaptive, ("minimum_jobs", "maximum_jobs"), where)
        minimum = _whole_number(adaptive, "minimum_jobs", 0, 0, where)
        maximum = _whole_number(adaptive, "maximum_jobs", 1, 0, where)
        if not 0 <= minimum <= maximum or maximum < 1:
            raise ContractError(
                f"{WHERE_SLURM}.adaptive {dict(adaptive)}: need 0 <= minimum_jobs <= maximum_jobs and maximum_jobs >= 1"
            )
        return {"minimum_jobs": minimum, "maximum_jobs": maximum}
    jobs = _whole_number(options, "jobs", 1, 1)
    return {"minimum_jobs": jobs, "maximum_jobs": jobs}


REAPER = Path(__file__).with_name("reaper.py")


def start_reaper(job_name: str) -> subprocess.Popen:
    """A process in its own session that cancels this run's worker jobs (by their unique name) once the driver's
    end of its stdin pipe closes, which happens however the driver ends, SIGKILL included."""
    return subprocess.Popen(
        [sys.executable, str(REAPER), job_name, getpass.getuser()],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


@contextlib.contextmanager
def slurm_cluster(options: Mapping[str, Any]) -> Iterator[Any]:
    """A SLURMCluster scaled adaptively, with workers that retire before their walltime; its jobs are cancelled
    on every exit path, and by the reaper if this process is killed."""
    from dask_jobqueue import SLURMCluster

    scaling = slurm_scaling(options)  # bad settings fail before any job is submitted
    job_name = f"dask-worker-{secrets.token_hex(4)}"
    kwargs = slurm_cluster_kwargs(options, job_name)
    reaper = start_reaper(job_name)
    try:
        with SLURMCluster(**kwargs) as cluster:
            cluster.adapt(**scaling)
            log.info(
                "started a SLURMCluster (jobs named %s, adaptive %d-%d); job script:\n%s",
                job_name, scaling["minimum_jobs"], scaling["maximum_jobs"], cluster.job_script(),
            )  # fmt: skip
            yield cluster
    finally:
        reaper.stdin.close()  # the reaper cancels whatever is left under this name, then exits
        try:
            reaper.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.warning("the SLURM job reaper (pid %d) did not finish within 30 s", reaper.pid)


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


def worker_count(client) -> int:
    """Workers connected now, from the client's cached view of the scheduler (no round trip)."""
    try:
        return len(client.scheduler_info().get("workers", {}))
    except Exception:  # noqa: BLE001 - a client in trouble counts as having no workers
        return 0


def local_cluster_shape(options: Mapping[str, Any], threads: int = 1) -> tuple[int, int, bool]:
    """(workers, threads per worker, processes) of the ``local`` backend's options."""
    reject_unknown_keys(options, LOCAL_OPTIONS, WHERE_LOCAL)
    if not is_whole_number(threads, 0):  # SimulationService(threads="4") failed inside max(), naming nothing
        raise ContractError(
            f"threads {threads!r}: expected a whole number of threads >= 0 (the local backend starts a worker per "
            "thread, at least one, unless its workers option is given)"
        )
    workers = _whole_number(options, "workers", max(1, int(threads)), 1, WHERE_LOCAL)
    threads_per_worker = _whole_number(options, "threads_per_worker", 1, 1, WHERE_LOCAL)
    processes = options.get("processes", True)
    if not isinstance(processes, bool):  # bool("false") is True
        raise ContractError(f"{WHERE_LOCAL}.processes {processes!r}: expected true or false")
    return workers, threads_per_worker, processes


def check_backend(
    backend: str, options: Mapping[str, Any] | None = None, threads: int = 1, client: Any = None
) -> None:
    """Every check of a backend and its options that starts nothing: the name, options that are no mapping,
    unknown or malformed options, a scheduler's address. A sweep makes them before it writes anything, so a bad
    backend leaves no parts directory or progress file behind; ``dask_client`` makes them before it starts a
    cluster. With a ``client`` given, the options are not read further: they would start nothing."""
    if backend not in (*BACKENDS, SERVICE_BACKEND):
        raise ContractError(
            f"calibration backend {backend!r} is unknown; expected one of {[*BACKENDS, SERVICE_BACKEND]}"
        )
    options = mapping_of(options, f"calibration.backend.{backend}")
    if client is not None:
        return
    if backend == SERVICE_BACKEND:
        from simcal.service.remote import checked_options  # only where the service backend is asked for

        checked_options(options)
    elif backend == "local":
        local_cluster_shape(options, threads)
    elif backend == "slurm":
        slurm_scaling(options)
        slurm_cluster_kwargs(options)
    else:
        reject_unknown_keys(options, SCHEDULER_OPTIONS, "calibration.backend.scheduler")
        scheduler_address(options)


@contextlib.contextmanager
def dask_client(
    backend: str = "local",
    options: Mapping[str, Any] | None = None,
    threads: int = 1,
    allowed_failures: int | None = None,
) -> Iterator[Any]:
    """A ``distributed.Client`` on the chosen backend; closes only what it started, on every exit path.

    ``allowed_failures`` sets Dask's ``distributed.scheduler.allowed-failures`` (worker deaths a task may cause
    before it errs with KilledWorker) for the schedulers started here; an existing scheduler keeps its own.
    """
    import dask
    from distributed import Client, LocalCluster

    if backend == SERVICE_BACKEND:
        raise ContractError(
            "calibration backend 'service' has no Dask client here: its simulations run on the simulation "
            "service (simcal.service); only Simulator.run and simulate send work there"
        )
    check_backend(backend, options, threads)  # the name and every option, before anything starts
    options = dict(options or {})
    scheduler_config = (
        {} if allowed_failures is None else {"distributed.scheduler.allowed-failures": allowed_failures}
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(close_on_signals())
        if backend == "scheduler":
            address = scheduler_address(options)
            # Connecting never owns the cluster: closing the client leaves the scheduler and workers running.
            # TLS and credentials come from Dask's own configuration (distributed.comm.tls.*), as for any client.
            client = stack.enter_context(Client(address, timeout=options.get("timeout", "30s")))
            log.info("connected to the existing Dask scheduler at %s", address)
        else:
            with dask.config.set(scheduler_config):
                if backend == "local":
                    workers, threads_per_worker, processes = local_cluster_shape(options, threads)
                    ensure_open_files(workers, processes)  # the workers inherit the limit
                    # Worker processes talk TCP on loopback only; thread workers use in-process comms.
                    where = {"host": "127.0.0.1"} if processes else {}
                    # Read when a worker leaves, so held for the cluster's life (not only while it starts).
                    stack.enter_context(
                        dask.config.set({"distributed.deploy.lost-worker-timeout": LOCAL_LOST_WORKER_TIMEOUT})
                    )
                    cluster = stack.enter_context(
                        LocalCluster(
                            n_workers=workers,
                            threads_per_worker=threads_per_worker,
                            processes=processes,
                            dashboard_address=options.get("dashboard_address", "127.0.0.1:0"),
                            memory_limit=options.get("memory_limit", "auto"),
                            silence_logs=logging.WARNING,
                            **where,
                        )
                    )
                    log.info(
                        "started a LocalCluster with %d worker(s) at %s", workers, cluster.scheduler_address
                    )
                    if not processes:
                        log.warning(THREAD_WORKERS_WARNING)
                else:
                    # A retired worker's job leaves the adaptive plan after this long; then its replacement is
                    # submitted (Dask's default, 15 s, leaves the sweep a worker short for that long).
                    stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout": "3s"}))
                    cluster = stack.enter_context(slurm_cluster(options))
            client = stack.enter_context(Client(cluster))
        log.info("Dask dashboard: %s", dashboard(client))
        yield client
