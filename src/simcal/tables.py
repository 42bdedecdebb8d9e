"""Reading parameter tables and writing files atomically (fsynced, with the permissions the umask gives)."""

from __future__ import annotations

import csv
import gzip
import json
import math
import numbers
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from output_locks import new_temporary
from simcal.contract import ContractError, to_plain

# Column names the runner writes next to the parameters: a parameter with one of these names would be
# overwritten by (or overwrite) the simulation's bookkeeping.
RESERVED_COLUMNS = {"param_id", "replicate", "seed", "status", "error", "duration_s", "table"}


def reject_reserved(names: Iterable[Any], where: str) -> None:
    """Fail naming the input and its parameters that use a reserved column name."""
    clash = sorted(RESERVED_COLUMNS.intersection(str(n) for n in names))
    if clash:
        raise ContractError(
            f"{where}: parameter names {clash} are reserved for simulation results "
            f"(reserved: {sorted(RESERVED_COLUMNS)}); rename them"
        )


def reject_unusable_names(names: Iterable[Any], where: str, what: str = "column") -> None:
    """Fail naming the input and the first parameter name that is empty or has spaces around it (``what``:
    "column" for a table, "parameter" for fixed values): the model gets the name as written (' gamma', not 'gamma'),
    and its ``params.get('gamma', default)`` the default."""
    for number, name in enumerate(names, start=1):
        if not isinstance(name, str):
            continue
        if not name.strip():
            raise ContractError(f"{where}: {what} {number} has no name ({name!r}); name it or remove it")
        if name != name.strip():
            raise ContractError(
                f"{where}: {what} name {name!r} begins or ends with a space, which is part of the parameter's "
                f"name (a model would get {name!r}, not {name.strip()!r}); remove the spaces around the names"
            )


RowName = Callable[[int], str]  # a row's position (from 0) -> how messages name it


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
            _refuse_words_read_as_missing(path, table, separator)
            _refuse_blank_values(path, table, separator)
            _refuse_rounded_whole_numbers(path, table, separator)
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
    row_name = _parquet_row if suffix in {".parquet", ".pq"} else _text_lines(path, separator, len(table))
    return check_parameter_table(table, str(path), row_name), str(path), row_name


def read_parquet_columns(path: str | Path) -> pd.DataFrame:
    """A Parquet file as a DataFrame of all its columns. pandas' reader makes an index that ``to_parquet()`` stored
    (a design or observed data saved after ``set_index("day")``) the row labels again, which dropped that column
    out of the table here, where every other reader of the file (and the same table saved as CSV) has it: a named
    level comes back as a column; unnamed row labels (a filtered table's) are no column and are left out."""
    table = pd.read_parquet(path)
    named = [name for name in table.index.names if name is not None]
    return (table.reset_index(level=named) if named else table).reset_index(drop=True)


def _text_lines(path: Path, separator: str, rows: int) -> RowName:
    """A text file's rows named by the line each starts on (the header is line 1). pandas skips blank lines and
    lets a quoted field span lines, so a row's line is found by reading the file once, at the first message that
    needs it; when that reading does not find pandas' rows, a row is named as if no line were skipped."""
    lines: list[int] | None = None

    def row_name(position: int) -> str:
        nonlocal lines
        if lines is None:
            lines = _data_lines(path, separator)
            lines = lines if len(lines) == rows else []
        return f"line {lines[position] if position < len(lines) else position + 2}"

    return row_name


def _data_lines(path: Path, separator: str) -> list[int]:
    """The line on which each data record of a CSV or TSV file starts, blank lines skipped as pandas does."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    starts: list[int] = []
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.reader(handle, delimiter=separator)
            previous = 0
            for record in reader:
                if record and (len(record) > 1 or record[0].strip()):
                    starts.append(previous + 1)
                previous = reader.line_num
    except (OSError, csv.Error):
        return []
    return starts[1:]  # the first is the header


_COMMENT_LINE = re.compile(r"^[ \t]*#", re.MULTILINE)


def refuse_comment_lines(path: Path, separator: str, header: bool = False) -> None:
    """Refuse a data line that starts with '#' (a parameter set commented out), naming it: pandas reads it as
    data, the '#' making its first value text (a column of numbers became a column of text) or its missing
    fields empty values. A '#' header is refused by ``check_header`` (with ``header``, here); a quoted value
    may start with '#'. Also used for observed data."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
            if not _COMMENT_LINE.search(handle.read()):  # the usual case: one cheap pass, no csv parsing
                return
            handle.seek(0)
            lines: list[str] = []  # the physical lines of the record being read

            def physical() -> Iterable[str]:
                for line in handle:
                    lines.append(line)
                    yield line

            reader = csv.reader(physical(), delimiter=separator)
            for number, _ in enumerate(reader):
                first, start = lines[0], reader.line_num - len(lines) + 1
                lines.clear()
                if (number or header) and _COMMENT_LINE.match(first):
                    shown = first.strip()
                    shown = shown if len(shown) <= 60 else shown[:57] + "..."
                    raise ContractError(
                        f"{path}, line {start}: the line starts with '#' ({shown!r}); comment lines are not "
                        "supported (pandas would read it as data), remove it (or quote a value that "
                        "starts with '#')"
                    )
    except (OSError, csv.Error, EOFError):
        return  # pandas' reader names what it cannot read


