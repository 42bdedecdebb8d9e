"""Client of the simulation service: submit simulations, follow the job, fetch the results as Parquet or pandas.

    from simcal.service.client import SimulationClient

    with SimulationClient("http://127.0.0.1:8000", api_key) as client:   # api_key None: $SIMCAL_API_KEY
        job = client.submit("simcal.models.sir:simulate", [{"beta": 0.3, "gamma": 0.1}], n_replicates=4)
        job.wait(timeout=600)
        table = job.to_pandas()

Answers 429 (honouring Retry-After in seconds, up to ``max_backoff_s``) and 503, and connection errors, are retried
with exponential backoff; every submission carries an ``Idempotency-Key``, the same on each retry, so a retried one
never makes a second job. A URL without http:// or https:// and a host is refused at once. Other answers raise an
exception named after the problem, with the service's explanation: ``AuthenticationError`` (401),
``PermissionDenied`` (403), ``NotFound`` (404), ``RequestRejected`` (other 4xx: 413 too large, 422 invalid),
``SyncTimeout`` (504: a synchronous request's job did not finish in time; it goes on).

A synchronous request tells the service how long the client waits (``sync_timeout_s``, by default the service's
default ``--sync-timeout-s``), and the client waits that long plus ``timeout`` for the answer: the service answers
504 within the shorter of the two limits, before the client would give up on a request the service still holds.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import random
import re
import ssl
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd

from simcal.contract import is_whole_number, python_scalar

# The errors live in client_errors; every one is still importable from here.
from simcal.service.client_errors import (  # noqa: F401
    ERRORS,
    AuthenticationError,
    JobFailed,
    NotFound,
    PermissionDenied,
    RateLimited,
    RequestRejected,
    ServiceError,
    ServiceUnavailable,
    SyncTimeout,
)
from simcal.tables import atomic_write, narrow_floats_as_written

API_KEY_VARIABLE = "SIMCAL_API_KEY"
URL_VARIABLE = "SIMCAL_SERVICE_URL"
FINAL = ("succeeded", "failed", "cancelled")
SYNC_TIMEOUT_S = 300.0  # the service's default --sync-timeout-s
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
KEY = re.compile(r"[\x21-\x7e]+")  # what an Authorization header can carry of a key, as one word


def ended_unsuccessfully(job_id: str, info: dict[str, Any]) -> str:
    """What a job that ended failed or cancelled says of itself (its status as the API shows it)."""
    return f"job {job_id} {info['status']}: {info.get('error')}"


def checked_url(url: str) -> str:
    """``url`` without a trailing slash; a ValueError unless it is http(s) with a host, so that ``localhost:8765``
    fails here, saying what is expected, rather than at the first request."""
    import httpx

    expected = f"an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000 (url or ${URL_VARIABLE})"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as error:
        raise ValueError(f"service URL {url!r} is not {expected}: {error}") from error
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"service URL {url!r} is not {expected}")
    return url.rstrip("/")


def checked_key(api_key: str | None) -> str:
    """``api_key`` without the whitespace around it (a key read from a file keeps its newline); a ValueError, which
    never shows the key, when there is none or it holds what no key has (a header could not carry it: the request
    would fail, retried, with the key in the error)."""
    api_key = (api_key or "").strip()
    if not api_key:
        raise ValueError(f"no API key: pass api_key or set {API_KEY_VARIABLE}")
    if not KEY.fullmatch(api_key):
        raise ValueError(
            f"the API key (api_key or ${API_KEY_VARIABLE}) has a space, a control or a non-ASCII character "
            "inside: a key is one word of printable ASCII, as `simcal keys add` printed it"
        )
    return api_key


def job_path(job_id: Any) -> str:
    """The API path of a job; a ValueError naming ``job_id`` unless it is one word of letters, digits, ``-`` and
    ``_``: a slash, ``?`` or ``#`` in it would make the request ask for something else (``<id>/results`` read the
    results as the job's status)."""
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        raise ValueError(
            f"job id {job_id!r}: expected the id of a job as `simcal jobs list` shows it (32 hex characters), "
            "not a path or URL"
        )
    return f"/v1/jobs/{job_id}"


