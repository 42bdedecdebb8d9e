"""The simulation service's client (``simcal.service.client``) and the ``service`` backend of ``simcal.api`` at the
edges of HTTP: retries of 429/503 and lost connections, the idempotency key of a retried submission, a download
cut short, URLs and arguments refused before anything is sent, futures after their backend is closed.

Most answers here come from ``httpx.MockTransport`` (the client's ``transport=``): a real service cannot easily be
made to answer 429 then 200, or to cut a transfer in the middle. A cut transfer is a stream raising
``httpx.RemoteProtocolError`` midway, which is what httpx raises over a real socket when the peer closes before
Content-Length bytes have come. The rows, seeds and cancels of real jobs are tested against a running service in
test_service_jobs.py; docs/service.md's client example runs against one here, as written.
"""

from __future__ import annotations

import io
import json
import logging
import math
import re
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from testkit import REPO

from simcal.api import SimulationService
from simcal.contract import ContractError
from simcal.service.client import (
    Job,
    JobFailed,
    NotFound,
    RateLimited,
    RequestRejected,
    ServiceUnavailable,
    SimulationClient,
)

URL = "http://service.test"
MODEL = "simcal_models:noisy_line"


def client(handler, **options) -> SimulationClient:
    """A client answered by ``handler``, with backoffs short enough for a test."""
    return SimulationClient(
        URL, "sc_test-key", backoff_s=0.001, transport=httpx.MockTransport(handler), **options
    )


def answers(*responses):
    """A handler giving ``responses`` in turn (the last one from then on) and recording the requests; a callable
    makes a fresh response each time (a streamed one can be read once)."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer() if callable(answer) else answer

    handler.seen = seen
    return handler


QUEUED = httpx.Response(200, json={"job_id": "job-1", "status": "queued"})


# -- retries ----------------------------------------------------------------------------------------------------


def test_429_is_retried_after_the_seconds_in_retry_after():
    handler = answers(httpx.Response(429, headers={"Retry-After": "1"}, json={"detail": "slow down"}), QUEUED)
    began = time.monotonic()
    with client(handler) as api:
        job = api.submit(MODEL, [{"a": 1.0}])
    assert job.id == "job-1" and len(handler.seen) == 2
    assert time.monotonic() - began >= 1.0  # the backoff alone is milliseconds


def test_a_retry_after_longer_than_the_clients_longest_backoff_is_cut_to_it():
    """docs/service.md: 429 is retried after its Retry-After, at most max_backoff_s (30 s by default) later."""
    import inspect

    assert inspect.signature(SimulationClient).parameters["max_backoff_s"].default == 30.0
    handler = answers(
        httpx.Response(429, headers={"Retry-After": "60"}, json={"detail": "slow down"}), QUEUED
    )
    began = time.monotonic()
    with client(handler, max_backoff_s=0.2) as api:
        job = api.submit(MODEL, [{"a": 1.0}])
    assert job.id == "job-1" and len(handler.seen) == 2
    assert time.monotonic() - began < 5


def test_503_is_retried_until_the_service_answers():
    handler = answers(
        httpx.Response(503), httpx.Response(503), httpx.Response(200, json={"status": "running"})
    )
    with client(handler) as api:
        assert api.status("job-1") == {"status": "running"}
    assert len(handler.seen) == 3


def test_a_lost_connection_is_retried():
    handler = answers(
        httpx.ConnectError("connection refused"), httpx.Response(200, json={"status": "running"})
    )
    with client(handler) as api:
        assert api.status("job-1")["status"] == "running"
    assert len(handler.seen) == 2


def test_the_backoff_between_retries_doubles_from_backoff_s_up_to_max_backoff_s(monkeypatch):
    """docs/service.md: 503 and connection errors are retried with exponential backoff, each pause at most
    ``max_backoff_s``; a random factor of 0.5 to 1 spreads the clients (here 1: the pauses at their longest)."""
    from simcal.service import client as client_module

    def longest(low: float, high: float) -> float:
        assert (low, high) == (0.5, 1.0)
        return high

    slept: list[float] = []
    monkeypatch.setattr(client_module.time, "sleep", slept.append)
    monkeypatch.setattr(client_module.random, "uniform", longest)
    handler = answers(*[httpx.Response(503)] * 5, httpx.ConnectError("refused"), QUEUED)
    with SimulationClient(
        URL, "sc_test-key", backoff_s=1.0, max_backoff_s=5.0, transport=httpx.MockTransport(handler)
    ) as api:
        assert api.status("job-1")["status"] == "queued"
    assert slept == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_429_past_the_retries_raises_rate_limited_with_the_reason():
    handler = answers(httpx.Response(429, json={"detail": "10 requests per minute"}))
    with client(handler, retries=2) as api, pytest.raises(RateLimited, match="429 10 requests per minute"):
        api.status("job-1")
    assert len(handler.seen) == 3


def test_a_url_with_a_path_the_service_has_no_call_under_is_named_as_the_likely_mistake():
    """The service at http://host:8000 and the client given http://host:8000/v1: every call was a bare
    '404 Not Found' (FastAPI's answer for a path it has no route for), whatever the call."""
    handler = answers(httpx.Response(404, json={"detail": "Not Found"}))
    api = SimulationClient(f"{URL}/v1/", "sc_test-key", transport=httpx.MockTransport(handler))
    with api, pytest.raises(NotFound, match=rf"is {URL}/v1 the service's own address, without /v1"):
        api.jobs()
    assert str(handler.seen[0].url) == f"{URL}/v1/v1/jobs?limit=100"


def test_a_rejected_request_is_not_retried_and_its_reason_reaches_the_caller():
    handler = answers(httpx.Response(422, json={"detail": "parameter_sets: 'a' is missing"}))
    with client(handler) as api, pytest.raises(RequestRejected) as raised:
        api.submit(MODEL, [{"b": 1.0}])
    assert raised.value.status == 422 and "422 parameter_sets: 'a' is missing" in str(raised.value)
    assert len(handler.seen) == 1


def test_an_unknown_job_is_not_found_at_once():
    """A 404 the service explains (a job it lacks) is its explanation alone: the hint of a wrong URL is for the
    bare 'Not Found' of a path it has no call under."""
    handler = answers(httpx.Response(404, json={"detail": "no job job-9"}))
    with client(handler) as api, pytest.raises(NotFound) as raised:
        api.status("job-9")
    assert str(raised.value) == f"GET {URL}/v1/jobs/job-9: 404 no job job-9"
    assert len(handler.seen) == 1


def test_a_retried_submission_carries_the_same_idempotency_key_and_a_new_one_another():
    handler = answers(httpx.Response(503), QUEUED)
    with client(handler) as api:
        api.submit(MODEL, [{"a": 1.0}])
        api.submit(MODEL, [{"a": 1.0}])
    first, retry, second = (request.headers.get("Idempotency-Key") for request in handler.seen)
    assert first and first == retry  # the service sees one submission, not two
    assert second and second != first


def test_a_job_made_by_a_lost_answer_of_this_very_submission_is_not_taken_for_an_earlier_runs():
    """A POST whose answer is lost (a read timeout) may have made the job; the retry, same key, is answered with it
    (Idempotent-Replayed), and a short job may have ended meanwhile. That job is this call's own: send_tasks must
    use it, not take it for a killed run's ended job and send the simulations again under the chain's next key."""
    from simcal.service.remote import send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    made = {"job_id": "job-1", "status": "succeeded"}
    lost = answers(
        httpx.ReadTimeout("the answer was lost"),
        httpx.Response(202, json=made, headers=REPLAYED),
        httpx.Response(202, json={"job_id": "job-2", "status": "queued"}),  # a second job: what must not be
    )
    with client(lost) as api:
        job = send_tasks(
            api, MODEL, plan_tasks([{"a": 1.0}], 2), SimulationSettings(), "/results/sweep.parquet"
        )
    assert job.id == "job-1" and not job.replayed
    assert len(lost.seen) == 2, [request.headers["idempotency-key"] for request in lost.seen]
    # The retry of a request that never reached the service (no connection) is answered by an earlier run's job.
    earlier = answers(httpx.ConnectError("refused"), httpx.Response(202, json=made, headers=REPLAYED))
    with client(earlier) as api:
        assert api.submit(MODEL, [{"a": 1.0}], idempotency_key="k").replayed


REPLAYED = {"Idempotent-Replayed": "true"}


def keyed_service():
    """A handler standing for the service's job registry: a new key makes a queued job, a known key with the same
    request is answered with its job (Idempotent-Replayed), with another request refused (422), as the service does."""
    jobs: dict[str, tuple[dict, str]] = {}
    statuses: dict[str, str] = {}  # a job's status, "running" unless set

    def handler(request: httpx.Request) -> httpx.Response:
        key, body = request.headers["idempotency-key"], json.loads(request.content)
        if key not in jobs:
            jobs[key] = (body, f"job-{len(jobs) + 1}")
            return httpx.Response(202, json={"job_id": jobs[key][1], "status": "queued"})
        if jobs[key][0] != body:
            return httpx.Response(
                422, json={"detail": f"Idempotency-Key {key!r} was used for a different request"}
            )
        job_id = jobs[key][1]
        return httpx.Response(
            202, json={"job_id": job_id, "status": statuses.get(job_id, "running")}, headers=REPLAYED
        )

    handler.jobs, handler.statuses = jobs, statuses
    return handler


@pytest.mark.parametrize("ended", ["succeeded", "failed", "cancelled"])
def test_a_killed_runs_job_that_has_ended_in_any_way_is_sent_again_as_a_new_job_and_so_on(ended, caplog):
    """An ended job is never reused (docs/service.md: cancel a running job to make the rerun start it afresh): the
    request goes again under the next key of a chain, and a later rerun walks the same chain to its job."""
    from simcal.service.remote import send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    def send():
        return send_tasks(
            api, MODEL, plan_tasks([{"a": 1.0}], 2), SimulationSettings(), "/results/sweep.parquet"
        )

    handler = keyed_service()
    caplog.set_level(logging.INFO, logger="simcal")
    with client(handler) as api:
        killed_runs = send()
        handler.statuses[killed_runs.id] = ended
        rerun = send()
        assert rerun.id != killed_runs.id and not rerun.replayed
        assert f"not reused: {killed_runs.id} ({ended})" in caplog.text
        later = send()  # the rerun was killed in its turn: its job, still running, is taken up
        assert later.id == rerun.id and later.replayed
    assert len(handler.jobs) == 2


def test_a_service_that_answers_every_key_with_an_ended_job_stops_the_sweep_with_a_bounded_chain():
    """A broken service (one that replays an ended job for any key) would make the chain walk for ever: after
    MAX_ENDED_JOBS links the sweep stops, naming the service and the last job, having made no job."""
    from simcal.service.remote import MAX_ENDED_JOBS, send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    seen = []

    def broken(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["idempotency-key"])
        job = {"job_id": f"job-{len(seen)}", "status": "succeeded"}
        return httpx.Response(202, json=job, headers=REPLAYED)

    with client(broken) as api, pytest.raises(ContractError) as raised:
        send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 2), SimulationSettings(), "/results/sweep.parquet")
    assert len(seen) == MAX_ENDED_JOBS == len(set(seen))  # each a new key of the chain, then no more
    assert MAX_ENDED_JOBS == 100  # docs/service.md: "after 100 ended jobs in a row the sweep stops"
    assert api.url in str(raised.value) and f"job-{MAX_ENDED_JOBS} (succeeded)" in str(raised.value)


