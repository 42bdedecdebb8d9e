"""Logging set-up for wrappers and scripts: kdgat's messages to one file, a failure logged before it propagates."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
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


def configure_wrapper(what: str, logs: Sequence, params: Sequence = (), known: Iterable[str] = ()) -> None:
    """A wrapper's set-up, from its rule's ``snakemake.log`` and ``snakemake.params``: every record to the first
    log (stderr when the rule has no ``log:``, as ``configure(None)``), then a WARNING for each param the wrapper
    does not read, naming the ones it knows (``known``: its meta.yaml's params) and the closest. A warning, not an
    error: a rule may set a param only so that changing it reruns the job. ``params`` is a list that names its
    items through ``keys()`` (Snakemake's), so that a positional item, which no wrapper reads, is counted too."""
    configure(logs[0] if len(logs) else None)
    for message in unknown_params(what, params, tuple(known)):
        logging.getLogger(__name__.split(".")[0]).warning(message)


def unknown_params(what: str, params: Sequence, known: tuple[str, ...]) -> list[str]:
    """The warnings of ``configure_wrapper``: one per name in ``params`` that is not in ``known``, one for
    positional items."""
    names = list(params.keys()) if hasattr(params, "keys") else []
    reads = ", ".join(known) or "none"
    messages = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=1)
        guess = f"did you mean {close[0]!r}?" if close else "no known param is close"
        messages.append(
            f"params.{name} is not a param of the {what} wrapper, which ignores it ({guess}); {what} reads: "
            f"{reads}. A param set only to make a change rerun the job may stay."
        )
    positional = len(params) - len(names)
    if positional > 0:
        messages.append(
            f"params has {positional} item(s) without a name, which the {what} wrapper ignores: it reads params "
            f"by name ({reads}), e.g. `params: n=8`."
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