def check_header(path: Path, table: pd.DataFrame, separator: str, what: str = "parameter") -> None:
    """Refuse a header pandas would silently repair or misread: more fields in the rows than names in the header
    (pandas makes the first fields an index, shifting every value one column left), a repeated or empty name
    (pandas renames them 'beta.1' and 'Unnamed: 1'), a comment line, another separator than the file's, or a
    name with spaces around it (kept by pandas as part of the name). ``what``: what a column holds, for messages
    (a parameter; the observed data's a variable)."""
    names = pd.read_csv(path, sep=separator, header=None, nrows=1, dtype=str, keep_default_na=False)
    names = [str(name).strip() for name in names.iloc[0].tolist()] if len(names) else []
    for number, name in enumerate(names, start=1):
        if not name:
            raise ContractError(
                f"{path}, line 1: column {number} has no name (a DataFrame saved by to_csv() without "
                "index=False keeps its row labels there); name it or remove the column"
            )
    repeated = _repeated(names)
    if repeated:
        raise ContractError(
            f"{path}, line 1: column name(s) {repeated} appear more than once; give each {what} one column"
        )
    if names and names[0].startswith("#"):
        raise ContractError(
            f"{path}, line 1: the header starts with '#' ({names[0]!r}); comment lines are not supported, "
            f"remove them so that the header (the {what} names) is line 1"
        )
    # pandas takes a first row's extra fields as row labels; labels 0..n-1 make the same RangeIndex as none.
    line, fields = _first_record(path, separator)
    if not isinstance(table.index, pd.RangeIndex) or fields > len(table.columns):
        raise ContractError(
            f"{path}, line {line}: {max(fields, len(table.columns) + table.index.nlevels)} fields, but the header "
            f"(line 1) names {len(table.columns)} columns; give every column a name in the header, or remove the "
            "extra fields"
        )
    others = [
        other for other in (",", ";", "\t") if len(names) == 1 and other != separator and other in names[0]
    ]
    if others:
        raise ContractError(
            f"{path}, line 1: one column named {names[0]!r}: the file looks separated by {others[0]!r}, but a "
            f"{'CSV' if separator == ',' else 'TSV'} file's columns are separated by {separator!r}"
        )
    reject_unusable_names(table.columns, f"{path}, line 1")  # 'beta, gamma': the model got ' gamma'


def _first_record(path: Path, separator: str) -> tuple[int, int]:
    """The line on which the first data record of a CSV or TSV file starts (blank lines skipped, as pandas does)
    and its number of fields; (2, 0) when there is none or the file cannot be read (pandas' reader names why)."""
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", newline="", encoding="utf-8-sig", errors="replace") as handle:
            reader = csv.reader(handle, delimiter=separator)
            previous, header = 0, True
            for record in reader:
                if record and (len(record) > 1 or record[0].strip()):
                    if not header:
                        return previous + 1, len(record)
                    header = False
                previous = reader.line_num
    except (OSError, csv.Error, EOFError):
        pass
    return 2, 0


def _refuse_blank_values(path: Path, table: pd.DataFrame, separator: str) -> None:
    """A value of spaces only (a row ' , ' of blank cells) is read as text, which makes its whole column text
    ('1' for 1): refuse it as the empty value it is, naming its line."""
    for column in table.columns:
        values = table[column]
        if values.dtype.kind in "biufcmM":  # numbers, booleans, times: no text in them
            continue
        blank = values.map(lambda value: isinstance(value, str) and not value.strip()).to_numpy(dtype=bool)
        if blank.any():
            row = int(blank.nonzero()[0][0])
            line = _text_lines(path, separator, len(table))(row)
            raise ContractError(
                f"{path}, {line}: column {column!r} is {values.iloc[row]!r}, only spaces; every parameter needs "
                "a value"
            )


