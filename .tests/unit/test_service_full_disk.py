"""The simulation service on a filesystem really full: a small tmpfs, and a small ext4 on a loop device, mounted
for the test and filled until the kernel answers ENOSPC. test_service_parts.py makes the registry's disk full to SQLite alone (its page count
capped); here the job's parts, its results file and the registry share one disk that is full for every writer, as
under a real --state-dir. Mounting needs root: CI runs as root, and there a refused mount fails the test
(``testkit.require``); elsewhere the tests skip saying why."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import time

import pandas as pd
import pytest
from servicekit import service_available, wait_final
from testkit import require

from simcal.service.jobs import ServiceConfig
from simcal.service.keys import add_key


@pytest.fixture(params=["tmpfs", "ext4"])
def small_disk(request, tmp_path):
    """``mount(where)``: a filesystem of 32 MiB of its own at ``where`` (made if missing), unmounted after the test.
    Twice: a tmpfs, and ext4 on a loop device, where a full disk also means no block for a directory to grow."""
    mounted = []

    def mount(where):
        where.mkdir(parents=True, exist_ok=True)
        if request.param == "tmpfs":
            command = ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)]
        else:
            image = tmp_path / f"{where.name}.ext4"
            with open(image, "wb") as handle:
                handle.truncate(32 << 20)
            made = subprocess.run(
                ["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True
            )
            require(made.returncode == 0, "mkfs.ext4 (e2fsprogs)", made.stderr.strip() or "mkfs.ext4 failed")
            command = ["mount", "-o", "loop", str(image), str(where)]
        done = subprocess.run(command, capture_output=True, text=True)
        require(
            done.returncode == 0,
            f"a small {request.param} filesystem to fill",
            f"mounting it needs root (and a loop device for ext4): {done.stderr.strip()}",
        )
        if request.param == "ext4":
            (where / "lost+found").rmdir()  # mkfs's own directory, not the service's
        mounted.append(where)
        return where

    try:
        yield mount
    finally:
        for where in mounted:
            subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk) -> os.PathLike:
    """Write a file until the disk has no byte left (ENOSPC); returns it, to delete for space back."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (1 << 20, 1 << 16, 4096, 512, 1):
            chunk = bytes(size)
            with contextlib.suppress(OSError):
                while True:
                    os.write(descriptor, chunk)
    finally:
        os.close(descriptor)
    with pytest.raises(OSError, match="No space left"):
        (disk / "one-more-byte").write_bytes(b"x")
    return filler


