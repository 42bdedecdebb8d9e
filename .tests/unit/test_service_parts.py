"""The simulation service's parts on their own: keys file, rate limiter, job registry, and tracing (spans of a real
app in this process, on a LocalCluster of threads, collected by OpenTelemetry's in-memory exporter)."""

from __future__ import annotations

import contextlib
import errno
import io
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from servicekit import service_available, wait_final

from simcal.service.jobs import JobManager, ServiceConfig
from simcal.service.keys import KeyRing, KeysFileError, add_key, hash_key, name_of, read_keys
from simcal.service.limits import RateLimiter, retry_after_header
from simcal.service.registry import SCHEMA_VERSION, JobRegistry

ONE_SIR_SIMULATION = {  # a job of one short SIR simulation
    "fn_ref": "simcal.models.sir:simulate",
    "parameter_sets": [{"beta": 0.3, "gamma": 0.1, "days": 10}],
}


def owner_of(keys_file: Path, name: str) -> str:
    """The owner the registry stores for the jobs of the key of that name (a job written into the registry here is
    seen through the API by that key alone)."""
    (owner,) = (entry.owner for entry in read_keys(keys_file) if entry.name == name)
    return owner


# -- keys ----------------------------------------------------------------------------------------------------------


def test_keys_file_holds_salted_hashes_and_identifies_each_key(tmp_path):
    path = tmp_path / "keys"
    alice, bob = add_key(path, "alice"), add_key(path, "bob")
    text = path.read_text()
    assert alice not in text and bob not in text and alice != bob
    entries = read_keys(path)
    assert [e.name for e in entries] == ["alice", "bob"]
    assert entries[0].salt != entries[1].salt and entries[0].digest == hash_key(alice, entries[0].salt)
    ring = KeyRing(path)
    assert ring.identify(alice) == "alice" and ring.identify(bob) == "bob"
    assert ring.identify(alice + "x") is None and ring.identify("") is None
    with pytest.raises(KeysFileError, match="a key named 'alice' exists already"):
        add_key(path, "alice")
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()  # the umask decides, as for any file


def test_a_keys_jobs_owner_is_its_name_and_an_id_of_that_key_alone_showing_neither_salt_nor_hash(tmp_path):
    """Jobs belong to the key (KeyEntry.owner, '<name>#<key id>'): the same name added again after a revocation is
    another owner; the id is a hash of the salt, so the registry holds neither the salt nor the key's hash."""
    path = tmp_path / "keys"
    add_key(path, "alice")
    (first,) = read_keys(path)
    path.write_text("")  # revoked
    add_key(path, "alice")
    (second,) = read_keys(path)
    assert first.owner != second.owner and {first.owner.split("#")[0], second.owner.split("#")[0]} == {
        "alice"
    }
    for entry in (first, second):
        assert re.fullmatch(r"alice#[0-9a-f]{16}", entry.owner) and name_of(entry.owner) == "alice"
        assert entry.salt.hex()[:8] not in entry.owner and entry.digest.hex()[:8] not in entry.owner
    assert name_of("alice") == "alice"  # a registry's owner of before keys owned jobs


def test_a_registry_that_cannot_write_the_move_to_keys_as_owners_changes_nothing_and_the_next_start_makes_it(
    tmp_path, caplog
):
    """owner_migration: the moves and the new schema are one transaction. Where it cannot be written, the registry
    still opens, keeps schema 1 and its owners (a WARNING names the names whose jobs no key sees meanwhile), and the
    next move makes it."""
    path = tmp_path / "jobs.sqlite"
    registry = JobRegistry(path)
    job_id = registry.create("alice", "m:f", {}, 1, idempotency_key="k1")[0].id
    registry.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 1")  # as schema 1 left it: owners are names
    add_key(tmp_path / "keys", "alice")
    (alice,) = read_keys(tmp_path / "keys")
    registry = JobRegistry(path)
    registry._db.execute("PRAGMA query_only = ON")  # writes refused, as by a disk that takes none
    registry.move_bare_owners({"alice": alice.owner}, "keys")
    assert (
        "the jobs of 'alice' are seen by no key until a start of the service that can write it" in caplog.text
    )
    assert registry.get(job_id).owner == "alice"
    assert registry._db.execute("PRAGMA user_version").fetchone()[0] == 1
    registry._db.execute("PRAGMA query_only = OFF")
    # Meanwhile the key used the Idempotency-Key of a job its name had: the newer job keeps it.
    newer, created = registry.create(alice.owner, "m:f", {}, 1, idempotency_key="k1")
    assert created
    registry.move_bare_owners({"alice": alice.owner}, "keys")
    assert registry.get(job_id, owner=alice.owner) is not None and registry.get(job_id, owner="alice") is None
    assert registry.get(job_id).idempotency_key is None
    assert registry.create(alice.owner, "m:f", {}, 1, idempotency_key="k1") == (registry.get(newer.id), False)
    assert registry._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    registry.close()


def test_two_keys_added_to_one_file_at_once_are_both_kept(tmp_path, monkeypatch):
    """docs/service.md: `simcal keys add` prints a key the service then accepts. Two adds on one keys file at once
    (two admins, a script adding keys in parallel) each read the file and rewrote it with their own line: the one
    that wrote last dropped the other's key, which its user was shown and the service refused. Here the second add
    starts while the first is between its read and its write; both keys must be in the file and identify."""
    import threading

    from simcal.service import keys as keys_module

    path = tmp_path / "keys"
    real_new_key, second = keys_module.new_key, {}

    def new_key_while_another_add_runs():
        if not second:  # the first add, after it read the file: the second add runs now, in another thread
            thread = threading.Thread(target=lambda: second.setdefault("bob", add_key(path, "bob")))
            second["thread"] = thread
            thread.start()
            thread.join(timeout=1.0)  # it either finished (it read the same file) or waits for this add
        return real_new_key()

    monkeypatch.setattr(keys_module, "new_key", new_key_while_another_add_runs)
    alice = add_key(path, "alice")
    second["thread"].join(timeout=30)
    ring = KeyRing(path)
    assert sorted(entry.name for entry in read_keys(path)) == ["alice", "bob"]
    assert ring.identify(alice) == "alice" and ring.identify(second["bob"]) == "bob"
    assert not list(tmp_path.glob(".keys*.lock"))  # the lock goes with the add


def test_a_presented_key_is_compared_with_every_entry_whichever_matches(tmp_path, monkeypatch):
    """docs/service.md: a presented key is compared with every entry before the answer is known, so the time the
    check takes tells neither which entry matched nor whether one did."""
    from simcal.service import keys as keys_module

    path = tmp_path / "keys"
    presented = [add_key(path, name) for name in ("alice", "bob", "carol")]
    digests = [entry.digest for entry in read_keys(path)]
    ring = KeyRing(path)
    compared = []
    real = keys_module.hmac.compare_digest

    def counted(given, stored):
        compared.append(stored)
        return real(given, stored)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counted)
    for key, name in zip([*presented, "sc_not_a_key"], ["alice", "bob", "carol", None], strict=True):
        compared.clear()
        assert ring.identify(key) == name
        assert compared == digests, name


def test_simcal_keys_add_refuses_an_empty_name_and_makes_one_up_only_when_it_is_left_out(tmp_path, capsys):
    """``--name "$NAME"`` with NAME unset added a key under a made-up name; the name is what logs show."""
    from simcal.cli import main

    path = tmp_path / "keys"
    assert main(["keys", "add", "--file", str(path), "--name", ""]) == 2
    assert "key name '' must match" in capsys.readouterr().err and not path.exists()
    assert main(["keys", "add", "--file", str(path)]) == 0
    assert [entry.name for entry in read_keys(path)][0].startswith("key-")


def test_a_key_is_256_random_bits_stored_as_sha256_of_its_own_salt_and_the_key(tmp_path):
    """docs/service.md, Security: a random 256-bit key per client, stored as ``<name> sha256$<salt>$<hash>``, the
    SHA-256 of a per-key random salt and the key (computed here with hashlib, not with the module's own hash_key)."""
    import base64
    import hashlib

    path = tmp_path / "keys"
    keys = [add_key(path, f"user{i}") for i in range(3)]
    for key, line in zip(keys, path.read_text().splitlines(), strict=True):
        assert key.startswith("sc_")
        random_part = base64.urlsafe_b64decode(key[3:] + "=" * (-len(key[3:]) % 4))
        assert len(random_part) == 32  # 256 bits
        name, entry = line.split(" ")
        scheme, salt, digest = entry.split("$")
        assert scheme == "sha256" and len(salt) == 32  # 16 random bytes of salt, per key
        assert digest == hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()
    assert len({line.split("$")[1] for line in path.read_text().splitlines()}) == 3


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "text, words",
    [
        ("sc_plainkeyhere\n", "line 1: expected '<name> sha256$<salt>$<hash>'"),
        ("# comment\nalice sha256$00$11\n", "line 2: expected"),
        (
            f"alice sha256${'0' * 32}${'1' * 64}\nalice sha256${'2' * 32}${'3' * 64}\n",
            "line 2: key name 'alice'",
        ),
        (f"-bad sha256${'0' * 32}${'1' * 64}\n", "line 1: key name '-bad' must match"),
    ],
)
def test_a_malformed_keys_file_is_refused_naming_the_line(tmp_path, text, words):
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(KeysFileError, match="line") as error:
        KeyRing(path)
    assert str(path) in str(error.value) and words in str(error.value)


def test_key_ring_follows_the_file_and_keeps_its_keys_when_the_file_breaks(tmp_path, monkeypatch):
    import simcal.service.keys as keys_module

    monkeypatch.setattr(keys_module, "RELOAD_EVERY_S", 0.0)
    path = tmp_path / "keys"
    alice = add_key(path, "alice")
    ring = KeyRing(path)
    bob = add_key(path, "bob")
    assert ring.identify(bob) == "bob"
    path.write_text(path.read_text() + "not a key line\n")
    assert ring.identify(bob) == "bob" and ring.identify(alice) == "alice"  # the broken file changed nothing
    path.write_text(path.read_text().replace("not a key line\n", "").split("\n", 1)[1])  # alice revoked
    assert ring.identify(alice) is None and ring.identify(bob) == "bob"


def test_key_ring_follows_a_secret_volume_updated_the_kubelets_way(tmp_path, monkeypatch):
    """The kubelet updates a Secret volume by writing a new directory and swapping the ``..data`` link."""
    import simcal.service.keys as keys_module

    monkeypatch.setattr(keys_module, "RELOAD_EVERY_S", 0.0)
    mount = tmp_path / "mount"
    (mount / "..v1").mkdir(parents=True)
    old_key = add_key(mount / "..v1" / "keys", "old")
    (mount / "..data").symlink_to("..v1")
    (mount / "keys").symlink_to("..data/keys")
    ring = KeyRing(mount / "keys")
    assert ring.identify(old_key) == "old"
    (mount / "..v2").mkdir()
    new_key = add_key(mount / "..v2" / "keys", "new")
    (mount / "..data_tmp").symlink_to("..v2")
    os.replace(mount / "..data_tmp", mount / "..data")
    assert ring.identify(new_key) == "new" and ring.identify(old_key) is None


# -- rate limit ------------------------------------------------------------------------------------------------------


def test_token_bucket_allows_bursts_then_the_rate_per_key():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(0.5)
    assert limiter.acquire("b") == 0.0  # another key, another bucket
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0 and limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 100.0
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # refills to the burst, not beyond
    assert retry_after_header(0.01) == "1" and retry_after_header(1.2) == "2"
    with pytest.raises(ValueError, match="rate > 0"):
        RateLimiter(0, 1)


# -- registry --------------------------------------------------------------------------------------------------------


