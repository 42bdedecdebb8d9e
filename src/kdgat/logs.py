"""Logging set-up for wrappers and scripts: kdgat's messages to one file, a failure logged before it propagates."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
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


@contextlib.contextmanager
def failure_logged(what: str, logger: str = "kdgat") -> Iterator[None]:
    """Log an exception (with its traceback) as ``<what> failed``, then re-raise it unchanged."""
    try:
        yield
    except BaseException:
        logging.getLogger(logger).exception("%s failed", what)
        raise