@pytest.mark.parametrize("sweep", [True, False])
def test_a_413_for_a_body_over_the_limit_names_one_set_and_replicate_singular_and_drops_the_fixed_advice(
    sweep,
):
    """The service's 413 for a body over --request-max-bytes advises sending the sets as several jobs and values
    shared by all in fixed: a sweep's jobs are cut by this client and carry no fixed (its fixed values are merged
    into every set), nor do submitted simulations, so that advice cannot be followed and is left out. One set of
    one replicate read "1 parameter sets x 1 replicates"."""
    from simcal.service.app import BodyLimit
    from simcal.service.remote import ServiceLimits, send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    refused = answers(httpx.Response(413, json={"detail": BodyLimit(None, 2000)._message("4400")}))
    with client(refused) as api, pytest.raises(ContractError) as raised:
        send_tasks(
            api, MODEL, plan_tasks([{"a": 1.0}], 1), SimulationSettings(), limits=ServiceLimits(40, 2000),
            sweep=sweep,
        )  # fmt: skip
    whose, kept = (
        ("this sweep", " The rows of the jobs that had finished are kept for the rerun")
        if sweep
        else ("the submitted simulations", "")
    )
    assert str(raised.value) == (
        f"the simulation service {URL} refused a job of {whose} (1 parameter set x 1 replicate) as too large: "
        "request body of 4400 bytes is over this service's limit of 2000 bytes (its --request-max-bytes); start "
        f"the service with a higher limit than the one named.{kept}"
    )


def test_a_rerun_that_changed_anything_of_a_job_sends_it_as_a_new_job():
    """The key covers the whole request: a rerun after a change of the model, a parameter, the replicates or a
    setting (timeout_s: the service would stop other simulations) is a new job, neither the killed run's job nor
    a request the service refuses for reusing its key; the same request again is the killed run's job."""
    from simcal.service.remote import send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    output, settings = "/results/sweep.parquet", SimulationSettings()
    handler = keyed_service()
    with client(handler) as api:
        first = send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 2), settings, output)
        again = send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 2), settings, output)
        assert again.id == first.id and again.replayed
        changed = [
            send_tasks(api, "simcal_models:counted_sleep", plan_tasks([{"a": 1.0}], 2), settings, output),
            send_tasks(api, MODEL, plan_tasks([{"a": 2.0}], 2), settings, output),
            send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 3), settings, output),
            send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 2), SimulationSettings(timeout_s=5.0), output),
            send_tasks(api, MODEL, plan_tasks([{"a": 1.0}], 2), SimulationSettings(seed=7), output),
        ]
    assert not any(job.replayed for job in changed)
    assert len({first.id, *(job.id for job in changed)}) == 6 == len(handler.jobs)


# -- downloads --------------------------------------------------------------------------------------------------


class CutShort(httpx.SyncByteStream):
    """A body that stops after its first half, as a dropped connection does."""

    def __init__(self, body: bytes):
        self.body = body

    def __iter__(self):
        yield self.body[: len(self.body) // 2]
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def parquet_bytes() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"param_id": ["p"] * 200, "y": range(200)}).to_parquet(buffer)
    return buffer.getvalue()


