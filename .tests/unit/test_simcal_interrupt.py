"""A cancelled sweep interrupts its batches running on a worker (simcal.worker.interrupt_batches), in process:
the batch stops between two steps of its model, a batch run alone in a child process takes the child with it,
and the thread goes on to its next task with no interrupt left over."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import psutil
import pytest

from simcal import worker
from simcal.tasks import Batch, plan_tasks
from simcal.worker import (
    RUNNING_BATCHES,
    WATCHDOG,
    BatchCancelled,
    BatchInterrupted,
    RunningBatches,
    Watchdog,
    grace_seconds,
    interrupt_batches,
    run_batch,
)

MODEL = "simcal_models:sleeps_in_steps"


def keyed_batch(key: str, sleep_s: float, count: int = 2, isolated: bool = False) -> Batch:
    sets = [{"a": float(i), "sleep_s": sleep_s} for i in range(count)]
    return Batch(plan_tasks(sets, replicates=1), key, driver=None, isolated=isolated)


def run_in_thread(
    batches: list[Batch], model: str = MODEL, timeout_s: float | None = None
) -> tuple[threading.Thread, list]:
    """Run the batches one after another in one thread (as a worker thread runs its tasks); each outcome is
    ("rows", table) or ("raised", exception)."""
    outcomes: list = []

    def work() -> None:
        for batch in batches:
            try:
                outcomes.append(("rows", run_batch(model, batch, timeout_s=timeout_s)))
            except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
                outcomes.append(("raised", error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, outcomes


def wait_until_running(key: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while key not in RUNNING_BATCHES.running:
        assert time.monotonic() < deadline, f"batch {key} never started"
        time.sleep(0.01)


def test_an_interrupted_batch_stops_between_steps_and_its_thread_runs_the_next_batch_untouched():
    thread, outcomes = run_in_thread([keyed_batch("sweep-a-1", 60.0), keyed_batch("sweep-b-1", 0.05)])
    wait_until_running("sweep-a-1")
    time.sleep(0.2)  # inside the model's loop
    assert interrupt_batches(["sweep-a-1", "not-running-here"]) == 1
    assert interrupt_batches(["sweep-a-1"]) == 0  # one interrupt per batch
    thread.join(timeout=10)
    assert not thread.is_alive(), "the interrupted batch ran on"
    (first, error), (second, rows) = outcomes
    assert first == "raised" and isinstance(error, BatchInterrupted) and "sweep-a-1" in str(error)
    assert second == "rows" and list(rows["status"]) == ["ok", "ok"]  # no interrupt left over for it
    assert RUNNING_BATCHES.running == {}


def test_a_batch_without_a_key_is_not_tracked_and_a_finished_one_is_no_longer_interruptible():
    rows = run_batch(MODEL, Batch(plan_tasks([{"a": 1.0, "sleep_s": 0.01}], 1), "", driver=None))
    assert list(rows["status"]) == ["ok"] and RUNNING_BATCHES.running == {}
    rows = run_batch(MODEL, keyed_batch("sweep-c-1", 0.01))
    assert list(rows["status"]) == ["ok", "ok"] and interrupt_batches(["sweep-c-1"]) == 0


def test_a_cancel_heard_before_the_batch_is_ready_sends_no_interrupt_and_stops_it_at_ready():
    """A cancel heard while the batch imports its model (from begin to ready) is not sent to the thread then; ready()
    raises it at once, so that none of the batch's simulations starts."""
    batches = RunningBatches()
    batches.begin("sweep-n-1")
    assert batches.interrupt(["sweep-n-1"]) == 1  # no interrupt sent: it would land in this very thread
    with pytest.raises(BatchCancelled):
        batches.ready("sweep-n-1")
    assert batches.end("sweep-n-1") is True and batches.running == {}


def test_a_simulation_past_timeout_s_is_interrupted_within_a_watchdog_interval_not_later():
    """The watchdog wakes every timeout_s / 4 (at most 0.5 s): a simulation running in Python code past timeout_s
    becomes a timeout row within about that much, not after twice its timeout. (2 s: the 1.5 s between the latest
    the watchdog should fire and twice the timeout leaves room for a busy machine.)"""
    timeout_s = 2.0
    batch = Batch(plan_tasks([{"a": 0.0, "sleep_s": 60.0}], replicates=1), "", driver=None)
    rows = run_batch(MODEL, batch, timeout_s=timeout_s)
    assert list(rows["status"]) == ["timeout"]
    assert rows["error"].iloc[0] == "SimulationTimeout: ran longer than timeout_s = 2 s"
    assert timeout_s <= rows["duration_s"].iloc[0] < 2 * timeout_s - 0.5, rows["duration_s"].iloc[0]
    assert WATCHDOG.running == {}


def wait_until_timed_out(timeout_s: float = 10.0) -> None:
    """Until the watchdog has sent a simulation its timeout interrupt."""
    deadline = time.monotonic() + timeout_s
    while not any(entry.fired_at is not None for entry in list(WATCHDOG.running.values())):
        assert time.monotonic() < deadline, "the simulation never timed out"
        time.sleep(0.005)


