"""The simulation service's API and its guards, on a real ``simcal serve`` subprocess on 127.0.0.1.

Two services for the module: ``service`` with its own LocalCluster (one worker) and tight size limits, and
``idle``, whose scheduler address answers nothing (a closed loopback port), with a strict rate limit: it shows
/readyz refusing and the per-key rate limit without any cluster. One test starts a third, with a LocalCluster of
three workers, and stops it. The options of ``simcal serve`` are checked against docs/service.md without a service.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import sqlite3
import subprocess
import threading
import time

import httpx
import pandas as pd
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servicekit import OtlpReceiver, free_port, wait_final
from testkit import REPO, venv_bin

SIR = "simcal.models.sir:simulate"
SMALL = {"fn_ref": SIR, "parameter_sets": [{"beta": 0.3, "gamma": 0.1, "days": 20}], "n_replicates": 2}
MAX_BYTES = 20_000
SERVICE_DOC = REPO / "docs" / "service.md"
REQUIRED = "(required)"


@pytest.fixture(scope="module")
def collector():
    """Where the service exports its traces (OTLP over HTTP, as to an OpenTelemetry collector)."""
    receiver = OtlpReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def service(collector, service_factory):
    return service_factory(
        "--workers", "1", "--allow-models", "simcal.models,simcal_models",
        "--request-max-bytes", str(MAX_BYTES), "--max-simulations", "500", "--sync-max-simulations", "20",
        "--rate", "1000", "--burst", "1000",
        keys=("alice", "bob"),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200"},
    )  # fmt: skip


@pytest.fixture(scope="module")
def idle(service_factory):
    closed = free_port()  # nothing listens there: the scheduler cannot be reached
    idle = service_factory(
        "--scheduler",
        f"tcp://127.0.0.1:{closed}",
        "--rate",
        "1",
        "--burst",
        "3",
        keys=("carol", "dave"),
        start=False,
    )
    return idle.start(ready=False)


def submit(http: httpx.Client, body=SMALL, **kwargs) -> httpx.Response:
    return http.post("/v1/simulate", json=body, **kwargs)


# -- the options as docs/service.md states them ------------------------------------------------------------------


def serve_options() -> tuple[dict[str, argparse.Action], argparse.Namespace]:
    """The options of ``simcal serve`` from the parser the ``simcal`` command runs ({'--port': its action, ...}),
    and what it parses from the required options alone. Built per call: some defaults come from the environment."""
    from simcal.cli import parser

    main = parser()
    (subcommands,) = (a for a in main._actions if isinstance(a, argparse._SubParsersAction))
    actions = {
        option: action
        for action in subcommands.choices["serve"]._actions
        for option in action.option_strings
        if option.startswith("--") and not isinstance(action, argparse._HelpAction)
    }
    parsed = main.parse_args(["serve", "--api-keys-file", "keys", "--state-dir", "state"])
    return actions, parsed


def documented_serve_defaults() -> dict[str, str]:
    """{option: its default as docs/service.md writes it}: the rows of the options table under "Run it" and, for
    the options the table leaves out, the ``simcal serve`` synopsis above it, where ``--opt VALUE`` outside brackets
    is required, ``[--opt VALUE]`` defaults to VALUE and ``[--opt ... | $VARIABLE]`` to the variable (the table
    wins: the synopsis shows examples for the options it has rows for)."""
    text = SERVICE_DOC.read_text()
    lines = text.splitlines()
    header = lines.index("| option | default | what |")
    table = {}
    for row in itertools.takewhile(lambda line: line.startswith("|"), lines[header + 2 :]):
        options_cell, defaults_cell = row.split("|")[1:3]
        options = re.findall(r"`(--[a-z-]+)`", options_cell)
        defaults = [default.strip() for default in defaults_cell.split(" / ")]
        assert options and len(defaults) == len(options), (
            f"docs/service.md options table: cannot read {row!r}"
        )
        table.update(zip(options, defaults, strict=True))
    synopsis = re.search(r"^simcal serve --.*$", text.replace("\\\n", " "), re.MULTILINE)[0]
    shown = {option: REQUIRED for option in re.findall(r"(--[a-z-]+) \S", re.sub(r"\[[^]]*\]", "", synopsis))}
    for option, value in re.findall(r"\[(--[a-z-]+) ([^]]+)\]", synopsis):
        variable = value.split(" | ")[-1]
        shown[option] = variable if variable.startswith("$") else value
    return {**shown, **table}


def documented_value(written: str):
    """'8' -> 8, '1 000 000' -> 1000000, '16 MiB' -> 16 << 20, '`simcal.models`' -> 'simcal.models', 'off' -> False
    (a flag)."""
    written = written.strip("`")
    if written in ("off", "on"):
        return written == "on"
    if match := re.fullmatch(r"(\d+) MiB", written):
        return int(match[1]) << 20
    if re.fullmatch(r"\d+( \d{3})*", written):
        return int(written.replace(" ", ""))
    return written


def test_documented_serve_defaults_are_the_parsers(monkeypatch, tmp_path):
    from simcal.service.results import results_store

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    actions, parsed = serve_options()
    wrong = []
    for option, written in documented_serve_defaults().items():
        if option not in actions:
            wrong.append(f"{option}: documented, but simcal serve has no such option")
            continue
        action = actions[option]
        default = getattr(parsed, action.dest)
        if written == REQUIRED:
            right = action.required
        elif written == "(none)":
            right = default is None and not action.required
        elif written == "`<state-dir>/results`":  # no default on the command line: the service puts it there
            right = default is None and results_store(None, tmp_path).directory == tmp_path / "results"
        elif written.startswith("$"):  # the variable, read when the parser is built, else nothing
            monkeypatch.setenv(written[1:], "from-the-environment")
            right = default is None and getattr(serve_options()[1], action.dest) == "from-the-environment"
            monkeypatch.delenv(written[1:])
        else:
            right = not action.required and default == documented_value(written)
        if not right:
            wrong.append(
                f"{option}: docs/service.md says {written}, the parser {action.required=} {default=}"
            )
    assert not wrong, "\n".join(wrong)


def test_every_serve_option_is_documented_with_its_default():
    actions, _ = serve_options()
    undocumented = sorted(set(actions) - set(documented_serve_defaults()))
    assert not undocumented, (
        f"docs/service.md gives no default for {undocumented}: add them to its options table"
    )


# -- probes and metrics --------------------------------------------------------------------------------------------


def test_health_readiness_and_prometheus_metrics(service):
    with service.http() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"] == 1
        with service.http(service.keys["alice"]) as alice:
            job = submit(alice).json()
            assert wait_final(alice, job["job_id"])["status"] == "succeeded"
        metrics = http.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(metrics.text)}
    jobs = {sample.labels["status"]: sample.value for sample in families["simcal_jobs"].samples}
    assert set(jobs) == {"queued", "running", "succeeded", "failed", "cancelled"}
    assert jobs["succeeded"] >= 1
    assert families["simcal_queue_length"].samples[0].value == jobs["queued"]
    assert families["simcal_simulations"].type == "counter"
    assert families["simcal_simulations"].samples[0].value >= 2
    assert "simcal_simulations_per_second" in families
    assert families["simcal_dask_workers"].samples[0].value == 1


def test_readyz_names_the_unreachable_scheduler_and_jobs_wait_in_the_queue(idle):
    with idle.http() as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in ready.json()["reason"]
        with idle.http(idle.keys["dave"]) as dave:
            accepted = submit(dave)
            assert accepted.status_code == 202
            time.sleep(1.0)
            job_id = accepted.json()["job_id"]
            assert dave.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
            families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
            assert families["simcal_queue_length"].samples[0].value >= 1
            assert families["simcal_ready"].samples[0].value == 0
            cancelled = dave.delete(f"/v1/jobs/{job_id}").json()  # a queued job is cancelled at once
            assert cancelled["status"] == "cancelled" and cancelled["started"] is None


# -- keys and rate limit -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/v1/limits"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef"),
        ("GET", "/v1/jobs/0123456789abcdef0123456789abcdef/results"),
        ("DELETE", "/v1/jobs/0123456789abcdef0123456789abcdef"),
        ("POST", "/v1/simulate"),
        ("POST", "/v1/simulate/sync"),
    ],
)
def test_every_v1_call_needs_a_valid_bearer_key(service, method, path):
    body = SMALL if method == "POST" else None
    for headers in (
        {},
        {"Authorization": f"Basic {service.keys['alice']}"},
        {"Authorization": "Bearer sc_wrong"},
    ):
        with service.http() as http:
            answer = http.request(method, path, json=body, headers=headers)
        assert answer.status_code == 401, (headers.keys(), answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert service.keys["alice"] not in answer.text
    with service.http(service.keys["alice"]) as http:
        assert http.request(method, path, json=body).status_code != 401


def test_jobs_of_one_key_are_invisible_to_another(service):
    with service.http(service.keys["alice"]) as alice, service.http(service.keys["bob"]) as bob:
        job_id = submit(alice).json()["job_id"]
        assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
        assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert job_id not in {job["job_id"] for job in bob.get("/v1/jobs").json()["jobs"]}
        assert alice.get(f"/v1/jobs/{job_id}").status_code == 200


def revoke(service, name: str) -> None:
    """Revoke a key as docs/service.md says: delete its line from the keys file."""
    lines = service.keys_file.read_text().splitlines(keepends=True)
    service.keys_file.write_text("".join(line for line in lines if not line.startswith(f"{name} ")))


def add_key_by_command(service, name: str) -> str:
    """``simcal keys add --name NAME`` on the service's keys file: the key it printed, once the service has read
    the file again (it looks at most once a second)."""
    added = subprocess.run(
        [venv_bin("simcal"), "keys", "add", "--file", str(service.keys_file), "--name", name],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    key = added.stdout.strip()
    deadline = time.monotonic() + 30
    with service.http(key) as http:
        while http.get("/v1/limits").status_code == 401:
            assert time.monotonic() < deadline, f"the service never took the key added as {name!r}"
            time.sleep(0.2)
    return key


def test_a_key_added_under_a_revoked_keys_name_sees_none_of_its_jobs(service_factory):
    """Jobs belong to the key, not to its name: a key revoked (its line deleted) and a new key added by `simcal keys
    add` under the same name, perhaps for another person, saw, downloaded and cancelled the revoked key's jobs."""
    revoking = service_factory("--workers", "1", "--allow-models", "simcal.models", keys=("alice", "bob"))
    with revoking.http(revoking.keys["alice"]) as old:
        done = submit(old, headers={"Idempotency-Key": "sweep-1"}).json()["job_id"]
        assert wait_final(old, done)["status"] == "succeeded"
        assert old.get(f"/v1/jobs/{done}/results").status_code == 200
        revoke(revoking, "alice")
        with revoking.http(add_key_by_command(revoking, "alice")) as new:
            assert old.get("/v1/jobs").status_code == 401  # the revoked key itself
            assert new.get("/v1/jobs").json()["jobs"] == []
            assert new.get(f"/v1/jobs/{done}").status_code == 404
            assert new.get(f"/v1/jobs/{done}/results").status_code == 404
            assert new.delete(f"/v1/jobs/{done}").status_code == 404
            # The revoked key's Idempotency-Key makes a new job, not a replay of the revoked key's.
            replayed = submit(new, headers={"Idempotency-Key": "sweep-1"})
            assert replayed.status_code == 202 and "idempotent-replayed" not in replayed.headers
            mine = replayed.json()["job_id"]
            assert mine != done and [job["job_id"] for job in new.get("/v1/jobs").json()["jobs"]] == [mine]
    assert f"job {mine} queued: {SIR}, 2 simulations (key alice)" in revoking.log_text()  # logs name the name


