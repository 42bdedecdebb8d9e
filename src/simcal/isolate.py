"""Run a batch in a child process of the worker, so that only the batch's own crash can be blamed on it.

On a worker process of several threads, a simulation that kills the process (a segfault, ``os._exit``, the memory
limit) kills the simulations running in the other threads too, as often as they run beside it. A single
simulation whose worker died is therefore run again here, alone in a process of its own (``python -m
simcal.isolate``): if that process dies, the simulation killed it (``SimulationCrashed``); if the worker dies
meanwhile, another simulation did. The worker's thread waits for the child and ends it past ``timeout_s`` (a
``timeout`` row) or past the worker's memory limit (the nanny's own limit, which does not count child processes).

What fails around the model is not the model's doing, and raises ``IsolationFailed`` instead (the driver runs the
simulation alone again, a few times, then records it as failed, not crashed): on the worker, making the scratch
directory, writing the payload or starting the child (a full disk, a removed directory, no process to be had);
in the child, reading the payload or writing the rows. The child reports such a failure to its worker through a
pipe (its file descriptor is the child's third argument), not by an exit code, which a model's ``os._exit`` could
use too, nor by a file in the scratch directory, which a full disk, the usual cause, would not let it write.
"""

from __future__ import annotations

import codecs
import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd

from simcal.tasks import Batch

POLL_S = 0.05
# Kept in a crash message: characters of the child's stderr (all of it goes to the worker's stderr) and the
# innermost frames of a fatal error's report.
STDERR_TAIL = 600
FRAMES = 3
# The end of the child's stderr that is read for the crash message (faulthandler's report comes last); the rest
# is passed on in chunks of the same size, never held whole (a verbose model writes gigabytes).
STDERR_READ = 256 * 1024
STARTUP_S = 120.0  # for the child to start and import the model, before the simulation's timeout applies
STARTED = "started"  # the file the child writes beside its rows once the model is imported


# At most this much of a harness failure's report, written at once (PIPE_BUF: never interleaved).
REPORT_BYTES = 4096


class SimulationCrashed(Exception):
    """The process running a simulation alone died before it returned its rows."""


class IsolationFailed(Exception):
    """The simulation could not be run alone, for the worker's reasons (its disk, its process table), not the
    model's: the message names the worker's host, the directory and the OSError."""


def run_isolated(
    model_ref: str, batch: Batch, time_budget_s: float | None, timeout_s: float | None, worker: Any
) -> pd.DataFrame:
    """The batch's rows, computed by ``run_batch`` in a child process; raises SimulationCrashed when it died, and
    IsolationFailed when the worker or the child could not do their own part (an OSError outside the model)."""
    # In the worker's own directory when it has one: set where /tmp will not do, and cleared by Dask's next worker
    # there once this one has died (this clean-up then never runs).
    where = getattr(worker, "local_directory", None)
    try:
        return _run_isolated(model_ref, batch, time_budget_s, timeout_s, worker, where)
    except OSError as error:  # the model runs in the child: whatever fails here is the worker's
        raise IsolationFailed(_isolation_failure(where, f"{type(error).__name__}: {error}")) from error


def _isolation_failure(where: str | None, what: str) -> str:
    # Not gettempdir(): it raises when no temporary directory is usable, which may be the failure itself.
    directory = where or tempfile.tempdir or "the system's temporary directory"
    return (
        f"could not run it alone in a process of its own on worker host {socket.gethostname()} (in {directory}): "
        f"{what}"
    )