@contextlib.contextmanager
def job_under_way(tmp_path, retry_s: float, done: int):
    """A service on a LocalCluster of one worker thread, its --state-dir tmp_path/"state", running a job of 300
    simulations of 20 ms (``counted_sleep``, batches of 10); yields (http, service, job id) once ``done`` of them
    are done. ``retry_s`` is the registry's wait before a paused job's next try (5 s in a service)."""
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    key = add_key(tmp_path / "keys", "alice")
    config = ServiceConfig(state_dir=tmp_path / "state", allow_models=("simcal_models",))
    sets = [{"a": float(i), "sleep_s": 0.02} for i in range(300)]
    body = {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": sets, "settings": {"batch_size": 10}}
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http:
            http.headers["Authorization"] = f"Bearer {key}"
            service.registry._retry_s = retry_s
            job = http.post("/v1/simulate", json=body).json()["job_id"]
            deadline = time.monotonic() + 60
            while http.get(f"/v1/jobs/{job}").json()["progress"]["done"] < done:
                assert time.monotonic() < deadline, "the job never got going"
                time.sleep(0.05)
            yield http, service, job


def wait_until_queued(http, job: str) -> None:
    """Until the full disk has paused the running job (back in the queue); it runs until then."""
    seen = set()
    deadline = time.monotonic() + 30
    while (status := http.get(f"/v1/jobs/{job}").json()["status"]) != "queued":
        seen.add(status)
        assert status == "running" and time.monotonic() < deadline, (status, seen)
        time.sleep(0.05)


@pytest.mark.parametrize(
    "full",
    [
        # Only the jobs' directory (its own volume): the registry takes writes, so each try starts the job, which
        # stops at the first thing it writes (its plan's record), before any simulation runs.
        "parts",
        # The whole --state-dir: the registry cannot be written either (the job's return to the queue is kept in
        # memory, its start waits for the disk).
        "state",
    ],
)
def test_a_job_whose_disk_fills_while_it_runs_waits_queued_and_resumes_from_its_parts_once_space_is_back(
    small_disk, tmp_path, monkeypatch, caplog, full
):
    """The job's parts cannot be written (ENOSPC): the job failed, throwing its finished simulations away, and
    its batches in flight ran on. It now goes back to the queue, saying why once, its batches stopped; it stays
    queued while the disk is full, running nothing (no run that could only lose its simulations), and once space
    is back resumes from its parts and succeeds with every simulation's row, each run once more at most."""
    disk = small_disk(tmp_path / "state" / "jobs" if full == "parts" else tmp_path / "state")
    count_file = tmp_path / "executions.txt"
    count_file.touch()
    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(count_file))  # the workers are threads of this process
    with (
        caplog.at_level("INFO", logger="simcal.service"),
        job_under_way(tmp_path, retry_s=0.2, done=50) as (http, _, job),
    ):
        filler = fill(disk)
        wait_until_queued(http, job)
        time.sleep(0.5)  # a batch running at the pause is interrupted, not run to its end
        ran_at_pause = len(count_file.read_text().split())
        time.sleep(1.5)  # tried again meanwhile (every 0.2 s), the disk still full
        assert http.get(f"/v1/jobs/{job}").json()["status"] == "queued"
        ran_before = len(count_file.read_text().split())
        assert ran_before == ran_at_pause  # nothing ran while the disk was full
        paused = [
            r for r in caplog.records if f"job {job} paused: the disk under --state-dir is full" in r.message
        ]
        assert len(paused) == 1 and paused[0].levelname == "ERROR", [r.message for r in caplog.records]
        # Tries 0.2, 0.4, 0.8 s apart (the wait doubles): at most 3 in these 2 s, not one every 0.2 s.
        tries = [r for r in caplog.records if f"job {job} still paused: the disk is still full" in r.message]
        assert len(tries) <= 3, [r.message for r in tries]
        os.unlink(filler)
        info = wait_final(http, job, timeout=120)
        assert info["status"] == "succeeded", info
        assert info["resumed"] >= 50, info
        rows = pd.read_parquet(io.BytesIO(http.get(f"/v1/jobs/{job}/results").content))
        assert sorted(rows["a"]) == [float(i) for i in range(300)] and (rows["status"] == "ok").all()
        # Once space is back, each simulation not in a part runs once: those kept are not run again.
        ran_after = count_file.read_text().split()[ran_before:]
        assert len(ran_after) == len(set(ran_after)) == 300 - info["resumed"], (len(ran_after), info)
        assert not [r for r in caplog.records if "unexpected error in the job thread" in r.message]


def test_a_cancel_heard_as_a_full_disk_stops_the_job_ends_it_cancelled_not_queued_again(
    small_disk, tmp_path, monkeypatch
):
    """The job's parts cannot be written, and its owner cancels while the run stops its batches (a worker whose
    model holds the GIL answers the interrupt late: here its call is held INTERRUPT_WAIT_S, 2 s). The run ended
    as a full disk's pause: the job went back to the queue with its cancel dropped, the cancel answered "queued"
    after 10 s, and the job ran again once space was back. It now ends cancelled, as the cancel asked."""
    from simcal import batch_execution

    stopping_batches = threading.Event()

    def answers_late(client, keys):
        stopping_batches.set()
        time.sleep(30)

    monkeypatch.setattr(batch_execution, "_interrupt_on_workers", answers_late)
    monkeypatch.setattr(batch_execution, "INTERRUPT_WAIT_S", 2.0)
    disk = small_disk(tmp_path / "state" / "jobs")
    with job_under_way(tmp_path, retry_s=0.2, done=20) as (http, _, job):
        filler = fill(disk)
        assert stopping_batches.wait(30), "the full disk never stopped the run"
        assert http.delete(f"/v1/jobs/{job}").json()["status"] == "cancelled"
        os.unlink(filler)
        time.sleep(1.0)  # a job queued again would have started by now (tried every 0.2 s)
        info = http.get(f"/v1/jobs/{job}").json()
        assert info["status"] == "cancelled" and info["error"] == "cancelled by request", info
        assert not (tmp_path / "state" / "jobs" / job).exists()  # its parts removed, as a cancel's are


