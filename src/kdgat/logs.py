"""Logging set-up for wrappers and scripts: kdgat's messages to one file, a failure logged before it propagates."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def configure_wrapper(
    what: str, logs: Sequence, rule: Mapping[str, Sequence], takes: Mapping[str, Sequence[str | int]]
) -> None:
    """A wrapper's set-up, from its rule's ``snakemake.log`` and ``rule`` (``{"input": snakemake.input, "output":
    ..., "params": ...}``): every record to the first log (stderr when the rule has no ``log:``, as
    ``configure(None)``), then a WARNING for each input, output or param the wrapper does not take, naming the ones
    it does (``takes``: its meta.yaml's names per section, an int for a position it reads) and the closest. A
    warning, not an error: a rule may set a param only so that changing it reruns the job. Each section is a list
    that names its items through ``keys()`` (Snakemake's), so that items without a name are counted too."""
    configure(logs[0] if len(logs) else None)
    for section, items in rule.items():
        for message in unknown_items(what, section, items, tuple(takes.get(section, ()))):
            logging.getLogger(__name__.split(".")[0]).warning(message)


def unknown_items(what: str, section: str, items: Sequence, takes: tuple[str | int, ...]) -> list[str]:
    """The warnings of ``configure_wrapper`` for one section: one per name not in ``takes``, one for the items
    without a name. A section the wrapper reads by position (an int in ``takes``) takes any name and none."""
    if any(isinstance(key, int) for key in takes):
        return []
    names = list(items.keys()) if hasattr(items, "keys") else []
    known = [key for key in takes if isinstance(key, str)]
    listing = ", ".join(known) or "none"
    kind = {"input": "an input", "output": "an output"}.get(section, "a param")
    messages = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean {close[0]!r}?" if close else f"no name it takes in {section} is close"
        rerun = " A param set only to make a change rerun the job may stay." if section == "params" else ""
        messages.append(
            f"{section}.{name} is not {kind} of the {what} wrapper, which ignores it ({guess}); {what} takes "
            f"{section}: {listing}.{rerun}"
        )
    # a named input or output may be a list of files (its items), a named param is one item
    named = sum(
        1 if section == "params" or isinstance(items.get(name), str | os.PathLike) else len(items.get(name))
        for name in names
    )
    if len(items) > named:
        messages.append(
            f"{section} has {len(items) - named} item(s) without a name, which the {what} wrapper ignores: it takes "
            f"{section} by name ({listing}), e.g. `{section}: {(known or ['name'])[0]}=...`."
        )
    return messages


class Terminated(SystemExit):
    """SIGTERM as an exception: what SLURM sends at the walltime or on scancel, and Kubernetes when it deletes a
    pod. Its exit status is 143, the shell's for a process the signal ended."""

    def __init__(self) -> None:
        super().__init__(128 + signal.SIGTERM)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While the block runs, SIGTERM raises Terminated instead of ending the process on the spot, so that cleanup
    runs: an atomic write in progress removes its temporary file (else a ``.<name>.<hex>.tmp`` stays beside the
    output), and the log can say why the job ended. Only the main thread can take signals; elsewhere a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def failure_logged(what: str, logger: str = "kdgat") -> Iterator[None]:
    """Log an exception (with its traceback) as ``<what> failed``, then re-raise it unchanged. A SIGTERM during
    the block is logged as such (no traceback) and ends the process with status 143 (``sigterm_as_exit``)."""
    try:
        with sigterm_as_exit():
            yield
    except Terminated:
        logging.getLogger(logger).error(
            "%s stopped by SIGTERM (a walltime, scancel or pod deletion): what was written is whole, and a rerun "
            "resumes from the last checkpoint",
            what,
        )
        raise
    except BaseException:
        logging.getLogger(logger).exception("%s failed", what)
        raise
