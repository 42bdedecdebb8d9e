"""A rule's items as the wrappers hand them to the library: Snakemake gives a named input or a param set to one
value as that value (``train="a.csv"`` is the string, not a list of one), so ``list(...)`` of it would be a list of
characters."""

from __future__ import annotations

import os
from typing import Any


def listed(value: Any) -> list:
    """One item (a path, a name) as a list of one; a list or tuple as a list; None as an empty list."""
    if value is None:
        return []
    if isinstance(value, str | os.PathLike):
        return [value]
    return list(value)


def paired(names: Any, files: Any, *, names_key: str, files_key: str) -> list[tuple[Any, Any]]:
    """``names[i]`` with ``files[i]``, one name per file in the same order, each side one item or a list; a different
    count is refused naming both (``names_key``, ``files_key``: where the rule sets them, e.g.
    ``params.test_scenario_of_file`` and ``input.test``)."""
    names, files = listed(names), listed(files)
    if len(names) != len(files):
        raise ValueError(
            f"{files_key} has {len(files)} file(s) and {names_key} {len(names)} name(s) {names!r}: give one name "
            f"per file, in the same order"
        )
    return list(zip(names, files, strict=True))