def test_a_download_cut_short_is_started_again_and_the_file_is_complete(tmp_path):
    body = parquet_bytes()
    handler = answers(httpx.Response(200, stream=CutShort(body)), httpx.Response(200, content=body))
    with client(handler) as api:
        path = Job(api, "job-1").to_parquet(tmp_path / "rows.parquet")
    assert path.read_bytes() == body and len(handler.seen) == 2
    assert pd.read_parquet(path)["y"].tolist() == list(range(200))


def test_a_download_answered_503_or_429_is_retried_and_the_file_is_complete(tmp_path):
    """docs/service.md: 429 and 503 are retried, and a job's results are downloaded through the same client (a
    service whose registry disk is full answers 503 with Retry-After for a while)."""
    body = parquet_bytes()
    handler = answers(
        httpx.Response(503, json={"detail": "retry later"}),
        httpx.Response(429, json={"detail": "slow down"}),
        lambda: httpx.Response(200, content=body),
    )
    with client(handler) as api:
        path = Job(api, "job-1").to_parquet(tmp_path / "rows.parquet")
    assert path.read_bytes() == body and len(handler.seen) == 3


def test_a_download_cut_short_every_time_leaves_no_file(tmp_path):
    body = parquet_bytes()
    handler = answers(lambda: httpx.Response(200, stream=CutShort(body)))
    with client(handler, retries=2) as api, pytest.raises(ServiceUnavailable, match="RemoteProtocolError"):
        Job(api, "job-1").to_parquet(tmp_path / "rows.parquet")
    assert len(handler.seen) == 3
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("running", "cancelling: still running, its batches on the workers are cancelled first"),
        ("queued", "cancelling: still queued, its batches on the workers are cancelled first"),
        ("succeeded", "succeeded: it had ended, so nothing was cancelled"),
        ("failed", "failed: it had ended, so nothing was cancelled"),
        ("cancelled", "cancelled"),
    ],
)
def test_simcal_jobs_cancel_says_whether_the_job_is_still_stopping_or_had_ended(
    monkeypatch, capsys, status, said
):
    """DELETE answers after 10 s at most with the job as it is then: a large job still stopping printed a bare
    '<id> running', as if the cancel had been ignored (found cancelling a running 100 000-simulation job)."""
    from simcal.cli import main
    from simcal.service import client as client_module

    job_id = "b6436e68b0b64ec6a8a99f83fe034b00"
    handler = answers(httpx.Response(200, json={"job_id": job_id, "status": status}))
    plain = client_module.SimulationClient
    monkeypatch.setattr(
        client_module,
        "SimulationClient",
        lambda url, key: plain(url, key, transport=httpx.MockTransport(handler)),
    )
    assert main(["jobs", "cancel", job_id, "--url", URL, "--api-key", "sc_test-key"]) == 0
    assert handler.seen[0].method == "DELETE"
    assert capsys.readouterr().out.strip() == f"{job_id} {said}" + (
        f"; `simcal jobs show {job_id}` says when it is cancelled" if status in ("queued", "running") else ""
    )


def mocked_jobs_command(monkeypatch, handler):
    """``simcal.cli.main`` with its ``jobs`` command's client answered by ``handler``."""
    from simcal.cli import main
    from simcal.service import client as client_module

    plain = client_module.SimulationClient
    monkeypatch.setattr(
        client_module,
        "SimulationClient",
        lambda url, key: plain(url, key, transport=httpx.MockTransport(handler)),
    )
    return main


LISTED = {
    "job_id": "b6436e68b0b64ec6a8a99f83fe034b00",
    "status": "failed",
    "progress": {"done": 7, "total": 9, "failed": 3},
    "submitted": "2026-01-02T03:04:05Z",
    "duration_s": 12.34,
    "fn_ref": MODEL,
}


def test_simcal_jobs_list_asks_for_its_status_and_limit_and_prints_the_jobs_as_json_or_a_table(
    monkeypatch, capsys
):
    """docs/service.md: ``simcal jobs list [--status S] [--limit N] [--json]``, a table of id, status,
    done/total, failed, submitted, duration, fn_ref."""
    handler = answers(lambda: httpx.Response(200, json={"jobs": [LISTED]}))
    main = mocked_jobs_command(monkeypatch, handler)
    common = ["--url", URL, "--api-key", "sc_test-key"]
    assert main(["jobs", "list", "--status", "failed", "--limit", "7", "--json", *common]) == 0
    assert dict(handler.seen[0].url.params) == {"status": "failed", "limit": "7"}
    assert json.loads(capsys.readouterr().out) == [LISTED]
    assert main(["jobs", "list", *common]) == 0
    assert dict(handler.seen[1].url.params) == {"limit": "100"}
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["JOB", "STATUS", "DONE/TOTAL", "FAILED", "SUBMITTED", "DURATION", "FN_REF"]
    assert row.split() == [LISTED["job_id"], "failed", "7/9", "3", "2026-01-02T03:04:05Z", "12.3s", MODEL]
    starts = [[word.start() for word in re.finditer(r"\S+", line)] for line in (header, row)]
    assert starts[0] == starts[1]  # each value under its column's name


@pytest.mark.parametrize(
    ("url", "key", "said"),
    [
        ("localhost:8765", "sc_test-key", "service URL 'localhost:8765' is not an http:// or https:// URL"),
        (URL, None, "no API key: pass api_key or set SIMCAL_API_KEY"),
    ],
)
def test_simcal_jobs_with_a_bad_url_or_no_key_says_so_and_exits_1_without_asking(
    monkeypatch, capsys, url, key, said
):
    monkeypatch.delenv("SIMCAL_API_KEY", raising=False)
    handler = answers(lambda: httpx.Response(200, json={"jobs": []}))
    main = mocked_jobs_command(monkeypatch, handler)
    assert main(["jobs", "list", "--url", url, *(["--api-key", key] if key else [])]) == 1
    assert capsys.readouterr().err.startswith(f"simcal jobs: {said}")
    assert handler.seen == []


# -- refused before sending ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["localhost:8765", "127.0.0.1:8765", "http://", "ftp://service.test", "/v1"])
def test_a_url_without_http_and_a_host_is_refused_at_once(url):
    began = time.monotonic()
    with pytest.raises(
        ValueError, match=rf"service URL '{url}' is not an http:// or https:// URL with a host"
    ):
        SimulationClient(url, "sc_test-key")
    assert time.monotonic() - began < 1.0


def test_a_key_read_with_its_newline_is_sent_without_it():
    handler = answers(QUEUED)
    api = SimulationClient(URL, " sc_test-key\n", transport=httpx.MockTransport(handler))
    with api:
        api.status("job-1")
    assert handler.seen[0].headers["authorization"] == "Bearer sc_test-key"


@pytest.mark.parametrize("key", ["sc_test key", "sc_test\nkey", "sc_tést-key", "sc_test\x00key"])
def test_a_key_no_header_can_carry_is_refused_at_once_without_showing_it(key):
    """Sent, httpx refuses the header on each of the retries, and its error quotes the header: the key."""
    with pytest.raises(ValueError, match=r"API key \(api_key or \$SIMCAL_API_KEY\) has a space") as refused:
        SimulationClient(URL, key)
    assert "sc_t" not in str(refused.value)


JOB = "88628f459588466fa72de3fc64b11039"