def test_a_job_paused_by_a_full_disk_for_hours_is_still_tried_again_and_resumes(
    small_disk, tmp_path, monkeypatch
):
    """The wait before a paused job's next try is retry_s doubled with each try, at most FULL_DISK_RETRY_MAX_S. The
    doubling overflowed a float at the 1025th try (some 17 hours of a full disk at the service's 5 s and 60 s):
    OverflowError in the job thread ("unexpected error"), the job left queued with no next try, never resumed
    until the service restarted. Here the job's count of pauses is set as those 17 hours leave it, and the
    longest wait is 0.3 s."""

    from simcal.service import job_interruptions

    monkeypatch.setattr(job_interruptions, "FULL_DISK_RETRY_MAX_S", 0.3)
    disk = small_disk(tmp_path / "state" / "jobs")
    with job_under_way(tmp_path, retry_s=5.0, done=20) as (http, service, job):  # the service's retry_s
        with service.manager._lock:
            service.manager._paused_by_disk[job] = 1024  # paused for some 17 hours already
        filler = fill(disk)
        wait_until_queued(http, job)
        time.sleep(1.0)  # tried again meanwhile (every 0.3 s), the disk still full
        os.unlink(filler)
        info = wait_final(http, job, timeout=30)
        assert info["status"] == "succeeded" and info["resumed"] >= 20, info


def test_a_paused_job_is_not_planned_again_while_its_disk_stays_full(small_disk, tmp_path, monkeypatch):
    """Each try of a job a full disk paused ran the whole job again up to its first write, planning every
    simulation first (5 s for a job of 1,000,000 simulations, each try, for each paused job). A try now writes a
    byte under the job's directory first and pauses again at once while the disk cannot take it; the job is
    planned again once the disk takes writes, and resumes. ``simulate`` is the service's own, counted."""

    from simcal.service import jobs

    planned = []

    def counted(*args, **kwargs):
        planned.append(time.monotonic())
        return simulate(*args, **kwargs)

    simulate = jobs.simulate
    monkeypatch.setattr(jobs, "simulate", counted)
    disk = small_disk(tmp_path / "state" / "jobs")
    with job_under_way(tmp_path, retry_s=0.1, done=20) as (http, _, job):  # tries 0.1, 0.2, 0.4, 0.8 s apart
        filler = fill(disk)
        wait_until_queued(http, job)
        paused_at = time.monotonic()
        time.sleep(2.0)  # tried again three or four times meanwhile
        assert [at for at in planned if at > paused_at] == []
        os.unlink(filler)
        info = wait_final(http, job, timeout=60)
        assert info["status"] == "succeeded" and info["resumed"] >= 20, info
        assert len(planned) == 2  # the first run, and the one once space was back


def test_on_a_full_filesystem_the_registry_keeps_a_requeue_marks_it_reopens_and_the_next_start_counts_the_run_once(
    small_disk, tmp_path
):
    """The registry's full-disk paths of test_service_parts.py, on a filesystem really full: a graceful stop's
    requeue the disk refuses is kept in memory and marked (an empty file: an inode, which a full tmpfs or ext4 still gives); the
    registry reopens on the full disk (WAL and shared-memory files included) and its recover does not count the
    interrupted run; once space is back the requeue is on disk, the mark gone, and a later death counts as any
    death does (the job failed at the second)."""
    from simcal.service.registry import JobRegistry

    disk = small_disk(tmp_path / "state")
    path = disk / "jobs.sqlite"
    big = {"parameter_sets": [{"a": float(i)} for i in range(900)]}  # its row spills over pages
    registry = JobRegistry(path, retry_s=3600)
    job_id = registry.create("alice", "m:f", big, 900)[0].id
    assert registry.start(job_id)
    registry.close()  # the service died while it ran: one death
    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([job_id], []) and registry.get(job_id).attempts == 1
    assert registry.start(job_id) and registry.get(job_id).attempts == 2
    filler = fill(disk)
    assert registry.requeue(job_id)  # a graceful stop, the disk full: kept in memory, its run not counted
    assert (registry.get(job_id).status, registry.get(job_id).attempts) == ("queued", 1)
    mark = registry.marks / job_id
    assert mark.is_file()
    registry.close()
    assert status_on_disk(path, job_id) == "running"

    registry = JobRegistry(path, retry_s=3600)  # the next start, the disk still full
    assert registry.recover(max_attempts=2) == ([job_id], [])
    assert (registry.get(job_id).status, registry.get(job_id).attempts) == ("queued", 1)
    registry.close()

    os.unlink(filler)
    registry = JobRegistry(path, retry_s=3600)
    registry.recover(max_attempts=2)
    assert status_on_disk(path, job_id) == "queued" and registry.get(job_id).attempts == 1
    assert not mark.exists()
    assert registry.start(job_id)
    registry.close()  # the service died during this run: the second death
    registry = JobRegistry(path, retry_s=3600)
    assert registry.recover(max_attempts=2) == ([], [job_id])
    assert "the service stopped 2 time(s)" in registry.get(job_id).error
    registry.close()


