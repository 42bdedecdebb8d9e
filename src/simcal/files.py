"""Data tables on disk, by file suffix: CSV, TSV or Parquet, read with errors naming the file and written
atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from simcal.contract import ContractError
from simcal.tables import atomic_write, read_parquet_columns

FORMATS = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t", ".parquet": None, ".pq": None}


def table_format(path: str | Path) -> str | None:
    """The CSV separator for a delimited file, None for Parquet; fails naming the path for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ContractError(f"{path}: unknown table format {suffix!r}; expected one of {sorted(FORMATS)}")
    return FORMATS[suffix]


def refuse_text_name(path: str | Path, what: str) -> None:
    """Refuse a Parquet output named as delimited text (.csv, .tsv, .tab, .txt), naming the file: it would hold
    Parquet bytes that no CSV reader takes. ``what``: what the file holds, e.g. "simulations"."""
    suffix = Path(path).suffix.lower()
    if FORMATS.get(suffix):
        raise ContractError(
            f"{path}: the {what} are written as Parquet, not as {suffix!r} text: name the output *.parquet"
        )


def read_table(path: str | Path, what: str = "table") -> pd.DataFrame:
    separator = table_format(path)
    try:
        return read_parquet_columns(path) if separator is None else pd.read_csv(path, sep=separator)
    except FileNotFoundError as error:  # pandas' Parquet reader names only the path
        raise ContractError(f"{path}: the {what} file does not exist") from error
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise ContractError(f"{path}: cannot read the {what} ({error})") from error


def write_table(frame: pd.DataFrame, path: str | Path) -> Path:
    separator = table_format(path)
    if separator is None:
        return atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))
    return atomic_write(path, lambda handle: frame.to_csv(handle, sep=separator, index=False))
