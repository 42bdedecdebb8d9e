"""Reading parameter tables: from CSV, TSV, Parquet or a DataFrame, checked row by row into parameter sets.

The text-file checks (``simcal.text_table_checks``), the reserved and unusable column names
(``simcal.column_names``) and the atomic writers (``simcal.atomic_files``) live in modules of their own; every
public name they had here is still importable from here.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simcal.atomic_files import (
    atomic_write,
    current_umask,
    fsync_directory,
    plain_json,
    write_csv,
    write_json,
    write_parquet,
    write_text,
)
from simcal.column_names import RESERVED_COLUMNS, reject_reserved, reject_unusable_names
from simcal.contract import ContractError, to_plain
from simcal.text_table_checks import (
    EXACT_FLOAT_LIMIT,
    RowName,
    check_header,
    refuse_blank_values,
    refuse_comment_lines,
    refuse_rounded_whole_numbers,
    refuse_words_read_as_missing,
    repeated_names,
    rounded,
    text_lines,
)


def read_parameter_table(path: str | Path) -> pd.DataFrame:
    """A table of parameter sets from CSV, TSV or Parquet; every row must be a complete, finite parameter set."""
    return parameter_table(Path(path))[0]


def parameter_table(
    parameters: str | Path | pd.DataFrame, where: str | None = None, row_name: RowName | None = None
) -> tuple[pd.DataFrame, str, RowName]:
    """The checked parameter table of a file or a DataFrame, what messages call it, and how they name its rows.

    One numbering for every message about a row: a text file's line (the header is line 1), a Parquet file's row
    (from 1), a DataFrame's row (from 1) with its index label. A DataFrame built from something else may be named
    after it instead (``where``, ``row_name``: the service's request and its ``parameter_sets[i]``).
    """
    if isinstance(parameters, pd.DataFrame):
        where = where or "parameter DataFrame"
        row_name = row_name or dataframe_row_name(parameters.index)
        return check_parameter_table(parameters, where, row_name), where, row_name
    if not isinstance(parameters, str | os.PathLike):
        raise ContractError(
            f"parameter table: expected a file path (.csv, .tsv or .parquet) or a DataFrame, got "
            f"{type(parameters).__name__}"
        )
    path = Path(parameters)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    separator = {".csv": ",", ".csv.gz": ","}.get(suffix, "\t")
    try:
        if suffix in {".csv", ".csv.gz", ".tsv", ".tsv.gz", ".tab", ".txt"}:
            refuse_comment_lines(path, separator)
            table = pd.read_csv(path, sep=separator)
            check_header(path, table, separator)
            refuse_words_read_as_missing(path, table, separator)
            refuse_blank_values(path, table, separator)
            refuse_rounded_whole_numbers(path, table, separator)
        elif suffix in {".parquet", ".pq"}:
            table = read_parquet_columns(path)
        else:
            raise ContractError(
                f"{path}: unknown parameter table format {suffix!r}; expected .csv, .tsv or .parquet"
            )
    except (OSError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, ContractError):
            raise
        if isinstance(error, FileNotFoundError):  # pandas' Parquet reader names only the path
            raise ContractError(f"{path}: the parameter table file does not exist") from error
        raise ContractError(f"{path}: cannot read the parameter table ({error})") from error
    row_name = _parquet_row if suffix in {".parquet", ".pq"} else text_lines(path, separator, len(table))
    return check_parameter_table(table, str(path), row_name), str(path), row_name


def read_parquet_columns(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame of all its columns. pandas' reader makes an index that ``to_parquet()`` stored
    (a design or observed data saved after ``set_index("day")``) the row labels again, which dropped that column
    out of the table here, where every other reader of the file (and the same table saved as CSV) has it: a named
    level comes back as a column; unnamed row labels (a filtered table's) are no column and are left out."""
    table = pd.read_parquet(path)
    named = [name for name in table.index.names if name is not None]
    return (table.reset_index(level=named) if named else table).reset_index(drop=True)


# Whole numbers beyond int64 are held by no Parquet column (beyond EXACT_FLOAT_LIMIT not all by a float).
INT64 = (-(2**63), 2**63 - 1)
_BEYOND_INT64 = (
    "a whole number beyond the 64-bit integers a Parquet column holds (-2**63 to 2**63 - 1); give an ID this "
    "large as text"
)


def _parquet_row(position: int) -> str:
    return f"row {position + 1}"


def dataframe_row_name(index: pd.Index) -> RowName:
    """Rows of a DataFrame counted from 1, with the index label the user may know them by."""

    def row_name(position: int) -> str:
        label = index[position]
        label = label.item() if isinstance(label, np.generic) else label
        return f"row {position + 1} (index label {label!r})"

    return row_name


def check_parameter_table(table: pd.DataFrame, where: str, row_name: RowName | None = None) -> pd.DataFrame:
    """Refuse an empty table, column names that are empty, have spaces around them or are reserved, and missing, infinite or unsupported values (anything but
    numbers, strings and booleans), naming ``where``, the row and column. A column of 32-bit (or 16-bit) floats
    comes back as 64-bit floats of the shortest decimal that reads as each value (0.1, not 0.10000000149011612).

    ``row_name`` names a row in messages (see ``parameter_table``); by default a DataFrame's row and index label.
    """
    if table.empty or len(table.columns) == 0:
        raise ContractError(f"{where}: the parameter table has no rows or no columns")
    repeated = repeated_names([str(column) for column in table.columns])
    # One would overwrite the other in each parameter set (or, as the same label, break the checks).
    if repeated:
        raise ContractError(
            f"{where}: column name(s) {repeated} appear more than once (as text); give each parameter one column"
        )
    reject_unusable_names(table.columns, where)
    reject_reserved(table.columns, where)
    name = row_name or dataframe_row_name(table.index)
    for column in table.columns:
        missing = table[column].isna()
        if missing.any():
            position = int(missing.to_numpy().nonzero()[0][0])
            raise ContractError(
                f"{where}, {name(position)}: column {column!r} is empty; every parameter needs a value"
            )
    for column in table.columns:
        position, problem = _first_bad_value(table[column])
        if problem:
            raise ContractError(f"{where}, {name(position)}: column {column!r} {problem}")
    return narrow_floats_as_written(table)


def narrow_floats_as_written(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` with its float16 and float32 columns as 64-bit floats of the values as written: float32 0.1 (a
    design saved from numpy or torch) is 0.1, not 0.10000000149011612 (contract.python_scalar does the same for
    one value)."""
    narrow = [
        column
        for column in table.columns
        if table[column].dtype.kind == "f" and table[column].dtype.itemsize < 8
    ]
    if narrow:
        table = table.copy()
        for column in narrow:
            table[column] = table[column].to_numpy().astype(str).astype(np.float64)
    return table


def _first_bad_value(values: pd.Series) -> tuple[int, str]:
    """The position of the first value ``to_plain`` would refuse, and what is wrong with it ('' when none is)."""
    kind = values.dtype.kind
    if kind in "bi":  # signed whole numbers (64 bits at most) and booleans: always plain
        return 0, ""
    if kind == "f":  # NaN is refused before, as an empty value
        infinite = np.isinf(values.to_numpy(dtype=float))
        if infinite.any():
            position = int(infinite.nonzero()[0][0])
            return position, f"is {values.iloc[position]}; parameter values must be finite"
        return 0, ""
    # Dates, lists, mixed objects, unsigned whole numbers (2**63 and above cannot share a Parquet column with
    # smaller ones)...: as parameter_sets will see them.
    cells = values.tolist()
    position, problem = _first_inexact_whole_number(cells)
    if problem or _plain_column(cells):
        return position, problem
    for position, value in enumerate(cells):
        try:
            to_plain(value)
        except ContractError:
            return position, _why_not_plain(value)
    return 0, ""


def _first_inexact_whole_number(cells: list[Any]) -> tuple[int, str]:
    """The first whole number of a mixed column that the output cannot hold as given: one beyond int64, or one
    beyond 2**53 beside a fractional number (the column is then stored as 64-bit floats); '' when none is."""
    whole = [
        (position, int(value))
        for position, value in enumerate(cells)
        if isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
    ]
    if not whole:
        return 0, ""
    for position, value in whole:
        if not INT64[0] <= value <= INT64[1]:
            return position, f"is {value}, {_BEYOND_INT64}"
    if any(isinstance(value, float | np.floating) for value in cells):
        for position, value in whole:
            if abs(value) > EXACT_FLOAT_LIMIT and int(float(value)) != value:
                return position, rounded(value)
    return 0, ""


def _why_not_plain(value: Any) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"is {value}; parameter values must be finite"
    shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
    return f"holds a value of type {type(value).__name__} ({shown}); parameter values must be numbers, strings or booleans"


def check_fixed_values(fixed: Mapping[str, Any], where: str) -> None:
    """Refuse empty, space-padded (``reject_unusable_names``) and reserved names (``reject_reserved``) and fixed parameter values that are missing, infinite or of an
    unsupported type, naming ``where`` (for example ``fixed parameters`` or ``calibration.fixed``) and the
    parameter."""
    reject_unusable_names(fixed, where, "parameter")
    reject_reserved(fixed, where)
    for key, value in fixed.items():
        if value is None:  # YAML's 'days:' with the value left out; a table's empty cell is refused alike
            raise ContractError(
                f"{where}: parameter {str(key)!r} has no value (null); every parameter needs a value"
            )
        try:
            plain = to_plain(value, str(key))
        except ContractError as error:
            raise ContractError(f"{where}: {error}") from error
        if type(plain) is int and not INT64[0] <= plain <= INT64[1]:
            raise ContractError(f"{where}: parameter {str(key)!r} is {plain}, {_BEYOND_INT64}")


def parameter_sets(
    table: pd.DataFrame, where: str = "parameter table", row_name: RowName | None = None
) -> list[dict[str, Any]]:
    """Rows of a parameter table as plain dicts (numpy scalars converted); a value that cannot be converted is
    named by ``where`` and its row (``row_name``, by default a DataFrame's row and index label)."""
    names = [str(c) for c in table.columns]
    columns = [table[c].tolist() for c in table.columns]  # tolist() already yields Python scalars
    if all(_plain_column(values) for values in columns):  # nothing to convert: no call per value
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    sets = []
    for position, row in enumerate(zip(*columns, strict=True)):
        try:
            sets.append({k: to_plain(v, k) for k, v in zip(names, row, strict=True)})
        except ContractError as error:
            place = (row_name or dataframe_row_name(table.index))(position)
            raise ContractError(f"{where}, {place}: {error}") from error
    return sets


def _plain_column(values: list[Any]) -> bool:
    """Whether ``to_plain`` would return every value unchanged (plain str, int, bool, or finite float)."""
    kinds = set(map(type, values))
    if not kinds <= {str, int, bool, float}:
        return False
    return float not in kinds or all(math.isfinite(v) for v in values if type(v) is float)


__all__ = [
    "EXACT_FLOAT_LIMIT",
    "INT64",
    "RESERVED_COLUMNS",
    "RowName",
    "atomic_write",
    "check_fixed_values",
    "check_header",
    "check_parameter_table",
    "current_umask",
    "dataframe_row_name",
    "fsync_directory",
    "narrow_floats_as_written",
    "parameter_sets",
    "parameter_table",
    "plain_json",
    "read_parameter_table",
    "read_parquet_columns",
    "refuse_comment_lines",
    "reject_reserved",
    "reject_unusable_names",
    "write_csv",
    "write_json",
    "write_parquet",
    "write_text",
]