def test_the_registry_writes_each_job_to_disk_before_the_answer(tmp_path):
    """docs/service.md: the registry is SQLite with ``synchronous=FULL`` (and a WAL journal): a job the API accepted
    is on disk before the answer. NORMAL, with WAL, may lose the last commits when the machine fails."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    assert registry._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert registry._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_registry_keeps_jobs_across_reopening_and_recovers_interrupted_ones(tmp_path):
    path = tmp_path / "jobs.sqlite"
    registry = JobRegistry(path)
    once, created = registry.create("alice", "m:f", {"x": 1}, 4, idempotency_key="k1")
    again, created_again = registry.create("alice", "m:f", {"x": 1}, 4, idempotency_key="k1")
    assert created and not created_again and again.id == once.id  # a retried submission: the same job
    other, _ = registry.create("bob", "m:f", {"x": 1}, 4, idempotency_key="k1")  # keys are per owner
    assert other.id != once.id
    interrupted, _ = registry.create("alice", "m:f", {}, 2)
    crashing, _ = registry.create("alice", "m:f", {}, 2)
    for job in (interrupted, crashing):
        assert registry.start(job.id)
    assert registry.start(crashing.id) is False  # only a queued job starts
    registry._write("UPDATE jobs SET attempts = 2 WHERE id = ?", (crashing.id,))
    registry.close()

    reopened = JobRegistry(path)  # the service died: a new process opens the same file
    resumed, failed = reopened.recover(max_attempts=2)
    assert resumed == [interrupted.id] and failed == [crashing.id]
    assert reopened.get(interrupted.id).status == "queued" and reopened.get(interrupted.id).attempts == 1
    failed_job = reopened.get(crashing.id)
    assert failed_job.status == "failed" and "the service stopped 2 time(s)" in failed_job.error
    assert reopened.queued() == [once.id, other.id, interrupted.id]
    assert reopened.get(once.id, owner="bob") is None  # jobs are seen by their owner only
    assert reopened.finish(once.id, "cancelled", error="cancelled by request")
    assert not reopened.finish(once.id, "succeeded")  # a final status is final
    assert reopened.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 1}
    reopened.close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(RuntimeError, match="schema 99 is newer"):
        JobRegistry(path)


def test_only_a_running_job_goes_back_to_the_queue(tmp_path):
    """registry.requeue: running -> queued; False when the job was not running, which it leaves as it was: a queued
    job is not counted as requeued, and an ended job never goes back to the queue (a final status is final)."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    queued, _ = registry.create("alice", "m:f", {}, 1)
    ended, _ = registry.create("alice", "m:f", {}, 1)
    assert not registry.requeue(queued.id)
    assert registry.start(ended.id)
    assert registry.finish(ended.id, "succeeded", done=1, failed=0)
    assert not registry.requeue(ended.id)
    assert (registry.get(queued.id).status, registry.get(queued.id).attempts) == ("queued", 0)
    assert registry.get(ended.id).status == "succeeded" and registry.queued() == [queued.id]
    registry.close()


def test_a_job_queued_again_and_started_again_keeps_its_first_start(tmp_path, monkeypatch):
    """registry.start: ``started = COALESCE(started, ?)``: a job that goes back to the queue (a graceful stop, a lost
    scheduler, a death of the service) and starts again keeps the time it first started, so its ``started`` and
    ``duration_s`` cover its whole run, resumed parts included; each start counts an attempt."""
    from simcal.service import registry as registry_module

    registry = JobRegistry(tmp_path / "jobs.sqlite")
    job, _ = registry.create("alice", "m:f", {}, 1)
    now = time.time()
    monkeypatch.setattr(registry_module.time, "time", lambda: now)
    assert registry.start(job.id)
    assert registry.requeue(job.id)
    monkeypatch.setattr(registry_module.time, "time", lambda: now + 60.0)
    assert registry.start(job.id)
    again = registry.get(job.id)
    assert again.started == now and again.attempts == 1  # the requeue did not count the first run
    assert registry.finish(job.id, "succeeded", done=1, failed=0)
    assert registry.get(job.id).describe()["duration_s"] == 60.0
    registry.close()


def test_a_clock_stepped_back_neither_reorders_the_job_list_nor_makes_a_duration_negative(
    tmp_path, monkeypatch
):
    """GET /v1/jobs is newest first; ordered by submission time, a job made after the clock stepped back an hour
    (NTP after a suspended VM) came after the older ones, and a running job showed a negative duration_s."""
    from simcal.service import registry as registry_module

    registry = JobRegistry(tmp_path / "jobs.sqlite")
    older, _ = registry.create("alice", "m:f", {}, 1)
    assert registry.start(older.id)
    now = time.time()
    monkeypatch.setattr(registry_module.time, "time", lambda: now - 3600.0)
    newer, _ = registry.create("alice", "m:f", {}, 1)
    assert [job.id for job in registry.list("alice")] == [newer.id, older.id]
    assert [job.id for job in registry.list("alice", limit=1)] == [newer.id]
    # Counted by the monotonic clock since its start moments ago, not by the wall clock an hour back.
    assert 0.0 <= registry.get(older.id).describe()["duration_s"] < 60.0
    registry.close()


@pytest.mark.parametrize("step_s", [3600.0, -3600.0])
def test_a_running_jobs_duration_is_counted_by_the_monotonic_clock_whatever_the_wall_clock_does(
    tmp_path, monkeypatch, step_s
):
    """A running job's duration_s was time.time() minus its stored start: the wall clock stepped an hour ahead
    (NTP after a suspended VM) made a job running for 42 s show 3642 s, and one stepped back 0. Counted by this
    process's monotonic clock from its start here, it is 42 s either way; its stored start stays a wall time, and
    after its end its duration is that of the stored times."""
    from simcal.service import registry as registry_module

    registry = JobRegistry(tmp_path / "jobs.sqlite")
    job, _ = registry.create("alice", "m:f", {}, 1)
    wall, ticks = time.time(), time.monotonic()
    monkeypatch.setattr(registry_module.time, "time", lambda: wall)
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: ticks)
    assert registry.start(job.id)
    monkeypatch.setattr(registry_module.time, "time", lambda: wall + step_s + 42.0)
    monkeypatch.setattr(registry_module.time, "monotonic", lambda: ticks + 42.0)
    running = registry.get(job.id).describe()
    assert running["status"] == "running" and running["duration_s"] == 42.0
    assert [listed.describe()["duration_s"] for listed in registry.list("alice")] == [42.0]
    assert registry.get(job.id).started == wall  # the stored start is the wall clock's
    assert registry.requeue(job.id) and registry.start(
        job.id
    )  # started again here: counted from its first start
    assert registry.get(job.id).describe()["duration_s"] == 42.0
    assert registry.finish(job.id, "succeeded", done=1, failed=0)
    assert registry.get(job.id).describe()["duration_s"] == max(0.0, step_s + 42.0)  # the stored times' now
    registry.close()


