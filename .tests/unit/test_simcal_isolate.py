"""A simulation run alone in a child process of its worker (``simcal.isolate``): its rows, or the way it died.

These run ``run_isolated`` directly, in the test's process as the "worker"; the sweep-level tests (a worker of
several threads, a simulation that kills its worker) are in test_simcal_runner.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import dask
import psutil
import pytest

from simcal import isolate
from simcal.isolate import IsolationFailed, SimulationCrashed, run_isolated
from simcal.outcomes import BYSTANDER_DEATHS, UNCONFIRMED_DEATHS, Deaths
from simcal.tasks import Batch, plan_tasks
from simcal.worker import run_batch

MODEL = "simcal_models:misbehaves_alone"


def batch(how: str, **params) -> Batch:
    return Batch(plan_tasks([{"a": 2.5, "how": how, **params}], replicates=1, seed=3), "simcal-batch-x", None)


def test_rows_made_alone_are_the_rows_made_on_the_worker():
    alone = run_isolated(MODEL, batch("rows"), None, None, worker=None)
    assert alone.drop(columns="duration_s").equals(run_batch(MODEL, batch("rows")).drop(columns="duration_s"))
    assert list(alone["value"]) == [alone["seed"].iloc[0] % 7, 2.5]


@pytest.mark.parametrize(
    ("how", "params", "said"),
    [
        ("exit", {}, "exited with exit code 11"),
        # Native code ending the process with status 0 (C's exit(0), a Fortran STOP) is no success: no rows.
        ("exit", {"code": 0}, "exited without writing its rows"),
        ("segfault", {}, "was killed by signal SIGSEGV (Fatal Python error: Segmentation fault; in "),
    ],
)
def test_a_process_that_dies_raises_saying_how(how, params, said):
    with pytest.raises(
        SimulationCrashed, match=r"the process running it alone, after its worker died, "
    ) as error:
        run_isolated(MODEL, batch(how, **params), None, None, worker=None)
    assert said in str(error.value)
    if how == "segfault":  # faulthandler's report, naming the model's frame
        assert "Segmentation fault" in str(error.value) and "misbehaves_alone" in str(error.value)


def test_the_child_works_in_the_workers_own_directory_not_in_the_systems_temporary_one(tmp_path, monkeypatch):
    """A worker given a local directory of its own (Dask's --local-directory, where /tmp is small, full or not
    writable) runs the child's files there, where Dask purges what a dead worker left; here the system's
    temporary directory does not exist, as when a job's TMPDIR has been removed."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-tmp"))
    local = tmp_path / "worker-local"
    local.mkdir()
    worker = SimpleNamespace(local_directory=str(local), memory_manager=None)
    rows = run_isolated(MODEL, batch("rows"), None, None, worker=worker)
    assert set(rows["status"]) == {"ok"} and len(rows) == 2  # the model's table of two rows
    assert not list(local.iterdir())  # the child's files went with it


def isolation_failure(local, function: str) -> str:
    """The message of the IsolationFailed that running ``function`` alone raises on a worker whose local directory
    is ``local``."""
    worker = SimpleNamespace(local_directory=str(local), memory_manager=None)
    with pytest.raises(IsolationFailed) as error:
        run_isolated(MODEL, batch(function), None, None, worker=worker)
    return str(error.value)


def test_a_worker_whose_directory_cannot_hold_the_scratch_directory_raises_isolation_failed_naming_it(
    tmp_path,
):
    """The worker's own failure (here its local directory is a file; a full disk or a removed directory alike) is
    no crash of the simulation: it escaped as a plain OSError, which the driver recorded as the model's failure."""
    local = tmp_path / "worker-local"
    local.write_text("not a directory")
    said = isolation_failure(local, "rows")
    assert (
        f"could not run it alone in a process of its own on worker host {socket.gethostname()} (in {local})"
        in said
    )
    assert "NotADirectoryError" in said


def test_a_child_that_cannot_write_its_rows_raises_isolation_failed_not_a_crash(tmp_path):
    """The model returned fine, but the child could not write its rows (a directory stands where it writes them,
    as real an OSError as a full disk's): that child exited with a traceback and was taken for a crash."""
    local = tmp_path / "worker-local"
    local.mkdir()
    said = isolation_failure(local, "block_rows")
    assert (
        f"on worker host {socket.gethostname()} (in {local}): its process could not write its rows to "
        in said
    )
    assert "rows.partial: IsADirectoryError: [Errno 21] Is a directory" in said