def _run_isolated(
    model_ref: str,
    batch: Batch,
    time_budget_s: float | None,
    timeout_s: float | None,
    worker: Any,
    where: str | None,
) -> pd.DataFrame:
    from simcal.worker import failure_rows

    alone = Batch(batch.tasks, batch.key, driver=None)  # no start confirmation, no further isolation
    with tempfile.TemporaryDirectory(prefix="simcal-isolated-", dir=where) as scratch:
        payload, result, stderr_path = (Path(scratch) / n for n in ("payload.pkl", "rows.pkl", "stderr.txt"))
        started = Path(scratch) / STARTED
        payload.write_bytes(pickle.dumps((model_ref, alone, time_budget_s)))
        # The child imports what the worker imports (its sys.path, made absolute), from the worker's directory.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(os.path.abspath(p) for p in sys.path if p)}
        report_read, report_write = os.pipe()
        try:
            with open(stderr_path, "wb") as stderr:
                try:
                    # A process group of its own: what the model starts (a simulator binary) is ended with it.
                    child = subprocess.Popen(
                        [sys.executable, "-m", "simcal.isolate", str(payload), str(result), str(report_write)],
                        stdin=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True,
                        pass_fds=(report_write,),
                    )  # fmt: skip
                finally:
                    os.close(report_write)  # the child's copy only: read() then ends when the child has
                limit = timeout_s * len(alone) if timeout_s else None
                memory_limit, memory_text = _memory_limit(worker)
                ended = _wait(child, started, result, limit, memory_limit)
            report = _read_report(report_read) if ended == "exited" else ""
        finally:
            os.close(report_read)
        stderr_text = _pass_on(stderr_path)
        if report:
            raise IsolationFailed(_isolation_failure(where, f"its process {report}"))
        if ended == "timeout":
            return failure_rows(
                batch.tasks,
                "timeout",
                f"SimulationTimeout: ran longer than timeout_s = {timeout_s:g} s in a process of its own "
                "(run alone after its worker died), which was ended",
            )
        if ended == "start-up":
            return failure_rows(
                batch.tasks,
                "timeout",
                f"SimulationTimeout: the process to run it alone in (after its worker died) had not imported "
                f"{model_ref} after {STARTUP_S:g} s, and was ended",
            )
        if (child.returncode == 0 or ended == "written") and result.exists():
            return pickle.loads(result.read_bytes())
        raise SimulationCrashed(_death(child.returncode, ended, memory_text, stderr_text))


def _read_report(report_read: int) -> str:
    """What the exited child reported of a harness failure of its own ("" when none): it writes its report at
    once, before it exits; not waiting for more, as a program its model started might hold the pipe open."""
    os.set_blocking(report_read, False)
    try:
        return os.read(report_read, REPORT_BYTES).decode(errors="replace")
    except BlockingIOError:
        return ""


def _pass_on(stderr_path: Path) -> str:
    """Write the child's stderr to the worker's (the model's own messages, as if it had run on the worker), chunk by
    chunk; return its last ``STDERR_READ`` bytes."""
    # Incremental: a character that a chunk's end cuts in two is decoded whole.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(stderr_path, "rb") as stderr:
        while chunk := stderr.read(STDERR_READ):
            sys.stderr.write(decoder.decode(chunk))
        sys.stderr.write(decoder.decode(b"", final=True))
        stderr.seek(max(0, stderr.tell() - STDERR_READ))
        return stderr.read().decode(errors="replace")


def _wait(
    child: subprocess.Popen, started: Path, result: Path, timeout_s: float | None, memory_limit: int | None
) -> str:
    """``exited``, ``written`` (its rows were written, but past the timeout it was still exiting: ended), or why
    the child was ended: ``timeout`` (counted from when its model was imported, so that the process's start-up is
    not the simulation's time), ``start-up`` or ``memory``."""
    launched = time.monotonic()
    began = None
    exited = False
    try:
        while child.poll() is None:
            now = time.monotonic()
            if began is None and started.exists():
                began = now
            if began is None and now - launched > STARTUP_S:
                return "start-up"
            if timeout_s and began is not None and now - began > timeout_s:
                # Rows written: what runs on is the interpreter's exit (a model's atexit hook), not a simulation.
                return "written" if result.exists() else "timeout"
            if memory_limit and _rss(child.pid) > memory_limit:
                return "memory"
            time.sleep(POLL_S)
        exited = True
        return "exited"
    finally:
        # Ended for a reason, or the batch was interrupted (its sweep cancelled): the child must not run on.
        if not exited:
            _end_group(child.pid)
            child.wait()