def test_a_registry_made_before_the_owner_index_opens_on_a_full_disk_and_gets_the_index_once_space_is_back(
    small_disk, tmp_path, caplog
):
    """The index on owner is made when a registry is opened: a registry made before it, opened on a full disk,
    must still open (a warning says the index is missing) and list its jobs; the next open with space makes it."""
    import sqlite3

    from simcal.service.registry import JobRegistry

    disk = small_disk(tmp_path / "state")
    path = disk / "jobs.sqlite"
    registry = JobRegistry(path)
    job_id = registry.create("alice", "m:f", {"parameter_sets": [{"a": 1.0}]}, 1)[0].id
    registry.close()
    # As a registry made before the index is; this connection keeps the journal and shared-memory files there
    # (a registry opened on a disk full before they were made cannot make them, index or not)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("DROP INDEX jobs_owner")
        db.execute("VACUUM")  # the dropped index's pages given back: no free page left in the file to reuse
        filler = fill(disk)
        registry = JobRegistry(path)
        assert [job.id for job in registry.list("alice")] == [job_id]
        registry.close()
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'jobs_owner'").fetchall() == []
    warning = f"{path}: the job registry's index jobs_owner could not be made (database or disk is full)"
    assert warning in caplog.text
    os.unlink(filler)
    registry = JobRegistry(path)
    assert [job.id for job in registry.list("alice")] == [job_id]
    registry.close()
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        assert db.execute("SELECT name FROM sqlite_master WHERE name = 'jobs_owner'").fetchall() == [
            ("jobs_owner",)
        ]


def status_on_disk(path, job_id: str) -> str:
    """The job's status as the registry's file holds it (a fresh connection, read only)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]


def test_a_start_on_a_disk_full_since_a_clean_stop_stops_at_once_saying_the_disk_is_full(
    small_disk, tmp_path, capsys
):
    """A clean close removes the registry's -wal and -shm files; SQLite makes them again at every open, so on a disk
    that filled since, the open fails before any of the registry's code runs (SQLite's bare "disk I/O error"): the
    registry says it is the disk, naming the file, its free space and what to do, and `simcal serve` stops at once
    with one line naming the state directory and the full disk, no traceback."""
    import sqlite3

    from simcal.cli import main
    from simcal.service.registry import JobRegistry

    disk = small_disk(tmp_path / "state")
    path = disk / "jobs.sqlite"
    registry = JobRegistry(path)
    registry.create("alice", "m:f", {"parameter_sets": [{"a": 1.0}]}, 1)
    registry.close()
    assert not (disk / "jobs.sqlite-wal").exists() and not (disk / "jobs.sqlite-shm").exists()
    fill(disk)
    with pytest.raises(sqlite3.OperationalError) as refused:
        JobRegistry(path)
    assert f"{path}: the job registry cannot be opened (disk I/O error): its disk has " in str(refused.value)
    assert "bytes free, and SQLite makes its jobs.sqlite-wal and jobs.sqlite-shm files beside it" in str(
        refused.value
    )
    assert str(refused.value).endswith("free space there, or give another --state-dir, and start again")
    add_key(tmp_path / "keys", "alice")
    status = main(
        ["serve", "--state-dir", str(disk), "--api-keys-file", str(tmp_path / "keys"), "--port", "0"]
    )
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith(f"simcal serve: --state-dir {disk}: ")
    assert "No space left on device" in error or "bytes free" in error
    assert "Traceback" not in error