def test_a_registry_whose_jobs_belong_to_names_gives_them_once_to_the_keys_of_those_names_at_the_start(
    service_factory,
):
    """A registry of an earlier release (schema 1) keyed jobs by key name. The first start that keeps jobs by key
    gives each name's jobs to the key of that name in the keys file then, and says so; those of a name no key has
    go to nobody, so a key added later under that name never gets them, at this start or any later one."""
    from simcal.service.registry import JobRegistry

    upgraded = service_factory(
        "--scheduler", f"tcp://127.0.0.1:{free_port()}", keys=("alice", "bob"), start=False
    )
    path = upgraded.state_dir / "jobs.sqlite"
    registry = JobRegistry(path)  # the tables of schema 1, unchanged; owners as schema 1 wrote them, by name
    alices = [registry.create("alice", SIR, SMALL, 2)[0].id for _ in range(2)]
    registry.finish(alices[0], "succeeded", done=2, failed=0)
    carols = registry.create("carol", SIR, SMALL, 2, idempotency_key="k1")[0].id  # carol was revoked before
    registry.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 1")
    upgraded.start(ready=False)
    moved = f"{path}: 2 job(s) of key name 'alice' now belong to the key of that name in {upgraded.keys_file}"
    to_nobody = (
        f"{path}: 1 job(s) of key name 'carol' belong to no key: {upgraded.keys_file} has no key of that name"
    )
    assert upgraded.log_text().count(moved) == 1 and upgraded.log_text().count(to_nobody) == 1
    with upgraded.http(upgraded.keys["alice"]) as alice, upgraded.http(upgraded.keys["bob"]) as bob:
        assert [job["job_id"] for job in alice.get("/v1/jobs").json()["jobs"]] == alices[::-1]
        assert bob.get("/v1/jobs").json()["jobs"] == []
        cancelled = alice.delete(f"/v1/jobs/{alices[1]}").json()
        assert cancelled["status"] == "cancelled" and cancelled["error"] == "cancelled by alice"
        carol_key = add_key_by_command(upgraded, "carol")
        with upgraded.http(carol_key) as carol:
            assert (
                carol.get("/v1/jobs").json()["jobs"] == []
                and carol.get(f"/v1/jobs/{carols}").status_code == 404
            )
            new_carols = submit(carol, headers={"Idempotency-Key": "k1"}).json()["job_id"]
            assert new_carols != carols
    upgraded.stop()
    # Once: the carol added since gets none of the revoked carol's jobs at this start either.
    upgraded.start(ready=False)
    assert upgraded.log_text().count(moved) == 1 and upgraded.log_text().count(to_nobody) == 1
    with upgraded.http(upgraded.keys["alice"]) as alice, upgraded.http(carol_key) as carol:
        assert [job["job_id"] for job in alice.get("/v1/jobs").json()["jobs"]] == alices[::-1]
        assert [job["job_id"] for job in carol.get("/v1/jobs").json()["jobs"]] == [new_carols]
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT owner FROM jobs WHERE id = ?", (carols,)).fetchone() == ("carol",)
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_the_results_of_one_keys_job_are_invisible_to_another(service):
    with service.http(service.keys["alice"]) as alice, service.http(service.keys["bob"]) as bob:
        job_id = submit(alice).json()["job_id"]
        assert wait_final(alice, job_id)["status"] == "succeeded"
        assert alice.get(f"/v1/jobs/{job_id}/results").status_code == 200
        assert bob.get(f"/v1/jobs/{job_id}/results").status_code == 404


