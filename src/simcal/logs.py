"""Logging set-up for wrappers and the CLI: simcal's messages to a file, Dask's chatter kept to warnings, and a
failure logged before it propagates."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from wrapper_rules import check_rule


def configure(log_path: str | Path | None = None, level: int = logging.INFO) -> None:
    handler: logging.Handler
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, mode="a")
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
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


def configure_wrapper(
    what: str,
    logs: Sequence,
    rule: Mapping[str, Sequence],
    takes: Mapping[str, Sequence[str | int]],
    optional: Mapping[str, Sequence[str]],
) -> None:
    """A wrapper's set-up: every record to the rule's first log (stderr when the rule has no ``log:``), then a
    warning for each input, output or param of ``rule`` the wrapper does not take, and a refusal
    (``wrapper_rules.RuleRefused``, exit status 2, logged) of a rule that lacks one of ``takes`` that is not
    ``optional`` (``wrapper_rules.check_rule``)."""
    configure(logs[0] if len(logs) else None)
    check_rule(what, rule, takes, optional, logging.getLogger("simcal"))


@contextlib.contextmanager
def failure_logged(what: str, logger: str = "simcal") -> Iterator[None]:
    """Log an exception (with its traceback) as ``<what> failed``, then re-raise it unchanged."""
    try:
        yield
    except BaseException:
        logging.getLogger(logger).exception("%s failed", what)
        raise
