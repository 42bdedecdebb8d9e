"""The service's one long-lived Dask client: to an existing scheduler, or to a LocalCluster it starts itself.

The connection is made in the background and retried, so the service answers ``/healthz`` at once and
``/readyz`` tells why it is not ready (the scheduler Deployment may start after the service's). Jobs wait for
the client; the runner's ``no_worker_timeout_s`` fails a job when no worker shows up for too long.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from simcal.backends import dask_client

log = logging.getLogger(__name__)

RETRY_S = 2.0
CONNECT_TIMEOUT = "10s"  # how long the client tries to reach (or reach again) the scheduler before it closes
PROBE_TIMEOUT_S = 5.0


def checked_scheduler(address: str) -> None:
    """A ValueError naming ``address`` unless Dask could ever connect to it: a known protocol, and a host and a port
    1..65535 (a malformed address was retried for ever, the service never ready, its reason only in /readyz)."""
    from distributed.comm.addressing import parse_address, parse_host_port
    from distributed.comm.registry import backends

    try:
        scheme, location = parse_address(address)
        if scheme not in backends:
            raise ValueError(f"unknown protocol {scheme!r} (Dask's are {', '.join(sorted(backends))})")
        if scheme != "inproc":
            _, port = parse_host_port(location)
            if not 0 < port <= 65535:
                raise ValueError(f"port {port} outside 1..65535")
    except ValueError as error:
        raise ValueError(
            f"--scheduler {address!r} (or $DASK_SCHEDULER_ADDRESS): {error}; expected a Dask scheduler address "
            "such as tcp://host:8786"
        ) from None


class Cluster:
    def __init__(self, scheduler: str | None, workers: int = 2, threads_per_worker: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            # Checked with or without --scheduler: a LocalCluster of no worker would never be ready.
            raise ValueError(f"--workers {workers!r}: expected an integer >= 1")
        if scheduler:
            checked_scheduler(scheduler)
        self.scheduler, self.workers, self.threads_per_worker = scheduler, workers, threads_per_worker
        self.backend = "scheduler" if scheduler else "local"
        self._client: Any = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._stack = contextlib.ExitStack()
        self.last_error: str | None = None
        self.on_lost: Callable[[], None] | None = None  # called when a connection that was up is lost
        self._thread = threading.Thread(target=self._connect, name="simcal-dask-connect", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _connect(self) -> None:
        """Connect (retrying), then hold the client until ``close``: it is closed in the thread that opened it
        (distributed's Client keeps a context variable that only that thread's context can reset). A client that
        closes meanwhile (it gives up reconnecting after ``CONNECT_TIMEOUT``: the scheduler was gone longer) is
        replaced by a new connection, retried until the scheduler is back."""
        try:
            while self._open():
                while not self._stop.wait(RETRY_S) and self._client.status != "closed":
                    pass
                if self._stop.is_set():
                    return
                self._ready.clear()
                self.last_error = "the connection was lost; reconnecting"
                log.warning("lost the Dask scheduler %s; reconnecting", self.describe())
                if self.on_lost is not None:
                    try:
                        self.on_lost()
                    except Exception:  # never lose the connect thread
                        log.exception("the handler of the lost connection failed")
                self._stack.close()
        finally:
            self._stack.close()

    def _open(self) -> bool:
        options = (
            {"address": self.scheduler, "timeout": CONNECT_TIMEOUT}
            if self.scheduler
            else {"workers": self.workers, "threads_per_worker": self.threads_per_worker}
        )
        while not self._stop.is_set():
            try:
                # allowed_failures=0 for the LocalCluster started here: the runner decides whom to blame.
                self._client = self._stack.enter_context(
                    dask_client(self.backend, options, allowed_failures=0)
                )
                self.last_error = None
                self._ready.set()
                return True
            except Exception as error:  # noqa: BLE001 - reported by /readyz, retried
                self.last_error = f"{type(error).__name__}: {error}"
                log.warning(
                    "cannot reach the Dask scheduler %s (%s); retrying", self.describe(), self.last_error
                )
                self._stop.wait(RETRY_S)
        return False

    def describe(self) -> str:
        return f"at {self.scheduler}" if self.scheduler else "of the LocalCluster"

    def client(self, timeout: float | None = None) -> Any:
        """The connected client (waits for the connection)."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"no connection to the Dask scheduler {self.describe()}: {self.last_error}")
        client = self._client
        if client.status != "running":  # reconnecting, or closed and about to be replaced: not for a new job
            time.sleep(min(timeout or RETRY_S, RETRY_S))
            raise TimeoutError(f"the connection to the Dask scheduler {self.describe()} is {client.status}")
        return client

    def readiness(self) -> tuple[bool, str, int]:
        """(ready, reason, workers): the scheduler is reachable and at least one worker is connected."""
        if not self._ready.is_set():
            reason = self.last_error or "still connecting"
            return False, f"cannot reach the Dask scheduler {self.describe()}: {reason}", 0
        client = self._client
        if client.status != "running":
            return False, f"the connection to the Dask scheduler {self.describe()} is {client.status}", 0
        try:  # a round trip to the scheduler, bounded: a probe must answer even when the scheduler does not
            identity = client.sync(client.scheduler.identity, n_workers=0, callback_timeout=PROBE_TIMEOUT_S)
            workers = int(identity.get("n_workers", 0))
        except Exception as error:  # noqa: BLE001
            return (
                False,
                f"the Dask scheduler {self.describe()} does not answer: {type(error).__name__}: {error}",
                0,
            )
        if not workers:
            return False, f"no Dask worker is connected to the scheduler {self.describe()}", 0
        return True, "ready", workers

    def dashboard(self) -> str | None:
        if not self._ready.is_set():
            return None
        with contextlib.suppress(Exception):
            return self._client.dashboard_link
        return None

    def close(self, timeout: float = 60.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
