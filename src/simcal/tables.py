"""Reading parameter tables and writing files atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from simcal.contract import ContractError, to_plain

# mkstemp creates 0600 files; give outputs the permissions a plain open() would (read once: os.umask sets it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

RESERVED_COLUMNS = {"param_id", "replicate", "seed", "status", "error", "duration_s", "table"}


def read_parameter_table(path: str | Path) -> pd.DataFrame:
    """A table of parameter sets from CSV, TSV or Parquet; every row must be a complete, finite parameter set."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix.lower() == ".gz" else path.suffix.lower()
    try:
        if suffix in {".csv", ".csv.gz"}:
            table = pd.read_csv(path)
        elif suffix in {".tsv", ".tsv.gz", ".tab", ".txt"}:
            table = pd.read_csv(path, sep="\t")
        elif suffix in {".parquet", ".pq"}:
            table = pd.read_parquet(path)
        else:
            raise ContractError(
                f"{path}: unknown parameter table format {suffix!r}; expected .csv, .tsv or .parquet"
            )
    except (OSError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, ContractError):
            raise
        raise ContractError(f"{path}: cannot read the parameter table ({error})") from error
    if table.empty or len(table.columns) == 0:
        raise ContractError(f"{path}: the parameter table has no rows or no columns")
    clash = RESERVED_COLUMNS.intersection(table.columns)
    if clash:
        raise ContractError(f"{path}: parameter columns {sorted(clash)} are reserved for simulation results")
    for column in table.columns:
        missing = table[column].isna()
        if missing.any():
            line = int(missing.to_numpy().nonzero()[0][0]) + 2  # header is line 1
            raise ContractError(
                f"{path}: line {line}, column {column!r} is empty; every parameter needs a value"
            )
    return table


def parameter_sets(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of a parameter table as plain dicts (numpy scalars converted)."""
    names = [str(c) for c in table.columns]
    columns = [table[c].tolist() for c in table.columns]  # tolist() already yields Python scalars
    return [
        {k: to_plain(v, k) for k, v in zip(names, row, strict=True)} for row in zip(*columns, strict=True)
    ]


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary name in the same directory, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def write_json(data: Any, path: str | Path) -> Path:
    return atomic_write(
        path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    )


def write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
