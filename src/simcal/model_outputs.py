"""What a model returns, made into rows: a dict of scalars or tables, or a DataFrame, checked against the
contract and normalised into one table with unique column names. Split from ``simcal.contract``, from which
every public name here is still importable."""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract_error import ContractError


def scalar_output(value: Any, name: str, reference: str) -> Any:
    """One value of a dict output as a plain scalar, or a ContractError naming the output and its shape."""
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool or value is None:
        return value
    # numpy calls a dict or a set 0-dimensional, but Parquet would store it nested (a struct that no later part
    # of another type can be merged with), so it is refused like an array.
    if isinstance(value, Mapping | set | frozenset):
        raise ContractError(
            f"{reference} returned a {kind.__name__} for output {name!r}; the values of a dict output must be "
            "scalars (numbers, strings, booleans) or DataFrames (give each inner value its own output, or return "
            "a table)"
        )
    if isinstance(value, complex | np.complexfloating):
        raise ContractError(
            f"{reference} returned a complex number for output {name!r}, which Parquet cannot store; give its "
            "real and imaginary parts (or its absolute value) outputs of their own"
        )
    if isinstance(value, np.generic):
        return value.item()
    if np.ndim(value) != 0:
        raise ContractError(
            f"{reference} returned a {type(value).__name__} of shape {np.shape(value)} for output {name!r}; "
            "the values of a dict output must be scalars or DataFrames (put arrays into a DataFrame column)"
        )
    return value.item() if hasattr(value, "item") else value


def normalise_output(result: Any, reference: str = "model") -> pd.DataFrame:
    """Turn a model's return value into one long table.

    A DataFrame keeps its columns (names as strings, see ``output_table``) and its index as columns unless that
    holds just the row numbers. A dict may hold scalars (one column each, repeated on every row) and tables
    (DataFrames or Series, stacked, with a ``table`` column naming each one).
    """
    if isinstance(result, pd.DataFrame):
        return output_table(result)
    if not isinstance(result, Mapping):
        raise ContractError(
            f"{reference} returned {type(result).__name__}; expected a pandas DataFrame or a dict"
        )
    tables: list[pd.DataFrame] = []
    scalars: dict[str, Any] = {}
    for name, value in zip(unique_names([str(k) for k in result]), result.values(), strict=True):
        if isinstance(value, pd.DataFrame | pd.Series):
            table = output_table(
                value
                if isinstance(value, pd.DataFrame)
                else value.rename(str(value.name or "value")).to_frame()
            )
            if TABLE_COLUMN in table.columns:  # the table's own column of that name is kept, renamed
                table = table.rename(columns=rename_clashing(list(table.columns), {TABLE_COLUMN}))
            tables.append(table.assign(**{TABLE_COLUMN: name}))
        else:
            scalars[name] = scalar_output(value, name, reference)
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(index=[0])
    if scalars and frame.empty:  # only empty tables: the scalars still make one row
        frame = pd.DataFrame(index=[0])
    if scalars and len(frame.columns):  # a scalar named like a column of the tables must not overwrite it
        renamed = rename_clashing(list(scalars), set(frame.columns))
        if renamed:
            scalars = {renamed.get(k, k): v for k, v in scalars.items()}
    for name, value in scalars.items():
        frame[name] = value
    return frame


def output_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A table a model returned, as rows of the output: column names as unique strings (``unique_names``), and
    the index as leading columns unless it holds just the row numbers 0, 1, 2, ... with no name.

    An index is data a model means to return (the ``day`` of ``set_index("day")``, the keys of a ``groupby``), so
    it is kept: each level under its name, or ``index`` (``level_<i>`` in a MultiIndex) when it has none. A level
    named like a column is renamed the way clashing outputs are (``output_`` prefix); the column keeps its name.
    """
    columns = list(frame.columns)
    # A set of the names rather than Index.is_unique, whose hash table costs more than many a simulation.
    plain = all(type(c) is str for c in columns) and len(set(columns)) == len(columns)
    names = columns if plain else unique_names([str(c) for c in columns])
    index = frame.index
    if _holds_row_numbers(index):
        table = frame.reset_index(drop=True)
        if names is not columns:
            table.columns = names
        return table
    levels = unique_names(
        [
            str(level) if level is not None else ("index" if index.nlevels == 1 else f"level_{i}")
            for i, level in enumerate(index.names)
        ]
    )
    renamed = rename_clashing(levels, set(names))
    levels = [renamed.get(level, level) for level in levels]
    return frame.set_axis(names, axis=1).set_axis(index.set_names(levels), axis=0).reset_index()


def _holds_row_numbers(index: pd.Index) -> bool:
    """True for an unnamed index of the rows' own numbers 0..n-1 (what pandas gives a table by default)."""
    if index.nlevels != 1 or index.name is not None:
        return False
    if type(index) is pd.RangeIndex:
        return index.start == 0 and index.step == 1
    return index.dtype.kind in "iu" and index.equals(pd.RangeIndex(len(index)))


def unique_names(names: Sequence[str]) -> list[str]:
    """The names, each repeat of an earlier one renamed by the ``rename_clashing`` rule (``output_`` prefix until
    it clashes with no other name): two outputs that share a name after ``str()`` (``x`` twice, or ``1`` and
    ``"1"``) are both kept, the first under the name."""
    if len(set(names)) == len(names):
        return list(names)
    every = set(names)
    seen: set[str] = set()
    unique = []
    for name in names:
        if name in seen:
            name = rename_clashing([name], every | seen)[name]
        seen.add(name)
        unique.append(name)
    return unique


TABLE_COLUMN = "table"  # names each row's table when a dict output holds several


OUTPUT_PREFIX = "output_"


def rename_clashing(names: Sequence[str], reserved: Container[str]) -> dict[str, str]:
    """``{name: new name}`` for each of ``names`` found in ``reserved``: the name with an ``output_`` prefix,
    repeated until it clashes with nothing reserved, none of ``names`` and no new name given before it."""
    taken = set(names)
    renamed = {}
    for name in names:
        if name in reserved:
            new = name
            while new in reserved or new in taken:
                new = OUTPUT_PREFIX + new
            taken.add(new)
            renamed[name] = new
    return renamed
