"""Progress of a sweep: the counts, rate and ETA it reports (on a controlled clock), and reading progress files:
the state shown for sweeps whose process is gone or that stopped reporting."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

import simcal.progress as progress_module
from simcal.cli import main
from simcal.progress import Progress, find_progress_files, format_rate, format_table, read_progress
from wrapper_rules import filesystem_clock


def finished_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_running_sweeps_whose_process_is_gone_or_silent_are_marked(tmp_path, capsys):
    progress = Progress(tmp_path / "a.parquet", "local", every_s=5)
    progress.plan(10, 4, 1)
    progress.advance(2, failed=1)
    progress.report(force=True)
    info = read_progress(tmp_path / "a.parquet.progress.json")
    assert (info["state"], info["done"], info["total"], info["failed"]) == ("running", 6, 10, 2)

    gone = json.loads((tmp_path / "a.parquet.progress.json").read_text()) | {"pid": finished_pid()}
    (tmp_path / "b.parquet.progress.json").write_text(json.dumps(gone))
    an_hour_ago = time.time() - 3600
    silent = gone | {"host": socket.gethostname() + "-elsewhere", "updated_epoch": an_hour_ago}
    (tmp_path / "c.parquet.progress.json").write_text(json.dumps(silent))
    os.utime(tmp_path / "c.parquet.progress.json", (an_hour_ago, an_hour_ago))  # and last written then
    states = [read_progress(p)["state"] for p in find_progress_files([tmp_path])]
    assert states == ["running", "stopped", "stale"]

    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and [line.split()[0] for line in lines[1:]] == states
    assert format_table([]).startswith("STATE")
    (tmp_path / "d.parquet.progress.json").write_text('{"state": "running", "done": 1')  # cut short
    assert main(["status", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert (
        len(captured.out.splitlines()) == 4 and "cannot read" in captured.err and "d.parquet" in captured.err
    )
    with pytest.raises(FileNotFoundError, match="no sweep progress here"):
        find_progress_files([tmp_path / "nothing.parquet"])


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        '"done"',
        '{"state": "running", "every_s": null, "updated_epoch": 1}',
        # A ValueError (float('soon')) out of the table, after every record had been read: a traceback, no table
        '{"state": "finished", "eta_s": "soon"}',
        '{"state": "finished", "rate_per_s": "fast"}',
        '{"state": "finished", "done": NaN}',  # Python's json reads NaN: the table showed "nan"
        '{"state": "finished", "total": true}',
    ],
)
def test_status_names_a_progress_file_that_is_json_but_no_sweeps_record(tmp_path, capsys, text):
    (tmp_path / "a.parquet.progress.json").write_text(text)  # a traceback before (AttributeError, TypeError)
    assert main(["status", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {tmp_path / 'a.parquet.progress.json'}: not a sweep's progress record" in err


def test_a_count_that_is_no_number_is_named_and_a_pid_no_system_has_is_a_stopped_sweep(tmp_path, capsys):
    """The message names the key and its value; a pid beyond any the system can have (os.kill raised
    OverflowError: a traceback) is a process that is gone."""
    path = tmp_path / "a.parquet.progress.json"
    path.write_text('{"state": "finished", "eta_s": "soon"}')
    with pytest.raises(ValueError, match=r"progress record .*: eta_s is 'soon', not a number"):
        read_progress(path)
    progress = Progress(tmp_path / "b.parquet", "local")
    progress.plan(4, 0, 0)
    progress.report(force=True)
    progress.path.write_text(json.dumps(json.loads(progress.path.read_text()) | {"pid": 2**40}))
    assert read_progress(progress.path)["state"] == "stopped"


class FakeClock:
    """Stands in for the ``time`` module that simcal.progress uses: ``time()`` and ``monotonic()`` both read
    ``now``, which the test moves by hand (``time()`` plus ``wall_step``, a step of the wall clock alone)."""

    def __init__(self, now: float):
        self.now = now
        self.wall_step = 0.0

    def time(self) -> float:
        return self.now + self.wall_step

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock(1000.0)
    monkeypatch.setattr(progress_module, "time", fake)
    # The file server's clock, by which another host's sweep is aged, tells the time too (a step of this host's
    # wall clock is not its)
    monkeypatch.setattr(progress_module, "filesystem_now", lambda folder: fake.now)
    return fake


def written(progress: Progress) -> dict:
    return json.loads(progress.path.read_text())


def as_if_from_another_host(progress: Progress, clock: FakeClock) -> None:
    """Makes ``progress``'s file another host's, written at ``clock``'s time: its host, and the modification time
    that a shared file system gives it at the write (from which a reader on another host counts its age)."""
    progress.path.write_text(json.dumps(written(progress) | {"host": socket.gethostname() + "-elsewhere"}))
    os.utime(progress.path, (clock.time(), clock.time()))


def test_rate_counts_from_the_first_submit_and_only_simulations_run_here(tmp_path, clock, caplog):
    caplog.set_level(logging.INFO, logger="simcal.progress")
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(10, 4, 0)  # 4 of the 10 were finished by an earlier, interrupted run
    assert (progress.rate(), progress.eta_s()) == (0.0, None)  # nothing submitted yet: no rate to speak of

    clock.now = 1010.0  # the cluster took 10 s to start; that is no part of the rate
    progress.submitted()
    clock.now = 1012.0
    progress.submitted()  # later batches do not restart the rate's clock
    clock.now = 1014.0
    progress.advance(2)

    # rate = done here / time since the first submit = 2 / (1014 - 1010) = 0.5 per s
    # (not the 6 done overall / 4 s = 1.5, nor 2 / 14 s since the Progress was made);
    # ETA = (total - done) / rate = (10 - 6) / 0.5 = 8 s (not total / rate = 20 s)
    assert (progress.done, progress.done_here) == (6, 2)
    assert progress.rate() == pytest.approx(0.5)
    assert progress.eta_s() == pytest.approx(8.0)
    progress.report(force=True)
    info = written(progress)
    assert (info["state"], info["done"], info["total"]) == ("running", 6, 10)
    assert (info["rate_per_s"], info["eta_s"], info["updated_epoch"]) == (0.5, 8.0, 1014.0)
    assert "simulations 6/10 (60.0%), 0 failed, 0.5/s, ETA 8s" in caplog.text


def test_eta_reaches_zero_when_all_is_done_and_the_file_drops_it_once_finished(tmp_path, clock):
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(10, 4, 0)
    progress.submitted()
    clock.now = 1008.0
    progress.advance(6, failed=1)

    # rate = 6 / 8 s = 0.75 per s; ETA = (10 - 10) / 0.75 = 0 (total / rate would still say 13.3 s)
    assert (progress.rate(), progress.eta_s()) == (pytest.approx(0.75), 0.0)
    progress.report(force=True)
    assert written(progress)["eta_s"] == 0.0  # still running: the ETA is written
    progress.finish("finished")
    info = written(progress)
    assert (info["state"], info["done"], info["failed"], info["rate_per_s"]) == ("finished", 10, 1, 0.75)
    assert info["eta_s"] is None  # a finished sweep has nothing left to estimate
    progress.finish("failed", "RuntimeError: boom")
    assert (written(progress)["eta_s"], written(progress)["message"]) == (None, "RuntimeError: boom")


def test_each_planned_round_adds_to_the_total_and_the_eta_covers_the_rounds_planned_so_far(tmp_path, clock):
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(6, 2, 1)  # round 0: 6 simulations, 2 of them resumed (1 of those had failed)
    progress.submitted()
    clock.now = 1002.0
    progress.advance(4)
    assert (progress.total, progress.done, progress.failed) == (6, 6, 1)

    progress.plan(4, 0, 0)  # round 1 is planned only once round 0 is done
    # total = 6 + 4 = 10, done = 6; rate = 4 done here / 2 s = 2 per s; ETA = (10 - 6) / 2 = 2 s
    assert (progress.total, progress.done) == (10, 6)
    assert progress.eta_s() == pytest.approx(2.0)
    clock.now = 1004.0
    progress.advance(4)
    progress.report(force=True)
    info = written(progress)  # rate = 8 done here / 4 s = 2 per s
    assert (info["total"], info["done"], info["failed"], info["rate_per_s"]) == (10, 10, 1, 2.0)


def test_status_as_json_gives_each_sweeps_record_with_its_current_state(tmp_path, capsys):
    """`simcal status --json` prints the records themselves, with the state made current (here: stopped)."""
    progress = Progress(tmp_path / "a.parquet", "slurm", every_s=5)
    progress.plan(8, 3, 1)
    progress.report(force=True)
    record = json.loads((tmp_path / "a.parquet.progress.json").read_text()) | {"pid": finished_pid()}
    (tmp_path / "a.parquet.progress.json").write_text(json.dumps(record))
    assert main(["status", "--json", str(tmp_path / "a.parquet")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["state"] == "stopped"
    assert (rows[0]["done"], rows[0]["total"], rows[0]["failed"], rows[0]["backend"]) == (3, 8, 1, "slurm")


def test_the_file_is_rewritten_at_most_every_every_s_unless_forced(tmp_path, clock):
    """``progress_seconds`` (``every_s``) spaces the rewrites: the first report writes at once, a later one only
    once ``every_s`` has passed since the last write (not since the last call), and a forced one always."""
    every_s = 30.0  # not the default of 5 s: the setting must be the one obeyed
    progress = Progress(tmp_path / "sims.parquet", "local", every_s=every_s)
    progress.plan(10, 0, 0)
    progress.report()
    assert written(progress)["done"] == 0

    clock.now += every_s - 1
    progress.advance(1)
    progress.report()
    assert written(progress)["done"] == 0  # too soon after the last write: not rewritten
    clock.now += 1  # every_s after the last write, 1 s after the skipped call
    progress.report()
    assert written(progress)["done"] == 1
    progress.advance(1)
    progress.report()
    assert written(progress)["done"] == 1
    progress.report(force=True)
    assert written(progress)["done"] == 2


def test_a_sweep_on_another_host_is_stale_only_after_missing_several_of_its_own_rewrites(tmp_path, clock):
    """A sweep reporting every 10 minutes is not stale between two of its rewrites; once it has missed many of them
    it is."""
    every_s = 600.0
    progress = Progress(tmp_path / "slow.parquet", "slurm", every_s=every_s)
    progress.plan(4, 0, 0)
    progress.report(force=True)
    as_if_from_another_host(progress, clock)
    clock.now += every_s - 1  # its next rewrite is not even due yet
    assert read_progress(progress.path)["state"] == "running"
    clock.now += 10 * every_s  # ten rewrites missed
    assert read_progress(progress.path)["state"] == "stale"


@pytest.mark.parametrize("every_s", [20.0, 600.0])
def test_a_sweep_on_another_host_is_stale_once_it_has_missed_five_of_its_rewrites(tmp_path, clock, every_s):
    """docs/simulation.md: stale once it has missed five of its rewrites (and never before a minute): not a moment
    before the fifth is missed, at once after it."""
    progress = Progress(tmp_path / "slow.parquet", "slurm", every_s=every_s)
    progress.plan(4, 0, 0)
    progress.report(force=True)
    as_if_from_another_host(progress, clock)
    clock.now += 5 * every_s - 1
    assert read_progress(progress.path)["state"] == "running"
    clock.now += 2
    assert read_progress(progress.path)["state"] == "stale"


def test_a_sweep_rewriting_every_second_is_stale_only_after_a_minute(tmp_path, clock):
    """Five missed rewrites of a fast sweep are a few seconds: a busy file system or a slow network share delays
    that much, so a minute of silence is the least that counts as stale."""
    progress = Progress(tmp_path / "fast.parquet", "slurm", every_s=1.0)
    progress.plan(4, 0, 0)
    progress.report(force=True)
    as_if_from_another_host(progress, clock)
    clock.now += 59  # 59 rewrites missed, but under a minute
    assert read_progress(progress.path)["state"] == "running"
    clock.now += 2
    assert read_progress(progress.path)["state"] == "stale"


def test_a_sweep_whose_process_this_user_may_not_signal_is_running_not_stopped(tmp_path, monkeypatch):
    """On a shared machine another user's sweep runs in a process that exists but that we may not signal: it is
    shown as running, not as stopped."""
    progress = Progress(tmp_path / "theirs.parquet", "local")
    progress.plan(4, 1, 0)
    progress.report(force=True)

    def not_yours(pid, signal):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(progress_module.os, "kill", not_yours)
    assert read_progress(progress.path)["state"] == "running"


def test_simcal_status_shows_each_count_rate_and_eta_in_its_own_column(tmp_path, clock, capsys, caplog):
    caplog.set_level(logging.INFO, logger="simcal")
    output = tmp_path / "sims.parquet"
    progress = Progress(output, "local")
    progress.dashboard = "http://scheduler:8787/status"
    progress.workers = 3
    progress.plan(10, 4, 1)  # 4 resumed, 1 of them failed
    progress.submitted()
    clock.now += 4
    progress.advance(2, failed=1)
    progress.report(force=True)
    # done = 4 + 2, failed = 1 + 1; rate = 2 done here / 4 s = 0.5 per s; ETA = (10 - 6) / 0.5 = 8 s
    assert main(["status", str(output)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    cells = dict(zip(header.split(), row.split(), strict=True))
    assert cells.pop("UPDATED")
    assert cells == {
        "STATE": "running", "DONE": "6", "TOTAL": "10", "FAILED": "2", "RATE/S": "0.5", "ETA": "8s",
        "BACKEND": "local", "WORKERS": "3", "OUTPUT": str(output), "DASHBOARD": "http://scheduler:8787/status",
    }  # fmt: skip
    assert "ETA 8s, workers 3, dashboard http://scheduler:8787/status" in caplog.text

    progress.finish("finished")
    assert main(["status", str(output)]) == 0
    cells = dict(zip(*(line.split() for line in capsys.readouterr().out.splitlines()), strict=True))
    assert (cells["STATE"], cells["ETA"]) == ("finished", "-")  # nothing left to estimate

    progress.workers = None  # not counted yet: before the first check of the cluster
    progress.report(force=True)
    assert main(["status", str(output)]) == 0
    cells = dict(zip(*(line.split() for line in capsys.readouterr().out.splitlines()), strict=True))
    assert cells["WORKERS"] == "-" and "workers unknown, dashboard" in caplog.text


def test_a_rewrite_that_fails_leaves_the_last_record_whole_and_the_sweep_going(tmp_path, monkeypatch, caplog):
    """A disk that fills up during a rewrite: the reader still sees the previous complete record (never half of
    the new one), no temporary is left, and the sweep is not failed over its progress file."""
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(10, 0, 0)
    progress.report(force=True)
    fdopen = os.fdopen

    def disk_full(descriptor, *args, **kwargs):  # the file the rewrite writes through: half, then a full disk
        handle = fdopen(descriptor, *args, **kwargs)
        write = handle.write

        def half_then_full(data):
            write(data[: len(data) // 2])
            handle.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        handle.write = half_then_full
        return handle

    with monkeypatch.context() as patch:
        patch.setattr(os, "fdopen", disk_full)
        progress.advance(3)
        progress.report(force=True)  # raises nothing
    assert "cannot write" in caplog.text and "No space left" in caplog.text
    assert read_progress(progress.path)["done"] == 0  # the last complete record
    assert list(tmp_path.iterdir()) == [progress.path]
    progress.report(force=True)  # space again: the next rewrite has the count
    assert read_progress(progress.path)["done"] == 3


def test_status_of_a_directory_finds_the_sweeps_in_its_subdirectories(tmp_path):
    """`simcal status results/` shows every sweep under it, as a workflow nests them (results/<module>/<name>)."""
    outputs = [tmp_path / "top.parquet", tmp_path / "simulation" / "sir" / "sweep.parquet"]
    for output in outputs:
        output.parent.mkdir(parents=True, exist_ok=True)
        progress = Progress(output, "local")
        progress.plan(2, 0, 0)
        progress.report(force=True)
    assert find_progress_files([tmp_path]) == sorted(Path(f"{output}.progress.json") for output in outputs)
    assert find_progress_files([outputs[1]]) == [Path(f"{outputs[1]}.progress.json")]  # an output by its name


def test_a_stopped_or_stale_sweep_has_no_eta_in_the_table_or_the_json(tmp_path, capsys):
    """A killed sweep kept the ETA of its last rewrite: `simcal status` showed "stopped ... ETA 11s" (and a stale one
    its ETA too), an estimate of an end that will never come; like a finished sweep, it has none."""
    progress = Progress(tmp_path / "killed.parquet", "local", every_s=5)
    progress.plan(40, 0, 0)
    progress.submitted()
    progress.advance(19)
    progress.report(force=True)
    record = json.loads(progress.path.read_text())
    assert record["eta_s"] is not None  # running: it has one
    progress.path.write_text(json.dumps(record | {"pid": finished_pid()}))
    an_hour_ago = time.time() - 3600
    silent = record | {"host": socket.gethostname() + "-elsewhere", "updated_epoch": an_hour_ago}
    (tmp_path / "silent.parquet.progress.json").write_text(json.dumps(silent))
    os.utime(tmp_path / "silent.parquet.progress.json", (an_hour_ago, an_hour_ago))  # and last written then
    assert main(["status", "--json", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["state"], row["eta_s"]) for row in rows] == [("stopped", None), ("stale", None)]
    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [dict(zip(lines[0].split(), line.split(), strict=True))["ETA"] for line in lines[1:]] == ["-", "-"]


def test_status_shows_each_sweep_once_however_many_of_its_paths_name_it(tmp_path, capsys):
    """`simcal status results/*` matches an output and its progress file, and a folder holds the output named next
    to it: each sweep was listed once per path naming it (three rows for one sweep here)."""
    output = tmp_path / "sweep.parquet"
    progress = Progress(output, "local")
    progress.plan(4, 0, 0)
    progress.report(force=True)
    paths = [output, progress.path, tmp_path, Path(f"{tmp_path}/../{tmp_path.name}/sweep.parquet")]
    assert find_progress_files(paths) == [progress.path]
    assert main(["status", *map(str, paths)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # the header and one sweep


def test_a_path_without_a_sweep_is_named_and_hides_none_of_the_others(tmp_path, capsys):
    """A glob (`simcal status results/*/*`) names files that are no sweep's (a log, a table): the first of them
    stopped the command with status 2 before any sweep was shown. Each is named, the sweeps are shown, and the
    status is still 2."""
    outputs = [tmp_path / "a.parquet", tmp_path / "b.parquet"]
    for output in outputs:
        progress = Progress(output, "local")
        progress.plan(4, 0, 0)
        progress.report(force=True)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a sweep")
    assert main(["status", str(outputs[0]), str(notes), str(tmp_path / "gone.parquet"), str(outputs[1])]) == 2
    captured = capsys.readouterr()
    assert [line.split()[-1] for line in captured.out.splitlines()[1:]] == [
        "-",
        "-",
    ]  # two sweeps, no dashboard
    assert [line.split()[-2] for line in captured.out.splitlines()[1:]] == list(map(str, outputs))
    assert captured.err.splitlines() == [
        f"simcal status: {notes}: no sweep progress here (neither notes.txt.progress.json nor a directory)",
        f"simcal status: {tmp_path / 'gone.parquet'}: no sweep progress here "
        "(neither gone.parquet.progress.json nor a directory)",
    ]
    assert main(["status", str(notes)]) == 2 and "no sweeps found" not in capsys.readouterr().err
    broken = tmp_path / "c.parquet.progress.json"
    broken.write_text('{"state": "running", "done": 1')  # cut short: unreadable (1)
    # A path without a sweep (2) outweighs an unreadable file (1), as ls's missing argument does its minor trouble.
    assert main(["status", str(tmp_path), str(notes)]) == 2
    assert "cannot read" in capsys.readouterr().err
    missing = []
    assert find_progress_files([notes, outputs[1]], missing) == [Path(f"{outputs[1]}.progress.json")]
    assert missing == [f"{notes}: no sweep progress here (neither notes.txt.progress.json nor a directory)"]


def test_a_sweep_of_hours_long_simulations_has_a_rate_not_rounded_to_zero(tmp_path, clock, capsys, caplog):
    """One simulation an hour is 0.000278/s: the file rounded it to 3 decimals (0.0), and the table and the log
    showed 0.0/s beside an ETA of 90 hours computed from that very rate."""
    caplog.set_level(logging.INFO, logger="simcal.progress")
    progress = Progress(tmp_path / "slow.parquet", "slurm")
    progress.plan(100, 0, 0)
    progress.submitted()
    clock.now += 3 * 3600
    progress.advance(3)
    progress.report(force=True)
    # rate = 3 / 10800 s = 0.0002778 per s; ETA = 97 / rate = 349200 s
    info = written(progress)
    assert info["rate_per_s"] == pytest.approx(3 / 10800, rel=1e-3) and info["eta_s"] == pytest.approx(349200)
    assert "0.00028/s, ETA 349200s" in caplog.text
    assert main(["status", str(progress.path)]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert dict(zip(header.split(), row.split(), strict=True))["RATE/S"] == "0.00028"
    assert [format_rate(r) for r in (0.0, 0.05, 0.1, 2.0, 1234.56)] == ["0.0", "0.05", "0.1", "2.0", "1234.6"]


@pytest.mark.parametrize("step", [-3600.0, 3600.0])
def test_a_step_of_the_wall_clock_during_a_sweep_leaves_its_rate_and_eta_alone(tmp_path, clock, step):
    """The rate counted time on the wall clock: NTP setting it back an hour mid-sweep made the elapsed time
    negative, so the rate was 2 / 1e-9 s (ETA 0 s); forward an hour, a rate 900 times too low. It counts on the
    monotonic clock; the record's times (updated, updated_epoch) stay wall-clock times, as other hosts read them."""
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(10, 0, 0)
    progress.submitted()
    clock.now += 4
    clock.wall_step = step
    progress.advance(2)
    # rate = 2 done / 4 s = 0.5 per s; ETA = (10 - 2) / 0.5 = 16 s
    assert (progress.rate(), progress.eta_s()) == (pytest.approx(0.5), pytest.approx(16.0))
    progress.report(force=True)
    info = written(progress)
    assert (info["rate_per_s"], info["eta_s"], info["updated_epoch"]) == (0.5, 16.0, 1004.0 + step)