@pytest.mark.parametrize("first", ["timeout", "cancel"])
def test_a_cancel_stops_the_batch_even_when_its_simulation_times_out_at_the_same_time(
    first, tmp_path, monkeypatch
):
    # A thread holds one pending interrupt: while the model sleeps in a native call, the cancel's and the
    # timeout's wait together and the later replaces the earlier. Whichever is heard, the batch must stop.
    count = tmp_path / "begun.txt"
    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(count))
    timeout_s, sleep_s = 0.2, 0.6
    # The watchdog interrupts, it does not end the process:
    assert sleep_s < timeout_s + grace_seconds(timeout_s)
    sets = [{"a": float(i), "sleep_s": sleep_s} for i in range(4)]
    batch = Batch(plan_tasks(sets, replicates=1), "sweep-e-1", driver=None)
    thread, outcomes = run_in_thread([batch], "simcal_models:counted_then_sleeps", timeout_s)
    wait_until_running("sweep-e-1")
    if first == "timeout":
        wait_until_timed_out()
        assert interrupt_batches(["sweep-e-1"]) == 1
    else:
        time.sleep(0.05)  # inside the model's sleep
        assert interrupt_batches(["sweep-e-1"]) == 1
        wait_until_timed_out()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcomes[0][0] == "raised" and isinstance(outcomes[0][1], BatchInterrupted), outcomes
    assert count.read_text().split() == ["0.0"], "the batch ran on past its cancel"
    assert RUNNING_BATCHES.running == {} and WATCHDOG.running == {}


def isolation_children(process: psutil.Process) -> list[psutil.Process]:
    found = []
    for child in process.children():
        try:
            if "simcal.isolate" in child.cmdline():
                found.append(child)
        except psutil.NoSuchProcess:
            pass
    return found


def test_an_interrupted_batch_run_alone_in_a_child_process_ends_the_child():
    me = psutil.Process()
    assert isolation_children(me) == []
    thread, outcomes = run_in_thread([keyed_batch("sweep-d-1", 60.0, count=1, isolated=True)])
    wait_until_running("sweep-d-1")
    deadline = time.monotonic() + 30
    while not isolation_children(me):
        assert time.monotonic() < deadline, "the child process never started"
        time.sleep(0.05)
    (child,) = isolation_children(me)
    time.sleep(0.5)
    assert interrupt_batches(["sweep-d-1"]) == 1
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert outcomes[0][0] == "raised" and isinstance(outcomes[0][1], BatchInterrupted)
    with pytest.raises(psutil.NoSuchProcess):
        child.status()  # ended and reaped, not left to run its 60 s


def test_a_cancel_heard_as_a_simulation_returns_leaves_no_timeout_behind_for_the_threads_next_batch():
    # A cancel heard in the few bytecodes where the watchdog watches a simulation that is not inside its guard (as
    # the simulation returns, before the watchdog's end() has dropped it) left the thread watched: its timeout
    # then struck the thread's next task, another sweep's batch here, and past the grace a worker process ended
    # itself. The profile hook sends the cancel from the batch's own thread as the watchdog's end() is entered
    # after the first simulation, so that it is heard there every time (a random moment hits it a few times in a
    # hundred). The driver is this process: the watchdog never ends it.
    here = (socket.gethostname(), os.getpid())
    cancelled = Batch(plan_tasks([{"a": float(i), "sleep_s": 0.0} for i in range(5)], 1), "sweep-f-1", here)
    after = Batch(plan_tasks([{"a": float(i), "sleep_s": 0.2} for i in range(3)], 1), "sweep-g-1", here)
    ends: list = []

    def cancel_as_the_first_simulation_returns(frame, event, arg) -> None:
        if event == "call" and frame.f_code is Watchdog.end.__code__:
            ends.append(frame)
            if len(ends) == 1:
                interrupt_batches(["sweep-f-1"])

    outcomes: list = []

    def work() -> None:
        sys.setprofile(cancel_as_the_first_simulation_returns)
        try:
            run_batch(MODEL, cancelled, timeout_s=0.2)
        except BatchInterrupted as error:
            outcomes.append(("raised", error))
        finally:
            sys.setprofile(None)
        outcomes.append(("watched after the cancel", threading.get_ident() in WATCHDOG.running))
        try:
            outcomes.append(("rows", run_batch(MODEL, after)))
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            outcomes.append(("raised", error))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert len(ends) >= 1 and outcomes[0][0] == "raised", outcomes
    assert outcomes[1] == ("watched after the cancel", False), outcomes
    kind, rows = outcomes[2]
    assert kind == "rows" and list(rows["status"]) == ["ok", "ok", "ok"], outcomes
    assert RUNNING_BATCHES.running == {} and WATCHDOG.running == {}