def test_an_owners_job_list_searches_the_owner_index_which_opening_an_older_registry_makes(tmp_path):
    """GET /v1/jobs (``JobRegistry.list``) had no index on owner: an owner with a few jobs among many read every
    job in the registry (SCAN jobs, newest first until LIMIT of theirs). The index is made when a registry is
    opened, so one made before it gets it too; the listing, with a status or without, searches it."""
    path = tmp_path / "jobs.sqlite"
    registry = JobRegistry(path)
    made = {
        owner: [registry.create(owner, "m:f", {}, 1)[0].id for _ in range(3)] for owner in ("alice", "bob")
    }
    registry.close()
    with contextlib.closing(sqlite3.connect(path)) as db:  # as a registry made before the index is
        db.execute("DROP INDEX IF EXISTS jobs_owner")
    registry = JobRegistry(path)
    statements = []
    registry._db.set_trace_callback(statements.append)  # each statement run, its values in place
    assert [job.id for job in registry.list("alice")] == made["alice"][::-1]
    assert [job.id for job in registry.list("bob", status="queued", limit=2)] == made["bob"][:0:-1]
    registry._db.set_trace_callback(None)
    registry.close()
    listings = [sql for sql in statements if sql.startswith("SELECT * FROM jobs WHERE owner")]
    assert len(listings) == 2, statements
    with contextlib.closing(sqlite3.connect(path)) as db:
        for sql in listings:
            plan = [row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert plan == ["SEARCH jobs USING INDEX jobs_owner (owner=?)"], (sql, plan)


def test_a_jobs_status_and_the_job_list_do_not_parse_the_jobs_requests(tmp_path, monkeypatch):
    """Every GET /v1/jobs/{id} (a client polls each second) and GET /v1/jobs parsed each job's whole request: 0.36 s
    per poll of a real job of 400 000 parameter sets. Only the runner and a replayed submission read it."""
    from simcal.service import registry as registry_module

    registry = JobRegistry(tmp_path / "jobs.sqlite")
    request = {"parameter_sets": [{"beta": 0.1 + i * 1e-6} for i in range(1000)], "n_replicates": 2}
    made, _ = registry.create("alice", "m:f", request, 2000)
    parsed = []
    loads = registry_module.json.loads
    monkeypatch.setattr(registry_module.json, "loads", lambda text: parsed.append(len(text)) or loads(text))
    assert registry.get(made.id).describe()["progress"]["total"] == 2000
    assert [job.describe()["job_id"] for job in registry.list("alice")] == [made.id]
    assert parsed == []
    job = registry.get(made.id)
    assert (
        job.request == request and job.request is job.request and len(parsed) == 1
    )  # parsed once, when read
    registry.close()


def test_a_retried_idempotency_key_answers_each_owner_with_its_own_job(tmp_path):
    """Keys are per API key: bob retrying the key alice used first gets bob's job back, never alice's."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    alices, _ = registry.create("alice", "m:f", {"x": 1}, 4, idempotency_key="k1")
    bobs, _ = registry.create("bob", "m:f", {"x": 2}, 4, idempotency_key="k1")
    for owner, job in (("bob", bobs), ("alice", alices)):
        again, created = registry.create(owner, "m:f", {"x": 1}, 4, idempotency_key="k1")
        assert not created and again.id == job.id and again.owner == owner
    registry.close()


@pytest.mark.parametrize("sync", [False, True])
def test_a_request_of_as_many_simulations_as_the_limit_is_accepted_and_one_more_is_refused(tmp_path, sync):
    """--max-simulations / --sync-max-simulations are the most a job / a synchronous request may have."""
    from simcal.service.jobs import RequestRefused, plan_request

    config = ServiceConfig(state_dir=tmp_path, max_simulations=6, sync_max_simulations=4)
    limit = config.sync_max_simulations if sync else config.max_simulations
    body = {**ONE_SIR_SIMULATION, "n_replicates": limit}
    assert plan_request(body, config, sync=sync).simulations == limit
    with pytest.raises(
        RequestRefused, match=f"= {limit + 1} simulations; this service takes at most {limit}"
    ):
        plan_request({**body, "n_replicates": limit + 1}, config, sync=sync)


def test_a_synchronous_request_is_held_to_max_simulations_when_it_is_below_sync_max_simulations(tmp_path):
    """A synchronous request makes a job: a service started with --max-simulations 3 (below the default
    --sync-max-simulations, 1000) took synchronous requests of up to 1000 simulations, and a refused one was told to
    submit it as a job, which is refused too."""
    from simcal.service.jobs import RequestRefused, plan_request

    config = ServiceConfig(state_dir=tmp_path, max_simulations=3)
    body = {**ONE_SIR_SIMULATION, "n_replicates": 3}
    assert plan_request(body, config, sync=True).simulations == 3
    with pytest.raises(RequestRefused) as refused:
        plan_request({**body, "n_replicates": 4}, config, sync=True)
    assert refused.value.status == 413
    assert refused.value.message.endswith("= 4 simulations; this service takes at most 3 per job")


def test_a_metrics_scrape_never_sees_an_ended_job_without_its_simulations(tmp_path):
    """The registry marks the job ended before the total can grow; a scrape in between once read a succeeded job
    with 0 simulations. The scrape waits until both are written, never sees one without the other."""
    committed, release = threading.Event(), threading.Event()

    class SlowToReturn(JobRegistry):
        def finish(self, *args, **kwargs):
            ended = super().finish(*args, **kwargs)
            committed.set()  # the job is ended for every reader of the registry from here on
            release.wait(10)
            return ended

    registry = SlowToReturn(tmp_path / "jobs.sqlite")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    job, _ = registry.create("alice", "m:f", {}, 5)
    assert registry.start(job.id)
    finisher = threading.Thread(target=manager._finish, args=(job.id, "succeeded"), kwargs={"done": 5})
    finisher.start()
    assert committed.wait(10) and registry.get(job.id).status == "succeeded"
    scrapes = []
    scraper = threading.Thread(target=lambda: scrapes.append(manager.counts_and_simulations()))
    scraper.start()
    scraper.join(0.5)
    assert scraper.is_alive() and not scrapes  # it waits for the total
    release.set()
    finisher.join(10)
    scraper.join(10)
    counts, simulations = scrapes[0]
    assert counts["succeeded"] == 1 and simulations == 5
    manager._finish(job.id, "failed", done=5)  # already ended: neither the status nor the total changes
    assert manager.counts_and_simulations() == (counts, 5)
    registry.close()


def test_waits_on_an_ended_job_are_answered_at_once_and_leave_nothing_behind(tmp_path):
    """A long-lived service sees many jobs: a wait on a job that had ended (a synchronous request retried with its
    Idempotency-Key after the job finished) kept a set event per call in the manager for ever."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    job, _ = registry.create("alice", "m:f", {}, 1)
    assert registry.start(job.id)
    waiting = manager.ended(job.id)  # a synchronous request waiting while the job runs
    assert not waiting.is_set()
    manager._finish(job.id, "succeeded", done=1)
    manager._signal_end(job.id)
    assert waiting.is_set()
    for _ in range(3):
        assert manager.ended(job.id).is_set() and manager.wait(job.id, 0)
    assert manager._ended == {}
    registry.close()


def test_a_job_that_starts_while_its_cancel_reads_it_queued_is_stopped_not_marked_cancelled(tmp_path):
    """DELETE reads the job queued, and a job thread starts it before the cancel is written. Marking it cancelled
    then (as the cancel of a queued job does) left it running on the cluster to its end, unseen, with its results
    published: it must be cancelled as a running job is, by its runner."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    job, _ = registry.create("alice", "m:f", {}, 5)
    runner_told_to_stop = manager._cancels.setdefault(job.id, threading.Event())  # what _run holds
    read = registry.get

    def read_then_the_job_starts(job_id, owner=None):
        found = read(job_id, owner)
        if owner is not None:  # the cancel's read: the job thread starts the job right after it
            assert registry.start(job_id)
        return found

    registry.get = read_then_the_job_starts
    assert manager.cancel(job.id, "alice", wait_s=0.1).status == "running"  # its runner records the end
    assert runner_told_to_stop.is_set()
    registry.close()


def test_a_queued_job_cancelled_leaves_no_parts_of_an_earlier_run_behind(tmp_path):
    """A job queued again (its run interrupted by a stop of the service) has parts in its directory; cancelled
    before it runs again, they would stay under --state-dir for ever, as a cancelled running job's did."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    job, _ = registry.create("alice", "m:f", {}, 5)
    parts = manager.output_of(job.id).with_name("simulations.parquet.partial")
    parts.mkdir(parents=True)
    pd.DataFrame({"y": [1.0]}).to_parquet(parts / "part-0.parquet")
    assert manager.cancel(job.id, "alice").status == "cancelled"
    assert not manager.work_dir(job.id).exists()
    registry.close()


def test_a_queued_job_of_a_model_taken_off_the_allow_list_since_is_failed_not_run(tmp_path):
    """Found with a real service: a job running when it was stopped resumed after a restart with a narrower
    --allow-models and ran the model taken off the list to its end."""
    registry = JobRegistry(tmp_path / "jobs.sqlite")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    job, _ = registry.create("alice", "simcal_models:noisy_line", {}, 5)  # accepted by a service allowing it
    waiting = manager.ended(job.id)
    manager._run(job.id)  # the service now allows simcal.models only
    failed = registry.get(job.id)
    assert failed.status == "failed" and waiting.is_set()
    assert failed.error == (
        "not run: fn_ref 'simcal_models:noisy_line' is not allowed: this service runs only models under "
        "simcal.models (its --allow-models) (checked again as it was to start: the service's --allow-models or "
        "models changed since it was accepted)"
    )
    registry.close()


def test_a_finished_jobs_counts_are_its_simulations_not_its_rows_and_every_status_but_ok_is_failed(tmp_path):
    """jobs.result_counts, a finished job's ``progress: {done, failed}``: simulations (one per param_id, replicate
    and seed, however many rows a model returns: a time series has one per day), and failed ones whatever their
    failure status (failed, timeout, crashed: simcal.worker.FAILED_STATUSES)."""
    from simcal.service.jobs import result_counts
    from simcal.worker import FAILED_STATUSES

    statuses = ["ok", *FAILED_STATUSES]  # one simulation of each
    rows = pd.DataFrame(
        {
            "param_id": [f"p{i}" for i, _ in enumerate(statuses) for _day in range(3)],
            "replicate": 0,
            "seed": [i for i, _ in enumerate(statuses) for _day in range(3)],
            "day": [day for _ in statuses for day in range(3)],
            "status": [status for status in statuses for _day in range(3)],
        }
    )
    rows.to_parquet(tmp_path / "simulations.parquet")
    assert result_counts(tmp_path / "simulations.parquet") == (len(statuses), len(FAILED_STATUSES))


def test_a_full_disk_is_found_through_the_errors_raised_from_it_or_while_handling_it():
    """jobs.disk_full: ENOSPC or EDQUOT, on the error itself or on one it was raised from (``raise ... from``) or
    while handling (a library that wraps the OSError without ``from``); another OSError is not a full disk, and a
    chain that loops ends."""
    from simcal.service.jobs import disk_full

    def raised(outer_from, inner):
        try:
            try:
                raise inner
            except OSError as error:
                if outer_from:
                    raise RuntimeError("writing the part failed") from error
                raise RuntimeError("writing the part failed")  # noqa: B904 - implicit chaining is the point
        except RuntimeError as outer:
            return outer

    for code in (errno.ENOSPC, errno.EDQUOT):
        full = OSError(code, os.strerror(code))
        assert disk_full(full)
        assert disk_full(raised(True, OSError(code, os.strerror(code))))
        assert disk_full(raised(False, OSError(code, os.strerror(code))))
    assert not disk_full(raised(False, OSError(errno.EACCES, os.strerror(errno.EACCES))))
    assert not disk_full(RuntimeError("boom"))
    looped = RuntimeError("a")
    looped.__context__ = RuntimeError("b")
    looped.__context__.__context__ = looped
    assert not disk_full(looped)


def test_a_job_paused_by_a_full_disk_is_tried_again_after_retry_s_the_wait_doubling_to_at_most_a_minute(
    tmp_path, monkeypatch
):
    """docs/service.md: a job whose own disk fills goes back to the queue (the run not counted) and is tried again
    after 5 s (the registry's retry_s), the wait doubling with each try to at most a minute (FULL_DISK_RETRY_MAX_S);
    each try puts the job back in the job threads' queue."""
    from simcal.service import jobs

    timers = []

    class Timer:
        def __init__(self, interval, function, args=()):
            timers.append((interval, function, args))
            self.daemon = False

        def start(self):
            pass

    monkeypatch.setattr(jobs.threading, "Timer", Timer)
    requeued = []
    registry = SimpleNamespace(
        retry_s=5.0, requeue=lambda job_id, count_attempt=False: requeued.append((job_id, count_attempt))
    )
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    for _ in range(7):
        assert manager._paused_by_full_disk("job", full, threading.Event())
    assert [interval for interval, _, _ in timers] == [5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0]
    assert requeued == [("job", False)] * 7  # back to the queue, the run not counted
    _, put, args = timers[0]
    put(*args)
    assert manager._queue.get_nowait() == "job"


# -- tracing ---------------------------------------------------------------------------------------------------------


def test_no_tracing_without_an_otlp_endpoint_and_an_exporter_with_one():
    from simcal.service.telemetry import Telemetry

    off = Telemetry.from_environment({"OTEL_SERVICE_NAME": "x"})
    assert not off.enabled and off.provider is None and off.current_context() is None
    with off.span("anything") as span:
        assert span is None
    on = Telemetry.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    try:
        assert on.enabled
        processors = on.provider._active_span_processor._span_processors
        assert type(processors[0].span_exporter).__name__ == "OTLPSpanExporter"
        assert on.provider.resource.attributes["service.name"] == "simcal-service"
    finally:
        on.shutdown()


def test_traces_carry_the_service_name_otel_service_name_gives():
    """telemetry: OTEL_SERVICE_NAME names the service in its traces (simcal-service when it is not set)."""
    from simcal.service.telemetry import Telemetry

    named = Telemetry.from_environment(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SERVICE_NAME": "lab-simulations"}
    )
    try:
        assert named.provider.resource.attributes["service.name"] == "lab-simulations"
    finally:
        named.shutdown()


def test_spans_for_each_request_and_each_job_carry_the_key_name_never_the_key(tmp_path):
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from simcal.service.jobs import ServiceConfig
    from simcal.service.server import Service
    from simcal.service.telemetry import Telemetry

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    key = add_key(tmp_path / "keys", "alice")
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(
            ServiceConfig(state_dir=tmp_path / "state"),
            tmp_path / "keys",
            scheduler=cluster.scheduler_address,
            telemetry=Telemetry(provider),
        )
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            job_id = http.post("/v1/simulate", json=ONE_SIR_SIMULATION).json()["job_id"]
            assert wait_final(http, job_id, timeout=60)["status"] == "succeeded"
            assert http.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    spans = exporter.get_finished_spans()
    by_name = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    (submit,) = by_name["POST /v1/simulate"]
    assert submit.attributes["http.route"] == "/v1/simulate"
    assert submit.attributes["http.response.status_code"] == 202
    assert submit.attributes["simcal.key_name"] == "alice"
    polls = by_name["GET /v1/jobs/{job_id}"]  # the route template, not one name per job
    assert all(span.attributes["http.route"] == "/v1/jobs/{job_id}" for span in polls)
    refused = [s for s in by_name["GET /v1/jobs"] if s.attributes["http.response.status_code"] == 401]
    assert refused and "simcal.key_name" not in refused[0].attributes
    (job,) = by_name["simcal.job"]
    assert job.attributes["simcal.job_id"] == job_id and job.attributes["simcal.status"] == "succeeded"
    assert job.attributes["simcal.simulations"] == 1
    assert job.links[0].context.span_id == submit.context.span_id  # the job links back to its request
    for span in spans:
        assert all(key not in str(value) for value in span.attributes.values())


def test_a_registry_on_a_full_disk_answers_503_saying_so_and_no_traceback(tmp_path):
    """Found with a real service under a file size limit: once the registry could not grow, each submission
    answered '500 Internal Server Error' (the client does not retry a 500) and logged a traceback. The registry is
    full here as on a full disk, to SQLite: its pages are capped at the number it has (SQLITE_FULL)."""
    service_available()
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    key = add_key(tmp_path / "keys", "alice")
    service = Service(ServiceConfig(state_dir=tmp_path / "state"), tmp_path / "keys")
    http = TestClient(service.app)  # no lifespan: no job thread nor Dask, the API and the registry only
    http.headers["Authorization"] = f"Bearer {key}"
    assert http.post("/v1/simulate", json=ONE_SIR_SIMULATION).status_code == 202
    registry = service.registry
    with registry._lock:
        pages = registry._db.execute("PRAGMA page_count").fetchone()[0]
        registry._db.execute(f"PRAGMA max_page_count = {pages}")
    sets = [{"beta": 0.3, "gamma": 0.1, "days": days} for days in range(1, 900)]
    answer = http.post("/v1/simulate", json={**ONE_SIR_SIMULATION, "parameter_sets": sets})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "10", answer.text
    assert answer.json()["detail"] == (
        "the service cannot use its job registry (database or disk is full): its disk may be full or failing; "
        "retry later"
    )
    assert len(http.get("/v1/jobs").json()["jobs"]) == 1  # the service goes on answering
    registry.close()


def test_a_second_service_on_a_state_dir_in_use_is_refused_naming_the_first(tmp_path):
    """Found with two real 'simcal serve' on one --state-dir: the second took the first's running job for one
    interrupted by a death, queued it again and ran it too, both writing its parts."""
    service_available()
    from simcal.service.server import Service

    add_key(tmp_path / "keys", "alice")
    config = ServiceConfig(state_dir=tmp_path / "state")
    first = Service(config, tmp_path / "keys")
    with pytest.raises(ValueError, match=rf"--state-dir {tmp_path / 'state'} is in use by another simcal serve "
                       rf"\(pid {os.getpid()}, in serve.lock\): one service per state directory"):  # fmt: skip
        Service(config, tmp_path / "keys")
    first.registry.close()
    first._state_lock.close()  # as its lifespan's end, or the end of its process, does
    Service(config, tmp_path / "keys").registry.close()


def test_the_state_lock_names_this_service_alone_whatever_an_ended_one_left_in_it(tmp_path):
    """lock_state_dir writes this process's id into serve.lock: the id a service that has ended left there (its lock
    went with its process) is replaced, so a second service refused names the one that holds the lock, only."""
    service_available()
    from simcal.service.server import STATE_LOCK, lock_state_dir

    (tmp_path / STATE_LOCK).write_text("4194000\n")
    handle = lock_state_dir(tmp_path)
    try:
        assert (tmp_path / STATE_LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(
            ValueError, match=rf"in use by another simcal serve \(pid {os.getpid()}, in serve\.lock\)"
        ):
            lock_state_dir(tmp_path)
    finally:
        handle.close()


def test_the_service_listens_on_an_ipv6_host_over_ipv6_as_uvicorn_would(monkeypatch):
    """listening_socket binds the socket uvicorn is handed: an IPv6 host (a colon in it) needs an AF_INET6 socket,
    any other an AF_INET one."""
    service_available()
    import socket

    from simcal.service import server

    families = []

    class Recorded:
        def __init__(self, family, kind, protocol):
            families.append(family)

        def setsockopt(self, *option):
            pass

        def bind(self, address):
            pass

    names = ("AF_INET", "AF_INET6", "SOCK_STREAM", "IPPROTO_TCP", "SOL_SOCKET", "SO_REUSEADDR")
    monkeypatch.setattr(
        server, "socket", SimpleNamespace(socket=Recorded, **{name: getattr(socket, name) for name in names})
    )
    for host in ("::1", "::", "127.0.0.1", "0.0.0.0", "localhost"):
        server.listening_socket(host, 8000)
    assert families == [socket.AF_INET6, socket.AF_INET6, socket.AF_INET, socket.AF_INET, socket.AF_INET]


def test_a_job_finished_but_not_published_when_the_service_died_is_published_without_running_again(
    tmp_path, monkeypatch
):
    """The service died between a job's last simulation (its file written, its parts gone) and the publishing. At
    the next start the job is recovered, its file published as it is, and no simulation runs again."""
    service_available()
    from distributed import Client, LocalCluster
    from fastapi.testclient import TestClient

    from simcal.runner import simulate
    from simcal.service.jobs import plan_request
    from simcal.service.server import Service
    from simcal.settings import SimulationSettings

    count_file, key, config = _counted_service(tmp_path, monkeypatch)
    body = {
        "fn_ref": "simcal_models:counted_sleep",
        "parameter_sets": [{"a": float(i), "sleep_s": 0.0} for i in range(4)],
        "n_replicates": 2,
        "settings": {"seed": 5},
    }
    plan = plan_request(body, config)
    registry = JobRegistry(config.state_dir / "jobs.sqlite")
    job, _ = registry.create(
        owner_of(tmp_path / "keys", "alice"), plan.fn_ref, plan.request, plan.simulations
    )
    assert registry.start(job.id)  # it was running when the service died
    registry.close()
    output = config.state_dir / "jobs" / job.id / "simulations.parquet"
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:  # what the dead service's job thread had done
            simulate(plan.fn_ref, pd.DataFrame(plan.parameter_sets), output,
                     SimulationSettings.from_config({"seed": 5, "replicates": 2}), client=client)  # fmt: skip
        finished = pd.read_parquet(output)
        assert len(count_file.read_text().split()) == 8
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            info = wait_final(http, job.id, timeout=60)
            assert info["status"] == "succeeded", info
            published = pd.read_parquet(io.BytesIO(http.get(f"/v1/jobs/{job.id}/results").content))
    assert info["progress"] == {"done": 8, "total": 8, "failed": 0}
    assert len(count_file.read_text().split()) == 8  # nothing ran again
    pd.testing.assert_frame_equal(published, finished)
    assert not output.parent.exists()


def test_a_job_whose_results_cannot_be_published_fails_with_the_storage_error_and_keeps_its_file(tmp_path):
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    key = add_key(tmp_path / "keys", "alice")
    results = tmp_path / "results"
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(
            ServiceConfig(state_dir=tmp_path / "state"),
            tmp_path / "keys",
            scheduler=cluster.scheduler_address,
            results=str(results),
        )
        results.rmdir()
        results.write_text("")  # the results volume is broken: not a directory any more
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            job_id = http.post("/v1/simulate", json=ONE_SIR_SIMULATION).json()["job_id"]
            info = wait_final(http, job_id, timeout=60)
    assert info["status"] == "failed" and info["results_path"] is None
    assert (
        info["error"].startswith(("FileExistsError", "NotADirectoryError")) and str(results) in info["error"]
    )
    output = tmp_path / "state" / "jobs" / job_id / "simulations.parquet"
    assert set(pd.read_parquet(output)["status"]) == {"ok"}  # the finished file stays: resubmit it
    assert not output.with_name(output.name + ".partial").exists()


def test_publishing_writes_the_results_file_whole_or_not_at_all(tmp_path, monkeypatch):
    """A results file is replaced atomically: a copy that fails midway (a full disk) leaves the file published
    before as it was and no partial file under the job's name; a published file is readable as a plain file is."""
    from simcal.service import results as results_module
    from simcal.service.results import LocalResults
    from simcal.tables import current_umask

    store = LocalResults(tmp_path / "results")
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"
    pd.DataFrame({"y": range(1000)}).to_parquet(first)
    pd.DataFrame({"y": range(5000)}).to_parquet(second)
    published = store.publish(first, "job-1")
    assert published == str(tmp_path / "results" / "job-1.parquet")
    assert os.stat(published).st_mode & 0o777 == 0o666 & ~current_umask()
    copy = shutil.copyfileobj

    def disk_full_midway(reading, writing):
        writing.write(reading.read()[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(results_module.shutil, "copyfileobj", disk_full_midway)
    with pytest.raises(OSError, match="No space left"):
        store.publish(second, "job-1")
    monkeypatch.setattr(results_module.shutil, "copyfileobj", copy)
    assert pd.read_parquet(published)["y"].tolist() == list(range(1000))
    assert sorted(path.name for path in (tmp_path / "results").iterdir()) == ["job-1.parquet"]


def test_a_relative_results_directory_gives_results_paths_that_hold_from_anywhere(tmp_path, monkeypatch):
    """results_path is shown to clients and kept in the registry: relative, it named the file from the service's
    working directory only (a restart from elsewhere answered 410 for results that were there)."""
    from simcal.service.results import LocalResults

    made = tmp_path / "made.parquet"
    pd.DataFrame({"y": [1.0]}).to_parquet(made)
    monkeypatch.chdir(tmp_path)
    published = LocalResults("results").publish(made, "job-1")
    assert published == str(tmp_path / "results" / "job-1.parquet")
    monkeypatch.chdir(tmp_path.parent)
    assert LocalResults(tmp_path / "results").exists(published)


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("notahost", "missing port number in address 'notahost'"),
        ("tcp://127.0.0.1:99999", "port 99999 outside 1..65535"),
        ("tcp://127.0.0.1:0", "port 0 outside 1..65535"),  # "any free port" for a server, none to connect to
        ("http://127.0.0.1:8787", "unknown protocol 'http'"),  # the dashboard's URL
        ("scheduler:abc", "invalid literal for int()"),
    ],
)
def test_a_scheduler_address_dask_could_never_connect_to_is_refused_naming_it(address, words):
    """Taken, it was retried for ever: the service never ready, the reason only in /readyz."""
    from simcal.service.cluster import Cluster

    with pytest.raises(ValueError, match=rf"--scheduler '{re.escape(address)}' .*: .*{re.escape(words)}"):
        Cluster(address)
    for fine in ("tcp://127.0.0.1:8786", "tls://dask-scheduler:8786", "localhost:8786", "tcp://[::1]:8786",
                 "tcp://127.0.0.1:1", "tcp://127.0.0.1:65535"):  # fmt: skip
        assert Cluster(fine).scheduler == fine


def test_an_in_process_scheduler_address_is_taken_without_a_port():
    """inproc:// addresses (a scheduler in the same process) name no host and port; they are Dask's own and are
    taken as they are."""
    from distributed.comm.inproc import new_address

    from simcal.service.cluster import Cluster

    address = new_address()
    assert Cluster(address).scheduler == address


@pytest.mark.parametrize("workers", [0, -1, 1.5, "2", True, None])
def test_a_local_cluster_of_anything_but_a_whole_number_of_workers_from_one_is_refused(workers):
    """Cluster(workers=...): an integer >= 1, checked with or without a scheduler; a bool is no count of workers."""
    from simcal.service.cluster import Cluster

    for scheduler in (None, "tcp://127.0.0.1:8786"):
        with pytest.raises(
            ValueError, match=rf"^--workers {re.escape(repr(workers))}: expected an integer >= 1$"
        ):
            Cluster(scheduler, workers=workers)
    assert Cluster(None, workers=1).workers == 1


def test_whole_number_options_take_both_ends_of_their_range_and_nothing_beyond():
    """simcal serve --port 0..65535 (0: any free port) and simcal jobs list --limit 1..1000 (the API's range): the
    ends are values a user may give, one past them is refused naming the range."""
    import argparse

    from simcal.service.commands import whole_number_in

    for low, high in ((0, 65535), (1, 1000)):
        parse = whole_number_in(low, high, f"a number {low}..{high}")
        assert (parse(str(low)), parse(str(high))) == (low, high)
        for beyond in (low - 1, high + 1):
            with pytest.raises(
                argparse.ArgumentTypeError, match=rf"^expected a number {low}..{high}, got '{beyond}'$"
            ):
                parse(str(beyond))


@pytest.fixture
def restartable_scheduler(tmp_path, monkeypatch):
    """A Dask scheduler on a fixed loopback port that a test stops and starts again (a scheduler pod restarted),
    and services connected to it whose Dask client gives up after 1 s (10 s in production): ``start()`` a
    scheduler, ``address``, ``service(**settings)`` connected to it, ``key`` (alice's)."""
    service_available()
    from distributed import LocalCluster
    from servicekit import free_port

    from simcal.service import cluster as cluster_module
    from simcal.service.server import Service

    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", "1s")
    monkeypatch.setattr(cluster_module, "RETRY_S", 0.2)
    port = free_port()

    def start() -> LocalCluster:
        return LocalCluster(
            n_workers=1, processes=False, scheduler_port=port, host="127.0.0.1", dashboard_address=None
        )

    address = f"tcp://127.0.0.1:{port}"

    def service(**settings) -> Service:
        config = ServiceConfig(
            state_dir=tmp_path / "state", allow_models=("simcal_models",), progress_seconds=0.1, **settings
        )
        return Service(config, tmp_path / "keys", scheduler=address)

    return SimpleNamespace(
        start=start, service=service, address=address, key=add_key(tmp_path / "keys", "alice")
    )


def sleeps(count: int) -> dict:
    """A job of ``count`` simulations of 0.2 s, one per batch (so that parts are finished as it goes)."""
    return {
        "fn_ref": "simcal_models:counted_sleep",
        "parameter_sets": [{"a": float(i), "sleep_s": 0.2} for i in range(count)],
        "settings": {"batch_size": 1},
    }


def wait_until(condition, what, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.05)


def test_the_service_reconnects_when_its_scheduler_comes_back_after_its_client_gave_up(restartable_scheduler):
    """A Dask client gives up reconnecting after its connect timeout (10 s) and closes. The service held that
    closed client for ever: not ready, every later job failed, until someone restarted the pod (its liveness probe
    passes). A scheduler Deployment restarted, or rescheduled to another node, is back after longer than that."""
    from simcal.service.cluster import Cluster

    first = restartable_scheduler.start()
    cluster = Cluster(restartable_scheduler.address)
    cluster.start()
    try:
        wait_until(lambda: cluster.readiness()[0], cluster.readiness)
        first.close()
        wait_until(lambda: cluster._client.status == "closed", cluster.readiness)
        assert not cluster.readiness()[0]
        with restartable_scheduler.start():
            wait_until(lambda: cluster.readiness()[0], cluster.readiness)
            assert (
                cluster.client(timeout=5).submit(sum, [1, 2]).result(timeout=30) == 3
            )  # jobs get a live one
    finally:
        cluster.close()


def test_a_job_running_when_the_scheduler_is_lost_resumes_from_its_parts_once_it_is_back(
    tmp_path, restartable_scheduler, caplog
):
    """A job running when the scheduler went away for longer than the client waits (a scheduler pod restarted)
    hung on the dead client's futures until no_worker_timeout_s (30 min), then failed, its parts unused. It is
    queued again (no attempt counted) and resumes from its parts on the new connection."""
    from fastapi.testclient import TestClient

    first = restartable_scheduler.start()
    service = restartable_scheduler.service()
    with TestClient(service.app) as http:
        http.headers["Authorization"] = f"Bearer {restartable_scheduler.key}"
        job_id = http.post("/v1/simulate", json=sleeps(30)).json()["job_id"]

        def job() -> dict:
            return http.get(f"/v1/jobs/{job_id}").json()

        wait_until(lambda: job()["progress"]["done"] >= 3, job)
        first.close()
        # the client gave up: the scheduler is lost
        wait_until(lambda: service.cluster._client.status == "closed", service.cluster.readiness)
        with restartable_scheduler.start():
            info = wait_final(http, job_id, timeout=60)
    assert info["status"] == "succeeded", info
    assert info["resumed"] >= 3 and info["progress"] == {"done": 30, "total": 30, "failed": 0}
    # Queued again once: until the cluster has a running client again, the job waits for it (no retry loop).
    interrupted = [r for r in caplog.records if f"job {job_id} interrupted: the connection" in r.getMessage()]
    assert len(interrupted) == 1, [r.getMessage() for r in interrupted]
    reopened = JobRegistry(tmp_path / "state" / "jobs.sqlite")
    assert reopened.get(job_id).attempts == 1  # the interruption was not the job's fault
    reopened.close()


def test_a_job_whose_runs_keep_losing_the_scheduler_fails_at_max_job_attempts(
    tmp_path, restartable_scheduler
):
    """Requeued without counting an attempt on every loss, a job whose own simulations bring the scheduler down
    would run and be requeued for ever. The losses count as service deaths do: at --max-job-attempts it fails,
    naming the reason and the limit; its finished simulations stay in its directory."""
    from fastapi.testclient import TestClient

    service = restartable_scheduler.service(max_job_attempts=2)
    with TestClient(service.app) as http:
        http.headers["Authorization"] = f"Bearer {restartable_scheduler.key}"
        cluster = restartable_scheduler.start()
        job_id = http.post("/v1/simulate", json=sleeps(60)).json()["job_id"]

        def job() -> dict:
            return http.get(f"/v1/jobs/{job_id}").json()

        for _lost in range(2):  # the scheduler lost during two runs of the job
            done_before = job()["progress"]["done"]
            wait_until(
                lambda b=done_before: job()["status"] == "running" and job()["progress"]["done"] >= b + 3, job
            )
            cluster.close()
            wait_until(lambda: service.cluster._client.status == "closed", service.cluster.readiness)
            cluster = restartable_scheduler.start()
        info = wait_final(http, job_id, timeout=60)
        cluster.close()
    assert info["status"] == "failed", info
    assert "lost during 2 run(s) of this job" in info["error"], info
    assert "--max-job-attempts 2" in info["error"], info
    assert 3 <= info["progress"]["done"] < 60, info
    assert list((tmp_path / "state").rglob("*.partial")), "its finished simulations were not kept"


# -- results store ---------------------------------------------------------------------------------------------------


def test_blob_credentials_come_from_the_connection_string_or_else_the_default_identity_chain(tmp_path):
    service_available()
    from azure.identity import DefaultAzureCredential

    from simcal.service.results import LocalResults, ResultsError, blob_service, results_store

    chained = blob_service(None, {"AZURE_STORAGE_ACCOUNT": "mystorageaccount"})
    assert chained.url == "https://mystorageaccount.blob.core.windows.net/"
    assert isinstance(chained.credential, DefaultAzureCredential)
    explicit = blob_service("https://other.blob.core.windows.net", {"AZURE_STORAGE_ACCOUNT": "ignored"})
    assert explicit.url == "https://other.blob.core.windows.net/"
    development = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    emulator = blob_service(
        None, {"AZURE_STORAGE_CONNECTION_STRING": development, "AZURE_STORAGE_ACCOUNT": "x"}
    )
    assert emulator.url.startswith("http://127.0.0.1:10000/devstoreaccount1")
    with pytest.raises(ResultsError, match="need the storage account"):
        blob_service(None, {})
    with pytest.raises(ResultsError, match="expected az://<container>/<prefix> or a local directory"):
        results_store("s3://bucket/prefix", tmp_path)
    assert isinstance(results_store(None, tmp_path), LocalResults)
    assert results_store(None, tmp_path).directory == tmp_path / "results"


def test_a_connection_string_comes_before_an_account_url_and_the_flag_before_the_variables():
    """results: the connection string (the Azurite emulator) first, else the account URL: --azure-account-url, then
    AZURE_STORAGE_ACCOUNT_URL, then https://<AZURE_STORAGE_ACCOUNT>.blob.core.windows.net."""
    service_available()
    from simcal.service.results import blob_service

    development = (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
    )
    flag, variable = "https://flag.blob.core.windows.net", "https://variable.blob.core.windows.net"
    emulator = blob_service(flag, {"AZURE_STORAGE_CONNECTION_STRING": development})
    assert emulator.url.startswith("http://127.0.0.1:10000/devstoreaccount1")
    assert blob_service(flag, {"AZURE_STORAGE_ACCOUNT_URL": variable}).url == f"{flag}/"
    named = {"AZURE_STORAGE_ACCOUNT_URL": variable, "AZURE_STORAGE_ACCOUNT": "name"}
    assert blob_service(None, named).url == f"{variable}/"


def _disk_full(registry: JobRegistry) -> None:
    """The registry's disk is full, to SQLite: no free page left and its pages capped at the number it has, so any
    write that needs a page fails with SQLITE_FULL, as a job's end does (its row is rewritten with its request,
    whose overflow pages are new)."""
    with registry._lock:
        registry._db.execute("VACUUM")
        pages = registry._db.execute("PRAGMA page_count").fetchone()[0]
        registry._db.execute(f"PRAGMA max_page_count = {pages}")


def _space_back(registry: JobRegistry) -> None:
    with registry._lock:
        registry._db.execute(f"PRAGMA max_page_count = {2**31}")


def _status_on_disk(path, job_id: str) -> str:
    with sqlite3.connect(path) as db:  # another connection: what a restarted service would read
        return db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def test_a_job_end_a_full_disk_cannot_take_is_shown_at_once_and_written_once_space_is_back(tmp_path):
    """A job whose end could not be written stayed 'running' until the service was restarted (docs/service.md
    said so). Its end is now shown by every read at once and written, by a timer, once the disk takes it."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=0.05)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages
    job, _ = registry.create("alice", "m:f", big, 900)
    other, _ = registry.create("alice", "m:f", big, 900)
    assert registry.start(job.id)
    _disk_full(registry)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        registry.create("alice", "m:f", big, 900)  # the disk is full to SQLite, as the API's 503 test shows
    discarded = []
    assert registry.finish(job.id, "succeeded", done=900, failed=0, results_path="/r/x.parquet")
    registry.when_saved(job.id, lambda: discarded.append(job.id))
    assert registry.cancel_queued(other.id, "cancelled by alice")
    assert _status_on_disk(registry.path, job.id) == "running"
    assert _status_on_disk(registry.path, other.id) == "queued"
    shown = registry.get(job.id, "alice")
    assert (shown.status, shown.done, shown.failed, shown.results_path) == (
        "succeeded",
        900,
        0,
        "/r/x.parquet",
    )
    assert shown.finished is not None and shown.describe()["duration_s"] is not None
    assert (
        registry.get(other.id).status == "cancelled" and registry.get(other.id).error == "cancelled by alice"
    )
    assert [j.status for j in registry.list("alice")] == ["cancelled", "succeeded"]
    assert [j.id for j in registry.list("alice", "succeeded")] == [job.id]
    assert registry.list("alice", "running") == [] and registry.list("alice", "queued") == []
    assert registry.counts() == {"queued": 0, "running": 0, "succeeded": 1, "failed": 0, "cancelled": 1}
    assert registry.queued() == [] and not registry.start(other.id)  # a cancelled job does not start
    assert not registry.finish(job.id, "failed", error="late")  # nor does an ended job end again
    time.sleep(0.3)  # the timer has tried again meanwhile: still full
    assert _status_on_disk(registry.path, job.id) == "running" and discarded == []
    assert sorted(registry.unsaved()) == sorted([job.id, other.id])
    assert [mark.name for mark in registry.marks.iterdir()] == [job.id]  # its run ended; the other never ran
    _space_back(registry)
    deadline = time.monotonic() + 10
    while registry.unsaved() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _status_on_disk(registry.path, job.id) == "succeeded" and discarded == [job.id]
    assert _status_on_disk(registry.path, other.id) == "cancelled"
    with sqlite3.connect(registry.path) as db:
        assert db.execute("SELECT done, results_path FROM jobs WHERE id = ?", (job.id,)).fetchone() == (
            900,
            "/r/x.parquet",
        )
    assert registry.get(job.id).status == "succeeded"  # from disk now
    assert list(registry.marks.iterdir()) == []
    registry.close()


def test_a_job_end_kept_in_memory_is_written_by_the_registrys_next_write_and_by_close_as_it_was_shown(
    tmp_path,
):
    """The module's promise: an end the disk could not take is written again at the registry's next write, of any
    kind (a new job, a start, another job's end, a requeue), and by close(), not only by its timer (here too slow
    to be the one); once on disk the job is the one every read showed meanwhile, its counts too."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages

    def new_job() -> str:
        return registry.create("alice", "m:f", big, 900)[0].id

    def ended_on_a_full_disk(status: str, **fields) -> tuple[str, object]:
        job_id = new_job()
        assert registry.start(job_id)
        _disk_full(registry)
        assert registry.finish(job_id, status, **fields)
        assert _status_on_disk(registry.path, job_id) == "running" and registry.unsaved() == [job_id]
        _space_back(registry)
        return job_id, registry.get(job_id)

    queued = [new_job(), new_job()]
    writes = {
        "a new job": new_job,
        "a start": lambda: registry.start(queued[0]),
        "another job's end": lambda: registry.cancel_queued(queued[1], "cancelled by alice"),
        "a requeue": lambda: registry.requeue(queued[0]),
    }
    ends = [
        ("succeeded", {"done": 900, "failed": 0, "results_path": "/r/x.parquet"}),
        ("failed", {"done": 899, "failed": 1, "error": "boom"}),
        ("cancelled", {"error": "cancelled by request"}),  # its counts are the row's
        ("succeeded", {"done": 900, "failed": 3, "resumed": 450, "results_path": "/r/y.parquet"}),
    ]
    for (what, write), (status, fields) in zip(writes.items(), ends, strict=True):
        job_id, shown = ended_on_a_full_disk(status, **fields)
        assert shown.status == status
        write()
        assert registry.unsaved() == [], what
        assert _status_on_disk(registry.path, job_id) == status, what
        assert registry.get(job_id) == shown, what  # read from disk now
    job_id, shown = ended_on_a_full_disk("failed", done=10, failed=890, error="most failed")
    registry.close()
    reopened = JobRegistry(registry.path)
    assert reopened.get(job_id) == shown
    reopened.close()


def test_an_action_waiting_for_a_job_end_that_fails_does_not_stop_the_others_waiting_for_it(tmp_path, caplog):
    """unsaved_changes.py, ``run_all``: one action's failure must not stop the others. Two waits on one job's end
    kept in memory (``when_saved``); the first raises once the end is written: the second runs all the same, the
    write is not undone, and the failure is logged."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    _disk_full(registry)
    assert registry.finish(job_id, "succeeded", done=900, failed=0, results_path="/r/x.parquet")
    ran = []

    def broken():
        ran.append("broken")
        raise RuntimeError("the work directory is gone")

    registry.when_saved(job_id, broken)
    registry.when_saved(job_id, lambda: ran.append("discard"))
    assert ran == [] and registry.unsaved() == [job_id]
    _space_back(registry)
    caplog.clear()  # the end kept in memory was logged
    with caplog.at_level("ERROR", logger="simcal.service.registry"):
        other = registry.create("alice", "m:f", {}, 1)[0]  # the registry's next write writes the end
    assert other.status == "queued" and _status_on_disk(registry.path, job_id) == "succeeded"
    assert ran == ["broken", "discard"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        "an action waiting for a job's end to be written failed"
    ]
    registry.close()


def test_an_end_and_a_requeue_the_disk_cannot_take_are_kept_alike_and_logged_as_written_at_the_next_write(
    tmp_path, caplog
):
    """A job's end and its return to the queue share one fallback (JobRegistry._write_or_keep). Each logged that it
    would be written "at its next change", which an ended job never has: both are written at the registry's next
    write, of any job, as the log now says, and each is logged once more when it is on disk."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages
    ended, requeued, queued = (registry.create("alice", "m:f", big, 900)[0].id for _ in range(3))
    assert registry.start(ended) and registry.start(requeued)
    _disk_full(registry)
    with caplog.at_level("INFO", logger="simcal.service"):
        assert registry.finish(ended, "succeeded", done=900, failed=0, results_path="/r/x.parquet")
        assert registry.requeue(requeued)
        assert registry.cancel_queued(queued, "cancelled by alice")
        assert not registry.requeue(queued) and not registry.finish(ended, "failed")  # changed already
        _space_back(registry)
        registry.create("alice", "m:f", {}, 1)  # another job's write writes them first
    where = f"the job registry {registry.path} cannot be written (database or disk is full)"
    then = "and writes it every 3600 s and at the registry's next write until the disk takes it"
    assert [r.getMessage() for r in caplog.records] == [
        f"job {ended} succeeded, but {where}: the service shows it succeeded {then}",
        f"job {requeued} goes back to the queue, but {where}: the service shows it queued, starts it only once the "
        f"disk takes writes, {then}",
        f"job {queued} cancelled, but {where}: the service shows it cancelled {then}",
        f"job {ended}: its end (succeeded) is now written to {registry.path}",
        f"job {queued}: its end (cancelled) is now written to {registry.path}",
        f"job {requeued}: its return to the queue is now written to {registry.path}",
    ]
    assert registry.unsaved() == []
    assert [_status_on_disk(registry.path, job_id) for job_id in (ended, requeued, queued)] == [
        "succeeded",
        "queued",
        "cancelled",
    ]
    registry.close()


class _FailingDisk:
    """The registry's connection on a failing disk: every UPDATE fails with SQLite's disk I/O error, an extended
    code (SQLITE_IOERR_WRITE) as SQLite gives it, while reads go on; ``failing = False`` when the disk is back."""

    def __init__(self, db: sqlite3.Connection):
        self.db, self.failing = db, True

    def execute(self, sql: str, *args):
        if self.failing and sql.lstrip().startswith("UPDATE"):
            error = sqlite3.OperationalError("disk I/O error")
            error.sqlite_errorcode, error.sqlite_errorname = sqlite3.SQLITE_IOERR_WRITE, "SQLITE_IOERR_WRITE"
            raise error
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self.db, name)


def test_a_job_end_a_failing_registry_disk_cannot_take_is_kept_too_and_a_running_job_is_not_cancelled_as_queued(
    tmp_path,
):
    """The module's promise covers a failing disk (SQLITE_IOERR, whose errors carry extended codes) as well as a
    full one: the end is shown at once and written once the disk takes it. And cancel_queued stays queued ->
    cancelled there: a running job it cannot write is not shown cancelled (its runner stops it and records the
    end), a queued one is."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    ended, queued, running = (registry.create("alice", "m:f", {"i": i}, 1)[0].id for i in range(3))
    assert registry.start(ended) and registry.start(running)
    with registry._lock:
        disk = registry._db = _FailingDisk(registry._db)
    assert registry.finish(ended, "succeeded", done=1, failed=0, results_path="/r/x.parquet")
    assert registry.cancel_queued(queued, "cancelled by alice")
    assert not registry.cancel_queued(running, "cancelled by alice")
    shown = {job_id: registry.get(job_id) for job_id in (ended, queued, running)}
    assert [shown[job_id].status for job_id in (ended, queued, running)] == [
        "succeeded",
        "cancelled",
        "running",
    ]
    assert sorted(registry.unsaved()) == sorted([ended, queued])
    assert _status_on_disk(registry.path, ended) == "running"
    disk.failing = False
    registry.create("alice", "m:f", {"i": 3}, 1)  # the next write writes them first
    assert registry.unsaved() == []
    assert {job_id: _status_on_disk(registry.path, job_id) for job_id in shown} == {
        job_id: job.status for job_id, job in shown.items()
    }
    assert {job_id: registry.get(job_id) for job_id in shown} == shown
    registry.close()


def _counted_service(tmp_path, monkeypatch, **options):
    """For a service on a thread cluster of this process: the file its simulations count themselves in, a key
    and the service's config (with ``options``)."""
    count_file = tmp_path / "executions.txt"
    count_file.touch()
    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(count_file))  # the workers are threads of this process
    key = add_key(tmp_path / "keys", "alice")
    return (
        count_file,
        key,
        ServiceConfig(state_dir=tmp_path / "state", allow_models=("simcal_models",), **options),
    )