def json_values(values: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``values`` as JSON carries them, numpy scalars as Python's (``python_scalar``: a float32 as written, as a
    sweep plans it; a table's int64 failed the request with 'Object of type int64 is not JSON serializable'); a
    ValueError naming ``where`` and the name for a NaN or an infinite number, which JSON cannot carry (it failed
    with 'Out of range float values are not JSON compliant'), and for a value that is not a number, a string, a
    boolean or None (a table's date)."""
    plain = {}
    for name, value in values.items():
        value = python_scalar(value)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(
                f"{where}: {name!r} is {value}: expected a finite number (a missing value of a table is NaN)"
            )
        # A table's date (Timestamp), a Decimal: httpx failed with 'Object of type ... is not JSON serializable'.
        if value is not None and not isinstance(value, bool | int | float | str):
            raise ValueError(
                f"{where}: {name!r} is a {type(value).__name__} ({value}): expected a number, a string or a boolean"
            )
        plain[name] = value
    return plain


def checked_replicates(n_replicates: Any) -> int:
    """``n_replicates`` as an int; a ValueError unless it is a whole number >= 1 (2.0 is 2; 2.5 and True are
    refused rather than sent as 2 and 1)."""
    if not is_whole_number(n_replicates, 1):
        raise ValueError(f"n_replicates must be a whole number >= 1, got {n_replicates!r}")
    return int(n_replicates)


def checked_seconds(name: str, seconds: Any, *, zero: bool = False, none: bool = False) -> float | None:
    """``seconds`` as a float; a ValueError naming ``name`` unless it is a finite number > 0 (>= 0 with ``zero``),
    or None where ``none`` allows it (returned as is)."""
    if seconds is None and none:
        return None
    number = not isinstance(seconds, bool) and isinstance(seconds, numbers.Real)
    if not number or not (0 <= seconds if zero else 0 < seconds) or not seconds < math.inf:
        expected = ">= 0" if zero else "> 0"
        raise ValueError(
            f"{name} must be a number of seconds {expected}{' or None' if none else ''}, got {seconds!r}"
        )
    return float(seconds)


# One encoder for every body: json.dumps with options builds a new one per call, which weighing a large sweep's
# parameter sets one by one (simcal.service.remote.RequestSize) paid for each set.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def json_bytes(value: Any) -> bytes:
    """``value`` as the client sends JSON: compact, UTF-8 (what the service's ``--request-max-bytes`` counts)."""
    return _JSON.encode(value).encode()


def request_body(
    fn_ref: str,
    parameter_sets: Sequence[Any],
    n_replicates: Any,
    settings: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
) -> bytes:
    """The body of a simulation request, byte for byte as ``submit`` sends it: its length is what the service
    compares with its ``request_max_bytes``. A ValueError for a value JSON cannot carry (``json_values``)."""
    body = {
        "fn_ref": fn_ref,
        "parameter_sets": [
            json_values(values, f"parameter_sets[{index}]") if isinstance(values, Mapping) else values
            for index, values in enumerate(parameter_sets)
        ],
        "n_replicates": checked_replicates(n_replicates),
    }
    if settings:
        body["settings"] = json_values(dict(settings), "settings")
    if fixed:
        body["fixed"] = json_values(dict(fixed), "fixed")
    return json_bytes(body)


def _detail(response) -> Any:
    try:
        return response.json().get("detail", response.text)
    except ValueError:
        return response.text


class SimulationClient:
    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 60.0,
        sync_timeout_s: float = SYNC_TIMEOUT_S,
        retries: int = 8,
        backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        transport: Any = None,
    ):
        import httpx

        url = url or os.environ.get(URL_VARIABLE)
        if not url:
            raise ValueError(f"no service URL: pass url or set {URL_VARIABLE}")
        api_key = checked_key(api_key or os.environ.get(API_KEY_VARIABLE))
        self.url = checked_url(url)
        self.timeout, self.sync_timeout_s = timeout, checked_seconds("sync_timeout_s", sync_timeout_s)
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> SimulationClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    def __repr__(self) -> str:  # never shows the key
        return f"<SimulationClient {self.url}>"

    # -- HTTP with retries ------------------------------------------------------------------------------------

    def _pause(self, attempt: int, retry_after: str | None = None) -> None:
        delay = min(self.max_backoff_s, self.backoff_s * 2**attempt) * random.uniform(0.5, 1.0)
        if retry_after and retry_after.isdigit():
            delay = min(self.max_backoff_s, max(delay, float(retry_after)))
        time.sleep(delay)

    def _refuse_tls_failure(self, method: str, path: str, error: Exception) -> None:
        """Raise ServiceUnavailable at once for a TLS handshake that cannot succeed (an https:// URL of an http://
        service, a certificate not trusted): retried, it cost every attempt's backoff, nearly a minute."""
        cause = error
        while cause is not None and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        if cause is None or isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):  # a connection cut
            return
        raise ServiceUnavailable(
            f"{method} {self.url}{path}: the TLS handshake failed ({cause}); not retried: check the URL's "
            "scheme (a service without TLS answers https:// this way) and the service's certificate"
        ) from error

    def _send(self, method: str, path: str, **kwargs):
        """The checked response; its ``reached_before`` tells whether an earlier attempt of this call may have
        reached the service (its answer was lost), so that what the service made then is this call's own."""
        import httpx

        reached_before = False
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.UnsupportedProtocol:
                raise  # a wrong URL, not a passing failure: retrying cannot help
            except httpx.TransportError as error:
                self._refuse_tls_failure(method, path, error)
                if last:
                    raise ServiceUnavailable(
                        f"{method} {self.url}{path}: no answer after {self.retries + 1} attempts ({error!r})"
                    ) from error
                reached_before |= not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                self._pause(attempt)
                continue
            if response.status_code in (429, 503) and not last:
                self._pause(attempt, response.headers.get("retry-after"))
                continue
            response.reached_before = reached_before
            return self._checked(method, path, response)
        raise AssertionError("unreachable")

    def _checked(self, method: str, path: str, response):
        status = response.status_code
        if status < 400:
            return response
        detail = _detail(response)
        message = f"{method} {self.url}{path}: {status} {detail}"
        if status == 401:
            message += f" (check the API key, e.g. ${API_KEY_VARIABLE})"
        if status == 404 and detail == "Not Found":  # no such route: a job it lacks, the service names
            message += (
                f" (no such call: is {self.url} the service's own address, without /v1 or another path? "
                f"url or ${URL_VARIABLE})"
            )
        if status == 429:
            raise RateLimited(message, status, detail)
        if status == 504:
            raise SyncTimeout(message, status, detail, response.headers.get("x-simcal-job-id"))
        if status >= 500:
            raise ServiceUnavailable(message, status, detail)
        raise ERRORS.get(status, RequestRejected)(message, status, detail)

    # -- the API ----------------------------------------------------------------------------------------------

    def _post_simulations(
        self, path, fn_ref, parameter_sets, n_replicates, settings, fixed, idempotency_key=None, **options
    ):
        if isinstance(parameter_sets, pd.DataFrame):  # to_dict gives float32 0.3 as 0.30000001192092896
            parameter_sets = narrow_floats_as_written(parameter_sets).to_dict("records")
        # Encoded here, not by httpx (whose encoding differs between versions): the bytes the service weighs.
        body = request_body(fn_ref, parameter_sets, n_replicates, settings, fixed)
        # The caller's key, or a fresh one per call: the retries of this call never make a second job.
        key = idempotency_key or uuid.uuid4().hex
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        return self._send("POST", path, content=body, headers=headers, **options)

    def submit(
        self,
        fn_ref: str,
        parameter_sets: Sequence[Mapping[str, Any]] | pd.DataFrame,
        n_replicates: int = 1,
        settings: Mapping[str, Any] | None = None,
        fixed: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queue a job: every parameter set × ``n_replicates`` through ``fn_ref`` on the service's cluster.

        With ``idempotency_key`` (1 to 128 printable ASCII characters, no space) a request the service has seen with that key
        before returns the job it made then (``job.replayed`` is True), whatever its status. When an attempt of
        this very call may have made the job (its answer was lost), the job is taken as this call's own
        (``job.replayed`` is False)."""
        response = self._post_simulations(
            "/v1/simulate", fn_ref, parameter_sets, n_replicates, settings, fixed, idempotency_key
        )
        info = response.json()
        job = Job(self, info["job_id"], info)
        replayed = response.headers.get("idempotent-replayed") == "true"
        job.replayed = replayed and not response.reached_before
        return job

    def simulate_sync(
        self,
        fn_ref: str,
        parameter_sets: Sequence[Mapping[str, Any]] | pd.DataFrame,
        n_replicates: int = 1,
        settings: Mapping[str, Any] | None = None,
        fixed: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
    ) -> pd.DataFrame:
        """Run a small job and return its rows at once (the service refuses large ones with 413). Waits up to
        ``timeout_s`` (None: the client's ``sync_timeout_s``) or the service's ``--sync-timeout-s``, whichever is
        shorter, for the job; then raises ``SyncTimeout`` naming the job, which goes on."""
        import httpx

        hold_s = self.sync_timeout_s if timeout_s is None else checked_seconds("timeout_s", timeout_s)
        response = self._post_simulations(
            "/v1/simulate/sync", fn_ref, parameter_sets, n_replicates, settings, fixed,
            params={"timeout_s": hold_s},
            # The service holds the request up to hold_s: wait that long, plus the usual timeout for the answer.
            timeout=httpx.Timeout(self.timeout, read=hold_s + self.timeout),
        )  # fmt: skip
        return pd.read_parquet(io.BytesIO(response.content))

    def limits(self) -> dict[str, int]:
        """The service's limits: ``max_simulations`` per job, ``sync_max_simulations`` per synchronous request (the
        lower of its two options) and ``request_max_bytes`` per request body. ``NotFound`` from a service too old
        to tell them."""
        return self._send("GET", "/v1/limits").json()

    def job(self, job_id: str) -> Job:
        job_path(job_id)
        return Job(self, job_id)

    def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._send("GET", "/v1/jobs", params=params).json()["jobs"]

    def status(self, job_id: str) -> dict[str, Any]:
        return self._send("GET", job_path(job_id)).json()

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._send("DELETE", job_path(job_id)).json()

    def download(self, job_id: str, handle: BinaryIO) -> None:
        """Write the job's results into ``handle``; a transfer cut short is started again from the beginning."""
        import httpx

        path = job_path(job_id) + "/results"
        for attempt in range(self.retries + 1):
            handle.seek(0)
            handle.truncate()
            try:
                with self._http.stream("GET", path) as response:
                    if response.status_code in (429, 503) and attempt < self.retries:
                        self._pause(attempt, response.headers.get("retry-after"))
                        continue
                    if response.status_code >= 400:
                        response.read()
                        self._checked("GET", path, response)
                    for block in response.iter_bytes():
                        handle.write(block)
                    return
            except httpx.UnsupportedProtocol:
                raise  # a wrong URL, not a passing failure: retrying cannot help
            except httpx.TransportError as error:
                self._refuse_tls_failure("GET", path, error)
                if attempt == self.retries:
                    raise ServiceUnavailable(f"GET {self.url}{path}: no answer ({error!r})") from error
                self._pause(attempt)


class Job:
    """A submitted job: ``status()``, ``wait()``, ``cancel()``, ``to_parquet(path)``, ``to_pandas()``."""

    def __init__(self, client: SimulationClient, job_id: str, info: Mapping[str, Any] | None = None):
        self.client, self.id = client, job_id
        self.info = dict(info or {})
        # Set by submit: the service returned the job an earlier request with the same key made.
        self.replayed = False

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.info.get('status', 'unknown')}>"

    def status(self) -> dict[str, Any]:
        self.info = self.client.status(self.id)
        return self.info

    def wait(self, timeout: float | None = None, poll_interval: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends; returns its status when it succeeded, raises JobFailed when it failed or was
        cancelled, TimeoutError after ``timeout`` seconds (the job goes on). A ValueError naming ``poll_interval``
        or ``timeout``, before anything is sent, unless each is a number of seconds (> 0; ``timeout`` >= 0 or
        None)."""
        poll_interval = checked_seconds("poll_interval", poll_interval)
        timeout = checked_seconds("timeout", timeout, zero=True, none=True)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            info = self.status()
            if info["status"] == "succeeded":
                return info
            if info["status"] in FINAL:
                raise JobFailed(ended_unsuccessfully(self.id, info), info)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"job {self.id} is still {info['status']} after {timeout:g} s ({info.get('progress')})"
                )
            time.sleep(
                poll_interval
                if deadline is None
                else max(0.0, min(poll_interval, deadline - time.monotonic()))
            )

    def cancel(self) -> dict[str, Any]:
        self.info = self.client.cancel(self.id)
        return self.info

    def to_parquet(self, path: str | Path) -> Path:
        """Download the results into ``path`` (written atomically)."""

        return atomic_write(path, lambda handle: self.client.download(self.id, handle))

    def to_pandas(self) -> pd.DataFrame:
        buffer = io.BytesIO()
        self.client.download(self.id, buffer)
        buffer.seek(0)
        return pd.read_parquet(buffer)