def runs_profiled(timeout_s: float = 5.0) -> bool:
    """Whether a new thread of this process, profiled (as by cProfile, coverage or a debugger), finishes a call."""
    finished = threading.Event()

    def work() -> None:
        sys.setprofile(lambda frame, event, arg: None)
        keyed_batch("profiled", 0.0)  # Python calls
        sys.setprofile(None)
        finished.set()

    threading.Thread(target=work, daemon=True).start()
    return finished.wait(timeout_s)


@pytest.mark.parametrize("taken_back_by", ["cancel", "timeout"])
def test_after_a_cancel_or_a_timeout_a_profiled_thread_of_the_process_still_runs(taken_back_by):
    # The batch's end takes back an interrupt it may not have heard. CPython 3.11 leaves a flag set after a plain
    # take-back, under which a traced or profiled thread loops for ever at its next call: on a worker (or a driver
    # running its batches in threads) that had one cancel or one timeout, cProfile, coverage or a debugger hung.
    assert runs_profiled()
    if taken_back_by == "cancel":
        thread, outcomes = run_in_thread([keyed_batch("sweep-h-1", 60.0)])
        wait_until_running("sweep-h-1")
        time.sleep(0.1)
        assert interrupt_batches(["sweep-h-1"]) == 1
        thread.join(timeout=10)
        assert outcomes[0][0] == "raised" and isinstance(outcomes[0][1], BatchInterrupted), outcomes
    else:
        here = (socket.gethostname(), os.getpid())  # the watchdog never ends this process
        batch = Batch(plan_tasks([{"a": 0.0, "sleep_s": 2.0}], 1), "sweep-i-1", here)
        rows = run_batch(MODEL, batch, timeout_s=0.2)
        assert list(rows["status"]) == ["timeout"]
    assert runs_profiled(), f"a profiled thread hangs after the {taken_back_by}'s take-back"


def test_a_cancel_heard_while_the_model_is_imported_stops_the_batch_and_leaves_the_model_importable(
    tmp_path, monkeypatch
):
    # A batch imports its model first (once per worker process). A cancel heard inside that import left the
    # model's package half imported in the worker for good (a submodule kept, its package dropped): every later
    # batch of that model there, another job's too, failed. The package here takes a second to import, in Python
    # steps, and its model reads a submodule by its dotted name, as packages commonly do.
    package = tmp_path / "slow_import_model"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import time\n\n"
        "import slow_import_model.values as _values\n\n"
        "end = time.monotonic() + 1.0\n"
        "while time.monotonic() < end:\n"
        "    time.sleep(0.01)\n"
    )
    (package / "values.py").write_text("Y = 2.5\n")
    (package / "model.py").write_text(
        "import slow_import_model.values\n\n\n"
        "def model(params, seed):\n"
        "    return {'y': slow_import_model.values.Y}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    reference = "slow_import_model.model:model"
    sets = [{"a": 0.0}, {"a": 1.0}]
    outcomes: list = []

    def work() -> None:
        for key in ("sweep-j-1", "sweep-k-1"):
            try:
                outcomes.append(("rows", run_batch(reference, Batch(plan_tasks(sets, 1), key, driver=None))))
            except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
                outcomes.append(("raised", error))

    thread = threading.Thread(target=work, daemon=True)
    try:
        thread.start()
        wait_until_running("sweep-j-1")
        time.sleep(0.3)  # inside the model's import
        assert interrupt_batches(["sweep-j-1"]) == 1
        thread.join(timeout=30)
        assert not thread.is_alive()
        (first, error), (second, rows) = outcomes
        assert first == "raised" and isinstance(error, BatchInterrupted), outcomes
        assert second == "rows", outcomes
        assert list(rows["status"]) == ["ok", "ok"], rows[["status", "error"]].to_string()
        assert list(rows["y"]) == [2.5, 2.5]
    finally:
        worker.MODELS.pop(reference, None)
        for name in [name for name in sys.modules if name.split(".")[0] == "slow_import_model"]:
            del sys.modules[name]


def test_a_model_whose_import_fails_is_imported_once_per_batch_and_its_batch_becomes_failed_rows(
    tmp_path, monkeypatch
):
    # The batch imports its model before a cancel may land; an import that failed there was tried again when the
    # batch ran, doubling whatever the module did before it failed (loading data, say).
    (tmp_path / "fails_on_import.py").write_text(
        f"with open({str(tmp_path / 'imports')!r}, 'a') as counter:\n"
        "    counter.write('x')\n"
        "raise RuntimeError('no data file')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    tasks = plan_tasks([{"a": 0.0}, {"a": 1.0}], replicates=1)
    rows = run_batch("fails_on_import:model", Batch(tasks, "sweep-m-1", driver=None))
    assert list(rows["status"]) == ["failed", "failed"]
    assert (
        "importing module 'fails_on_import' failed with RuntimeError: no data file" in rows["error"].iloc[0]
    )
    assert (tmp_path / "imports").read_text() == "x"
    assert interrupt_batches(["sweep-m-1"]) == 0  # ended: no longer interruptible
