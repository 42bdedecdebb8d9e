"""Assemble the service (registry, Dask client, results store, keys, rate limit, tracing) and run it with uvicorn."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import logging
import os
import socket
from pathlib import Path

from simcal.service.app import create_app
from simcal.service.cluster import Cluster
from simcal.service.jobs import JobManager, ServiceConfig
from simcal.service.keys import KeyRing
from simcal.service.limits import RateLimiter
from simcal.service.registry import JobRegistry
from simcal.service.results import results_store
from simcal.service.telemetry import Telemetry

log = logging.getLogger(__name__)


STATE_LOCK = "serve.lock"


def lock_state_dir(state_dir: Path):
    """Hold ``<state_dir>/serve.lock`` (an exclusive flock, released when the process ends, however it ends) and
    write this process's id into it; a ValueError naming the other process when one holds it. Two services on one
    state directory would each take the other's running jobs for interrupted ones at their start and run them
    again, into the same parts."""
    handle = open(state_dir / STATE_LOCK, "a+")  # noqa: SIM115 - held open for the life of the service
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES):
            handle.close()
            raise
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise ValueError(
            f"--state-dir {state_dir} is in use by another simcal serve (pid {holder}, in {STATE_LOCK}): one "
            "service per state directory; stop that one or give this one another --state-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Service:
    """Everything one service process holds; ``app`` starts and stops the rest in its lifespan."""

    def __init__(
        self,
        config: ServiceConfig,
        keys_file: str | Path,
        scheduler: str | None = None,
        results: str | None = None,
        azure_account_url: str | None = None,
        workers: int = 2,
        telemetry: Telemetry | None = None,
    ):
        self.config = config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._state_lock = lock_state_dir(config.state_dir)
        self.keyring = KeyRing(keys_file)  # a missing or malformed keys file stops the start, naming the line
        self.registry = JobRegistry(config.state_dir / "jobs.sqlite")
        # A registry whose jobs belong to names gives them to the keys of those names now, once.
        self.registry.move_bare_owners(
            {entry.name: entry.owner for entry in self.keyring.entries()}, str(keys_file)
        )
        self.results = results_store(results, config.state_dir, azure_account_url)
        self.cluster = Cluster(scheduler, workers=workers)
        self.telemetry = telemetry if telemetry is not None else Telemetry.from_environment()
        self.manager = JobManager(config, self.registry, self.cluster, self.results, self.telemetry)
        self.cluster.on_lost = self.manager.connection_lost
        self.limiter = RateLimiter(config.rate, config.burst)
        self.app = create_app(
            config, self.manager, self.keyring, self.limiter, self.telemetry, self.cluster, self.lifespan
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        self.cluster.start()
        self.manager.start()
        log.info(
            "simulation service ready to take jobs: state %s, results %s, Dask %s, models under %s",
            self.config.state_dir, getattr(self.results, "url", getattr(self.results, "directory", "")),
            self.cluster.describe(), ", ".join(self.config.allow_models),
        )  # fmt: skip
        try:
            yield
        finally:
            self.manager.stop()
            self.cluster.close()
            self.registry.close()
            self.telemetry.shutdown()
            self._state_lock.close()


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``--host``) is reachable from this machine alone: a loopback address, or a name all of whose
    addresses are loopback ones (``localhost``). ``0.0.0.0``, ``::``, an empty host (every address) and a name that
    does not resolve are not."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = (
            {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
            if host
            else set()
        )
    except (OSError, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def remote_exposure(host: str, port: int) -> str:
    """What anyone who can reach a service listening on ``host``:``port`` beyond this machine can do."""
    return (
        f"--host {host} --port {port} listens beyond this machine: anyone who can reach that port can try API keys "
        "against it and, with a key, run the models of --allow-models on the Dask cluster, list, read and cancel "
        "that key's jobs and download their results; the service speaks plain HTTP, so keys and results cross the "
        "network readable by anyone on the path unless a TLS proxy or a network policy stands in front of it"
    )


def check_exposure(host: str, port: int, allow_remote: bool) -> None:
    """A ValueError for a ``--host`` beyond loopback without ``--allow-remote`` (the one who starts it says they mean
    it); the warning of what that exposes when it is given."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise ValueError(
            f"{remote_exposure(host, port)}. Give --allow-remote to mean it, or leave --host out (127.0.0.1)"
        )
    log.warning("%s (--allow-remote given)", remote_exposure(host, port))


def listening_socket(host: str, port: int) -> socket.socket:
    """The socket the service will listen on, bound before anything starts: a port in use (another service) then
    stops ``simcal serve`` naming it, where uvicorn's own bind failed only once the service had logged that it was
    ready, recovered its registry and started its job threads and its cluster (exit 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ValueError(
            f"--host {host} --port {port}: cannot listen there ({error.strerror or error})"
        ) from None
    return sock


def serve(service: Service, sock: socket.socket) -> None:
    import uvicorn

    # log_config=None: uvicorn logs through the handlers simcal.logs set up; its access log shows the request line
    # only (no header, so never a key).
    config = uvicorn.Config(service.app, log_config=None, timeout_graceful_shutdown=30)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Before uvicorn waits for the requests in flight: the synchronous ones stop waiting for their jobs.
            service.manager.stop_asked.set()
            super().handle_exit(sig, frame)

    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is a way to stop it, not an error
        Server(config).run(sockets=[sock])