def _end_group(pid: int) -> None:
    """Kill the process group ``pid`` leads: the child and whatever the model started."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _rss(pid: int) -> int:
    """The memory of the child and of the programs its model started (a simulator binary's is the simulation's)."""
    import psutil

    try:
        child = psutil.Process(pid)
        processes = [child, *child.children(recursive=True)]
    except psutil.Error:  # ended meanwhile
        return 0
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total


def _memory_limit(worker: Any) -> tuple[int | None, str]:
    """The memory at which the worker's nanny would end the worker (its limit times the terminate fraction; None:
    never), and how a crash row says it: the limit as configured (``memory_limit``) and the fraction, so the
    number is the one the settings give (before, a limit of 400 MiB read ``memory limit (380 MiB)``)."""
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    if not limit:
        return None, ""
    import dask

    fraction = dask.config.get("distributed.worker.memory.terminate", False)
    if not fraction:
        return None, ""
    threshold = int(limit * fraction)
    return threshold, (
        f"{threshold / 2**20:.0f} MiB, the share distributed.worker.memory.terminate = {fraction:g} of the worker's "
        f"memory limit ({limit / 2**20:.0f} MiB, the backend's memory_limit) at which its nanny would end the worker"
    )


def _death(returncode: int, ended: str, memory_text: str, stderr_text: str) -> str:
    if ended == "memory":
        how = f"was ended for using more than {memory_text}"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        how = f"was killed by signal {name}"
    elif returncode == 0:
        how = "exited without writing its rows"
    else:
        how = f"exited with exit code {returncode}"
    said = _what_stderr_says(stderr_text)
    return f"the process running it alone, after its worker died, {how}" + (f" ({said})" if said else "")


def _what_stderr_says(text: str) -> str:
    """faulthandler's error and the innermost frames of the crashing thread, else the end of stderr."""
    lines = text.splitlines()
    fatal = next((i for i, line in enumerate(lines) if line.startswith("Fatal Python error:")), None)
    if fatal is None:
        tail = " ".join(text[-STDERR_TAIL:].split())
        return f"its stderr ends: {tail}" if tail else ""
    current = next((i for i in range(fatal, len(lines)) if lines[i].startswith("Current thread")), None)
    frames = [] if current is None else [line.strip() for line in lines[current + 1 : current + 1 + FRAMES]]
    frames = [f for f in frames if f.startswith("File ")]
    return "; ".join([lines[fatal].strip(), *(f"in {f[5:]}" for f in frames)])[:STDERR_TAIL]


def _end_when_orphaned() -> None:
    """A child whose worker died has nobody to report to: end it instead of finishing the simulation unseen."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        _end_group(os.getpgrp())  # with what the model started
        os._exit(75)

    threading.Thread(target=watch, name="simcal-isolated-orphan-watch", daemon=True).start()


def _harness_failed(report_fd: int, what: str, error: OSError) -> int:
    """Report an OSError of the child's own work (not the model's) to the worker, and say it on stderr too."""
    message = f"could not {what}: {type(error).__name__}: {error}"
    os.write(report_fd, message.encode()[:REPORT_BYTES])
    with contextlib.suppress(OSError):  # stderr is a file in the scratch directory, maybe on the full disk
        print(f"simcal.isolate: {message}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str]) -> int:
    import faulthandler

    from simcal.contract import ContractError
    from simcal.worker import cached_model, run_batch

    faulthandler.enable()  # a segfault prints the model's Python stack to stderr, which the crash message quotes
    _end_when_orphaned()
    payload, result, report_fd = Path(argv[0]), Path(argv[1]), int(argv[2])
    os.set_inheritable(report_fd, False)  # not for the programs the model starts
    try:
        model_ref, batch, time_budget_s = pickle.loads(payload.read_bytes())
    except OSError as error:
        return _harness_failed(report_fd, f"read its payload {payload}", error)
    import simcal.store  # noqa: F401 - what run_batch imports for its first rows, before the clock starts too

    with contextlib.suppress(ContractError):  # run_batch makes it the batch's failed rows
        cached_model(model_ref)  # imported once, before the simulation's clock starts
    try:
        result.with_name(STARTED).touch()
    except OSError as error:
        return _harness_failed(report_fd, f"write {result.with_name(STARTED)}", error)
    rows = pickle.dumps(run_batch(model_ref, batch, time_budget_s))
    partial = result.with_suffix(".partial")
    try:
        partial.write_bytes(rows)
        os.replace(partial, result)  # whole rows or none: a death while writing reads as a crash
    except OSError as error:
        return _harness_failed(report_fd, f"write its rows to {partial}", error)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
