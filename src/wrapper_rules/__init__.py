"""What every wrapper checks of the rule that calls it, shared by the kdgat and simcal wrappers (which never
import each other's library): the inputs, outputs and params the rule names that the wrapper does not take.

A warning, not an error: a rule may set a param only so that changing it reruns the job."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping, Sequence


def warn_unknown(
    what: str, rule: Mapping[str, Sequence], takes: Mapping[str, Sequence[str | int]], log: logging.Logger
) -> None:
    """Log a warning for each input, output or param of ``rule`` (``{"input": snakemake.input, "output": ...,
    "params": ...}``) that the ``what`` wrapper does not take, naming the ones it does (``takes``: its meta.yaml's
    names per section, an int for a position it reads) and the closest. Each section is a list that names its
    items through ``keys()`` (Snakemake's), so that items without a name are counted too."""
    for section, items in rule.items():
        for message in unknown_items(what, section, items, tuple(takes.get(section, ()))):
            log.warning(message)


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