def test_the_results_of_a_job_still_queued_or_running_are_refused_with_409(service):
    """docs/service.md: GET /v1/jobs/{job_id}/results answers 409 until the job has succeeded, for a job still on
    its way as for one that failed or was cancelled (a job on its way has no results file to look for yet)."""
    slow = {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": [{"a": 1.0, "sleep_s": 3.0}]}
    with service.http(service.keys["alice"]) as alice:
        job_id = submit(alice, slow).json()["job_id"]
        try:
            early = alice.get(f"/v1/jobs/{job_id}/results")
        finally:
            alice.delete(f"/v1/jobs/{job_id}")  # frees the module's one worker for the next tests
    assert early.status_code == 409, early.text
    assert re.fullmatch(
        rf"job {job_id} is (queued|running): results exist once it has succeeded", early.json()["detail"]
    )


def test_a_replayed_submission_leaves_its_job_to_run_once_to_its_end(service):
    """The replay answers with the job made the first time, and nothing else: the job runs once and succeeds."""
    with service.http(service.keys["alice"]) as alice:
        first = submit(alice, headers={"Idempotency-Key": "replayed-while-it-runs"}).json()
        again = submit(alice, headers={"Idempotency-Key": "replayed-while-it-runs"}).json()
        assert again["job_id"] == first["job_id"]
        ended = wait_final(alice, first["job_id"])
    assert ended["status"] == "succeeded", ended
    assert ended["progress"] == {"done": 2, "total": 2, "failed": 0}


def test_rate_limit_per_key_answers_429_with_retry_after(idle):
    with idle.http(idle.keys["carol"]) as carol, idle.http(idle.keys["dave"]) as dave:
        codes = [carol.get("/v1/jobs").status_code for _ in range(6)]
        assert codes[:3] == [200, 200, 200] and 429 in codes[3:], codes
        refused = carol.get("/v1/jobs")
        assert refused.status_code == 429 and "per key" in refused.json()["detail"]
        wait_s = int(refused.headers["retry-after"])
        assert 1 <= wait_s <= 2
        assert dave.get("/v1/jobs").status_code == 200  # another key has its own bucket
        time.sleep(wait_s)
        assert carol.get("/v1/jobs").status_code == 200


# -- size limits -----------------------------------------------------------------------------------------------------


def test_oversized_bodies_are_refused_with_413_declared_or_streamed(service):
    big = {**SMALL, "parameter_sets": [{"beta": 0.3, "gamma": 0.1, "days": 20}] * 2000}
    payload = json.dumps(big).encode()
    assert len(payload) > MAX_BYTES
    with service.http(service.keys["alice"]) as http:
        declared = http.post("/v1/simulate", content=payload, headers={"content-type": "application/json"})
        assert declared.status_code == 413 and str(MAX_BYTES) in declared.json()["detail"]
        # What was too large, and what to do: a bare 'at most 20000 bytes' told neither.
        assert f"request body of {len(payload)} bytes is over" in declared.json()["detail"]
        assert "--request-max-bytes): send the parameter sets as several jobs" in declared.json()["detail"]

        def chunks():  # no Content-Length: the limit applies while the body is read
            for start in range(0, len(payload), 4096):
                yield payload[start : start + 4096]

        streamed = http.post("/v1/simulate", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413, streamed.text
        assert f"request body of more than {MAX_BYTES} bytes is over" in streamed.json()["detail"]
        assert http.get("/v1/jobs").status_code == 200  # the service is fine afterwards


def test_a_body_of_exactly_the_size_limit_is_accepted_declared_or_streamed(service):
    """--request-max-bytes is the most a body may have: one of exactly that size is no 413."""
    text = json.dumps(SMALL)
    payload = (text + " " * (MAX_BYTES - len(text))).encode()  # JSON allows trailing whitespace
    assert len(payload) == MAX_BYTES
    with service.http(service.keys["alice"]) as http:
        declared = http.post("/v1/simulate", content=payload, headers={"content-type": "application/json"})
        assert declared.status_code == 202, declared.text
        streamed = http.post(
            "/v1/simulate",
            content=iter([payload[:4096], payload[4096:]]),
            headers={"content-type": "application/json"},
        )
        assert streamed.status_code == 202, streamed.text


def test_too_many_simulations_are_refused_with_413_naming_the_count(service):
    sets = [{"beta": 0.1 + i / 100, "gamma": 0.1} for i in range(51)]
    with service.http(service.keys["alice"]) as http:
        job = submit(http, {"fn_ref": SIR, "parameter_sets": sets, "n_replicates": 10})
        assert job.status_code == 413
        assert "51 parameter_sets x 10 n_replicates = 510 simulations" in job.json()["detail"]
        sync = http.post(
            "/v1/simulate/sync", json={"fn_ref": SIR, "parameter_sets": sets[:11], "n_replicates": 2}
        )
        assert sync.status_code == 413
        assert "at most 20 per synchronous request" in sync.json()["detail"]
        assert "POST /v1/simulate" in sync.json()["detail"]


# -- what may run ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn_ref, status, words",
    [
        ("not a reference", 422, "expected 'package.module:function'"),
        ("os:system", 403, "not allowed"),
        ("simcal.runner:simulate", 403, "not allowed"),
        ("simcal.modelsx.sir:simulate", 403, "not allowed"),  # a prefix matches whole module names only
        ("simcal_models:Path", 403, "defined in pathlib"),  # imported into an allowed module from pathlib
        ("simcal.models.nothing:simulate", 422, "cannot import"),
        ("simcal.models.sir:nothing", 422, "nothing"),
        ("simcal.models.sir:__name__", 422, "expected 'package.module:function'"),
    ],
)
def test_fn_ref_outside_the_allow_list_or_unusable_is_refused_naming_it(service, fn_ref, status, words):
    with service.http(service.keys["alice"]) as http:
        answer = submit(http, {**SMALL, "fn_ref": fn_ref})
    assert answer.status_code == status, answer.text
    detail = answer.json()["detail"]
    assert f"fn_ref {fn_ref!r}" in detail and words in detail


@pytest.mark.parametrize(
    "change, words",
    [
        ({"colour": "red"}, "unknown request fields ['colour']"),
        ({"settings": {"rerun_failed": True}}, "settings ['rerun_failed'] cannot be set"),
        ({"n_replicates": 0}, "replicates must be an integer >= 1"),
        ({"parameter_sets": []}, "parameter_sets: expected a non-empty list"),
        ({"parameter_sets": [{"beta": 0.3, "gamma": 0.1, "seed": 4}]}, "reserved"),
        ({"parameter_sets": [{"beta": 0.3, "gama": 0.1}]}, "gama"),
        ({"targets": ["targets.loss:mse"]}, "targets are not computed by this service"),
        ({"bundle_ref": "sha256:" + "0" * 64}, "bundle_ref is not supported"),
        ({"settings": "seed=3"}, "settings: expected a JSON object"),
        ({"settings": [1, 2]}, "settings: expected a JSON object"),
        ({"fixed": [["days", 5]]}, "fixed: expected a JSON object"),
        ({"fixed": 5}, "fixed: expected a JSON object"),
        (
            {"parameter_sets": [{"beta": 0.3, "gamma": 0.1}, {"beta": [0.3], "gamma": 0.1}]},
            "parameter_sets[1]",
        ),
        ({"parameter_sets": [{"beta": 0.3, "gamma": None}]}, "parameter_sets[0]"),
    ],
)
def test_bad_requests_are_refused_with_422_naming_the_field(service, change, words):
    with service.http(service.keys["alice"]) as http:
        answer = submit(http, {**SMALL, **change})
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["detail"]


# -- jobs through the client -------------------------------------------------------------------------------------------


def test_a_retried_submission_with_the_same_idempotency_key_makes_one_job(service):
    with service.http(service.keys["alice"]) as alice, service.http(service.keys["bob"]) as bob:
        first = submit(alice, headers={"Idempotency-Key": "retry-1"})
        again = submit(alice, headers={"Idempotency-Key": "retry-1"})
        assert first.status_code == again.status_code == 202
        assert (
            again.json()["job_id"] == first.json()["job_id"]
            and again.headers["idempotent-replayed"] == "true"
        )
        assert first.headers["location"] == f"/v1/jobs/{first.json()['job_id']}"
        assert submit(bob, headers={"Idempotency-Key": "retry-1"}).json()["job_id"] != first.json()["job_id"]
        assert submit(alice, headers={"Idempotency-Key": "x" * 200}).status_code == 422
        # The same key for another request is refused: the first job's results are not this request's.
        other = submit(alice, {**SMALL, "n_replicates": 3}, headers={"Idempotency-Key": "retry-1"})
        assert other.status_code == 422
        assert f"was used for a different request (job {first.json()['job_id']})" in other.json()["detail"]
        sync = alice.post(
            "/v1/simulate/sync", json={**SMALL, "n_replicates": 1}, headers={"Idempotency-Key": "retry-1"}
        )
        assert sync.status_code == 422 and "different request" in sync.json()["detail"]


def test_only_a_replayed_submission_says_so_and_a_key_of_128_characters_is_taken(service):
    """Idempotent-Replayed marks the answer of a retry only; the client may send keys of 1 to 128 characters."""
    with service.http(service.keys["alice"]) as alice:
        key = "k" * 128
        first = submit(alice, headers={"Idempotency-Key": key})
        assert first.status_code == 202, first.text
        assert "idempotent-replayed" not in first.headers  # a new job, not a replay
        again = submit(alice, headers={"Idempotency-Key": key})
        assert (
            again.headers["idempotent-replayed"] == "true"
            and again.json()["job_id"] == first.json()["job_id"]
        )
        assert submit(alice, headers={"Idempotency-Key": key + "k"}).status_code == 422
        # A space is printable ASCII too, and refused: the answer said only 'printable ASCII characters'.
        spaced = submit(alice, headers={"Idempotency-Key": "sweep 1"})
        assert spaced.status_code == 422 and spaced.json()["detail"] == (
            "Idempotency-Key 'sweep 1': expected 1 to 128 printable ASCII characters, no space"
        )


def test_the_key_is_checked_before_the_body_is_read(service):
    with service.http() as anonymous:
        answer = anonymous.post(
            "/v1/simulate", content=b"not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 401  # not 422: an anonymous body is never parsed
    with service.http(service.keys["alice"]) as alice:
        answer = alice.post(
            "/v1/simulate", content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert answer.status_code == 422 and "the request body is not JSON" in answer.json()["detail"]
        answer = alice.post("/v1/simulate/sync", content=b"")
        assert answer.status_code == 422 and "the request body is empty" in answer.json()["detail"]


def test_a_deeply_nested_body_is_refused_with_422_not_a_500(service):
    """JSON nested thousands of levels deep overflows the parser's recursion: a malformed body like any other (422
    naming the problem), not a 500 with a RecursionError in the service's log."""
    # Under MAX_BYTES: the parser, not the size limit, sees it.
    nested = '{"fn_ref": ' + "[" * 9000 + "]" * 9000 + "}"
    with service.http(service.keys["alice"]) as alice:
        for path in ("/v1/simulate", "/v1/simulate/sync"):
            answer = alice.post(path, content=nested.encode(), headers={"Content-Type": "application/json"})
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"] == (
                "the request body nests arrays or objects too deeply to be read; a request needs only a few "
                "levels: {fn_ref, parameter_sets: [{name: value}, ...], n_replicates, settings, fixed}"
            )
    assert "RecursionError" not in service.log_text()


@pytest.fixture(scope="module")
def waiting(service_factory):
    """A service whose scheduler never answers: its jobs stay queued and synchronous requests wait 4 s."""
    closed = free_port()
    waiting = service_factory(
        "--scheduler", f"tcp://127.0.0.1:{closed}", "--sync-timeout-s", "4", "--rate", "1000", "--burst", "1000",
        start=False,
    )  # fmt: skip
    return waiting.start(ready=False)


def test_probes_answer_while_synchronous_requests_wait(waiting):
    """More synchronous requests than the server's thread pool (40) must not starve /healthz and /readyz: a
    liveness probe that times out would make Kubernetes restart the pod."""
    answers = []

    def wait_sync():
        with waiting.http(waiting.keys["alice"]) as http:
            answers.append(http.post("/v1/simulate/sync", json=SMALL, timeout=30))

    callers = [threading.Thread(target=wait_sync) for _ in range(48)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(1.5)  # every request accepted and waiting for its job
        with waiting.http(waiting.keys["alice"]) as http:
            for path, status in (("/healthz", 200), ("/readyz", 503), ("/metrics", 200), ("/v1/jobs", 200)):
                began = time.monotonic()
                assert http.get(path, timeout=2.0).status_code == status, path
                assert time.monotonic() - began < 2.0, path
            assert len(answers) == 0  # they are still waiting
    finally:
        for caller in callers:
            caller.join(30)
    # The documented timeout: 504 naming the job, which goes on.
    assert [answer.status_code for answer in answers] == [504] * 48
    assert "did not finish within 4 s; it goes on: poll /v1/jobs/" in answers[0].json()["detail"]


def test_a_synchronous_caller_that_leaves_frees_the_server_and_the_job_goes_on(waiting):
    with waiting.http(waiting.keys["alice"]) as http, pytest.raises(httpx.ReadTimeout):
        http.post("/v1/simulate/sync", json={**SMALL, "n_replicates": 5}, timeout=0.5)
    deadline = time.monotonic() + 3.0
    while "its synchronous caller left; the job goes on" not in waiting.log_text():
        assert time.monotonic() < deadline, waiting.log_text()[-2000:]
        time.sleep(0.1)
    with waiting.http(waiting.keys["alice"]) as http:
        jobs = http.get("/v1/jobs").json()["jobs"]
        assert any(job["progress"]["total"] == 5 and job["status"] == "queued" for job in jobs)


def test_a_sync_request_past_the_services_timeout_raises_sync_timeout_naming_the_job_which_goes_on(waiting):
    from simcal.service.client import SimulationClient, SyncTimeout

    with SimulationClient(waiting.url, waiting.keys["alice"], retries=0) as client:
        # The client waits 300 s by default; the service holds the request its --sync-timeout-s, 4 s.
        with pytest.raises(SyncTimeout, match=r"504 job \w+ did not finish within 4 s; it goes on") as held:
            client.simulate_sync(SIR, SMALL["parameter_sets"])
        assert held.value.status == 504 and client.job(held.value.job_id).status()["status"] == "queued"
        # A caller asking for less is answered after its own timeout, not the service's.
        began = time.monotonic()
        with pytest.raises(SyncTimeout, match="did not finish within 1 s") as asked:
            client.simulate_sync(SIR, SMALL["parameter_sets"], timeout_s=1.0)
        assert time.monotonic() - began < 3.5 and asked.value.job_id != held.value.job_id
    with waiting.http(waiting.keys["alice"]) as http:
        for bad in ("0", "-1", "soon", "nan", "inf"):  # not a number of seconds > 0, nor a finite one
            refused = http.post("/v1/simulate/sync", json=SMALL, params={"timeout_s": bad})
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"] == (
                f"query parameter timeout_s={bad!r}: expected a number of seconds > 0"
            )


def test_a_graceful_stop_answers_a_waiting_synchronous_request_at_once_with_503_naming_its_job(
    service_factory,
):
    """SIGTERM (a rolling restart) with a synchronous request waiting: uvicorn waited 30 s for it (its graceful
    timeout, Kubernetes' default grace period before SIGKILL) and then answered a bare 500, without the job's id,
    and only then queued the running jobs again. The caller hears 503 at once, naming its job, which stays queued
    for the next start; the client's retry with the same Idempotency-Key then answers for that same job."""
    stopping = service_factory("--scheduler", f"tcp://127.0.0.1:{free_port()}", start=False).start(
        ready=False
    )
    answers = []

    def wait_sync():
        with stopping.http(stopping.keys["alice"]) as http:
            answers.append(http.post("/v1/simulate/sync", json=SMALL, headers={"Idempotency-Key": "k1"}))

    caller = threading.Thread(target=wait_sync)
    caller.start()
    with stopping.http(stopping.keys["alice"]) as http:
        deadline = time.monotonic() + 10
        while not http.get("/v1/jobs").json()["jobs"]:  # accepted, and its caller waiting
            assert time.monotonic() < deadline
            time.sleep(0.05)
    began = time.monotonic()
    stopping.process.terminate()
    caller.join(60)
    stopping.process.wait(60)
    assert time.monotonic() - began < 15
    [answer] = answers
    assert answer.status_code == 503, answer.text
    job_id = answer.headers["x-simcal-job-id"]
    assert answer.headers["retry-after"] == "10"
    assert answer.json()["detail"] == (
        f"the service is stopping; job {job_id} goes on when it starts again: poll /v1/jobs/{job_id}, or send "
        "the request again with the same Idempotency-Key"
    )
    stopping.start(ready=False)
    with stopping.http(stopping.keys["alice"]) as http:
        assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
        again = http.post(
            "/v1/simulate/sync", json=SMALL, headers={"Idempotency-Key": "k1"}, params={"timeout_s": 0.5}
        )
        assert again.status_code == 504 and again.headers["x-simcal-job-id"] == job_id


def test_readyz_refuses_a_scheduler_without_workers(service_factory):
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=0, processes=False, protocol="tcp", host="127.0.0.1", dashboard_address=":0"
    ) as cluster:
        empty = service_factory("--scheduler", cluster.scheduler_address, start=False).start(ready=False)
        with empty.http() as http:
            deadline = time.monotonic() + 60
            while "no Dask worker" not in (ready := http.get("/readyz")).json()["reason"]:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            assert ready.status_code == 503 and ready.json()["workers"] == 0
        empty.stop()


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--max-concurrent-jobs", "0", "--max-concurrent-jobs 0: expected an integer >= 1"),
        ("--max-job-attempts", "0", "--max-job-attempts 0: expected an integer >= 1"),
        ("--max-simulations", "0", "--max-simulations 0: expected an integer >= 1"),
        ("--sync-max-simulations", "0", "--sync-max-simulations 0: expected an integer >= 1"),
        ("--burst", "0", "--burst 0: expected an integer >= 1"),
        ("--request-max-bytes", "0", "--request-max-bytes 0: expected an integer >= 1"),
        ("--sync-timeout-s", "0", "--sync-timeout-s 0.0: expected a number > 0"),
        ("--rate", "-1", "--rate -1.0: expected a number > 0"),
        ("--workers", "0", "--workers 0: expected an integer >= 1"),
        ("--allow-models", " , ", "--allow-models: expected at least one module prefix"),
        ("--allow-models", "simcal models", "--allow-models: 'simcal models' is not a module name"),
        ("--port", "99999", "argument --port: expected a TCP port number 0..65535, got '99999'"),
        # A file, and a directory even root cannot write to: named as --results, not --state-dir, and refused at
        # the start rather than failing every job once its simulations have run.
        ("--results", "/dev/null", "--results /dev/null: cannot write results there"),
        ("--results", "/sys", "--results /sys: cannot write results there"),
        (
            "--scheduler",
            "localhost",
            "--scheduler 'localhost' (or $DASK_SCHEDULER_ADDRESS): missing port number",
        ),
    ],
)
def test_serve_refuses_limits_that_would_stop_it_working(service_factory, option, value, words):
    broken = service_factory(option, value, start=False)
    done = subprocess.run(broken.command(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and words in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_serve_and_keys_name_a_state_dir_or_keys_file_they_cannot_use(service_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    broken = service_factory(start=False)
    command = broken.command()
    command[command.index("--state-dir") + 1] = str(blocker / "state")
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and f"--state-dir {blocker / 'state'}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run(
        [str(venv_bin("simcal")), "keys", "add", "--file", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and f"{tmp_path}: cannot read the keys file" in done.stderr, done.stderr


def test_serve_on_a_port_in_use_stops_at_once_naming_it_before_anything_starts(service_factory):
    """uvicorn's own bind failed only after the service had logged 'ready to take jobs', recovered its registry
    and started its job threads and its LocalCluster; then it exited 3 with uvicorn's log line."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broken = service_factory(start=False)
        done = subprocess.run(
            broken.command("--port", str(port)), capture_output=True, text=True, timeout=120
        )
    assert done.returncode == 2, done.stderr
    assert f"simcal serve: --host 127.0.0.1 --port {port}: cannot listen there (Address already in use)" in (
        done.stderr
    )
    assert "ready to take jobs" not in done.stderr and "LocalCluster" not in done.stderr


def test_a_host_beyond_loopback_needs_allow_remote_and_says_what_anyone_reaching_it_can_do(service_factory):
    """``--host 0.0.0.0`` made the service (plain HTTP, running the allowed models for any key) reachable from every
    machine that can reach this one, without a word: on a shared machine that is a choice to be made knowingly."""
    import socket

    broken = service_factory(start=False)
    done = subprocess.run(broken.command("--host", "0.0.0.0"), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"simcal serve: --host 0.0.0.0 --port {broken.port} listens beyond this machine" in done.stderr
    assert "Give --allow-remote to mean it" in done.stderr and "plain HTTP" in done.stderr
    assert "ready to take jobs" not in done.stderr and "Traceback" not in done.stderr
    # Given --allow-remote, it goes on, warning what it exposes: here as far as the bind of a port in use.
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            broken.command("--host", "0.0.0.0", "--port", str(port), "--allow-remote"),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 2 and "cannot listen there" in done.stderr, done.stderr
    assert "listens beyond this machine" in done.stderr and "(--allow-remote given)" in done.stderr


@pytest.mark.parametrize(
    "host, loopback",
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("10.1.2.3", False), ("no-such-host.invalid", False)],
)  # fmt: skip
def test_only_loopback_addresses_and_names_count_as_loopback(host, loopback):
    from simcal.service.server import is_loopback

    assert is_loopback(host) is loopback


def test_sync_answers_parquet_with_the_job_id(service):
    with service.http(service.keys["alice"]) as http:
        answer = http.post("/v1/simulate/sync", json=SMALL)
        assert (
            answer.status_code == 200 and answer.headers["content-type"] == "application/vnd.apache.parquet"
        )
        job = http.get(f"/v1/jobs/{answer.headers['x-simcal-job-id']}").json()
    assert job["status"] == "succeeded"
    table = pd.read_parquet(io.BytesIO(answer.content))
    assert len(table) == 2 * 20 and set(table["status"]) == {"ok"}


def test_sync_answer_equals_the_job_results_and_failure_rows_are_rows(service):
    from simcal.service.client import SimulationClient

    request = {
        "fn_ref": "simcal_models:fails_for_negative",
        "parameter_sets": [{"a": -1.0}, {"a": 2.0}],
        "n_replicates": 2,
        "settings": {"seed": 3, "max_failed_fraction": 1.0},
    }
    with SimulationClient(service.url, service.keys["alice"]) as client:
        direct = client.simulate_sync(**{k: v for k, v in request.items()})
        job = client.submit(**request)
        assert job.wait(timeout=120, poll_interval=0.1)["progress"] == {"done": 4, "total": 4, "failed": 2}
        queued = job.to_pandas()
    keys = ["param_id", "replicate"]
    direct = direct.sort_values(keys).reset_index(drop=True).drop(columns="duration_s")
    queued = queued.sort_values(keys).reset_index(drop=True).drop(columns="duration_s")
    pd.testing.assert_frame_equal(direct, queued)
    assert sorted(direct["status"]) == ["failed", "failed", "ok", "ok"]
    assert direct.loc[direct["status"] == "failed", "error"].str.contains("a must be >= 0").all()


def test_a_sync_request_the_service_holds_longer_than_the_clients_timeout_is_answered(service):
    """The client's read timeout (here 1 s, scaled down from its 60 s) must not cut a synchronous request the
    service holds, up to its --sync-timeout-s, for a job that takes longer (2.5 s): no retry, one answer."""
    from simcal.service.client import SimulationClient

    slow = {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": [{"a": 1.0, "sleep_s": 2.5}]}
    with SimulationClient(service.url, service.keys["alice"], timeout=1.0, retries=0) as client:
        began = time.monotonic()
        table = client.simulate_sync(**slow)
    assert time.monotonic() - began >= 2.5
    assert table["status"].tolist() == ["ok"] and table["y"].tolist() == [1.0]


def test_sync_jobs_that_fail_or_are_cancelled_and_results_that_are_gone_answer_naming_the_job(service):
    from simcal.service.client import RequestRejected, SimulationClient

    failing = {"fn_ref": "simcal_models:always_fails", "parameter_sets": [{"a": 1.0}, {"a": 2.0}]}
    # Cancelled before it ends (the module's service has one worker: a long batch would hold it after the cancel).
    slow = {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": [{"a": 1.0, "sleep_s": 5.0}]}
    with service.http(service.keys["alice"]) as http:
        failed = http.post("/v1/simulate/sync", json=failing)
        (job,) = http.get("/v1/jobs", params={"limit": 1}).json()["jobs"]
        assert failed.status_code == 422, failed.text
        assert failed.json()["detail"] == f"job {job['job_id']} failed: {job['error']}"
        assert "all 2 simulations of the timing probe failed" in job["error"]

        before = {job["job_id"] for job in http.get("/v1/jobs", params={"limit": 1000}).json()["jobs"]}
        answers = []
        waiting = threading.Thread(target=lambda: answers.append(http.post("/v1/simulate/sync", json=slow)))
        waiting.start()
        deadline = time.monotonic() + 30
        while not (new := [j for j in http.get("/v1/jobs").json()["jobs"] if j["job_id"] not in before]):
            assert time.monotonic() < deadline, "the synchronous request made no job"
            time.sleep(0.05)
        (job,) = new
        http.delete(f"/v1/jobs/{job['job_id']}")
        waiting.join(30)
        assert answers[0].status_code == 409, answers[0].text
        assert answers[0].json()["detail"].startswith(f"job {job['job_id']} cancelled: cancelled by")

        done = http.post("/v1/simulate/sync", json=SMALL)
        job_id = done.headers["x-simcal-job-id"]
        results_path = http.get(f"/v1/jobs/{job_id}").json()["results_path"]
        os.unlink(results_path)
        gone = http.get(f"/v1/jobs/{job_id}/results")
        assert gone.status_code == 410
        assert gone.json()["detail"] == f"the results of job {job_id} are gone from {results_path}"
    with SimulationClient(service.url, service.keys["alice"]) as client:
        with pytest.raises(RequestRejected, match=f"410 the results of job {job_id} are gone") as raised:
            client.job(job_id).to_pandas()
        assert raised.value.status == 410


def test_client_raises_exceptions_named_after_the_problem(service):
    from simcal.service.client import (
        AuthenticationError,
        JobFailed,
        NotFound,
        PermissionDenied,
        RequestRejected,
        SimulationClient,
    )

    with SimulationClient(service.url, "sc_not-a-key", retries=0) as stranger:
        with pytest.raises(AuthenticationError, match="invalid API key") as caught:
            stranger.jobs()
        assert caught.value.status == 401 and "SIMCAL_API_KEY" in str(caught.value)
    with SimulationClient(service.url, service.keys["alice"]) as client:
        with pytest.raises(PermissionDenied, match="fn_ref 'os:system' is not allowed"):
            client.submit("os:system", [{"a": 1}])
        with pytest.raises(RequestRejected, match="510 simulations") as too_big:
            client.submit(SIR, [{"beta": 0.1 + i / 100, "gamma": 0.1} for i in range(51)], n_replicates=10)
        assert too_big.value.status == 413
        with pytest.raises(NotFound):
            client.job("0" * 32).status()
        failing = client.submit("simcal_models:always_fails", [{"a": 1.0}, {"a": 2.0}])
        with pytest.raises(JobFailed, match="all 2 simulations of the timing probe failed") as failed:
            failing.wait(timeout=120, poll_interval=0.1)
        assert failed.value.job["status"] == "failed"
        assert list((service.state_dir / "jobs" / failing.id / "simulations.parquet.partial").glob("part-*"))
        with pytest.raises(RequestRejected, match="409") as conflict:
            failing.to_pandas()
        assert conflict.value.status == 409


def test_job_list_is_newest_first_cut_at_limit_and_filtered_by_status(service):
    failing = {"fn_ref": "simcal_models:always_fails", "parameter_sets": [{"a": 1.0}, {"a": 2.0}]}
    with service.http(service.keys["alice"]) as http:

        def listed(**query) -> list[str]:
            return [job["job_id"] for job in http.get("/v1/jobs", params=query).json()["jobs"]]

        first, second, third = (submit(http, body).json()["job_id"] for body in (SMALL, failing, SMALL))
        assert listed(limit=2) == [third, second]
        assert listed(limit=3) == [third, second, first]
        ended = [wait_final(http, job_id)["status"] for job_id in (first, second, third)]
        assert ended == ["succeeded", "failed", "succeeded"]
        # alice has older succeeded jobs from the tests above: the limit cuts after the newest two
        assert listed(status="succeeded", limit=2) == [third, first]
        failed = http.get("/v1/jobs", params={"status": "failed"}).json()["jobs"]
        assert {job["status"] for job in failed} == {"failed"} and listed(status="failed")[0] == second


def test_simcal_jobs_list_shows_100_jobs_unless_told_otherwise():
    """docs/service.md: ``simcal jobs list [--limit N]``, N from 1 to 1000 (test_jobs_cli_lists_shows_and_cancels),
    100 by default, in the command and in the client it calls."""
    import inspect

    from simcal.cli import parser
    from simcal.service.client import SimulationClient

    listing = parser().parse_args(["jobs", "list", "--url", "http://127.0.0.1:1"])
    assert listing.limit == 100
    assert inspect.signature(SimulationClient.jobs).parameters["limit"].default == 100


def test_a_job_list_of_an_unknown_status_is_refused_naming_the_statuses(service):
    with service.http(service.keys["alice"]) as http:
        answer = http.get("/v1/jobs", params={"status": "done"})
    assert answer.status_code == 422, answer.text
    assert "status 'done'" in answer.json()["detail"]
    assert all(
        status in answer.json()["detail"]
        for status in ("queued", "running", "succeeded", "failed", "cancelled")
    )


def test_a_job_list_takes_a_limit_of_1_to_1000_and_refuses_one_beyond(service):
    """docs/service.md: ``GET /v1/jobs?limit=N`` with N from 1 to 1000 (``simcal jobs list --limit``'s range, which
    the command checks before it asks): the ends are answered, one past them is refused with 422 naming limit."""
    with service.http(service.keys["alice"]) as http:
        for taken in (1, 1000):
            answer = http.get("/v1/jobs", params={"limit": taken})
            assert answer.status_code == 200 and len(answer.json()["jobs"]) <= taken, answer.text
        for beyond in (0, 1001):
            refused = http.get("/v1/jobs", params={"limit": beyond})
            assert refused.status_code == 422, refused.text
            assert refused.json()["detail"][0]["loc"] == ["query", "limit"], refused.text


def test_without_scheduler_serve_starts_a_local_cluster_of_workers_processes_on_loopback(service_factory):
    service = service_factory("--workers", "3")  # not the default (2): a --workers ignored would show
    root = psutil.Process(service.process.pid)
    tree = [root, *root.children(recursive=True)]
    try:
        with service.http() as http:
            assert http.get("/readyz").json() == {"status": "ready", "reason": "ready", "workers": 3}
        connections = {process: process.net_connections("tcp") for process in tree}
        listening = {
            (c.laddr.ip, c.laddr.port) for process in tree for c in connections[process] if not c.raddr
        }
        assert {ip for ip, _ in listening} == {"127.0.0.1"}, listening
        workers = [process for process in tree[1:] if connections[process]]  # not multiprocessing's tracker
        assert len(workers) == 3
        # The scheduler: the address every worker process talks to, which the service process itself listens on.
        (scheduler,) = set.intersection(
            *({tuple(c.raddr) for c in connections[worker] if c.raddr} for worker in workers)
        )
        assert scheduler[0] == "127.0.0.1" and any(tuple(c.laddr) == scheduler for c in connections[root])
        with service.http(service.keys["alice"]) as alice:
            job = wait_final(alice, submit(alice).json()["job_id"])
            assert job["status"] == "succeeded" and job["progress"] == {"done": 2, "total": 2, "failed": 0}
        service.process.terminate()  # a graceful stop leaves no worker process behind
        service.process.wait(timeout=60)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive
    finally:
        service.stop()
        for process in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()


def test_keys_added_while_running_work_without_a_restart(service):
    added = subprocess.run(
        [venv_bin("simcal"), "keys", "add", "--file", str(service.keys_file), "--name", "erin"],
        capture_output=True,
        text=True,
        check=True,
    )
    key = added.stdout.strip()
    assert key.startswith("sc_") and len(key) > 40 and "erin" in added.stderr
    assert key not in service.keys_file.read_text()  # the file keeps the hash only
    service.keys["erin"] = key
    with service.http(key) as http:
        deadline = time.monotonic() + 10
        while http.get("/v1/jobs").status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert http.get("/v1/jobs").status_code == 200


def test_jobs_cli_lists_shows_and_cancels(service):
    env = {**os.environ, "SIMCAL_API_KEY": service.keys["bob"]}
    with service.http(service.keys["bob"]) as http:
        # Cancelled before its end: 2 minutes on the one worker, long enough for three CLI starts on a loaded
        # machine (5 s was not in CI), in half-second batches, as a batch already running when its job is
        # cancelled is interrupted only between Python steps of its model (docs/service.md): one plain sleep of
        # 120 s held the worker 2 minutes after the cancel, and the next test's job waited for it.
        slow = {
            "fn_ref": "simcal_models:counted_sleep",
            "parameter_sets": [{"a": float(i), "sleep_s": 0.5} for i in range(240)],
            "settings": {"batch_size": 1},
        }
        job_id = submit(http, slow).json()["job_id"]

    def simcal(*args: str) -> str:
        done = subprocess.run(
            [venv_bin("simcal"), "jobs", *args, "--url", service.url], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    listing = simcal("list")
    assert listing.splitlines()[0].split() == [
        "JOB",
        "STATUS",
        "DONE/TOTAL",
        "FAILED",
        "SUBMITTED",
        "DURATION",
        "FN_REF",
    ]
    assert any(line.startswith(job_id) and "counted_sleep" in line for line in listing.splitlines())
    assert json.loads(simcal("show", job_id))["job_id"] == job_id
    assert simcal("cancel", job_id).split() == [job_id, "cancelled"]
    assert json.loads(simcal("list", "--status", "cancelled", "--json"))[0]["job_id"] == job_id
    wrong = subprocess.run(
        [venv_bin("simcal"), "jobs", "list", "--url", service.url, "--api-key", "sc_wrong"],
        capture_output=True,
        text=True,
        env={k: v for k, v in env.items() if k != "SIMCAL_API_KEY"},
    )
    assert wrong.returncode == 1 and "401 invalid API key" in wrong.stderr and "sc_wrong" not in wrong.stderr
    for limit in ("0", "1001", "ten"):  # the API's range, named as the option (not FastAPI's 422 list)
        refused = subprocess.run(
            [venv_bin("simcal"), "jobs", "list", "--url", service.url, "--limit", limit],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        assert refused.returncode == 2, refused.stderr
        assert f"argument --limit: expected a whole number from 1 to 1000, got '{limit}'" in refused.stderr
    with service.http(service.keys["bob"]) as http:
        newest = submit(http).json()["job_id"]  # so that --limit 1 leaves a job out
    assert len(json.loads(simcal("list", "--json"))) >= 2
    assert [job["job_id"] for job in json.loads(simcal("list", "--limit", "1", "--json"))] == [newest]


def test_spans_reach_the_otlp_endpoint_with_the_key_name_and_no_key(service, collector):
    with service.http(service.keys["bob"]) as bob:
        job_id = submit(bob).json()["job_id"]
        assert wait_final(bob, job_id)["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        jobs = [
            s
            for s in collector.spans
            if s.name == "simcal.job" and collector.attributes(s)["simcal.job_id"] == job_id
        ]
        if jobs:
            break
        time.sleep(0.2)
    (job,) = jobs
    assert collector.attributes(job)["simcal.status"] == "succeeded"
    submits = {s.span_id: s for s in collector.spans if s.name == "POST /v1/simulate"}
    (link,) = job.links
    assert link.span_id in submits and collector.attributes(submits[link.span_id])["simcal.key_name"] == "bob"
    assert any(s.name == "GET /v1/jobs/{job_id}" for s in collector.spans)
    exported = " ".join(str(collector.attributes(s)) for s in collector.spans)
    assert all(key not in exported for key in service.keys.values())


def test_no_key_ever_reaches_the_log(service, idle):
    # Sends every key itself (valid, wrong, in the wrong scheme), so it holds in any order; placed last in this
    # module so that the keys the tests above sent are in the log as well.
    for running in (service, idle):
        for key in running.keys.values():
            with running.http(key) as http:
                http.get("/v1/jobs")
            with running.http() as http:
                http.get("/v1/jobs", headers={"Authorization": f"Basic {key}"})
        with running.http("sc_wrong") as http:
            http.get("/v1/jobs")
        deadline = time.monotonic() + 10
        while running.log_text().count("GET /v1/jobs") < 2 * len(running.keys) + 1:
            assert time.monotonic() < deadline, "the service's log does not record the requests"
            time.sleep(0.1)
        text = running.log_text()
        for key in running.keys.values():
            assert key not in text
        assert "Bearer" not in text and "sc_wrong" not in text
    time.sleep(3.0)  # the idle service's per-key buckets (burst 3 at 1 a second) are full again
