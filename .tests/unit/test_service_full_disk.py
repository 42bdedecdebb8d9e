"""The simulation service on a filesystem really full: a small tmpfs mounted for the test and filled until the
kernel answers ENOSPC. test_service_parts.py makes the registry's disk full to SQLite alone (its page count
capped); here the job's parts, its results file and the registry share one disk that is full for every writer, as
under a real --state-dir. Mounting needs root (CI runs as root); elsewhere the tests say why they cannot run."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time

import pandas as pd
import pytest
from servicekit import service_available, wait_final

from simcal.service.jobs import ServiceConfig
from simcal.service.keys import add_key


@pytest.fixture
def small_disk(tmp_path):
    """``mount(where)``: a filesystem of 32 MiB of its own (tmpfs) at ``where`` (made if missing), unmounted after
    the test."""
    mounted = []

    def mount(where):
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(where)], capture_output=True, text=True
        )
        if done.returncode != 0:
            pytest.skip(f"a small filesystem cannot be mounted here (needs root): {done.stderr.strip()}")
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
    service_available()
    from distributed import LocalCluster
    from fastapi.testclient import TestClient

    from simcal.service.server import Service

    disk = small_disk(tmp_path / "state" / "jobs" if full == "parts" else tmp_path / "state")
    count_file = tmp_path / "executions.txt"
    count_file.touch()
    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(count_file))  # the workers are threads of this process
    key = add_key(tmp_path / "keys", "alice")
    config = ServiceConfig(state_dir=tmp_path / "state", allow_models=("simcal_models",))
    sets = [{"a": float(i), "sleep_s": 0.02} for i in range(300)]
    body = {"fn_ref": "simcal_models:counted_sleep", "parameter_sets": sets, "settings": {"batch_size": 10}}
    with LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        service = Service(config, tmp_path / "keys", scheduler=cluster.scheduler_address)
        with TestClient(service.app) as http, caplog.at_level("INFO", logger="simcal.service"):
            http.headers["Authorization"] = f"Bearer {key}"
            service.registry._retry_s = 0.2  # (5 s in a service)
            job = http.post("/v1/simulate", json=body).json()["job_id"]
            deadline = time.monotonic() + 60
            while http.get(f"/v1/jobs/{job}").json()["progress"]["done"] < 50:
                assert time.monotonic() < deadline, "the job never got going"
                time.sleep(0.05)
            filler = fill(disk)
            seen = set()
            deadline = time.monotonic() + 30
            while (status := http.get(f"/v1/jobs/{job}").json()["status"]) != "queued":
                seen.add(status)
                assert status == "running" and time.monotonic() < deadline, (status, seen)
                time.sleep(0.05)
            time.sleep(0.5)  # a batch running at the pause is interrupted, not run to its end
            ran_at_pause = len(count_file.read_text().split())
            time.sleep(1.5)  # tried again meanwhile (every 0.2 s), the disk still full
            assert http.get(f"/v1/jobs/{job}").json()["status"] == "queued"
            ran_before = len(count_file.read_text().split())
            assert ran_before == ran_at_pause  # nothing ran while the disk was full
            paused = [
                r
                for r in caplog.records
                if f"job {job} paused: the disk under --state-dir is full" in r.message
            ]
            assert len(paused) == 1 and paused[0].levelname == "ERROR", [r.message for r in caplog.records]
            # Tries 0.2, 0.4, 0.8 s apart (the wait doubles): at most 3 in these 2 s, not one every 0.2 s.
            tries = [
                r for r in caplog.records if f"job {job} still paused: the disk is still full" in r.message
            ]
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