def test_a_progress_file_that_cannot_be_written_is_warned_about_once_not_at_every_rewrite(tmp_path, caplog):
    """A directory where the progress file should be (or a read-only one): every rewrite logged the same warning,
    every 5 s for the whole sweep (9 in a 6 s sweep rewriting every second). Once, then once more if the error
    changes, and a line when it is written again."""
    caplog.set_level(logging.INFO, logger="simcal.progress")
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.path.mkdir()  # os.replace onto it fails with IsADirectoryError, naming a new temporary each time
    progress.plan(10, 0, 0)
    for _ in range(5):
        progress.advance(1)
        progress.report(force=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write" in warnings[0] and "Is a directory" in warnings[0], warnings
    assert "the sweep goes on" in warnings[0]
    progress.path.rmdir()
    progress.report(force=True)
    assert read_progress(progress.path)["done"] == 5
    assert f"{progress.path} is written again" in caplog.text


def test_the_sweeps_of_two_workflow_directories_are_told_apart_by_where_their_outputs_are(
    tmp_path, monkeypatch, capsys
):
    """A workflow gives its sweep a path relative to its own directory (results/sim.parquet): `simcal status run1
    run2` showed two rows with the same OUTPUT, and --json two records with the same "output". The table shows
    the output where this reader finds it, and each record says which progress file it was read from."""
    for run in ("run1", "run2"):
        (tmp_path / run / "results").mkdir(parents=True)
        monkeypatch.chdir(tmp_path / run)
        progress = Progress("results/sim.parquet", "local")
        progress.plan(10, 3, 0)
        progress.finish("finished")
    monkeypatch.chdir(tmp_path)
    assert main(["status", "run1", "run2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    outputs = [dict(zip(lines[0].split(), line.split(), strict=True))["OUTPUT"] for line in lines[1:]]
    assert outputs == ["run1/results/sim.parquet", "run2/results/sim.parquet"]
    assert main(["status", "--json", "run1", "run2"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["output"] for r in records] == ["results/sim.parquet"] * 2  # as the sweep was given it
    assert [r["progress_file"] for r in records] == [
        "run1/results/sim.parquet.progress.json",
        "run2/results/sim.parquet.progress.json",
    ]


def test_status_says_why_a_sweep_failed_below_the_table(tmp_path, capsys):
    """docs/simulation.md: a failed calibration's progress file "(`simcal status`) says `failed` with the error";
    the table said `failed` and nothing more, the error was only in --json. Each message follows the table, one
    line per sweep, its first line cut at 300 characters."""
    failed = Progress(tmp_path / "a.parquet", "local")
    failed.plan(10, 0, 0)
    failed.finish(
        "failed", "TooManyFailures: 4 of 10 simulations failed (40.0% > max_failed_fraction 10.0%)."
    )
    long = Progress(tmp_path / "b.parquet", "local")
    long.plan(10, 0, 0)
    long.finish("failed", "RuntimeError: " + "x" * 400 + "\nTraceback-like second line")
    fine = Progress(tmp_path / "c.parquet", "local")
    fine.plan(10, 0, 0)
    fine.finish("finished")
    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:4]] == ["failed", "failed", "finished"] and lines[4] == ""
    assert lines[5:] == [
        f"{tmp_path / 'a.parquet'}: TooManyFailures: 4 of 10 simulations failed (40.0% > max_failed_fraction 10.0%).",
        f"{tmp_path / 'b.parquet'}: RuntimeError: {'x' * 286} ...",
    ]


SWEEP = """
import sys, time
from pathlib import Path
Path("/proc/self/comm").write_text(sys.argv[2])  # a name with spaces and parentheses, as /proc/<pid>/stat shows it
from simcal.progress import Progress
progress = Progress(sys.argv[1], "local", every_s=5)
progress.plan(10, 3, 0)
progress.report(force=True)
print("reported", flush=True)
time.sleep(120)
"""


def start_sweep(output: Path, name: str) -> subprocess.Popen:
    """A real process that writes a running sweep's progress file for ``output``, then waits to be killed."""
    sweep = subprocess.Popen(
        [sys.executable, "-c", SWEEP, str(output), name],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert sweep.stdout.readline() == "reported\n"
    return sweep


def test_a_dead_sweeps_pid_taken_by_another_process_is_stopped_not_running(tmp_path, capsys):
    """PID reuse: a sweep died and the system gave its PID to another process, so the PID alone (os.kill(pid, 0))
    said the dead sweep was running, for as long as that process lived. The record names the sweep's process by
    its PID and its start (/proc/<pid>/stat, which psutil reads too); a live process with that PID but another
    start is not the sweep. A record written before the start was recorded is still judged by its PID."""
    path = tmp_path / "a.parquet.progress.json"
    # Its /proc/<pid>/stat reads "<pid> (sweep) 1 (2 x) S ...": the fields are counted from the last ")"
    sweep = start_sweep(tmp_path / "a.parquet", "sweep) 1 (2 x")
    others = []
    try:
        record = json.loads(path.read_text())
        assert (record["pid"], read_progress(path)["state"]) == (sweep.pid, "running")
        ticks = int(record["pid_start"].split("@")[0])  # the start that psutil computes from the same field
        started = psutil.boot_time() + ticks / os.sysconf("SC_CLK_TCK")
        assert started == pytest.approx(psutil.Process(sweep.pid).create_time(), abs=0.02)
        sweep.kill()
        sweep.wait()
        assert read_progress(path)["state"] == "stopped"

        # The sweep's PID now belongs to another live process, started after the sweep
        others.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        path.write_text(json.dumps(record | {"pid": others[0].pid}))
        assert read_progress(path)["state"] == "stopped"
        assert main(["status", "--json", str(path)]) == 0
        assert [row["state"] for row in json.loads(capsys.readouterr().out)] == ["stopped"]

        old = {key: value for key, value in record.items() if key != "pid_start"}  # a file from before
        path.write_text(json.dumps(old | {"pid": others[0].pid}))
        assert read_progress(path)["state"] == "running"
        others[0].kill()
        others[0].wait()
        assert read_progress(path)["state"] == "stopped"
    finally:
        for process in [sweep, *others]:
            process.kill()
            process.wait()
        sweep.stdout.close()


def test_a_pid_start_that_is_no_string_is_named(tmp_path):
    path = tmp_path / "a.parquet.progress.json"
    path.write_text('{"state": "running", "pid": 1, "pid_start": 12}')
    with pytest.raises(ValueError, match=r"progress record .*: pid_start is 12, not a string"):
        read_progress(path)


@pytest.mark.parametrize("skew", [-3600.0, 3600.0])
def test_a_sweep_on_another_host_whose_clock_is_off_is_aged_by_its_files_modification_time(tmp_path, skew):
    """Clock skew: the age of another host's sweep was this host's clock minus the updated_epoch written on the
    sweep's clock. A sweep whose clock was an hour behind was stale while it wrote every 5 s; an hour ahead, it
    was running for an hour after it died. The age counts from the file's modification time as this host sees it
    (stamped by the shared file system at the write), so the sweep's own clock plays no part."""
    progress = Progress(tmp_path / "sims.parquet", "slurm", every_s=5)
    progress.plan(10, 2, 0)
    progress.report(force=True)
    now = time.time()
    elsewhere = written(progress) | {"host": socket.gethostname() + "-elsewhere", "updated_epoch": now + skew}
    progress.path.write_text(json.dumps(elsewhere))  # just written: its sweep is alive
    assert read_progress(progress.path)["state"] == "running"
    os.utime(progress.path, (now - 600, now - 600))  # last written ten minutes ago: its sweep is silent
    assert read_progress(progress.path)["state"] == "stale"


class SkewedClock:
    """The ``time`` module of a host whose clock is ``skew`` seconds off the file server's."""

    def __init__(self, skew: float):
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.mark.parametrize("skew", [-3600.0, 120.0])
def test_a_sweep_on_another_host_is_aged_on_the_file_systems_clock_whatever_the_readers(
    tmp_path, monkeypatch, skew
):
    """NFS clock skew between the reader and the file server: another host's sweep was aged on the reader's clock
    from the modification time the file server stamped by its own. A reader two minutes ahead called a sweep that
    had just written its file stale; an hour behind, it showed a sweep silent for ten minutes (dead) as running
    for the next hour. The age is now counted on the file system's clock (a folder made beside the file)."""
    progress = Progress(tmp_path / "sims.parquet", "slurm", every_s=5)
    progress.plan(10, 2, 0)
    progress.report(force=True)
    elsewhere = written(progress) | {"host": socket.gethostname() + "-elsewhere"}
    progress.path.write_text(
        json.dumps(elsewhere)
    )  # just written, stamped by the file server: its sweep is alive
    monkeypatch.setattr(progress_module, "time", SkewedClock(skew))
    assert read_progress(progress.path)["state"] == "running"
    server_now = time.time()
    os.utime(progress.path, (server_now - 600, server_now - 600))  # last written ten minutes ago: silent
    assert read_progress(progress.path)["state"] == "stale"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sims.parquet.progress.json"]  # no probe left


def test_where_no_folder_can_be_made_beside_it_another_hosts_sweep_is_aged_on_this_hosts_clock(
    tmp_path, monkeypatch
):
    """A folder this user may not write (another researcher's results): the file system's clock cannot be read,
    and this host's tells the age."""

    class RefusedPath(type(tmp_path)):
        def mkdir(self, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(filesystem_clock, "Path", RefusedPath)
    assert filesystem_clock.filesystem_now(tmp_path) is None
    progress = Progress(tmp_path / "sims.parquet", "slurm", every_s=5)
    progress.plan(10, 2, 0)
    progress.report(force=True)
    progress.path.write_text(json.dumps(written(progress) | {"host": socket.gethostname() + "-elsewhere"}))
    assert read_progress(progress.path)["state"] == "running"
    os.utime(progress.path, (time.time() - 600, time.time() - 600))
    assert read_progress(progress.path)["state"] == "stale"


def test_a_sweep_on_this_host_is_aged_on_this_hosts_clock_whatever_the_file_systems(tmp_path):
    """On the sweep's own host, updated_epoch is on this host's clock: a sweep alive but silent for ten minutes is
    stale, even where the file server's clock (the file's modification time) is an hour ahead."""
    progress = Progress(tmp_path / "hung.parquet", "local", every_s=5)
    progress.plan(10, 2, 0)
    progress.report(force=True)
    now = time.time()
    progress.path.write_text(json.dumps(written(progress) | {"updated_epoch": now - 600}))
    os.utime(progress.path, (now + 3000, now + 3000))
    assert read_progress(progress.path)["state"] == "stale"


def as_a_user_bound_by_permissions(argv: list[str]) -> list[str]:
    """``argv`` run so that file permissions bind it: as it is, or under root without the capabilities that let
    root read and enter any folder (setpriv, util-linux)."""
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test permissions as root"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *argv]


def test_a_folder_this_user_may_not_search_is_named_not_skipped_and_hides_none_of_the_others(tmp_path):
    """`simcal status results/` left out, without a word and with status 0, the sweeps of a folder below it that
    the user may not enter (Path.rglob skips it), and `simcal status locked/out.parquet` stopped on a traceback
    (PermissionError from is_dir()) before it showed the sweeps of the other paths. Each such folder or path is
    named, the readable sweeps are shown, and the status is 1, as for a progress file that cannot be read."""
    for output in (tmp_path / "open" / "a.parquet", tmp_path / "locked" / "b.parquet"):
        output.parent.mkdir()
        progress = Progress(output, "local")
        progress.plan(4, 0, 0)
        progress.finish("finished")
    (tmp_path / "locked").chmod(0)
    try:
        runs = [
            subprocess.run(
                as_a_user_bound_by_permissions([sys.executable, "-m", "simcal.cli", "status", *paths]),
                capture_output=True,
                text=True,
                env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)},
                timeout=120,
            )
            for paths in (
                [str(tmp_path)],
                [str(tmp_path / "locked" / "b.parquet"), str(tmp_path / "open" / "a.parquet")],
            )
        ]
    finally:
        (tmp_path / "locked").chmod(0o755)
    for run, refused in zip(runs, [tmp_path / "locked", tmp_path / "locked" / "b.parquet"], strict=True):
        assert run.returncode == 1, run.stderr
        assert run.stderr.splitlines() == [f"simcal status: cannot search {refused}: Permission denied"]
        assert [line.split()[-2] for line in run.stdout.splitlines()[1:]] == [
            str(tmp_path / "open" / "a.parquet")
        ]


def test_a_sweep_that_has_ended_shows_no_dashboard_its_cluster_took_with_it(tmp_path, capsys):
    """A finished, failed or killed sweep kept the dashboard link of its closed cluster in the table and the JSON:
    a link to nothing, or to whatever serves that port now (the next sweep's scheduler on 8787). A running sweep
    and a stale one (its process may still run on its host) keep theirs."""
    link = "http://scheduler:8787/status"
    states = {}
    for name in ("finished", "failed", "killed", "running", "silent"):
        progress = Progress(tmp_path / f"{name}.parquet", "slurm", every_s=5)
        progress.dashboard = link
        progress.plan(4, 0, 0)
        progress.report(force=True)
        states[name] = progress
    states["finished"].finish("finished")
    states["failed"].finish("failed", "TooManyFailures: 4 of 4 simulations failed")
    killed = json.loads(states["killed"].path.read_text())
    states["killed"].path.write_text(json.dumps(killed | {"pid": finished_pid()}))
    silent = states["silent"].path
    an_hour_ago = time.time() - 3600
    silent.write_text(
        json.dumps(json.loads(silent.read_text()) | {"host": socket.gethostname() + "-elsewhere"})
    )
    os.utime(silent, (an_hour_ago, an_hour_ago))
    assert main(["status", "--json", str(tmp_path)]) == 0
    rows = {Path(row["output"]).stem: row for row in json.loads(capsys.readouterr().out)}
    assert {name: (row["state"], row["dashboard"]) for name, row in rows.items()} == {
        "failed": ("failed", None),
        "finished": ("finished", None),
        "killed": ("stopped", None),
        "running": ("running", link),
        "silent": ("stale", link),
    }
    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = [dict(zip(lines[0].split(), line.split()[:11], strict=False)) for line in lines[1:6]]
    assert [(row["STATE"], row["DASHBOARD"]) for row in table] == [
        ("failed", "-"),
        ("finished", "-"),
        ("stopped", "-"),
        ("running", link),
        ("stale", link),
    ]


def test_a_sweep_in_a_container_that_has_the_hosts_name_is_not_judged_by_this_hosts_pids(tmp_path):
    """A container that shares the host's name (Docker's --network host, a pod's hostNetwork, unshare --pid) numbers
    its processes apart: a live sweep there wrote PID 1, and `simcal status` on the host took it for this host's
    PID 1, whose start differs, and showed a running sweep `stopped`. The record names its PID namespace; one of
    another namespace is aged as another host's sweep is, by the file's modification time."""
    progress = Progress(tmp_path / "contained.parquet", "local", every_s=5)
    progress.plan(10, 0, 0)
    progress.report(force=True)
    record = json.loads(progress.path.read_text())
    assert record["pid_namespace"] == os.readlink("/proc/self/ns/pid")
    elsewhere = record | {"pid": 1, "pid_start": "1@another-boot", "pid_namespace": "pid:[1]"}
    progress.path.write_text(json.dumps(elsewhere))
    assert read_progress(progress.path)["state"] == "running"  # written just now
    an_hour_ago = time.time() - 3600
    os.utime(progress.path, (an_hour_ago, an_hour_ago))
    assert read_progress(progress.path)["state"] == "stale"  # silent for an hour
    progress.path.write_text(json.dumps(elsewhere | {"pid_namespace": record["pid_namespace"]}))
    assert read_progress(progress.path)["state"] == "stopped"  # this namespace's PID 1 is not the sweep


def test_a_message_of_several_lines_shows_its_first_marked_cut_and_one_of_exactly_the_width_whole():
    """format_messages: the first line of a message, cut at ``width`` characters; " ..." says that something was
    left out, whether the cut was in the line or below it (the rest of a traceback), and only then."""
    rows = [
        {"progress_file": "a.parquet.progress.json", "message": "RuntimeError: boom\nTraceback, second line"},
        {"progress_file": "b.parquet.progress.json", "message": "x" * 20},
        {"progress_file": "c.parquet.progress.json", "message": "y" * 21},
        {"progress_file": "d.parquet.progress.json", "message": None},
    ]
    assert progress_module.format_messages(rows, width=20) == [
        "a.parquet: RuntimeError: boom ...",
        f"b.parquet: {'x' * 20}",
        f"c.parquet: {'y' * 20} ...",
    ]


def test_a_progress_file_that_fails_again_after_it_was_written_again_is_warned_about_again(tmp_path, caplog):
    """Once per kind of error *while it lasts*: a write that succeeds ends it (one line saying so, not one at every
    later rewrite), and the same error coming back later is warned about again."""
    caplog.set_level(logging.INFO, logger="simcal.progress")
    progress = Progress(tmp_path / "sims.parquet", "local")
    progress.plan(10, 0, 0)
    for _ in range(2):
        progress.path.unlink(missing_ok=True)
        progress.path.mkdir()  # os.replace onto it fails with IsADirectoryError
        progress.report(force=True)
        progress.report(force=True)
        progress.path.rmdir()
        progress.report(force=True)
        progress.report(force=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("Is a directory" in w for w in warnings), warnings
    assert caplog.text.count(f"{progress.path} is written again") == 2


class SteppedEvent:
    """Stands in for kept_fresh's stop event: each wait() of its thread returns only when the test calls step(),
    which returns once the thread waits again (one rewrite check per step, no sleeping on either side)."""

    made: list[SteppedEvent] = []

    def __init__(self):
        self.go, self.waiting, self.stopped = threading.Semaphore(0), threading.Semaphore(0), False
        SteppedEvent.made.append(self)

    def wait(self, timeout=None) -> bool:
        self.waiting.release()
        self.go.acquire()
        return self.stopped

    def set(self) -> None:
        self.stopped = True
        self.go.release()

    def step(self) -> None:
        self.go.release()
        assert self.waiting.acquire(timeout=10)


def test_kept_fresh_rewrites_a_running_sweeps_file_once_it_is_every_s_old_and_never_after_it_finished(
    tmp_path, clock, monkeypatch
):
    """kept_fresh's thread rewrites the file only when it is ``every_s`` old (the sweep's own writes count) and
    only while the sweep is starting or running: after finish(), the record written there is the last."""
    SteppedEvent.made.clear()
    fake = SimpleNamespace(Event=SteppedEvent, Thread=threading.Thread, RLock=threading.RLock)
    monkeypatch.setattr(progress_module, "threading", fake)
    progress = Progress(tmp_path / "a.parquet", "local", every_s=10)
    progress.plan(10, 0, 0)
    progress.report(force=True)  # written at 1000
    with progress.kept_fresh():
        (event,) = SteppedEvent.made
        assert event.waiting.acquire(timeout=10)  # the thread waits for its first check
        progress.path.unlink()
        clock.now += 9  # 9 s old: fresh
        event.step()
        assert not progress.path.exists()
        clock.now += 2  # 11 s old
        event.step()
        assert (written(progress)["state"], written(progress)["updated_epoch"]) == ("running", 1011.0)
        progress.finish("finished")
        progress.path.unlink()
        clock.now += 60
        event.step()
        assert not progress.path.exists()


def test_a_sweep_whose_process_start_this_host_cannot_tell_is_judged_by_its_pid(tmp_path, monkeypatch):
    """_alive: where /proc does not say when the PID's process started (hidden from this user, or ended just now),
    the PID decides: a live PID is a running sweep, not a stopped one."""
    progress = Progress(tmp_path / "a.parquet", "local", every_s=5)
    progress.plan(10, 0, 0)
    progress.report(force=True)
    progress.path.write_text(
        json.dumps(written(progress) | {"pid": os.getpid(), "pid_start": "1@another-boot"})
    )
    assert read_progress(progress.path)["state"] == "stopped"  # /proc says: another start
    monkeypatch.setattr(progress_module, "process_start", lambda pid: None)
    assert read_progress(progress.path)["state"] == "running"


@pytest.mark.parametrize("pid", [0, None])
def test_a_running_record_of_this_host_whose_pid_is_zero_or_missing_is_stopped(tmp_path, pid):
    """No process has PID 0 (os.kill(0, 0) would signal this reader's own process group and succeed)."""
    progress = Progress(tmp_path / "a.parquet", "local", every_s=5)
    progress.plan(10, 0, 0)
    progress.report(force=True)
    record = {key: value for key, value in written(progress).items() if key not in ("pid", "pid_start")}
    progress.path.write_text(json.dumps(record | ({} if pid is None else {"pid": pid})))
    assert read_progress(progress.path)["state"] == "stopped"


def test_a_pid_namespace_that_is_no_string_is_named(tmp_path):
    path = tmp_path / "a.parquet.progress.json"
    path.write_text('{"state": "running", "pid": 1, "pid_namespace": 4026531836}')
    with pytest.raises(ValueError, match=r"progress record .*: pid_namespace is 4026531836, not a string"):
        read_progress(path)


def test_status_finds_the_sweeps_of_a_folder_reached_through_a_symbolic_link_and_each_once(
    tmp_path, monkeypatch, capsys
):
    """`simcal status` in a workflow directory whose results/ is a link to scratch space (as on an HPC cluster)
    said "no sweeps found" with status 0: the folder search did not follow links. A link back to a folder above
    is searched once, not for ever."""
    scratch, workflow = tmp_path / "scratch" / "results", tmp_path / "workflow"
    scratch.mkdir(parents=True)
    workflow.mkdir()
    (workflow / "results").symlink_to(scratch, target_is_directory=True)
    (scratch / "again").symlink_to(workflow, target_is_directory=True)  # a loop: results/again/results/...
    progress = Progress(scratch / "sim.parquet", "local")
    progress.plan(4, 0, 0)
    progress.finish("finished")
    monkeypatch.chdir(workflow)
    assert find_progress_files(["."]) == [Path("results/sim.parquet.progress.json")]
    assert main(["status"]) == 0
    out, err = capsys.readouterr()
    assert [(row[0], row[2], row[-2]) for row in map(str.split, out.splitlines()[1:])] == [
        ("finished", "4", "results/sim.parquet")
    ]  # STATE, TOTAL, OUTPUT
    assert err == ""


def test_status_shows_a_sweep_reached_through_a_bind_mount_once(tmp_path, monkeypatch, capsys):
    """`simcal status results mnt/results`, where mnt/results is a bind mount of results, showed each sweep twice:
    the two real paths of its file look like two files to Path.resolve(). A file is known by its (st_dev, st_ino).
    The mount is simulated: os.stat gives every path under it the identity of the path it shows."""
    results, mount = tmp_path / "results", tmp_path / "mnt" / "results"
    for folder in (results, mount):
        progress = Progress(folder / "sim.parquet", "local")  # the mount would show the same file
        progress.plan(4, 0, 0)
        progress.finish("finished")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        path = os.fspath(path)
        under = path == str(mount) or path.startswith(f"{mount}{os.sep}")
        return real_stat(str(results) + path[len(str(mount)) :] if under else path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    assert find_progress_files([results, mount]) == [results / "sim.parquet.progress.json"]
    assert main(["status", str(results), str(mount)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2  # the header and one sweep


def test_status_of_a_folder_holding_no_sweep_names_it_and_exits_2(tmp_path, monkeypatch, capsys):
    """docs/simulation.md and --help: 2 when a path holds no sweep's progress. A folder with none in it or below
    said "no sweeps found" with status 0, so a script could not tell it from a folder of sweeps."""
    empty = tmp_path / "empty"
    (empty / "logs").mkdir(parents=True)
    (empty / "logs" / "sim.log").write_text("not a sweep")
    sweep = tmp_path / "sweeps" / "a.parquet"
    sweep.parent.mkdir()
    progress = Progress(sweep, "local")
    progress.plan(4, 0, 0)
    progress.finish("finished")
    problem = f"{empty}: no sweep progress here (no file ending .progress.json in this folder or below)"
    assert main(["status", str(empty)]) == 2
    assert capsys.readouterr() == ("", f"simcal status: {problem}\n")
    assert main(["status", str(empty), str(sweep.parent)]) == 2  # the other path's sweep is still shown
    out, err = capsys.readouterr()
    assert [row.split()[0] for row in out.splitlines()[1:]] == [
        "finished"
    ] and err == f"simcal status: {problem}\n"
    monkeypatch.chdir(empty)  # `simcal status` with no path searches "."
    assert main(["status"]) == 2
    assert capsys.readouterr().err == (
        "simcal status: .: no sweep progress here (no file ending .progress.json in this folder or below)\n"
    )
    with pytest.raises(FileNotFoundError, match=r"^.*empty: no sweep progress here \(no file ending"):
        find_progress_files([empty])


@pytest.mark.parametrize(
    "text, missing",
    [
        ("{}", "state"),
        ('{"foo": 1}', "state"),
        ('{"state": null, "done": 1, "total": 2, "output": "a.parquet"}', "state"),
        ('{"state": "running", "total": 2, "output": "a.parquet"}', "done"),
        ('{"state": "finished", "done": 2, "output": "a.parquet"}', "total"),
        ('{"state": "finished", "done": 2, "total": 2}', "output"),
    ],
)
def test_a_json_object_without_a_sweeps_state_counts_or_output_is_named_not_shown_as_a_sweep(
    tmp_path, capsys, text, missing
):
    """`{}` was shown as a sweep whose every column was None, with status 0: a phantom sweep. Every record a sweep
    writes has its output, state, done and total; a file without them is named, with status 1 (unreadable)."""
    path = tmp_path / "a.parquet.progress.json"
    path.write_text(text)
    assert main(["status", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[0] == (
        f"simcal status: cannot read {path}: not a sweep's progress record (a JSON object with state, done, total, "
        f"...): it has no {missing}"
    )
    with pytest.raises(ValueError, match=rf": it has no {missing}$"):
        read_progress(path)


def test_a_closing_sweep_is_judged_as_a_running_one_stopped_once_its_process_is_gone(tmp_path, capsys):
    """A sweep whose work is done says closing while its output is published, its cluster closes and its parts go
    (a SIGTERM then still fails the job). `simcal status` showed a closing record as it was written, even once its
    process was gone (a SIGKILL while closing): it is stopped then, like a running one."""
    progress = Progress(tmp_path / "a.parquet", "local", every_s=5)
    progress.plan(4, 0, 0)
    progress.advance(4)
    progress.finish("closing")
    assert read_progress(progress.path)["state"] == "closing"
    gone = written(progress) | {"pid": finished_pid()}
    (tmp_path / "b.parquet.progress.json").write_text(json.dumps(gone))
    assert main(["status", str(tmp_path)]) == 0
    states = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert states == ["closing", "stopped"]
