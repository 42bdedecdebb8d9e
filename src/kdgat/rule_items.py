"""A rule's items as the wrappers hand them to the library: Snakemake gives a named input or a param set to one
value as that value (``train="a.csv"`` is the string, not a list of one), so ``list(...)`` of it would be a list of
characters."""

from __future__ import annotations

import numbers
import os
from typing import Any

from wrapper_rules import InputError


class RuleItemError(ValueError, InputError):
    """A rule's input or param that is not what the wrapper takes; the message names it (``params.file_index``)."""


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
        raise RuleItemError(
            f"{files_key} has {len(files)} file(s) and {names_key} {len(names)} name(s) {names!r}: give one name "
            f"per file, in the same order"
        )
    return list(zip(names, files, strict=True))


def is_integer(value: Any) -> bool:
    """A whole number: an int, a numpy integer or a float such as 10.0, as JSON Schema's ``integer`` allows; not a
    bool."""
    whole = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    return whole and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A real number (numpy's too); not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def integer(value: Any, where: str) -> int:
    """``value`` if it is a whole number (:func:`is_integer`), else fail naming ``where``: ``int()`` would make 10.5
    a silent 10 and fail on "ten" without naming the param."""
    if not is_integer(value):
        raise RuleItemError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
    return int(value)


def number(value: Any, where: str) -> float:
    """``value`` as a float if it is a real number (:func:`is_number`), else fail naming ``where``."""
    if not is_number(value):
        raise RuleItemError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
    return float(value)
