"""The names a table's columns may not have: those reserved for simulation results, and those no Parquet file
or message can carry. Split from ``simcal.tables``, from which every public name here is still importable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from simcal.contract import ContractError

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
