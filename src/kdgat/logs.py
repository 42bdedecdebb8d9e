"""Logging set-up for wrappers and scripts: kdgat's messages to one file, a failure logged before it propagates (a
user's mistake as one line that ends the process)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import wrapper_rules
from wrapper_rules import ALL as ALL  # a wrapper's OPTIONAL for "every name it takes"
from wrapper_rules import set_up
from wrapper_rules.log_times import log_formatter  # times in ISO 8601 with the UTC offset


def configure(
    log_path: str | os.PathLike | None = None, *, append: bool = True, level: int = logging.INFO
) -> None:
    """Send every log record to ``log_path`` (stderr without one), replacing any earlier handler.

    ``append=False`` starts the file afresh: for jobs whose log is read as the record of the last attempt only.
    """
    handler: logging.Handler
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, mode="a" if append else "w")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_wrapper(what, logs, rule, takes, optional) -> None:
    """``wrapper_rules.set_up`` with kdgat's ``configure`` and logger (what every kdgat wrapper starts with)."""
    set_up(configure, logging.getLogger("kdgat"), what, logs, rule, takes, optional)


class Terminated(SystemExit):
    """A termination signal as an exception: SIGTERM, what SLURM sends at the walltime or on scancel, and
    Kubernetes when it deletes a pod; SIGHUP, what a closing terminal or ssh session sends the Snakemake run in it
    and its jobs. Its exit status is 128 + the signal (143 for SIGTERM), the shell's for a process the signal
    ended."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(128 + signum)
        self.signal = signal.Signals(signum)


# The signals turned into Terminated, each with what sends it (for the log line); simcal's wrappers take the same.
TERMINATION_SIGNALS = wrapper_rules.TERMINATION_CAUSES


@contextlib.contextmanager
def termination_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP raise Terminated instead of ending the process on the spot, so that
    cleanup runs: an atomic write in progress removes its temporary file (else a ``.<name>.<hex>.tmp`` stays beside
    the output), and the log can say why the job ended. Ctrl-C's SIGINT is Python's KeyboardInterrupt already. Only
    the main thread can take signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated(signum)

    previous = {signum: signal.signal(signum, terminate) for signum in TERMINATION_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def failure_logged(
    what: str,
    logger: str = "kdgat",
    *,
    checkpoint: str | os.PathLike | None = None,
    mem_mb: object = None,
    rule: str | None = None,
) -> contextlib.AbstractContextManager[None]:
    """A wrapper's outermost frame around its library call. A user's mistake (``wrapper_rules.InputError``) is
    logged as the one line ``<what> failed: <message>``, also on stderr, and ends the process with status 1 and no
    traceback (``wrapper_rules.refuse_input``), and so is a full disk, a quota, a file past the size limit or too many
    open files, a file the job may not write or replace, or a ``MemoryError``, with what to do
    (``wrapper_rules.exhausted``, ``not_permitted``, ``memory.out_of_memory``: a ``MemoryError`` names ``mem_mb``,
    the job's resource, and ``rule``, as the wrapper got them, ``snakemake.resources.get("mem_mb")`` and
    ``snakemake.rule``). Any other exception is logged with its traceback as
    ``<what> failed``, then re-raised unchanged. A SIGTERM, SIGHUP or Ctrl-C (SIGINT) during the block is logged as such (no
    traceback) and ends the process with status 128 + the signal (``termination_as_exit``,
    ``wrapper_rules.Interrupted``); the line says that a rerun resumes
    from ``checkpoint`` where the job has one (a training rule's ``params.checkpoint``), else that it starts the
    job again. The frame is ``wrapper_rules.failure_logged``, as simcal's."""

    def stopped(stop: BaseException) -> str:
        if checkpoint:
            rerun = (
                f"a rerun resumes from the last checkpoint, {checkpoint} (from the start if none was written)"
            )
        else:
            rerun = "a rerun starts it again"
        return f"{what} stopped by {wrapper_rules.stopped_by(stop)}: what was written is whole, and {rerun}"

    return wrapper_rules.failure_logged(
        what, logging.getLogger(logger), Terminated, stopped, termination_as_exit, mem_mb=mem_mb, rule=rule
    )
