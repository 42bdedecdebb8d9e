"""The HTTP API of the simulation service (FastAPI).

    POST   /v1/simulate               {fn_ref, parameter_sets, n_replicates, settings?, fixed?} -> 202 {job_id, ...}
    POST   /v1/simulate/sync          the same, answered with the results (Parquet); refused above a size
    GET    /v1/limits                 {max_simulations, sync_max_simulations, request_max_bytes}: what a job may hold
    GET    /v1/jobs[?status=S]        the caller's jobs, newest first
    GET    /v1/jobs/{job_id}          {status, progress: {done, total, failed}, results_path?, error?, ...}
    GET    /v1/jobs/{job_id}/results  the Parquet file, streamed
    DELETE /v1/jobs/{job_id}          cancel: its Dask tasks are cancelled
    GET    /healthz  /readyz  /metrics

Every /v1 call needs ``Authorization: Bearer <key>``; a key sees only its own jobs. Per-key rate limit (429 with
Retry-After), request body limit (413), model allow-list (403/422 naming fn_ref). A client may send an
``Idempotency-Key`` header with a submission, so that retrying it after a lost answer never makes a second job.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at run time, and the
# dependencies they name (Caller, JsonBody) are local to create_app.
import json
import logging
import math
import re
import sqlite3
import time
from typing import Annotated, Any

import anyio
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from simcal.service.jobs import JobManager, RequestRefused, ServiceConfig, plan_request
from simcal.service.keys import KeyRing
from simcal.service.limits import RateLimiter, retry_after_header
from simcal.service.registry import STATUSES
from simcal.service.results import LocalResults
from simcal.service.telemetry import Telemetry

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"[0-9a-f]{32}")
PARQUET = "application/vnd.apache.parquet"
REQUEST_FIELDS = {"fn_ref", "parameter_sets", "n_replicates", "settings", "fixed", "targets", "bundle_ref"}
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,128}")
SYNC_POLL_S = 0.1  # how often a synchronous request looks whether its job ended or its caller left
PROBE_THREADS = 4  # /readyz and /metrics get threads of their own: requests never queue them (see create_app)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413: at once from Content-Length, else while reading."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    def _message(self, size: str) -> str:
        return (
            f"request body of {size} bytes is over this service's limit of {self.max_bytes} bytes "
            "(its --request-max-bytes): send the parameter sets as several jobs, and values shared by all in fixed"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await JSONResponse({"detail": self._message(length.decode())}, status_code=413)(
                scope, receive, send
            )
            return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self._message(f"more than {self.max_bytes}"))
            return message

        await self.app(scope, limited_receive, send)


class RequestSpans:
    """One OpenTelemetry span per request (route template, method, status, the key's name)."""

    def __init__(self, app, telemetry: Telemetry):
        self.app, self.telemetry = app, telemetry

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self.telemetry.enabled:
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def record_status(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        with self.telemetry.span(
            f"{scope['method']} {scope['path']}", {"http.request.method": scope["method"]}
        ) as span:
            try:
                await self.app(scope, receive, record_status)
            finally:
                route = getattr(scope.get("route"), "path", None) or scope["path"]
                span.update_name(f"{scope['method']} {route}")
                self.telemetry.set(
                    span,
                    **{
                        "http.route": route,
                        "http.response.status_code": status["code"],
                        "simcal.key_name": (scope.get("state") or {}).get("key_name"),
                    },
                )
                if status["code"] >= 500:
                    self.telemetry.error(span, f"HTTP {status['code']}")


class ServiceMetrics:
    """The Prometheus collector: jobs by status, queue length, simulations per second and in total, workers."""

    def __init__(self, manager: JobManager, cluster):
        self.manager, self.cluster = manager, cluster

    def collect(self):
        counts, simulations = self.manager.counts_and_simulations()
        jobs = GaugeMetricFamily("simcal_jobs", "Jobs in the registry by status", labels=["status"])
        for status in STATUSES:
            jobs.add_metric([status], counts[status])
        yield jobs
        yield GaugeMetricFamily("simcal_queue_length", "Jobs waiting to start", value=counts["queued"])
        yield GaugeMetricFamily(
            "simcal_simulations_per_second",
            "Simulations per second of the running jobs",
            value=self.manager.running_rate(),
        )
        yield CounterMetricFamily(
            "simcal_simulations",
            "Simulations of the jobs that ended since the service started",
            value=simulations,
        )
        ready, _, workers = self.cluster.readiness()
        yield GaugeMetricFamily(
            "simcal_dask_workers", "Dask workers connected to the scheduler", value=workers
        )
        yield GaugeMetricFamily(
            "simcal_ready", "1 when the service can run jobs (see /readyz)", value=int(ready)
        )


def create_app(
    config: ServiceConfig,
    manager: JobManager,
    keyring: KeyRing,
    limiter: RateLimiter,
    telemetry: Telemetry,
    cluster,
    lifespan=None,
) -> FastAPI:
    app = FastAPI(
        title="simcal simulation service",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    metrics_registry = CollectorRegistry(auto_describe=False)
    metrics_registry.register(ServiceMetrics(manager, cluster))

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, error: RequestRefused):
        return JSONResponse({"detail": error.message}, status_code=error.status)

    @app.exception_handler(sqlite3.Error)
    async def registry_unusable(request: Request, error: sqlite3.Error):
        # A full or failing disk under --state-dir: a passing condition to the caller (503, retried), not a 500
        # with nothing but 'Internal Server Error'.
        log.error(
            "%s %s: the job registry %s: %s", request.method, request.url.path, manager.registry.path, error
        )
        return JSONResponse(
            {
                "detail": f"the service cannot use its job registry ({error}): its disk may be full or "
                "failing; retry later"
            },
            status_code=503,
            headers={"Retry-After": "10"},
        )

    def caller(request: Request) -> str:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            raise HTTPException(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                {"WWW-Authenticate": "Bearer"},
            )
        entry = keyring.entry_of(presented)
        if entry is None:
            raise HTTPException(401, "invalid API key", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        request.state.key_name = entry.name
        wait_s = limiter.acquire(entry.name)
        if wait_s:
            raise HTTPException(
                429,
                f"rate limit: at most {limiter.rate:g} requests/s (bursts of {limiter.burst}) per key; retry later",
                {"Retry-After": retry_after_header(wait_s)},
            )
        # The key, not its name, owns the jobs: a key added later under a revoked key's name sees none of them.
        return entry.owner

    Caller = Annotated[str, Depends(caller)]

    async def json_body(request: Request, owner: Caller) -> Any:
        # Read only after the key is checked (a parameter declared as Body would be parsed first): an anonymous
        # caller costs no body parsing and cannot dodge the per-key rate limit.
        raw = await request.body()
        if not raw.strip():
            raise RequestRefused(422, "the request body is empty: expected a JSON object")
        try:
            return json.loads(raw)
        except ValueError as error:
            raise RequestRefused(422, f"the request body is not JSON: {error}") from None
        except RecursionError:
            # Thousands of nested [ or {: malformed for this API, not a failure of the service (no 500).
            raise RequestRefused(
                422,
                "the request body nests arrays or objects too deeply to be read; a request needs only a few "
                "levels: {fn_ref, parameter_sets: [{name: value}, ...], n_replicates, settings, fixed}",
            ) from None

    JsonBody = Annotated[Any, Depends(json_body)]
    # Endpoints declared with plain ``def`` share one thread pool (40 threads): the probes must not wait behind
    # requests (a Kubernetes liveness probe that times out restarts the pod), so /healthz needs no thread and
    # /readyz and /metrics, which ask the scheduler, have their own; a synchronous request waits without one.
    probe_threads = anyio.CapacityLimiter(PROBE_THREADS)

    def owned_job(job_id: str, owner: str):
        job = manager.registry.get(job_id, owner) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} for this key")
        return job

    def describe(job) -> dict[str, Any]:
        return job.describe(manager.live_progress(job))

    def planned(body: Any, sync: bool):
        if not isinstance(body, dict):
            raise RequestRefused(422, "the request body must be a JSON object")
        unknown = sorted(set(body) - REQUEST_FIELDS)
        if unknown:
            raise RequestRefused(422, f"unknown request fields {unknown}; expected {sorted(REQUEST_FIELDS)}")
        return plan_request(body, config, sync=sync)

    def idempotency(request: Request) -> str | None:
        key = request.headers.get("idempotency-key")
        if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
            raise RequestRefused(
                422, f"Idempotency-Key {key[:140]!r}: expected 1 to 128 printable ASCII characters, no space"
            )
        return key

    @app.post("/v1/simulate", status_code=202)
    def simulate(request: Request, body: JsonBody, owner: Caller):
        plan = planned(body, sync=False)
        job, created = manager.submit(owner, plan, idempotency(request))
        headers = {"Location": f"/v1/jobs/{job.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(describe(job), status_code=202, headers=headers)

    def sync_hold_s(request: Request) -> float:
        """How long a synchronous request waits for its job: the caller's ``timeout_s`` (how long it waits for the
        answer), at most ``--sync-timeout-s``; so the caller hears 504 before its own timeout ends the request."""
        asked = request.query_params.get("timeout_s")
        if asked is None:
            return config.sync_timeout_s
        try:
            seconds = float(asked)
        except ValueError:
            seconds = math.nan
        if not (math.isfinite(seconds) and seconds > 0):
            raise RequestRefused(
                422, f"query parameter timeout_s={asked!r}: expected a number of seconds > 0"
            )
        return min(seconds, config.sync_timeout_s)

    @app.post("/v1/simulate/sync")
    async def simulate_sync(request: Request, body: JsonBody, owner: Caller):
        hold_s = sync_hold_s(request)

        def accept():
            return manager.submit(owner, planned(body, sync=True), idempotency(request))[0]

        job = await run_in_threadpool(accept)
        ended = manager.ended(job.id)
        deadline = time.monotonic() + hold_s
        while not ended.is_set():
            if manager.stop_asked.is_set():  # else uvicorn waits for it, then answers a bare 500
                raise HTTPException(
                    503,
                    f"the service is stopping; job {job.id} goes on when it starts again: poll /v1/jobs/{job.id}, "
                    "or send the request again with the same Idempotency-Key",
                    {"X-Simcal-Job-Id": job.id, "Retry-After": "10"},
                )
            if time.monotonic() >= deadline:
                raise HTTPException(
                    504,
                    f"job {job.id} did not finish within {hold_s:g} s; it goes on: poll /v1/jobs/{job.id}",
                    {"X-Simcal-Job-Id": job.id},
                )
            if await request.is_disconnected():
                log.info("job %s: its synchronous caller left; the job goes on", job.id)
                return Response(status_code=499)  # nobody reads it: nginx's "client closed request"
            await anyio.sleep(SYNC_POLL_S)
        job = await run_in_threadpool(manager.registry.get, job.id)
        if job.status != "succeeded":
            raise HTTPException(
                409 if job.status == "cancelled" else 422, f"job {job.id} {job.status}: {job.error}"
            )
        return results_response(job)

    @app.get("/v1/limits")
    def limits(owner: Caller):
        # What a client needs to cut a large sweep into jobs this service accepts (no 413 to act on afterwards).
        return {
            "max_simulations": config.max_simulations,
            "sync_max_simulations": min(config.sync_max_simulations, config.max_simulations),
            "request_max_bytes": config.request_max_bytes,
        }

    @app.get("/v1/jobs")
    def list_jobs(
        owner: Caller,
        status: Annotated[str | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ):
        if status is not None and status not in STATUSES:
            raise RequestRefused(422, f"status {status!r}: expected one of {list(STATUSES)}")
        return {"jobs": [describe(job) for job in manager.registry.list(owner, status, limit)]}

    @app.get("/v1/jobs/{job_id}")
    def show_job(job_id: str, owner: Caller):
        return describe(owned_job(job_id, owner))

    @app.delete("/v1/jobs/{job_id}")
    def cancel_job(job_id: str, owner: Caller):
        owned_job(job_id, owner)
        return describe(manager.cancel(job_id, owner))

    def results_response(job):
        name = f"{job.id}.parquet"
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Simcal-Job-Id": job.id}
        if isinstance(manager.results, LocalResults):
            return FileResponse(job.results_path, media_type=PARQUET, headers=headers)
        return StreamingResponse(
            manager.results.chunks(job.results_path), media_type=PARQUET, headers=headers
        )

    @app.get("/v1/jobs/{job_id}/results")
    def job_results(job_id: str, owner: Caller):
        job = owned_job(job_id, owner)
        if job.status != "succeeded":
            raise HTTPException(409, f"job {job_id} is {job.status}: results exist once it has succeeded")
        if not manager.results.exists(job.results_path):
            raise HTTPException(410, f"the results of job {job_id} are gone from {job.results_path}")
        return results_response(job)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        ready, reason, workers = await anyio.to_thread.run_sync(cluster.readiness, limiter=probe_threads)
        body = {"status": "ready" if ready else "not ready", "reason": reason, "workers": workers}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics():
        text = await anyio.to_thread.run_sync(generate_latest, metrics_registry, limiter=probe_threads)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, max_bytes=config.request_max_bytes)
    app.add_middleware(RequestSpans, telemetry=telemetry)
    return app
