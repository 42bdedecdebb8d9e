"""Logging set-up for wrappers and the CLI: simcal's messages to a file, Dask's chatter kept to warnings, and a
failure logged before it propagates."""

from __future__ import annotations

import contextlib
import difflib
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path


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


@contextlib.contextmanager
def failure_logged(what: str, logger: str = "simcal") -> Iterator[None]:
    """Log an exception (with its traceback) as ``<what> failed``, then re-raise it unchanged."""
    try:
        yield
    except BaseException:
        logging.getLogger(logger).exception("%s failed", what)
        raise