def _counted_job(tmp_path, monkeypatch, first_sleep_s: float, **options):
    """_counted_service's three, and a job of 900 simulations (a row the registry rewrites over new pages), the
    first lasting ``first_sleep_s``."""
    count_file, key, config = _counted_service(tmp_path, monkeypatch, **options)
    body = {
        "fn_ref": "simcal_models:counted_sleep",
        "parameter_sets": [{"a": float(i), "sleep_s": first_sleep_s if i == 0 else 0.0} for i in range(900)],
    }
    return count_file, key, config, body


def test_a_job_that_ends_on_a_full_registry_disk_shows_it_and_a_restart_publishes_it_without_running_again(
    tmp_path, monkeypatch
):
    """The service shows the job's real end (GET, list) while its registry disk is full, and keeps the job's
    finished file until the end is written: a restart before then finds the job running, queues it again, and
    publishes the file without running a simulation again."""
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    count_file, key, config, body = _counted_job(tmp_path, monkeypatch, first_sleep_s=1.0)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            job_id = http.post("/v1/simulate", json=body).json()["job_id"]
            deadline = time.monotonic() + 60
            while http.get(f"/v1/jobs/{job_id}").json()["status"] == "queued" and time.monotonic() < deadline:
                time.sleep(0.02)
            _disk_full(service.registry)
            info = wait_final(http, job_id, timeout=120)
            listed = http.get("/v1/jobs").json()["jobs"]
            assert _status_on_disk(service.registry.path, job_id) == "running"
        # the service stopped with the end still not written (its registry closed on the full disk)
        assert info["status"] == "succeeded", info
        assert info["progress"] == {"done": 900, "total": 900, "failed": 0}
        assert [(job["job_id"], job["status"]) for job in listed] == [(job_id, "succeeded")]
        output = config.state_dir / "jobs" / job_id / "simulations.parquet"
        finished = pd.read_parquet(output)  # kept for the restart
        assert len(count_file.read_text().split()) == 900
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            info = wait_final(http, job_id, timeout=60)
            published = pd.read_parquet(io.BytesIO(http.get(f"/v1/jobs/{job_id}/results").content))
    assert info["status"] == "succeeded" and info["progress"]["done"] == 900, info
    assert len(count_file.read_text().split()) == 900  # nothing ran again
    pd.testing.assert_frame_equal(published, finished)
    assert not output.parent.exists()


