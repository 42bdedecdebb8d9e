"""Checks of a table read from a text file (a parameter table, observed data): comment lines, the header,
blank values, words pandas reads as missing, whole numbers a float would round, and the file lines that
messages name rows by (RowName). Split from ``simcal.tables``, from which every public name here is still
importable."""

from __future__ import annotations

import csv
import gzip
import re
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from simcal.column_names import reject_unusable_names
from simcal.contract import ContractError

RowName = Callable[[int], str]  # a row's position (from 0) -> how messages name it


def text_lines(path: Path, separator: str, rows: int) -> RowName:
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
    repeated = repeated_names(names)
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


def refuse_blank_values(path: Path, table: pd.DataFrame, separator: str) -> None:
    """A value of spaces only (a row ' , ' of blank cells) is read as text, which makes its whole column text
    ('1' for 1): refuse it as the empty value it is, naming its line."""
    for column in table.columns:
        values = table[column]
        if values.dtype.kind in "biufcmM":  # numbers, booleans, times: no text in them
            continue
        blank = values.map(lambda value: isinstance(value, str) and not value.strip()).to_numpy(dtype=bool)
        if blank.any():
            row = int(blank.nonzero()[0][0])
            line = text_lines(path, separator, len(table))(row)
            raise ContractError(
                f"{path}, {line}: column {column!r} is {values.iloc[row]!r}, only spaces; every parameter needs "
                "a value"
            )


def repeated_names(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted."""
    return sorted(name for name, count in Counter(names).items() if count > 1)


def refuse_words_read_as_missing(path: Path, table: pd.DataFrame, separator: str) -> None:
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
                line = text_lines(path, separator, len(table))(int(rows[0]))
                raise ContractError(
                    f"{path}, {line}: column {column!r} is {word!r}, which is read as a missing value; every "
                    "parameter needs a value (give a number, or spell the text another way)"
                )
            return


def refuse_rounded_whole_numbers(path: Path, table: pd.DataFrame, separator: str) -> None:
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
                line = text_lines(path, separator, len(table))(row)
                raise ContractError(f"{path}, {line}: column {table.columns[number]!r} {rounded(int(word))}")


# Whole numbers beyond this are not all held exactly by a 64-bit float (those beyond int64 by no Parquet column:
# simcal.tables.INT64).
EXACT_FLOAT_LIMIT = 2**53


def rounded(value: int) -> str:
    """What is wrong with a whole number that a column of 64-bit floats would round."""
    return (
        f"is {value}, a whole number beyond 2**53 in a column that also holds fractional numbers, which is stored "
        f"as 64-bit floats: it would become {int(float(value))}; write the column's other values as whole numbers "
        "(3, not 3.0), or the column as text"
    )
