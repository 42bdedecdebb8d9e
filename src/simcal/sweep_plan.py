"""A sweep's plan before it runs: the parameter sets (the table merged with the fixed parameters) and the
resume record of its simulations, both hearing a cancel between chunks. Split from ``simcal.runner``, from which
every public name here is still importable."""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract import ContractError, mapping_of
from simcal.model_code import model_code_digest, model_package_digest
from simcal.settings import SimulationSettings
from simcal.tables import RowName, check_fixed_values, parameter_sets, parameter_table
from simcal.tasks import SimTask

# Planning a sweep checks for a cancel between chunks of this many parameter sets or simulations (see simulate).
CANCEL_CHUNK = 10_000


def plan_manifest(
    model_ref: str,
    tasks: Sequence[SimTask],
    settings: SimulationSettings,
    *,
    check: Callable[[], None] | None = None,
    **extra: Any,
) -> dict:
    """The resume record of a plan: the model and digests of its code (``simcal.model_code``), how seeds derive,
    and a digest of every simulation's key (the same for the same simulations in any order). ``check`` (e.g. a
    cancel check that raises) is called between chunks of ``CANCEL_CHUNK`` keys."""
    count = len(tasks)
    # Key columns sorted by numpy: sorting and formatting the key tuples in Python took twice as long.
    pids = np.array([task[0] for task in tasks], dtype=str)
    keys = np.empty(count, dtype=[("param_id", pids.dtype), ("replicate", np.int64), ("seed", np.int64)])
    keys["param_id"] = pids
    keys["replicate"] = np.fromiter(map(operator.itemgetter(1), tasks), dtype=np.int64, count=count)
    keys["seed"] = np.fromiter(map(operator.itemgetter(2), tasks), dtype=np.int64, count=count)
    keys = keys[np.lexsort((keys["seed"], keys["replicate"], pids))]
    digest = hashlib.blake2b(digest_size=16)  # a key's bytes are one record: the same digest in any chunks
    for start in range(0, count, CANCEL_CHUNK):
        if check is not None:
            check()
        digest.update(keys[start : start + CANCEL_CHUNK].tobytes())
    return {
        "model": model_ref,
        "model_code": model_code_digest(model_ref),
        "model_package": model_package_digest(model_ref),
        "simulations": len(tasks),
        "plan": digest.hexdigest(),
        "replicates": settings.replicates,
        "seed": settings.seed,
        "common_random_numbers": settings.common_random_numbers,
        **extra,
    }


def planned_parameter_sets(
    parameters: str | Path | pd.DataFrame,
    fixed_params: Mapping[str, Any] | None,
    where: str | None = None,
    row_name: RowName | None = None,
) -> list[dict[str, Any]]:
    """Rows of the parameter table merged with the fixed parameters, refusing reserved names and clashes
    (``where``, ``row_name``: how messages name a DataFrame and its rows, see ``parameter_table``)."""
    return planned_parameter_sets_and_names(parameters, fixed_params, where, row_name)[0]


def planned_parameter_sets_and_names(
    parameters: str | Path | pd.DataFrame,
    fixed_params: Mapping[str, Any] | None,
    where: str | None = None,
    row_name: RowName | None = None,
) -> tuple[list[dict[str, Any]], str, RowName]:
    """``planned_parameter_sets`` with what messages call the table and how they name its rows."""
    fixed = mapping_of(fixed_params, "fixed parameters")
    check_fixed_values(fixed, "fixed parameters")
    table, where, row_name = parameter_table(parameters, where, row_name)
    both = sorted(set(map(str, table.columns)) & set(map(str, fixed)))
    if both:
        raise ContractError(
            f"{where}: parameters {both} are both columns of the parameter table and fixed parameters; give each "
            "in one place"
        )
    sets = parameter_sets(table, where, row_name)
    return ([{**fixed, **row} for row in sets] if fixed else sets), where, row_name


def checked(items: Iterable[Any], check: Callable[[], None]) -> Iterator[Any]:
    """``items``, calling ``check`` before each chunk of ``CANCEL_CHUNK`` of them (a loop over them hears a cancel)."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, CANCEL_CHUNK)):
        check()
        yield from chunk