def test_a_model_that_writes_a_lot_to_stderr_has_it_passed_on_without_the_worker_holding_it(monkeypatch):
    """All of the child's stderr reaches the worker's, and the crash message quotes its end; the worker must not
    read it whole into memory (a verbose model's gigabytes would push the worker past its own memory limit)."""
    import tracemalloc

    class Counted:
        def __init__(self):
            self.chars, self.end = 0, ""

        def write(self, text):
            self.chars += len(text)
            self.end = (self.end + text)[-100:]

        def flush(self):
            pass

    worker_stderr = Counted()
    monkeypatch.setattr(sys, "stderr", worker_stderr)
    tracemalloc.start()
    try:
        with pytest.raises(
            SimulationCrashed, match=r"exited with exit code 11 \(its stderr ends: .*its last words"
        ):
            run_isolated(MODEL, batch("shout", mib=64), None, None, worker=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert worker_stderr.chars == 64 * 2**20 + len("its last words\n")
    assert worker_stderr.end.endswith("its last words\n")
    assert peak < 16 * 2**20, f"the worker held {peak / 2**20:.0f} MiB of the child's stderr"


def test_a_hang_past_the_timeout_is_a_timeout_row_and_the_process_is_ended(tmp_path):
    pid_file = tmp_path / "pid"
    began = time.monotonic()
    rows = run_isolated(MODEL, batch("hang", pid_file=str(pid_file)), None, 1.0, worker=None)
    assert time.monotonic() - began < 30
    assert list(rows["status"]) == ["timeout"]
    assert "ran longer than timeout_s = 1 s in a process of its own" in rows["error"].iloc[0]
    assert (
        not psutil.pid_exists(int(pid_file.read_text()))
        or psutil.Process(int(pid_file.read_text())).status() == psutil.STATUS_ZOMBIE
    )


def ended(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def wait_until_ended(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while not ended(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return ended(pid)


def test_a_hang_past_the_timeout_ends_the_programs_the_model_started_too(tmp_path):
    """A model that runs a simulator binary: ending only the Python process left the binary running on the node
    for ever (reported as a timeout all the same)."""
    external = tmp_path / "external"
    rows = run_isolated(MODEL, batch("external", external_pid_file=str(external)), None, 1.0, worker=None)
    assert list(rows["status"]) == ["timeout"]
    assert wait_until_ended(int(external.read_text())), "the model's program outlived the ended simulation"


def test_a_process_past_the_workers_memory_limit_is_ended_as_the_nanny_would_end_the_worker():
    """The crash row names the memory_limit as configured and the share of it that ended the process: it named
    only the share, as ``the worker's memory limit (300 MiB)`` of a memory_limit of 600 MiB (380 MiB of the usual
    400MiB and 0.95), a number found in no setting."""
    worker = SimpleNamespace(memory_manager=SimpleNamespace(memory_limit=600 * 2**20))
    with dask.config.set({"distributed.worker.memory.terminate": 0.5}):  # ends it past 300 MiB
        named = (
            r"using more than 300 MiB, the share distributed\.worker\.memory\.terminate = 0\.5 of the worker's "
            r"memory limit \(600 MiB, the backend's memory_limit\)"
        )
        with pytest.raises(SimulationCrashed, match=named):
            run_isolated(MODEL, batch("memory", mib=800), None, 120.0, worker=worker)


def test_a_worker_whose_nanny_never_ends_it_for_memory_has_its_child_never_ended_for_memory_either():
    """distributed.worker.memory.terminate false: the nanny lets the worker grow, so the child is not held to a
    stricter rule (here it runs into its timeout instead)."""
    worker = SimpleNamespace(memory_manager=SimpleNamespace(memory_limit=300 * 2**20))
    with dask.config.set({"distributed.worker.memory.terminate": False}):
        rows = run_isolated(MODEL, batch("memory", mib=500), None, 3.0, worker=worker)
    assert list(rows["status"]) == ["timeout"]


def test_the_memory_of_the_programs_the_model_started_counts_against_the_workers_limit(tmp_path):
    """The memory a simulator binary holds is the simulation's: only the child's own was counted, so a binary
    past the limit ran on (here until the timeout) while the node ran out of memory."""
    worker = SimpleNamespace(memory_manager=SimpleNamespace(memory_limit=600 * 2**20))
    external = tmp_path / "external"
    with dask.config.set({"distributed.worker.memory.terminate": 0.5}):  # ends it past 300 MiB
        with pytest.raises(
            SimulationCrashed, match=r"using more than 300 MiB, the share .* memory limit \(600 MiB"
        ):
            run_isolated(
                MODEL, batch("external", mib=500, external_pid_file=str(external)), None, 15.0, worker=worker
            )
    assert wait_until_ended(int(external.read_text()))


def test_the_child_ends_when_its_worker_dies_and_so_does_the_program_its_model_started(tmp_path):
    pid_file, external = tmp_path / "pid", tmp_path / "external"
    worker = textwrap.dedent(f"""
        from types import SimpleNamespace
        from simcal.isolate import run_isolated
        from simcal.tasks import Batch, plan_tasks
        params = {{"a": 1, "how": "external", "pid_file": {str(pid_file)!r}, "external_pid_file": {str(external)!r}}}
        tasks = plan_tasks([params], replicates=1)
        # The worker's own directory, which Dask clears after a dead worker (the system's would keep the files).
        worker = SimpleNamespace(local_directory={str(tmp_path)!r}, memory_manager=None)
        run_isolated({MODEL!r}, Batch(tasks, "k", None), None, None, worker)
    """)
    parent = subprocess.Popen(
        [sys.executable, "-c", worker], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    try:
        deadline = time.monotonic() + 60
        while not external.exists() or not external.read_text():
            assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
            time.sleep(0.1)
        child = psutil.Process(int(pid_file.read_text()))
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        child.wait(timeout=10)  # raises TimeoutExpired while it lives on, orphaned
        assert wait_until_ended(int(external.read_text())), (
            "the model's program outlived its orphaned process"
        )
    finally:
        parent.kill()


class Unit(SimpleNamespace):
    pass


def unit(size: int) -> Unit:
    return Unit(
        tasks=[object()] * size,
        key="k",
        start_topic="",
        isolated=False,
        deaths=0,
        unconfirmed=0,
        bystander_deaths=0,
    )


def test_a_single_simulation_whose_worker_died_is_isolated_and_only_its_own_deaths_count():
    deaths = Deaths(client=None, token="t", allowed_failures=1)
    single = unit(1)
    assert deaths.verdict(single, RuntimeError("worker died")) == "isolate" and single.isolated
    # Its worker died again while it ran alone: not its doing, however often, up to the bystander limit.
    single.unconfirmed = (
        2  # two lost results meanwhile (the runner's count): they leave the bystander count alone
    )
    for _ in range(BYSTANDER_DEATHS - 1):
        assert deaths.verdict(single, RuntimeError("worker died")) == "retry"
    # ... and bystander deaths leave the lost-result count alone: a result lost next is still run again.
    assert single.deaths == 0 and single.unconfirmed == 2
    assert deaths.verdict(single, RuntimeError("worker died")) == "crashed"
    error = deaths.crash_error(single, RuntimeError("worker died"))
    assert f"its worker died {BYSTANDER_DEATHS} time(s) while it ran alone" in error and "never died" in error
    # Its own process dying counts, up to allowed_failures.
    own = unit(1)
    deaths.verdict(own, RuntimeError("worker died"))
    assert deaths.isolated_verdict(own) == "retry"
    assert deaths.isolated_verdict(own) == "crashed" and own.deaths == 2
    error = deaths.crash_error(
        own, SimulationCrashed("the process running it alone ... exited with exit code 11")
    )
    assert "that process died 2 time(s) (limit: simulation.allowed_failures = 1;" in error


def test_an_isolated_simulation_is_run_again_after_nine_deaths_of_its_worker_and_crashed_at_the_tenth():
    """docs/simulation.md: a worker that dies while an isolated simulation runs is another's doing; after its 10th
    such death (simcal.outcomes.BYSTANDER_DEATHS) the simulation is recorded as crashed, saying so. The number is
    written out here: the test above counts up to the constant, whatever it is."""
    deaths = Deaths(client=None, token="t", allowed_failures=0)
    single = unit(1)
    assert deaths.verdict(single, RuntimeError("worker died")) == "isolate"
    verdicts = [deaths.verdict(single, RuntimeError("worker died")) for _ in range(10)]
    assert verdicts == ["retry"] * 9 + ["crashed"]
    assert "its worker died 10 time(s) while it ran alone" in deaths.crash_error(single, RuntimeError("died"))


def test_a_simulation_that_cannot_be_run_alone_is_tried_three_times_in_all_then_failed():
    """docs/simulation.md: when the isolation itself fails (IsolationFailed: the worker's disk or process table),
    the simulation is run alone 3 times in all (simcal.outcomes.ISOLATION_FAILURES), then recorded as failed, not
    crashed, and no death is counted. The number is written out: the runner's test counts up to the constant."""
    deaths = Deaths(client=None, token="t", allowed_failures=0)
    single = unit(1)
    single.isolation_failures = 0
    assert deaths.verdict(single, RuntimeError("worker died")) == "isolate"  # the first run alone
    failure = IsolationFailed("cannot make the scratch directory")
    assert [deaths.judge(single, failure) for _ in range(3)] == ["retry", "retry", "failed"]
    assert single.deaths == 0 and "so 3 time(s), the limit" in deaths.isolation_error(single, failure)


def test_a_batch_of_several_is_split_never_isolated():
    deaths = Deaths(client=None, token="t", allowed_failures=0)
    several = unit(4)
    assert deaths.verdict(several, RuntimeError("worker died")) == "split" and not several.isolated


class StartEvents:
    """A scheduler's event log as ``Client.get_events`` gives it: the start confirmations sent on each topic."""

    def __init__(self, **by_topic: list[dict]):
        self.by_topic = by_topic

    def get_events(self, topic: str) -> list[tuple[float, dict]]:
        return [(0.0, message) for message in self.by_topic.get(topic, [])]


def died_on(worker: str) -> SimpleNamespace:
    """What Dask's KilledWorker tells of the worker that died."""
    return SimpleNamespace(last_worker=SimpleNamespace(address=worker))


def deaths_seeing(allowed_failures: int, *started: dict) -> Deaths:
    deaths = Deaths(client=None, token="t", allowed_failures=allowed_failures)
    deaths.client = StartEvents(**{deaths.topic: list(started)})
    return deaths


def test_a_batch_confirmed_started_on_the_worker_that_died_is_retried_allowed_failures_times_then_split():
    allowed = 2
    deaths = deaths_seeing(allowed, {"batch": "k", "worker": "tcp://w1"})
    several = unit(4)
    assert deaths.verdict(several, died_on("tcp://w1")) == "split"  # first asked to confirm its start
    assert several.start_topic == deaths.topic
    verdicts = [deaths.verdict(several, died_on("tcp://w1")) for _ in range(allowed + 1)]
    assert verdicts == ["retry"] * allowed + ["split"] and several.deaths == allowed + 1


@pytest.mark.parametrize(
    "started",
    [
        [],  # its start confirmation was lost, or it never started
        [{"batch": "k", "worker": "tcp://w2"}],  # it started, but on another worker than the one that died
        [{"batch": "other", "worker": "tcp://w1"}],  # another batch started on the worker that died
    ],
    ids=["no-confirmation", "other-worker", "other-batch"],
)
def test_a_death_not_confirmed_on_the_batch_and_worker_counts_only_after_several(started):
    """Dask blames every batch assigned to a dying worker: a death without a start confirmation of this batch on
    that worker is not counted, until UNCONFIRMED_DEATHS of them (a lost event) count as one."""
    deaths = deaths_seeing(0, *started)
    several = unit(4)
    several.start_topic = deaths.topic
    for _ in range(UNCONFIRMED_DEATHS - 1):
        assert deaths.verdict(several, died_on("tcp://w1")) == "retry"
    assert several.deaths == 0
    assert (
        deaths.verdict(several, died_on("tcp://w1")) == "split"
    )  # allowed_failures = 0: the first counted one
    assert several.deaths == 1


class LostEvents:
    """A scheduler that refuses the event log or has lost it: ``Client.get_events`` raises."""

    def get_events(self, topic: str) -> list[tuple[float, dict]]:
        raise OSError("the scheduler's event log is gone")


def test_a_death_whose_start_confirmations_cannot_be_read_counts_as_unconfirmed():
    """simcal.outcomes.Deaths.started: with no events to read there is no confirmation, so the death counts as
    unconfirmed (only UNCONFIRMED_DEATHS of them make one), not at once against a batch that may never have
    started on the worker that died."""
    deaths = Deaths(client=LostEvents(), token="t", allowed_failures=0)
    several = unit(4)
    several.start_topic = deaths.topic
    for _ in range(UNCONFIRMED_DEATHS - 1):
        assert deaths.verdict(several, died_on("tcp://w1")) == "retry"
    assert several.deaths == 0 and several.unconfirmed == UNCONFIRMED_DEATHS - 1


SLOW_IMPORT = """
import time
time.sleep({seconds})  # a heavy import (a big library, a compiled kernel)

def quick(params, seed):
    return {{"y": params["a"] * 2}}
"""


def test_the_timeout_counts_from_when_the_model_is_imported_not_from_the_process_start(tmp_path, monkeypatch):
    # The import takes twice the timeout; the timeout leaves the harness's own work (its rows) room on a loaded
    # machine (a CI run with 0.5 s against 1.5 s timed out once, the process still exiting).
    (tmp_path / "slow_import_model.py").write_text(SLOW_IMPORT.format(seconds=2.0))
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = plan_tasks([{"a": 2.0}], replicates=1)
    rows = run_isolated("slow_import_model:quick", Batch(tasks, "k", None), None, 1.0, worker=None)
    assert list(rows["status"]) == ["ok"] and list(rows["y"]) == [4.0]


SLOW_EXIT = """
import atexit, time
atexit.register(time.sleep, 30)  # e.g. a library's exit hook that waits on a server

def quick(params, seed):
    return {"y": params["a"] * 2}
"""


def test_a_simulation_whose_process_is_slow_to_exit_after_its_rows_are_written_is_not_a_timeout(
    tmp_path, monkeypatch
):
    # The timeout is the simulation's: once its rows are written the process is ended, not called a timeout.
    (tmp_path / "slow_exit_model.py").write_text(SLOW_EXIT)
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = plan_tasks([{"a": 2.0}], replicates=1)
    began = time.monotonic()
    rows = run_isolated("slow_exit_model:quick", Batch(tasks, "k", None), None, 1.0, worker=None)
    assert list(rows["status"]) == ["ok"] and list(rows["y"]) == [4.0]
    assert time.monotonic() - began < 20, "it waited for the exit hook"


@pytest.mark.timeout(60)  # without the start-up limit the import would hang for 600 s
@pytest.mark.parametrize("timeout_s", [0.5, None])  # the start-up limit applies without a timeout_s too
def test_a_model_whose_import_hangs_is_a_timeout_row_naming_the_start_up(tmp_path, monkeypatch, timeout_s):
    (tmp_path / "hung_import_model.py").write_text(SLOW_IMPORT.format(seconds=600))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr("simcal.isolate.STARTUP_S", 3.0)
    tasks = plan_tasks([{"a": 2.0}], replicates=1)
    rows = run_isolated("hung_import_model:quick", Batch(tasks, "k", None), None, timeout_s, worker=None)
    assert list(rows["status"]) == ["timeout"]
    assert "had not imported hung_import_model:quick after 3 s" in rows["error"].iloc[0]


class PolledChild:
    """Stands in for the child process that ``_wait`` polls: running for ``polls`` polls, then exited (0)."""

    pid = 4_000_000  # never signalled: the test records _end_group's calls instead

    def __init__(self, polls: int):
        self.left, self.returncode = polls, None

    def poll(self) -> int | None:
        if self.left:
            self.left -= 1
            return None
        self.returncode = 0
        return 0

    def wait(self) -> int | None:
        return self.returncode


def test_the_start_up_limit_ends_only_a_child_that_has_not_imported_its_model(tmp_path, monkeypatch):
    """STARTUP_S is for the child to start and import the model: once it has (its ``started`` file), a simulation
    that runs on past STARTUP_S is not ended (no timeout_s here: nothing ends it); before, it is."""
    ended = []
    monkeypatch.setattr(isolate, "_end_group", ended.append)
    monkeypatch.setattr(isolate, "STARTUP_S", 0.01)  # the child runs for 4 polls, 0.2 s
    started, result = tmp_path / isolate.STARTED, tmp_path / "rows.pkl"
    started.touch()
    assert (isolate._wait(PolledChild(4), started, result, None, None), ended) == ("exited", [])
    started.unlink()
    assert (isolate._wait(PolledChild(4), started, result, None, None), ended) == (
        "start-up",
        [PolledChild.pid],
    )
