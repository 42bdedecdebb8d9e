"""Logging set-up for wrappers and the CLI: simcal's messages to a file, Dask's chatter kept to warnings, and a
failure logged before it propagates."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
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


@contextlib.contextmanager
def failure_logged(what: str, logger: str = "simcal") -> Iterator[None]:
    """Log an exception (with its traceback) as ``<what> failed``, then re-raise it unchanged."""
    try:
        yield
    except BaseException:
        logging.getLogger(logger).exception("%s failed", what)
        raise