@pytest.mark.parametrize(
    "job_id",
    [f"{JOB}/results", f"{JOB}?status=x", f"{JOB}#", f"{URL}/v1/jobs/{JOB}", f" {JOB}", "", "../", ".", ".."],
)
@pytest.mark.parametrize("call", ["status", "cancel", "job", "to_pandas"])
def test_a_job_id_that_is_not_one_word_is_refused_naming_it_before_anything_is_sent(job_id, call):
    """Put into the path as it was, ``<id>/results`` read the Parquet file as the job's status (a UTF-8 error)
    and ``<id>?x`` another request's answer; httpx makes ``/v1/jobs/.`` the job list and ``/v1/jobs/..`` ``/v1``."""
    handler = answers(QUEUED)
    with (
        client(handler) as api,
        pytest.raises(ValueError, match=rf"job id {re.escape(repr(job_id))}: expected"),
    ):
        if call == "to_pandas":
            Job(api, job_id).to_pandas()
        else:
            getattr(api, call)(job_id)
    assert handler.seen == []


def test_numpy_values_are_sent_as_numbers_and_a_nan_or_infinite_one_is_refused_naming_it():
    """numpy scalars (a value taken from an array) failed the request with 'Object of type int64 is not JSON
    serializable'; a NaN (a table's missing value) with 'Out of range float values are not JSON compliant'."""
    handler = answers(QUEUED)
    with client(handler) as api:
        api.submit(MODEL, [{"a": np.float32(0.5), "n": np.int64(20)}], settings={"seed": np.int64(3)})
        sent = json.loads(handler.seen[0].content)
        assert sent["parameter_sets"] == [{"a": 0.5, "n": 20}] and sent["settings"] == {"seed": 3}
        api.submit(
            MODEL, [{"a": 1.0}], fixed=[("n", np.int64(2))], settings=[("seed", 1)]
        )  # pairs, as dict() takes
        sent = json.loads(handler.seen[1].content)
        assert sent["fixed"] == {"n": 2} and sent["settings"] == {"seed": 1}
        # float32 as written, as a sweep of the same design plans it (param_ids and seeds follow the values)
        api.submit(MODEL, pd.DataFrame({"a": np.array([0.3], np.float32)}), fixed={"b": np.float32(0.1)})
        sent = json.loads(handler.seen[2].content)
        assert sent["parameter_sets"] == [{"a": 0.3}] and sent["fixed"] == {"b": 0.1}
        table = pd.DataFrame({"a": [1.0, np.nan]})
        with pytest.raises(ValueError, match=r"parameter_sets\[1\]: 'a' is nan: expected a finite number"):
            api.submit(MODEL, table)
        with pytest.raises(ValueError, match=r"fixed: 'n' is inf: expected a finite number"):
            api.simulate_sync(MODEL, [{"a": 1.0}], fixed={"n": float("inf")})
    assert len(handler.seen) == 3


def test_a_value_json_cannot_carry_such_as_a_tables_date_is_refused_naming_it_before_anything_is_sent():
    """A design table's date column (pandas Timestamps) or a Decimal failed the request inside httpx with 'Object
    of type Timestamp is not JSON serializable', naming no parameter set or name; a parameter value is a number,
    a string or a boolean, on the service as in a sweep."""
    import datetime
    import decimal

    handler = answers(QUEUED)
    with client(handler) as api:
        table = pd.DataFrame({"a": [1.0, 2.0], "start": pd.to_datetime(["2020-03-01", "2020-03-02"])})
        with pytest.raises(ValueError) as refused:
            api.submit(MODEL, table)
        assert str(refused.value) == (
            "parameter_sets[0]: 'start' is a Timestamp (2020-03-01 00:00:00): expected a number, a string or a "
            "boolean"
        )
        with pytest.raises(ValueError) as refused:
            api.simulate_sync(MODEL, [{"a": 1.0}], fixed={"when": datetime.date(2020, 3, 1)})
        assert (
            str(refused.value)
            == "fixed: 'when' is a date (2020-03-01): expected a number, a string or a boolean"
        )
        with pytest.raises(ValueError) as refused:
            api.submit(MODEL, [{"a": 1.0}], settings={"timeout_s": decimal.Decimal("2.5")})
        assert str(refused.value) == (
            "settings: 'timeout_s' is a Decimal (2.5): expected a number, a string or a boolean"
        )
    assert handler.seen == []