def test_a_job_whose_start_a_full_registry_disk_cannot_take_stays_queued_and_starts_once_space_is_back(
    tmp_path, monkeypatch, caplog
):
    """queued -> running failing on a full registry disk raised in the job thread, and the job stayed queued, run
    by no thread, until a restart. It now stays queued (nothing of it runs: its parts would go to the same full
    disk), saying so in the log, and starts once the disk takes writes again, without a restart."""
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    count_file, key, config = _counted_service(tmp_path, monkeypatch, max_concurrent_jobs=1)

    def body(
        first: float, sleep_s: float
    ) -> dict:  # 900 simulations: a row the registry rewrites over new pages
        sets = [{"a": first + i, "sleep_s": sleep_s if i == 0 else 0.0} for i in range(900)]
        return {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": sets}

    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http, caplog.at_level("INFO", logger="simcal.service"):
            http.headers["Authorization"] = f"Bearer {key}"
            service.registry._retry_s = 0.05  # (5 s in a service)
            first = http.post("/v1/simulate", json=body(0.0, 1.0)).json()["job_id"]
            second = http.post("/v1/simulate", json=body(1000.0, 0.0)).json()["job_id"]
            deadline = time.monotonic() + 60
            while http.get(f"/v1/jobs/{first}").json()["status"] == "queued" and time.monotonic() < deadline:
                time.sleep(0.02)
            _disk_full(service.registry)  # while the first runs: the second's start cannot be written
            assert wait_final(http, first, timeout=60)["status"] == "succeeded"
            time.sleep(1.0)  # the job thread has tried to start the second meanwhile, more than once
            assert http.get(f"/v1/jobs/{second}").json()["status"] == "queued"
            assert _status_on_disk(service.registry.path, second) == "queued"
            assert (
                len(count_file.read_text().split()) == 900
            )  # the first job's simulations, none of the second's
            waiting = [r for r in caplog.records if second in r.getMessage() and r.levelname == "ERROR"]
            assert [r.getMessage() for r in waiting] == [
                f"job {second} cannot start: the job registry {service.registry.path} cannot be written "
                "(database or disk is full); it stays queued and starts once the disk takes writes (tried again "
                "every 0.05 s)"
            ]
            assert not [r for r in caplog.records if "unexpected error in the job thread" in r.getMessage()]
            _space_back(service.registry)
            info = wait_final(http, second, timeout=60)
        assert info["status"] == "succeeded" and info["progress"] == {
            "done": 900,
            "total": 900,
            "failed": 0,
        }, info
    assert _status_on_disk(config.state_dir / "jobs.sqlite", second) == "succeeded"
    assert len(count_file.read_text().split()) == 1800
    assert any(
        f"job {second}: the job registry takes writes again; starting it" == r.getMessage()
        for r in caplog.records
    )


def test_a_job_waiting_to_start_on_a_full_registry_disk_can_be_cancelled_and_stays_queued_through_a_stop(
    tmp_path,
):
    """While its start waits for the disk, the job is queued as far as anyone can tell: a DELETE cancels it (the
    cancel kept in memory, as an end is, and its runner gives up), and a stop of the service leaves it queued for
    the next start. The runner never reaches the cluster's client: a stand-in for the cluster gives one."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=0.05)
    cluster = SimpleNamespace(client=lambda timeout: "a connected client")
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=cluster, results=None, telemetry=None)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages
    cancelled, stopped = (
        registry.create("alice", "simcal.models.sir:simulate", big, 900)[0].id for _ in range(2)
    )
    _disk_full(registry)
    runners = {
        job_id: threading.Thread(target=manager._run, args=(job_id,)) for job_id in (cancelled, stopped)
    }
    for runner in runners.values():
        runner.start()
    time.sleep(0.5)
    assert all(runner.is_alive() for runner in runners.values())  # waiting, not dead with the disk's error
    assert [registry.get(job_id).status for job_id in runners] == ["queued", "queued"]
    waiting = manager.ended(cancelled)
    assert manager.cancel(cancelled, "alice").status == "cancelled"
    runners[cancelled].join(5)
    assert not runners[cancelled].is_alive() and waiting.is_set()
    assert registry.get(cancelled).error == "cancelled by alice" and registry.unsaved() == [cancelled]
    manager.stop(timeout=5)
    runners[stopped].join(5)
    assert not runners[stopped].is_alive() and registry.get(stopped).status == "queued"
    _space_back(registry)
    registry.close()
    assert _status_on_disk(registry.path, cancelled) == "cancelled"  # close() wrote the kept cancel
    assert _status_on_disk(registry.path, stopped) == "queued"


def test_a_requeue_a_full_registry_disk_cannot_take_is_shown_queued_and_written_once_space_is_back(
    tmp_path, caplog
):
    """running -> queued (a job whose worker or scheduler was lost, or stopped by a graceful stop) raised the
    disk's error out of the job thread on a full registry disk: the job stayed 'running', run by no thread, until a
    restart. The requeue is now kept in memory as an end is: every read shows the job queued, it starts only once
    the requeue and its start are on disk (its parts would go to the same disk), and the requeue is written by the
    registry's timer once the disk takes it, its interrupted attempt not counted."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=0.05)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # spills its row over pages
    lost, cancelled = (registry.create("alice", "m:f", big, 900)[0].id for _ in range(2))
    assert registry.start(lost) and registry.start(cancelled)
    _disk_full(registry)
    with caplog.at_level("ERROR", logger="simcal.service"):
        registry.requeue(lost)
        registry.requeue(cancelled)
    assert [r.getMessage() for r in caplog.records if lost in r.getMessage()] == [
        f"job {lost} goes back to the queue, but the job registry {registry.path} cannot be written (database or "
        "disk is full): the service shows it queued, starts it only once the disk takes writes, and writes it "
        "every 0.05 s and at the registry's next write until the disk takes it"
    ]
    assert _status_on_disk(registry.path, lost) == "running"
    marked = sorted(path.name for path in registry.marks.iterdir())
    assert marked == sorted([lost, cancelled])  # their runs do not count, should the service stop now
    shown = registry.get(lost, "alice")
    assert (shown.status, shown.attempts) == ("queued", 0)
    assert [j.status for j in registry.list("alice")] == ["queued", "queued"]
    assert [j.id for j in registry.list("alice", "queued")] == [cancelled, lost]
    assert registry.list("alice", "running") == []
    assert registry.counts() == {"queued": 2, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert registry.queued() == [lost, cancelled] and sorted(registry.unsaved()) == sorted([lost, cancelled])
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        registry.start(lost)  # the job thread waits (JobManager._start): the job stays queued
    assert registry.get(lost).status == "queued"
    assert registry.cancel_queued(cancelled, "cancelled by alice")  # it is queued, as shown: a cancel ends it
    assert registry.get(cancelled).status == "cancelled" and registry.queued() == [lost]
    time.sleep(0.3)  # the timer has tried again meanwhile: still full
    assert _status_on_disk(registry.path, lost) == "running"
    _space_back(registry)
    deadline = time.monotonic() + 10
    while registry.unsaved() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert registry.unsaved() == []
    assert _status_on_disk(registry.path, lost) == "queued" and registry.get(lost).attempts == 0
    assert _status_on_disk(registry.path, cancelled) == "cancelled"
    assert list(registry.marks.iterdir()) == []  # neither is running on disk: a later death of either counts
    assert registry.start(lost) and registry.get(lost).attempts == 1
    registry.close()


def test_a_requeue_marks_removal_is_made_durable_like_its_making(tmp_path, monkeypatch):
    """The mark's directory is fsynced after the mark is removed, as after it is made: a removal lost to a power
    loss brings the mark back, and the job's next run, should the service die in it too, would not count."""
    from simcal.service import unsaved_changes  # where the marks are made and removed

    synced: list[tuple[str, list[str]]] = []
    real = unsaved_changes.fsync_directory

    def recorded(directory):
        synced.append((Path(directory).name, sorted(path.name for path in Path(directory).iterdir())))
        real(directory)

    monkeypatch.setattr(unsaved_changes, "fsync_directory", recorded)
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=0.05)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # its row spills over pages
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    _disk_full(registry)
    registry.requeue(job_id)
    marks = [(name, names) for name, names in synced if name == registry.marks.name]
    assert marks == [(registry.marks.name, [job_id])]  # made, and its name made durable
    _space_back(registry)
    deadline = time.monotonic() + 10
    while registry.unsaved() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert registry.unsaved() == [] and not (registry.marks / job_id).exists()
    marks = [(name, names) for name, names in synced if name == registry.marks.name]
    assert marks == [(registry.marks.name, [job_id]), (registry.marks.name, [])]  # removed, durably
    registry.close()


def test_a_requeue_still_unwritten_when_the_service_stops_is_named_and_recovered_at_the_next_start(
    tmp_path, caplog
):
    """A requeue the disk never took before close(): close names the job, and the next start finds it running and
    queues it again (recover), so it is not lost; its interrupted run is not counted there either (it counted as
    an attempt until the mark beside the registry said it does not), and the mark goes once that is written."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    _disk_full(registry)
    registry.requeue(job_id)
    with caplog.at_level("ERROR", logger="simcal.service"):
        registry.close()
    mark = tmp_path / "jobs.sqlite-requeued" / job_id
    assert [r.getMessage() for r in caplog.records if "still not written" in r.getMessage()] == [
        f"job {job_id}: its return to the queue is still not written to {registry.path}; the next start of the "
        f"service finds it running and queues it again, not counting the interrupted run ({mark} says so)"
    ]
    assert mark.is_file()
    reopened = JobRegistry(registry.path)
    assert reopened.recover(max_attempts=2) == ([job_id], [])
    assert reopened.get(job_id).status == "queued" and reopened.get(job_id).attempts == 0
    assert not mark.exists()
    reopened.close()


def test_where_the_mark_of_an_uncounted_run_cannot_be_made_either_the_log_says_the_next_start_counts_it(
    tmp_path, caplog
):
    """The mark that a kept requeue's run does not count is a file beside the registry; where it cannot be made
    (here a file stands where its directory goes: an OSError, as a full disk's ENOSPC is), the job is still kept
    queued in memory, the log says that the next start would count the run, and it does; a mark left behind by a
    requeue written after all is dropped by recover, so a later death of the job counts."""
    path = tmp_path / "jobs.sqlite"
    (tmp_path / "jobs.sqlite-requeued").write_text("")  # no directory can be made there
    registry = JobRegistry(path, retry_s=3600)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    _disk_full(registry)
    with caplog.at_level("ERROR", logger="simcal.service"):
        assert registry.requeue(job_id) and registry.get(job_id).status == "queued"
        registry.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"job {job_id}: that its interrupted run does not count cannot be recorded in ")
        and m.endswith(
            "if the service stops before its change is written, the next start counts the run as an attempt"
        )
        for m in messages
    ), messages
    assert messages[-1] == (
        f"job {job_id}: its return to the queue is still not written to {path}; the next start of the service "
        "finds it running and queues it again, counting the interrupted run as an attempt (that it does not count "
        "is not recorded)"
    )
    registry = JobRegistry(path)
    assert registry.recover(max_attempts=2) == ([job_id], []) and registry.get(job_id).attempts == 1
    registry.close()

    (tmp_path / "jobs.sqlite-requeued").unlink()
    (tmp_path / "jobs.sqlite-requeued").mkdir()
    (tmp_path / "jobs.sqlite-requeued" / job_id).touch()  # left by a requeue written just before a crash
    registry = JobRegistry(path)
    assert registry.recover(max_attempts=2) == ([], [])  # queued on disk: its mark is stale
    assert not (tmp_path / "jobs.sqlite-requeued" / job_id).exists()
    assert registry.start(job_id) and registry.get(job_id).attempts == 2
    registry.close()  # the service died during this run
    registry = JobRegistry(path)
    assert registry.recover(max_attempts=2) == ([], [job_id])
    registry.close()


def _job_that_died_once(tmp_path) -> tuple[Path, JobRegistry, str]:
    """A registry whose job (900 parameter sets: its row spills over pages) was running when the service died;
    the registry of the next start, not yet recovered: (its path, it, the job's id)."""
    path = tmp_path / "jobs.sqlite"
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}
    registry = JobRegistry(path, retry_s=3600)
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    registry.close()  # the service died while it ran
    return path, JobRegistry(path, retry_s=3600), job_id


def test_an_interruption_whose_requeue_was_never_written_is_counted_by_the_next_start_as_the_requeue_counted_it(
    tmp_path,
):
    """A graceful stop (or a lost scheduler) queues a running job again without counting its run as an attempt. A
    requeue still unwritten when the registry closed left the job running on disk, and the next start's recover
    counted the run as a death of the service: a job that had died once and was then stopped gracefully was failed
    at --max-job-attempts 2 ("the service stopped 2 time(s)"), after one death. The next start now counts it as the
    requeue did: not at all, also when that start's own requeue waits for the disk again; once the requeue is
    written, a death of a later run counts as any death does."""
    path, registry, job_id = _job_that_died_once(tmp_path)
    assert registry.recover(max_attempts=2) == ([job_id], []) and registry.get(job_id).attempts == 1
    assert registry.start(job_id) and registry.get(job_id).attempts == 2  # its second run
    _disk_full(registry)
    assert registry.requeue(job_id)  # a graceful stop: its run not counted
    assert registry.get(job_id).attempts == 1
    registry.close()  # the disk still full: the requeue is not written
    assert _status_on_disk(path, job_id) == "running"

    registry = JobRegistry(path, retry_s=3600)
    _disk_full(registry)  # still full at the next start: recover's requeue waits too
    assert registry.recover(max_attempts=2) == ([job_id], [])
    assert (registry.get(job_id).status, registry.get(job_id).attempts) == ("queued", 1)
    registry.close()
    assert _status_on_disk(path, job_id) == "running"

    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([job_id], [])  # the disk takes it now
    assert _status_on_disk(path, job_id) == "queued" and registry.get(job_id).attempts == 1
    assert registry.start(job_id) and registry.get(job_id).attempts == 2
    registry.close()  # the service died during this run: a second death
    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([], [job_id])
    assert "the service stopped 2 time(s)" in registry.get(job_id).error
    registry.close()


def test_a_run_that_ended_but_whose_end_was_never_written_is_not_counted_by_the_next_start_as_a_death(
    tmp_path, caplog
):
    """An end kept in memory shares the requeue's fallback, and had its gap: a job that succeeded while its
    registry disk was full, its end still unwritten when the service stopped, was found running by the next start
    and its run counted as a death of the service. After one real death, at --max-job-attempts 2, the job that had
    succeeded (its finished file kept to be published again) was failed instead ("the service stopped 2
    time(s)"). Its run ended: the next start queues it again without counting it, and it is published then."""
    path, registry, job_id = _job_that_died_once(tmp_path)
    assert registry.recover(max_attempts=2) == ([job_id], [])
    assert registry.start(job_id) and registry.get(job_id).attempts == 2
    _disk_full(registry)
    assert registry.finish(job_id, "succeeded", done=900, failed=0, results_path="/r/x.parquet")
    with caplog.at_level("ERROR", logger="simcal.service"):
        registry.close()  # its end not written
    assert [r.getMessage() for r in caplog.records if "still not written" in r.getMessage()] == [
        f"job {job_id}: its end (succeeded) is still not written to {path}; the next start of the service queues "
        f"it again, not counting its run ({registry.marks / job_id} says so) (a job that succeeded is published "
        "again from its finished file, without running again; a failed or cancelled one runs again)"
    ]
    assert _status_on_disk(path, job_id) == "running"
    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([job_id], [])  # to be published from its finished file
    assert (registry.get(job_id).status, registry.get(job_id).attempts) == ("queued", 1)
    assert list(registry.marks.iterdir()) == []
    assert registry.start(job_id)  # its publishing run: the service dies, a second death
    registry.close()

    registry = JobRegistry(path, retry_s=3600)
    _disk_full(registry)  # recover's own end of it (a death, no run that ended) waits for the disk
    assert registry.recover(max_attempts=2) == ([], [job_id]) and registry.get(job_id).status == "failed"
    assert list(registry.marks.iterdir()) == []
    registry.close()
    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([], [job_id])  # still two deaths, not one
    registry.close()


def test_a_cancel_kept_of_a_job_that_recover_queued_on_a_full_disk_leaves_its_death_counted(tmp_path):
    """A running job's end kept in memory marks its run as not counted, but a job that recover queued again on a
    full disk (its requeue kept, counting the death) and that is cancelled meanwhile ran nothing since: its cancel
    is no run's end, and the death stays counted at the next start."""
    path, registry, job_id = _job_that_died_once(tmp_path)
    _disk_full(registry)
    assert registry.recover(max_attempts=2) == ([job_id], []) and registry.unsaved() == [job_id]
    assert registry.cancel_queued(job_id, "cancelled by alice") and registry.get(job_id).status == "cancelled"
    assert list(registry.marks.iterdir()) == []
    registry.close()  # neither written
    registry = JobRegistry(path, retry_s=3600)
    # Its cancel was lost with the service: it runs again, as docs/service.md says of an end not written.
    assert registry.recover(max_attempts=2) == ([job_id], [])
    assert registry.get(job_id).attempts == 1  # its one death, counted
    registry.close()


def test_recover_on_a_full_registry_disk_still_starts_the_service_which_serves_reads_and_runs_the_jobs_later(
    tmp_path, monkeypatch
):
    """At start-up, the jobs found running were interrupted: recover queues them again (or fails those at
    --max-job-attempts). On a full registry disk its first requeue raised, and the service did not start at all
    (its lifespan failed), though it could serve every read. It now starts: the requeued job is shown queued and
    runs nothing until the disk takes writes, then resumes; the failed one is shown failed; a submission gets 503
    with Retry-After."""
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.jobs import plan_request
    from simcal.service.server import Service

    count_file, key, config, body = _counted_job(tmp_path, monkeypatch, first_sleep_s=0.0, max_job_attempts=2)
    plan = plan_request(body, config)
    registry = JobRegistry(config.state_dir / "jobs.sqlite")
    alice = owner_of(tmp_path / "keys", "alice")
    resumed, crashing = (
        registry.create(alice, plan.fn_ref, plan.request, plan.simulations)[0].id for _ in "ab"
    )
    assert registry.start(resumed) and registry.start(crashing)  # running when the service died
    registry._write("UPDATE jobs SET attempts = 2 WHERE id = ?", (crashing,))
    registry.close()
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        service.registry._retry_s = 0.05  # (5 s in a service)
        _disk_full(service.registry)  # full when the service starts
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            shown = {job["job_id"]: job for job in http.get("/v1/jobs").json()["jobs"]}
            assert {job_id: shown[job_id]["status"] for job_id in (resumed, crashing)} == {
                resumed: "queued",
                crashing: "failed",
            }
            assert "the service stopped 2 time(s)" in shown[crashing]["error"]
            refused = http.post("/v1/simulate", json=body)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "10", refused.text
            time.sleep(1.0)  # a job thread has tried to start it meanwhile, more than once
            assert http.get(f"/v1/jobs/{resumed}").json()["status"] == "queued"
            assert count_file.read_text() == ""  # nothing ran
            assert _status_on_disk(service.registry.path, resumed) == "running"
            _space_back(service.registry)
            info = wait_final(http, resumed, timeout=60)
            assert len(http.get("/v1/jobs").json()["jobs"]) == 2  # the refused submission made no job
    assert info["status"] == "succeeded" and info["progress"]["done"] == 900, info
    assert len(count_file.read_text().split()) == 900
    assert _status_on_disk(config.state_dir / "jobs.sqlite", crashing) == "failed"
    assert _status_on_disk(config.state_dir / "jobs.sqlite", resumed) == "succeeded"


def test_a_job_whose_scheduler_was_lost_on_a_full_registry_disk_goes_back_to_the_queue_not_stuck_running(
    tmp_path,
):
    """The job thread's requeue after its scheduler was lost raised the disk's error: the job stayed 'running' on
    disk and in every read, in no queue, and its waiters were told it had ended. It is now queued again (shown so,
    in the job threads' queue) and its start waits for the disk. The lost client is a stand-in: only its status is
    read."""
    registry = JobRegistry(tmp_path / "jobs.sqlite", retry_s=3600)
    manager = JobManager(ServiceConfig(tmp_path), registry, cluster=None, results=None, telemetry=None)
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}
    job_id = registry.create("alice", "simcal.models.sir:simulate", big, 900)[0].id
    assert registry.start(job_id)
    _disk_full(registry)
    assert manager._after_lost_connection(job_id, SimpleNamespace(status="closed")) == "requeued"
    assert manager._queue.get_nowait() == job_id
    assert registry.get(job_id).status == "queued" and _status_on_disk(registry.path, job_id) == "running"
    _space_back(registry)
    registry.close()
    assert _status_on_disk(registry.path, job_id) == "queued"


def test_a_submission_on_a_full_registry_disk_gets_503_makes_no_job_and_its_retry_makes_one(tmp_path):
    """A new job on a full registry disk: 503 with Retry-After (which the client retries, with its Idempotency-Key),
    for a job and for a synchronous request, and no job half made (one INSERT, all or nothing). A retry of a
    submission the service had already accepted gets its job (the key's row is read, nothing written), and once
    space is back the retry makes the job, once."""
    service_available()
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    key = add_key(tmp_path / "keys", "alice")
    service = Service(ServiceConfig(state_dir=tmp_path / "state"), tmp_path / "keys")
    http = TestClient(service.app)  # no lifespan: no job thread nor Dask, the API and the registry only
    http.headers["Authorization"] = f"Bearer {key}"
    sets = [{"beta": 0.3, "gamma": 0.1, "days": days} for days in range(1, 900)]
    accepted = http.post("/v1/simulate", json=ONE_SIR_SIMULATION, headers={"Idempotency-Key": "first"})
    assert accepted.status_code == 202
    _disk_full(service.registry)
    for path in ("/v1/simulate", "/v1/simulate/sync"):
        answer = http.post(
            path,
            json={**ONE_SIR_SIMULATION, "parameter_sets": sets},
            headers={"Idempotency-Key": f"new-{path}"},
        )
        assert answer.status_code == 503 and answer.headers["retry-after"] == "10", answer.text
        assert "database or disk is full" in answer.json()["detail"]
    replayed = http.post("/v1/simulate", json=ONE_SIR_SIMULATION, headers={"Idempotency-Key": "first"})
    assert replayed.status_code == 202 and replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json()["job_id"] == accepted.json()["job_id"]
    assert [job["job_id"] for job in http.get("/v1/jobs").json()["jobs"]] == [accepted.json()["job_id"]]
    with sqlite3.connect(service.registry.path) as db:
        assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1
    _space_back(service.registry)
    body = {**ONE_SIR_SIMULATION, "parameter_sets": sets}
    retried = [
        http.post("/v1/simulate", json=body, headers={"Idempotency-Key": "new-/v1/simulate"}) for _ in "ab"
    ]
    assert [answer.status_code for answer in retried] == [202, 202]
    assert retried[0].json()["job_id"] == retried[1].json()["job_id"]
    assert len(http.get("/v1/jobs").json()["jobs"]) == 2
    service.registry.close()
    service._state_lock.close()


def test_opening_a_registry_already_made_writes_nothing_to_it_so_a_full_disk_does_not_stop_the_start(
    tmp_path,
):
    """Every open set the schema's version again (PRAGMA user_version), a write (a frame of its WAL journal) that a
    full disk refuses before the service has read anything: only a new registry is written to now."""
    path = tmp_path / "jobs.sqlite"
    registry = JobRegistry(path)
    job_id = registry.create("alice", "m:f", {}, 1)[0].id
    registry.close()  # the last connection's close moves the journal into the file and removes it
    assert not path.with_name("jobs.sqlite-wal").exists()
    reopened = JobRegistry(path)
    assert reopened.get(job_id).status == "queued" and reopened.queued() == [job_id]
    assert path.with_name("jobs.sqlite-wal").stat().st_size == 0  # nothing written
    assert reopened._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    reopened.close()


def test_a_graceful_stop_on_a_full_registry_disk_names_the_job_it_could_not_requeue_and_the_next_start_resumes_it(
    tmp_path, monkeypatch, caplog
):
    """A graceful stop interrupts a running job and queues it again; on a full registry disk that requeue raised out
    of the job thread ('unexpected error in the job thread', a traceback). It is now kept in memory, and the stop
    names the job whose return to the queue is not written; the next start recovers it and it succeeds."""
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    count_file, key, config, body = _counted_job(tmp_path, monkeypatch, first_sleep_s=2.0)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with caplog.at_level("INFO", logger="simcal.service"):
            with TestClient(service.app) as http:
                http.headers["Authorization"] = f"Bearer {key}"
                job_id = http.post("/v1/simulate", json=body).json()["job_id"]
                deadline = time.monotonic() + 60
                while (
                    http.get(f"/v1/jobs/{job_id}").json()["status"] != "running"
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.02)
                _disk_full(service.registry)
            # the lifespan's end: a graceful stop, its registry closed on the full disk
        assert not [r for r in caplog.records if "unexpected error in the job thread" in r.getMessage()]
        assert [r.getMessage() for r in caplog.records if "still not written" in r.getMessage()] == [
            f"job {job_id}: its return to the queue is still not written to {service.registry.path}; the next "
            "start of the service finds it running and queues it again, not counting the interrupted run "
            f"({service.registry.marks / job_id} says so)"
        ]
        assert _status_on_disk(service.registry.path, job_id) == "running"
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            info = wait_final(http, job_id, timeout=120)
    assert info["status"] == "succeeded" and info["progress"]["done"] == 900, info
    registry = JobRegistry(config.state_dir / "jobs.sqlite")
    assert registry.get(job_id).attempts == 1  # its resumed run only: the stop's interruption not counted
    registry.close()
