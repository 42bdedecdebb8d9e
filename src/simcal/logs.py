"""Logging set-up for wrappers and the CLI: simcal's messages to a file, Dask's chatter kept to warnings, and a
failure logged before it propagates (a user's mistake as one line that ends the process)."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import wrapper_rules
from simcal.backends import Terminated, close_on_signals
from wrapper_rules import ALL as ALL  # a wrapper's OPTIONAL for "every name it takes"
from wrapper_rules import set_up
from wrapper_rules.log_times import log_formatter


def configure(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    handler: logging.Handler
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, mode="a")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(log_formatter())  # times in ISO 8601 with the UTC offset
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    import distributed  # noqa: F401 - importing it installs its own logger levels, which we then lower

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("distributed", "dask_jobqueue", "tornado", "bokeh")):
            logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("distributed", "dask_jobqueue"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def configure_wrapper(what, logs, rule, takes, optional) -> None:
    """``wrapper_rules.set_up`` with simcal's ``configure`` and logger (what every simcal wrapper starts with)."""
    set_up(configure, logging.getLogger("simcal"), what, logs, rule, takes, optional)


def failure_logged(
    what: str, logger: str = "simcal", *, mem_mb: object = None, rule: str | None = None
) -> contextlib.AbstractContextManager[None]:
    """A wrapper's outermost frame around its library call. A user's mistake (``wrapper_rules.InputError``: a
    ``ContractError`` and the like) is logged as the one line ``<what> failed: <message>``, also on stderr, and ends
    the process with status 1 and no traceback (``wrapper_rules.refuse_input``), and so is a full disk, a quota, a
    file past the size limit or too many open files, a file the job may not write or replace, or a ``MemoryError``,
    with what to do (``wrapper_rules.exhausted``, ``not_permitted``, ``memory.out_of_memory``: a ``MemoryError``
    names ``mem_mb``, the job's resource, and ``rule``, as the wrapper got them, ``snakemake.resources.get("mem_mb")``
    and ``snakemake.rule``). Any other
    exception is logged with its traceback as ``<what> failed``, then re-raised unchanged. A termination signal (SIGTERM, SIGHUP)
    during the block is ``Terminated`` (``backends.close_on_signals``), so that an atomic write under way removes
    its temporary file, then one line saying so and naming the signal, no traceback, and exit status 128 + the
    signal (143 for SIGTERM). Ctrl-C (SIGINT, Python's ``KeyboardInterrupt``) ends so too, with status 130
    (``wrapper_rules.Interrupted``). While a Dask cluster is open, its own handler answers: the cluster has been
    closed, its SLURM worker jobs cancelled, by the time it gets here, which the line says (for a Ctrl-C,
    ``close_on_signals`` marks whether one was open). The frame is ``wrapper_rules.failure_logged``, as kdgat's."""

    def stopped(stop: BaseException) -> str:
        # The notes say where a calibration's trials so far are kept.
        notes = "".join(f" {note}" for note in getattr(stop, "__notes__", ()))
        name = wrapper_rules.stopped_by(stop)
        if not getattr(stop, "cluster", True):
            return (
                f"{what} stopped by {name} while no Dask cluster was open: "
                f"what was written is whole, and a rerun resumes from the simulations it finished, if any.{notes}"
            )
        return (
            f"{what} stopped by {name}: its Dask cluster was closed (worker "
            f"jobs cancelled), and a rerun resumes from the simulations it finished.{notes}"
        )

    return wrapper_rules.failure_logged(
        what,
        logging.getLogger(logger),
        Terminated,
        stopped,
        lambda: close_on_signals(cluster=False),
        mem_mb=mem_mb,
        rule=rule,
    )