def test_an_https_url_of_a_service_without_tls_fails_at_once_saying_so():
    """A real HTTP server on loopback asked over https://: the handshake fails the same way every time, and was
    retried with backoff for nearly a minute before 'no answer after 9 attempts'."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://127.0.0.1:{server.server_address[1]}"
    try:
        began = time.monotonic()
        with SimulationClient(url, "sc_test-key") as api:
            for call in (lambda: api.status("job-1"), lambda: Job(api, "job-1").to_pandas()):
                with pytest.raises(
                    ServiceUnavailable, match=r"the TLS handshake failed .*; not retried: check"
                ):
                    call()
        assert time.monotonic() - began < 5
    finally:
        server.shutdown()
        server.server_close()


def test_a_tls_connection_cut_midway_is_retried_as_a_lost_connection_not_refused_as_a_failed_handshake():
    """Only a handshake that cannot succeed is refused at once: an SSL EOF (the peer closed the TLS connection, as
    a restarting service does) is a connection cut, retried like any other."""
    import ssl

    cut = httpx.ReadError("EOF occurred in violation of protocol")
    cut.__cause__ = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    handler = answers(cut, httpx.Response(200, json={"status": "running"}))
    with client(handler) as api:
        assert api.status("job-1")["status"] == "running"
    assert len(handler.seen) == 2


def test_an_unsupported_protocol_is_not_retried():
    handler = answers(httpx.UnsupportedProtocol("Request URL has an unsupported protocol"))
    with client(handler) as api, pytest.raises(httpx.UnsupportedProtocol):
        api.status("job-1")
    assert len(handler.seen) == 1


def test_a_download_over_an_unsupported_protocol_is_not_retried():
    handler = answers(httpx.UnsupportedProtocol("Request URL has an unsupported protocol"))
    with client(handler) as api, pytest.raises(httpx.UnsupportedProtocol):
        Job(api, "job-1").to_pandas()
    assert len(handler.seen) == 1


@pytest.mark.parametrize("n_replicates", [2.5, 0, -1, True, "2", float("nan")])
def test_n_replicates_must_be_a_whole_number_of_at_least_one(n_replicates):
    handler = answers(QUEUED)
    with client(handler) as api, pytest.raises(ValueError, match="n_replicates must be a whole number >= 1"):
        api.submit(MODEL, [{"a": 1.0}], n_replicates=n_replicates)
    assert handler.seen == []


def test_a_whole_float_n_replicates_is_sent_as_an_int():
    handler = answers(QUEUED)
    with client(handler) as api:
        api.submit(MODEL, [{"a": 1.0}], n_replicates=2.0)
    assert json.loads(handler.seen[0].content)["n_replicates"] == 2


# -- the service backend of simcal.api ------------------------------------------------------------------------------


def fake_service(status: str = "running"):
    """A handler standing for a service with one job, ``job-1``, that stays ``status``; records the requests."""
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "POST":
            return QUEUED
        if request.method == "DELETE":
            return httpx.Response(200, json={"job_id": "job-1", "status": "cancelled"})
        return httpx.Response(200, json={"job_id": "job-1", "status": status})

    handler.seen = seen
    return handler


def test_cancel_of_a_sent_future_cancels_its_job_on_the_service():
    handler = fake_service()
    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        future = service.submit(MODEL, {"a": 1.0})
        assert not future.done()  # sends it
        future.cancel()
    assert handler.seen[-1] == ("DELETE", "/v1/jobs/job-1")


def test_a_job_is_cancelled_only_once_none_of_its_simulations_is_wanted():
    handler = fake_service()
    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        kept, dropped = service.submit(MODEL, {"a": 1.0}), service.submit(MODEL, {"a": 2.0})
        service.flush()
        dropped.cancel()
        assert ("DELETE", "/v1/jobs/job-1") not in handler.seen  # kept's rows are still wanted
        kept.cancel()
    assert handler.seen.count(("DELETE", "/v1/jobs/job-1")) == 1


def test_cancelling_n_queued_or_sent_futures_takes_work_proportional_to_n_not_n_squared(monkeypatch):
    """A cancel of a queued future scanned the queue for it (a list's `in` and `remove`), and one of a sent future
    read every future of its job to see whether all were cancelled: cancelling n futures compared or read some n^2/2
    of them (80 000 for 400). Counted here, not timed: the futures' comparisons and reads of `cancelled`."""
    from simcal.api_service import ServiceSimulationFuture

    counts = {"compared": 0, "read": 0}

    def equal(self, other):
        counts["compared"] += 1
        return self is other

    def cancelled(self):
        counts["read"] += 1
        return self.__dict__.get("_cancelled", False)

    def set_cancelled(self, value):
        self.__dict__["_cancelled"] = value

    monkeypatch.setattr(ServiceSimulationFuture, "__eq__", equal)
    monkeypatch.setattr(ServiceSimulationFuture, "__hash__", object.__hash__)
    monkeypatch.setattr(
        ServiceSimulationFuture, "cancelled", property(cancelled, set_cancelled), raising=False
    )
    n = 400
    handler = fake_service()
    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        queued = [service.submit(MODEL, {"a": float(i)}) for i in range(n)]
        counts.update(compared=0, read=0)
        for future in reversed(queued):  # the last first: a list's scan meets every other future on the way
            future.cancel()
        assert counts["compared"] <= n and counts["read"] <= 2 * n
        assert all(future.done() for future in queued) and handler.seen == []  # nothing was sent
        sent = [service.submit(MODEL, {"a": float(i)}) for i in range(n)]
        service.flush()
        jobs = {id(future.job) for future in sent}
        counts.update(compared=0, read=0)
        for future in sent:
            future.cancel()
            future.cancel()  # a second cancel does nothing
        assert counts["compared"] <= n and counts["read"] <= 3 * n
    # each job once, with its last future
    assert handler.seen.count(("DELETE", "/v1/jobs/job-1")) == len(jobs)


def test_the_services_limits_are_asked_once_per_simulation_service_and_only_when_something_is_sent():
    handler = fake_service()
    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        service.flush()  # nothing queued: no request at all
        assert handler.seen == []
        service.submit(MODEL, {"a": 1.0}).done()
        service.submit(MODEL, {"a": 2.0}).done()
    assert handler.seen.count(("GET", "/v1/limits")) == 1
    assert handler.seen.count(("POST", "/v1/simulate")) == 2


def test_a_future_left_unsent_by_close_is_done_and_its_result_says_why(monkeypatch):
    monkeypatch.setenv("SIMCAL_API_KEY", "sc_test-key")
    with SimulationService(backend="service", backend_options={"url": URL}) as service:
        future = service.submit(MODEL, {"a": 1.0})
    assert future.done()  # as a Dask backend's future once its client is closed
    with pytest.raises(ContractError, match="was never sent: its SimulationService was closed first"):
        future.result()


def test_a_sent_future_whose_client_is_closed_is_done_and_its_result_says_why():
    handler = fake_service()
    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        future = service.submit(MODEL, {"a": 1.0})
        service.flush()
    assert future.done()
    with pytest.raises(ContractError, match="closed before the job's rows were fetched"):
        future.result()


@pytest.mark.parametrize("seed", ["abc", 1.5, -1, True])
def test_seed_on_the_service_backend_is_checked_as_on_the_others(seed):
    with SimulationService(backend="service", backend_options={"url": URL}) as service:
        with pytest.raises(ContractError, match=rf"submit: seed must be a whole number >= 0, got {seed!r}"):
            service.submit(MODEL, {"a": 1.0}, seed=seed)


# -- waiting, and a service that does not answer ----------------------------------------------------------------


@pytest.mark.timeout(15)
def test_wait_past_its_timeout_raises_timeout_error_and_leaves_the_job_running():
    handler = fake_service("running")
    with client(handler) as api:
        began = time.monotonic()
        with pytest.raises(TimeoutError, match=r"job job-1 is still running after 0.3 s"):
            Job(api, "job-1").wait(timeout=0.3, poll_interval=0.05)
    assert 0.3 <= time.monotonic() - began < 5
    assert {method for method, _ in handler.seen} == {"GET"}  # the job goes on: nothing cancels it


def test_wait_polls_no_later_than_its_timeout_when_the_poll_interval_is_longer(monkeypatch):
    """Job.wait: TimeoutError after ``timeout`` seconds, not after the next whole ``poll_interval``: the last pause
    is cut to what is left of the timeout (the clock here is the test's: no time passes but the pauses)."""
    from simcal.service import client as client_module

    clock = [1000.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(client_module.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(client_module.time, "sleep", sleep)
    handler = fake_service("running")
    with client(handler) as api, pytest.raises(TimeoutError, match="job job-1 is still running after 2.5 s"):
        Job(api, "job-1").wait(timeout=2.5, poll_interval=1.0)
    assert slept == [1.0, 1.0, 0.5] and clock[0] == 1002.5
    assert len(handler.seen) == 4  # at 0, 1, 2 and 2.5 s


@pytest.mark.parametrize(
    "options, message",
    [
        ({"poll_interval": -1}, "poll_interval must be a number of seconds > 0, got -1"),
        ({"poll_interval": None}, "poll_interval must be a number of seconds > 0, got None"),
        ({"poll_interval": "1"}, "poll_interval must be a number of seconds > 0, got '1'"),
        ({"timeout": "600"}, "timeout must be a number of seconds >= 0 or None, got '600'"),
        ({"timeout": -5}, "timeout must be a number of seconds >= 0 or None, got -5"),
    ],
)
def test_wait_refuses_a_poll_interval_or_timeout_that_is_no_number_of_seconds_naming_it(options, message):
    """Job.wait(poll_interval=-1) failed after a first request with 'sleep length must be non-negative', a timeout
    of '600' (read from the environment) with "unsupported operand type(s) for +: 'float' and 'str'": neither named
    the argument. Refused before anything is sent, naming it (as the service backend's poll_interval_s is)."""
    handler = fake_service("running")
    with client(handler) as api, pytest.raises(ValueError) as refused:
        Job(api, "job-1").wait(**options)
    assert str(refused.value) == message
    assert handler.seen == []


@pytest.mark.parametrize(
    ("seconds", "options", "expected"),
    [
        (2, {}, 2.0),
        (0, {"zero": True}, 0.0),
        (None, {"none": True}, None),
        (0, {}, "timeout must be a number of seconds > 0, got 0"),
        (None, {}, "timeout must be a number of seconds > 0, got None"),
        (-1, {"zero": True, "none": True}, "timeout must be a number of seconds >= 0 or None, got -1"),
        (float("inf"), {"zero": True}, "timeout must be a number of seconds >= 0, got inf"),
        (
            float("nan"),
            {"zero": True, "none": True},
            "timeout must be a number of seconds >= 0 or None, got nan",
        ),
        (True, {"zero": True}, "timeout must be a number of seconds >= 0, got True"),
    ],
)
def test_one_seconds_checker_takes_zero_and_none_only_where_the_caller_allows_them(
    seconds, options, expected
):
    """Job.wait checked its timeout inline beside checked_seconds (a variant allowing 0 and None): one checker now
    serves both, with the messages the callers gave before."""
    from simcal.service.client import checked_seconds

    if isinstance(expected, str):
        with pytest.raises(ValueError) as refused:
            checked_seconds("timeout", seconds, **options)
        assert str(refused.value) == expected
    else:
        assert checked_seconds("timeout", seconds, **options) == expected


@pytest.mark.timeout(15)
def test_wait_raises_job_failed_for_a_cancelled_job_as_for_a_failed_one():
    """Job.wait: JobFailed when the job failed or was cancelled. Polled on, a cancelled job would end the wait with a
    TimeoutError, which says the job is still going on."""
    cancelled = {"job_id": "job-1", "status": "cancelled", "error": "cancelled by request"}
    handler = answers(httpx.Response(200, json=cancelled))
    with (
        client(handler) as api,
        pytest.raises(JobFailed, match="^job job-1 cancelled: cancelled by request$") as raised,
    ):
        Job(api, "job-1").wait(timeout=2, poll_interval=0.01)
    assert raised.value.job == cancelled and len(handler.seen) == 1


@pytest.mark.timeout(15)
def test_a_service_job_past_wait_timeout_s_is_cancelled_and_the_error_names_it():
    from simcal.service.remote import finish_job

    handler = fake_service("running")
    with client(handler) as api, pytest.raises(TimeoutError) as raised:
        finish_job(Job(api, "job-1"), [], {"wait_timeout_s": 0.2, "poll_interval_s": 0.02})
    assert "service job job-1 still running after calibration.backend.service.wait_timeout_s = 0.2 s" in str(
        raised.value
    )
    assert handler.seen[-1] == ("DELETE", "/v1/jobs/job-1")


def test_a_refused_connection_past_the_retries_names_the_request_and_a_500_is_not_retried():
    from servicekit import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with SimulationClient(url, "sc_test-key", retries=2, backoff_s=0.001) as api:
        with pytest.raises(ServiceUnavailable) as raised:
            api.status("job-1")
    assert str(raised.value).startswith(f"GET {url}/v1/jobs/job-1: no answer after 3 attempts (ConnectError")
    assert raised.value.status is None
    handler = answers(httpx.Response(500, text="Internal Server Error"))
    with (
        client(handler) as api,
        pytest.raises(ServiceUnavailable, match="500 Internal Server Error") as raised,
    ):
        api.status("job-1")
    assert raised.value.status == 500 and len(handler.seen) == 1


def test_rows_of_keeps_the_tasks_rows_and_gives_a_task_without_rows_a_failure_row_naming_the_job():
    from simcal.service.remote import rows_of
    from simcal.tasks import plan_tasks

    asked, unasked, missing = plan_tasks([{"a": 1.0}, {"a": 2.0}, {"a": 3.0}], 1, seed=7)
    frame = pd.DataFrame(
        [
            {
                "param_id": t.param_id,
                "replicate": t.replicate,
                "seed": t.seed,
                "y": t.params["a"],
                "status": "ok",
            }
            for t in (asked, unasked)
        ]
    )
    rows = rows_of(frame, [asked, missing], "job-1")
    assert rows["param_id"].tolist() == [asked.param_id, missing.param_id]
    assert rows["status"].tolist() == ["ok", "failed"]
    assert rows["error"].iloc[1] == "InternalError: service job job-1 returned no rows for it"
    other_seeds = frame.assign(seed=frame["seed"] + 1)
    with pytest.raises(ContractError, match="service job job-1 planned other seeds than this run"):
        rows_of(other_seeds, [asked], "job-1")


def test_a_job_that_returned_no_rows_at_all_gives_each_task_a_failure_row_naming_the_job():
    """rows_of: a task without rows gets a failure row saying so; a job that returned none at all planned no other
    seeds (there are none to compare), so every task gets its failure row, not an error that stops the sweep."""
    from simcal.service.remote import rows_of
    from simcal.tasks import plan_tasks

    tasks = plan_tasks([{"a": 1.0}, {"a": 2.0}], 1, seed=7)
    empty = pd.DataFrame(
        {"param_id": pd.Series(dtype=str), "replicate": pd.Series(dtype=int), "seed": pd.Series(dtype=int)}
    )
    rows = rows_of(empty, tasks, "job-1")
    assert rows["param_id"].tolist() == [task.param_id for task in tasks]
    assert rows["status"].tolist() == ["failed", "failed"]
    assert set(rows["error"]) == {"InternalError: service job job-1 returned no rows for it"}


def test_an_interrupted_sweep_cancels_every_job_it_has_in_flight(tmp_path, monkeypatch):
    """Two jobs are in flight when the driver is interrupted (Ctrl-C, SIGTERM) while it waits for the first: both
    are cancelled on the service, not only the one it was waiting for."""
    import functools

    from simcal.progress import Progress
    from simcal.runner import Cancelled, Simulator
    from simcal.service import client as client_module
    from simcal.service.remote import JOBS_IN_FLIGHT, run_on_service
    from simcal.tasks import plan_tasks

    interrupt = threading.Event()
    sent, seen = [], []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "POST":
            sent.append(f"job-{len(sent) + 1}")
            return httpx.Response(202, json={"job_id": sent[-1], "status": "queued"})
        job_id = request.url.path.rsplit("/", 1)[-1]
        if request.method == "DELETE":
            return httpx.Response(200, json={"job_id": job_id, "status": "cancelled"})
        interrupt.set()  # while the driver waits for its first job
        return httpx.Response(200, json={"job_id": job_id, "status": "running"})

    transport = httpx.MockTransport(handler)
    monkeypatch.setattr(
        client_module,
        "SimulationClient",
        functools.partial(SimulationClient, api_key="sc_test-key", backoff_s=0.001, transport=transport),
    )
    tasks = plan_tasks([{"a": float(i)} for i in range(300)], 1)  # three jobs' worth
    options = {"url": URL, "poll_interval_s": 0.01}
    with Simulator(MODEL, backend="service", backend_options=options, cancel=interrupt) as simulator:
        progress = Progress(tmp_path / "sweep.parquet", "service")
        with pytest.raises(Cancelled):
            run_on_service(simulator, tasks, tasks, progress, record=lambda chunk, rows: None)
    assert len(sent) == JOBS_IN_FLIGHT == 2
    assert {path for method, path in seen if method == "DELETE"} == {"/v1/jobs/job-1", "/v1/jobs/job-2"}


def test_a_rerun_cuts_the_same_jobs_from_the_plan_and_sends_them_with_the_same_keys(tmp_path, monkeypatch):
    """The jobs are cut from the whole plan, not from what is left: after the first job of 10 sets x 30 replicates
    (120 simulations) finished, the rerun sends the second job (90) as before, with the same Idempotency-Key (a
    killed run's job is taken up), not the 180 left as one new job. Another output file gives other keys."""
    import functools

    from simcal.progress import Progress
    from simcal.runner import Cancelled, Simulator
    from simcal.service import client as client_module
    from simcal.service.remote import run_on_service, service_chunks
    from simcal.tasks import plan_tasks

    interrupt = threading.Event()
    posts: list[tuple[str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append((request.headers["idempotency-key"], json.loads(request.content)))
            return httpx.Response(202, json={"job_id": f"job-{len(posts)}", "status": "queued"})
        if request.method == "DELETE":
            return httpx.Response(200, json={"job_id": "job", "status": "cancelled"})
        interrupt.set()  # stop while waiting for the first job: what was sent is what matters here
        return httpx.Response(200, json={"job_id": "job", "status": "running"})

    monkeypatch.setattr(
        client_module,
        "SimulationClient",
        functools.partial(
            SimulationClient, api_key="sc_test-key", backoff_s=0.001, transport=httpx.MockTransport(handler)
        ),
    )
    plan = plan_tasks([{"a": float(i)} for i in range(10)], 30)
    chunks = service_chunks(plan)
    assert [len(c) for c in chunks] == [120, 90, 90]

    def sent(remaining, output: str) -> list[tuple[str, dict]]:
        posts.clear()
        interrupt.clear()
        options = {"url": URL, "poll_interval_s": 0.01}
        with Simulator(MODEL, backend="service", backend_options=options, cancel=interrupt) as simulator:
            with pytest.raises(Cancelled):
                run_on_service(simulator, plan, remaining, Progress(tmp_path / "s.parquet", "service"),
                               record=lambda chunk, rows: None, output=output)  # fmt: skip
        return list(posts)

    first = sent(plan, "/results/sweep.parquet")
    rerun = sent(chunks[1] + chunks[2], "/results/sweep.parquet")
    assert rerun[0] == first[1]  # the same request of 3 sets x 30, under the same key
    assert len(rerun[0][1]["parameter_sets"]) == 3 and rerun[0][1]["n_replicates"] == 30
    assert len({key for key, _ in first + rerun}) == 3  # three jobs, three keys
    elsewhere = sent(plan, "/results/other.parquet")
    assert [body for _, body in elsewhere] == [body for _, body in first]
    assert not {key for key, _ in elsewhere} & {key for key, _ in first}


def test_a_model_the_service_refuses_costs_the_others_nothing_and_its_simulations_raise_why():
    """One flush sends a job per model; when the service refused one model (403: outside its --allow-models), the
    models after it were dropped unsent, and their result() said the service "was closed first". Now the others are
    sent all the same, and the refused model's simulations raise the service's reason whenever they are gathered."""
    from simcal.service.client import PermissionDenied

    refused = "simcal_models:series"
    posted = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            fn_ref = json.loads(request.content)["fn_ref"]
            posted.append(fn_ref)
            if fn_ref == refused:
                return httpx.Response(403, json={"detail": f"fn_ref {fn_ref!r} is not allowed"})
            return httpx.Response(202, json={"job_id": f"job-{len(posted)}", "status": "queued"})
        return httpx.Response(200, json={"job_id": "job-1", "status": "running"})

    with client(handler) as api, SimulationService(backend="service", client=api) as service:
        first = service.submit(MODEL, {"a": 1.0})
        no = service.submit(refused, {"a": 1.0})
        later = service.submit("simcal_models:fails_for_negative", {"a": 1.0})
        with pytest.raises(PermissionDenied, match="not allowed"):
            service.flush()
        assert posted == [MODEL, refused, "simcal_models:fails_for_negative"]
        assert first.job is not None and later.job is not None
        assert not later.done() and no.done()  # the refused one can no longer end otherwise
        with pytest.raises(PermissionDenied, match=f"fn_ref '{refused}' is not allowed"):
            no.result()  # the service's reason, not "closed first"
        with pytest.raises(PermissionDenied, match="not allowed"):
            service.gather([first, no])
        assert len(posted) == 3  # refused once, not sent again with every flush


def test_the_service_backend_takes_its_key_from_the_environment_only(monkeypatch):
    """A key in the workflow's config would end up in git and in logs: calibration.backend.service has no place
    for it, and without SIMCAL_API_KEY the backend says what to set."""
    with pytest.raises(ContractError, match=r"calibration.backend.service: unknown keys \['api_key'\]"):
        SimulationService(backend="service", backend_options={"url": URL, "api_key": "sc_test-key"})
    monkeypatch.delenv("SIMCAL_API_KEY", raising=False)
    with SimulationService(backend="service", backend_options={"url": URL}) as service:
        service.submit(MODEL, {"a": 1.0})
        with pytest.raises(ValueError, match="no API key: pass api_key or set SIMCAL_API_KEY"):
            service.flush()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        (
            "poll_interval_s",
            -1,
            "a number of seconds > 0, got -1",
        ),  # was: 'sleep length must be non-negative'
        ("poll_interval_s", 0, "a number of seconds > 0, got 0"),  # was: taken as 1 s
        ("poll_interval_s", None, "a number of seconds > 0, got None"),
        ("wait_timeout_s", "ten", "a number of seconds > 0 or null (no limit), got 'ten'"),
        (
            "wait_timeout_s",
            0,
            "a number of seconds > 0 or null (no limit), got 0",
        ),  # was: sent, then cancelled
        ("wait_timeout_s", float("nan"), "a number of seconds > 0 or null (no limit), got nan"),
        ("url", 8000, "a URL such as http://host:8000 or null, got 8000"),
    ],
)
def test_service_backend_options_are_checked_naming_them_before_anything_is_sent(
    tmp_path, monkeypatch, option, value, expected
):
    from simcal.runner import simulate

    monkeypatch.setenv("SIMCAL_SERVICE_URL", URL)  # nothing answers there: the refusal comes first
    monkeypatch.setenv("SIMCAL_API_KEY", "sc_test-key")
    where = rf"calibration\.backend\.service\.{option}: expected {re.escape(expected)}"
    with pytest.raises(ContractError, match=where):
        SimulationService(backend="service", backend_options={option: value})
    with pytest.raises(ContractError, match=where):
        simulate(MODEL, pd.DataFrame({"a": [1.0]}), tmp_path / "sweep.parquet", backend="service",
                 backend_options={option: value})  # fmt: skip
    assert not (tmp_path / "sweep.parquet").exists()


@pytest.mark.parametrize("replicate", [-1, 1.5, "0", True])
def test_replicate_on_the_service_backend_is_checked_before_anything_is_queued(replicate):
    with SimulationService(backend="service", backend_options={"url": URL}) as service:
        with pytest.raises(
            ContractError, match=rf"submit: replicate must be a whole number >= 0, got {replicate!r}"
        ):
            service.submit(MODEL, {"a": 1.0}, replicate=replicate)
        assert not service._queued


# -- synchronous requests ---------------------------------------------------------------------------------------


def parquet_answer() -> httpx.Response:
    buffer = io.BytesIO()
    pd.DataFrame({"status": ["ok"]}).to_parquet(buffer)
    return httpx.Response(200, content=buffer.getvalue())


def test_a_sync_request_asks_the_service_to_hold_it_no_longer_than_the_client_waits_for_the_answer():
    from simcal.service.client import SYNC_TIMEOUT_S
    from simcal.service.commands import DEFAULTS

    assert (
        SYNC_TIMEOUT_S == DEFAULTS["sync_timeout_s"]
    )  # by default the client waits as long as the service holds
    handler = answers(parquet_answer)
    with client(handler, timeout=7.0) as sync_client:
        sync_client.simulate_sync(MODEL, [{"a": 1.0}])
        sync_client.simulate_sync(MODEL, [{"a": 1.0}], timeout_s=20)
    for request, hold_s in zip(handler.seen, (SYNC_TIMEOUT_S, 20.0), strict=True):
        assert float(request.url.params["timeout_s"]) == hold_s
        assert request.extensions["timeout"]["read"] == hold_s + 7.0


@pytest.mark.parametrize("timeout_s", [0, -1.0, float("inf"), True, "300"])
def test_a_sync_timeout_that_is_not_a_number_of_seconds_is_refused_naming_it(timeout_s):
    handler = answers(parquet_answer)
    with pytest.raises(
        ValueError, match=f"sync_timeout_s must be a number of seconds > 0, got {timeout_s!r}"
    ):
        client(handler, sync_timeout_s=timeout_s)
    with client(handler) as sync_client:
        with pytest.raises(ValueError, match=f"timeout_s must be a number of seconds > 0, got {timeout_s!r}"):
            sync_client.simulate_sync(MODEL, [{"a": 1.0}], timeout_s=timeout_s)
    assert handler.seen == []


def test_the_docs_client_example_runs_as_written_against_a_real_service(service_factory):
    """docs/service.md's Python client example, run as written (only its URL is this service's port, and
    ``api_key`` a key of its keys file) against ``simcal serve`` on loopback with its own LocalCluster."""
    section = (REPO / "docs" / "service.md").read_text().split("\n## Client\n", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)[1]
    assert example.count('"http://127.0.0.1:8000"') == 1
    service = service_factory("--workers", "1")
    names = {"api_key": service.keys["alice"]}
    exec(compile(example.replace("http://127.0.0.1:8000", service.url), "docs/service.md", "exec"), names)
    from simcal.models.sir import simulate

    assert names["job"].info["status"] == "succeeded"
    assert names["job"].info["progress"] == {"done": 8, "total": 8, "failed": 0}
    for table, params, replicates in (
        (names["table"], {"beta": 0.3, "gamma": 0.1}, 8),
        (names["small"], {"beta": 0.2, "gamma": 0.1}, 1),
    ):
        assert (
            sorted(table["replicate"].unique()) == list(range(replicates)) and (table["status"] == "ok").all()
        )
        assert (table["beta"] == params["beta"]).all() and (table["gamma"] == params["gamma"]).all()
        for (_, seed), rows in table.groupby(["replicate", "seed"]):  # each replicate is the model's own run
            expected = simulate(params, int(seed))
            pd.testing.assert_frame_equal(
                rows[list(expected)].reset_index(drop=True), expected, check_dtype=False
            )


def test_a_job_asks_for_every_replicate_up_to_the_highest_queued_one():
    """docs/simulation.md: the service plans the seeds of replicates 0..N-1 as a sweep does, so a job holding only
    replicate 999 of a set asks for 1,000 simulations of it (and keeps one row); the docs point such use to Dask."""
    from simcal.service.remote import send_tasks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    handler = keyed_service()
    only_the_last = plan_tasks([{"a": 1.0}], 1000)[-1:]
    assert [task.replicate for task in only_the_last] == [999]
    with client(handler) as api:
        send_tasks(api, MODEL, only_the_last, SimulationSettings(), "/results/sweep.parquet")
    ((body, _),) = handler.jobs.values()
    assert (body["parameter_sets"], body["n_replicates"]) == ([{"a": 1.0}], 1000)


def test_request_sizes_weighed_column_by_column_are_each_sets_json_and_cut_the_same_jobs():
    """Weighing each parameter set by encoding it (json_values, then the client's JSON) cost about 10 us a set, 1 s
    of a sweep of 100,000 sets before any job was sent. RequestSize.of_sets weighs a sweep's sets column by column
    from each value's JSON text: the same bytes as encoding each set (numbers, flags, missing values, text with
    escapes and characters beyond ASCII, a column mixing them), so the same jobs for every request_max_bytes; sets
    it cannot weigh so are encoded one by one, naming a value JSON cannot carry as before."""
    from simcal.service.client import request_body
    from simcal.service.remote import MAX_JOBS, RequestSize, request_settings, service_chunks
    from simcal.settings import SimulationSettings
    from simcal.tasks import plan_tasks

    class SetBySet(RequestSize):
        """The weighing before: each set's JSON encoded."""

        def of_sets(self, sets):
            return {param_id: self.of_set(params) for param_id, params in sets.items()}

    rng = np.random.default_rng(3)
    numbers = [0.1, 1e-7, 1e16, 1e22, -0.0, 2.0, 5e-324, 1.7976931348623157e308, -3.25, float(np.pi)]
    whole = [0, -1, 7, 2**53 + 1, -(2**63), 2**63 - 1]
    text = ["", "a", "é", "日本", 'quote " and back\\slash', "line\nbreak\ttab", "\x01", "🙂", "</script>"]
    mixed = [*numbers[:3], *whole[:3], *text[:4], True, False, None]
    sets = [
        {
            "beta": rng.choice(numbers),
            "n": int(rng.choice(whole)),
            "flag": bool(rng.integers(2)),
            "region": str(rng.choice(text)),
            "anything": mixed[rng.integers(len(mixed))],
            "gone": None,
            "é ✓": float(rng.random()),
        }  # fmt: skip
        for _ in range(150)
    ]
    plan = plan_tasks(sets, 2, seed=1)
    simulation = SimulationSettings.from_config({"seed": 1})
    size, before = RequestSize(MODEL, simulation), SetBySet(MODEL, simulation)
    by_set = {task.param_id: task.params for task in plan}
    by_columns = RequestSize(MODEL, simulation)
    by_columns.of_set = lambda params, where="": pytest.fail(f"{where} was encoded, not weighed by columns")
    assert by_columns.of_sets(by_set) == before.of_sets(by_set)
    assert len(set(size.of_sets(by_set).values())) > 20  # the sample weighs many different sizes
    whole_body = len(request_body(MODEL, list(by_set.values()), 2, request_settings(simulation)))
    largest_alone = max(size.of_job([task]) for task in plan if task.replicate == 1)
    limits = sorted({largest_alone, whole_body, *rng.integers(largest_alone, whole_body, 40).tolist()})
    for limit in limits:
        cut = service_chunks(plan, max_bytes=limit, size=size)
        assert [[t.key for t in c] for c in cut] == [
            [t.key for t in c] for c in service_chunks(plan, max_bytes=limit, size=before)
        ], limit
        assert all(size.of_job(chunk) <= limit for chunk in cut)
    assert len(service_chunks(plan, max_bytes=largest_alone, size=size)) > MAX_JOBS
    # Sets of other names, numpy values and floats JSON cannot carry are encoded one by one, as before.
    odd = {"p": {"a": np.float32(0.1), "b": np.int64(3)}, "q": {"a": 0.5}, "r": {"a": 1, "c": "x"}}
    assert size.of_sets(odd) == before.of_sets(odd) == {"p": len('{"a":0.1,"b":3}'), "q": 9, "r": 15}
    for bad in (math.nan, math.inf):
        with pytest.raises(
            ValueError, match=rf"^parameter set param_id=q: 'a' is {bad}: expected a finite number"
        ):
            size.of_sets({"p": {"a": 0.5}, "q": {"a": bad}})