def _repeated(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def _refuse_words_read_as_missing(path: Path, table: pd.DataFrame, separator: str) -> None:
    """pandas reads 'NA', 'None', 'null', 'nan', 'n/a' and the like as missing values: name the word instead of
    calling the cell empty (a region 'NA' or a scenario 'None' is no gap in the table)."""
    missing = table.isna()
    if not missing.to_numpy().any():
        return
    text = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    if text.shape != table.shape:
        return  # the checks that follow name the gap as empty
    for number, column in enumerate(table.columns):
        rows = missing[column].to_numpy().nonzero()[0]
        if len(rows):
            word = text.iloc[rows[0], number]
            if word.strip():
                line = _text_lines(path, separator, len(table))(int(rows[0]))
                raise ContractError(
                    f"{path}, {line}: column {column!r} is {word!r}, which is read as a missing value; every "
                    "parameter needs a value (give a number, or spell the text another way)"
                )
            return


def _refuse_rounded_whole_numbers(path: Path, table: pd.DataFrame, separator: str) -> None:
    """pandas reads a column holding a fractional number as 64-bit floats, which hold whole numbers exactly only
    up to 2**53: an ID or a seed 9007199254740993 written next to a 0.5 (or a 3.0) would reach the model and the
    output as 9007199254740992. Name the first such value instead."""
    suspects = [
        number
        for number, column in enumerate(table.columns)
        if table[column].dtype.kind == "f"
        and (np.abs(table[column].to_numpy()) >= EXACT_FLOAT_LIMIT).any()
        and not table[column].isna().any()  # floats because of an empty cell: named as empty, later
    ]
    if not suspects:
        return
    text = pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False)
    if text.shape != table.shape:
        return
    for number in suspects:
        values = table.iloc[:, number].to_numpy()
        for row in np.flatnonzero(np.abs(values) >= EXACT_FLOAT_LIMIT).tolist():
            word = text.iloc[row, number].strip()
            if word.lstrip("+-").isdigit() and int(word) != int(values[row]):
                line = _text_lines(path, separator, len(table))(row)
                raise ContractError(f"{path}, {line}: column {table.columns[number]!r} {_rounded(int(word))}")


# Whole numbers beyond this are not all held exactly by a 64-bit float; those beyond int64 by no Parquet column.
EXACT_FLOAT_LIMIT = 2**53
INT64 = (-(2**63), 2**63 - 1)
_BEYOND_INT64 = (
    "a whole number beyond the 64-bit integers a Parquet column holds (-2**63 to 2**63 - 1); give an ID this "
    "large as text"
)


def _rounded(value: int) -> str:
    """What is wrong with a whole number that a column of 64-bit floats would round."""
    return (
        f"is {value}, a whole number beyond 2**53 in a column that also holds fractional numbers, which is stored "
        f"as 64-bit floats: it would become {int(float(value))}; write the column's other values as whole numbers "
        "(3, not 3.0), or the column as text"
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
    repeated = _repeated([str(column) for column in table.columns])
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
                return position, _rounded(value)
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


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def fsync_directory(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable (a crash right after could otherwise lose the new name)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the file itself is already on disk
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], durable: bool = True) -> Path:
    """Call ``write(tmp)`` on a temporary name in the same directory, fsync it, then move it into place.

    Readers see the old file or the complete new one, never a partial one, even after a power loss; the file
    gets the permissions a plain ``open()`` would (0666 less the umask, or what a folder's default ACL gives), not
    mkstemp's 0600: it is created with mode 0666 and the kernel applies the umask or the ACL, as for ``open()``.
    ``durable=False`` skips the fsyncs for files that are rewritten often and worthless after a crash (progress
    reports).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = new_temporary(path)
    try:
        write(tmp)
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_directory(path.parent)
    return path


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def plain_json(value: Any) -> Any:
    """``value`` as strict JSON holds it: numpy scalars as Python numbers, NaN and infinities as null (Python's
    bare ``NaN`` is no JSON: jq, JavaScript and most other readers refuse the whole file), keys as strings."""
    if isinstance(value, Mapping):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | Path, durable: bool = True) -> Path:
    text = json.dumps(plain_json(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text), durable)


def write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
