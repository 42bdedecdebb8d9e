"""The simulation service as the tests run it: ``simcal serve`` in a subprocess on 127.0.0.1, with a real Dask
cluster (its own LocalCluster, or one the test started and passes with --scheduler), and keys made by the library.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from testkit import REPO, require, venv_bin

TEST_MODELS = (
    REPO / ".tests" / "unit"
)  # simcal_models.py: the test models, importable by the service and workers


def service_available() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        require(False, "the service extra (fastapi, uvicorn)", "make venv installs it with .[dev]")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_final(http, job_id: str, timeout: float = 120) -> dict:
    """Poll ``GET /v1/jobs/{job_id}`` (an httpx client or FastAPI's TestClient) until the job has ended; its
    status. Fails naming the job when it has not ended within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = http.get(f"/v1/jobs/{job_id}").json()
        if info["status"] in ("succeeded", "failed", "cancelled"):
            return info
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end: {info}")


def make_keys(path: Path, *names: str) -> dict[str, str]:
    from simcal.service.keys import add_key

    return {name: add_key(path, name) for name in names}


class ServiceProcess:
    """``simcal serve`` on a free loopback port; ``stop``/``kill`` and ``start`` again on the same state."""

    def __init__(
        self,
        directory: Path,
        keys_file: Path,
        *args: str,
        env: dict[str, str] | None = None,
        port: int | None = None,
        argv: list[str] | None = None,
    ):
        """``argv``: a whole command line to run instead of ``simcal serve`` with ``args`` (it must listen on
        ``port``)."""
        self.directory, self.keys_file, self.args, self.argv = directory, keys_file, list(args), argv
        self.state_dir = directory / "state"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(TEST_MODELS), os.environ.get("PYTHONPATH")])),
            **(env or {}),
        }
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log = directory / "service.log"
        self.starts = 0

    def command(self, *extra: str) -> list[str]:
        if self.argv is not None:
            return [*self.argv, *extra]
        return [
            venv_bin("simcal"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
            "--api-keys-file", str(self.keys_file), "--state-dir", str(self.state_dir), *self.args, *extra,
        ]  # fmt: skip

    def start(self, *extra: str, ready: bool = True, timeout: float = 120) -> ServiceProcess:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"\n==== start {self.starts}: {' '.join(self.command(*extra)[1:])}\n".encode())
            self.process = subprocess.Popen(
                self.command(*extra),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        self.wait_for("/readyz" if ready else "/healthz", timeout)
        return self

    def wait_for(self, path: str, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"simcal serve exited with {self.process.returncode}:\n{self.log_text()[-4000:]}"
                )
            try:
                if httpx.get(self.url + path, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.url}{path} not ready after {timeout} s:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no clean-up code of the service runs (a crash, an OOM kill)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()
        # Its LocalCluster's workers are in the same session: end what SIGTERM left behind.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def http(self, key: str | None = None):
        """An httpx client of the service (with the key as bearer token, if given)."""
        import httpx

        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@contextlib.contextmanager
def services(tmp_path_factory):
    """Make services with ``make(*args, keys=(names...), env=..., start=True)``; every one still running at the end
    is stopped (the ``service_factory`` fixture of conftest.py)."""
    service_available()
    started: list[ServiceProcess] = []

    def make(*args: str, keys: tuple[str, ...] = ("alice",), env: dict | None = None, start: bool = True):
        directory = tmp_path_factory.mktemp("service")
        keys_file = directory / "keys"
        made = make_keys(keys_file, *keys)
        service = ServiceProcess(directory, keys_file, *args, env=env)
        service.keys = made
        started.append(service)
        if start:
            service.start()
        return service

    make.started = started  # read by conftest's report hook: a failed test's report shows their logs
    try:
        yield make
    finally:
        for service in started:
            service.stop()


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 (what an OpenTelemetry collector offers on /v1/traces): it decodes
    the protobuf requests the service's exporter sends and keeps the spans."""

    def __init__(self):
        import http.server
        import threading

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        spans = self.spans = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - the http.server interface
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        spans.extend(scope.spans)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def attributes(self, span) -> dict:
        return {a.key: next(v for _, v in a.value.ListFields()) for a in span.attributes}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
