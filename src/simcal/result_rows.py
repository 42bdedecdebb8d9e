"""The rows of simulations, as a batch returns them: the key and status columns, what the models returned
assembled into one table (whole numbers kept exact), rows for failed simulations, and the check that a
Parquet part can hold them. Split from ``simcal.worker``, from which every public name here is still
importable."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract import rename_clashing
from simcal.tasks import Batch, SimTask

KEY_COLUMNS = ["param_id", "replicate", "seed"]
STATUS_COLUMNS = ["status", "error", "duration_s"]
FAILED_STATUSES = ("failed", "timeout", "crashed")
PLAIN_SCALARS = frozenset((float, int, str, bool, type(None)))  # the output values a row takes as they are
STATUS_SET = frozenset(STATUS_COLUMNS)  # STATUS_COLUMNS as a set, for the names a model's output may not take


def rename_clashes(frame: pd.DataFrame, keys: Mapping[str, Any]) -> pd.DataFrame:
    """Output columns named like key columns, parameters or status columns get an ``output_`` prefix (as often as
    needed to clash with none of those nor with the table's other columns), the same way as a dict's outputs."""
    if any(c in keys or c in STATUS_SET for c in frame.columns):
        frame = frame.rename(columns=rename_clashing(list(frame.columns), keys.keys() | STATUS_SET))
    return frame


def storage_problem(frame: pd.DataFrame) -> str | None:
    """Why no Parquet part could hold these rows, or None (see ``simcal.store.storage_problem``)."""
    from simcal.store import storage_problem as problem_of  # simcal.store imports this module

    return problem_of(frame)


def fail_unstorable(records, frames, frame_keys, batch: Batch, reference: str):
    """The batch's rows with each simulation whose own outputs cannot be stored made a failed row naming the
    output column, checked on what the simulation returned (pandas may have widened a column of the whole batch,
    e.g. floats to complex)."""
    key_names = {  # what a failed row keeps of a simulation's record: no outputs
        (pid, replicate, seed): [*params, *KEY_COLUMNS, "duration_s"]
        for pid, replicate, seed, params in zip(*batch.columns(), strict=True)
    }
    kept_records = []
    for record in records:
        error = None
        if not all(type(v) in PLAIN_SCALARS for v in record.values()):  # plain scalars can always be stored
            error = unstorable_error(pd.DataFrame([record]), reference)
        if error is None:
            kept_records.append(record)
        else:
            names = key_names[(record["param_id"], record["replicate"], record["seed"])]
            kept_records.append({**{n: record[n] for n in names}, "status": "failed", "error": error})
    kept_frames, kept_keys = [], []
    for frame, keys in zip(frames, frame_keys, strict=True):
        error = unstorable_error(frame, reference)
        if error is None:
            kept_frames.append(frame)
            kept_keys.append(keys)
        else:
            kept_records.append({**keys, "status": "failed", "error": error})
    return kept_records, kept_frames, kept_keys


def unstorable_error(rows: pd.DataFrame, reference: str = "model") -> str | None:
    """The error of a simulation whose rows cannot be stored, naming each output column at fault and what it
    holds; None when they can be stored."""
    problem = storage_problem(rows)
    if problem is None:
        return None
    faults = []
    for column in dict.fromkeys(rows.columns):
        alone = rows[[column]]
        column_problem = storage_problem(alone)
        if column_problem is not None:
            faults.append(
                f"output column {column!r} holding {_held(alone)}, which cannot be stored ({column_problem})"
            )
    if not faults:
        return f"ContractError: {reference} returned outputs that cannot be stored together ({problem})"
    return f"ContractError: {reference} returned " + "; ".join(faults) + "; " + _storable_hint(rows)


def _held(column: pd.DataFrame) -> str:
    dtype = column.dtypes.iloc[0]
    if not pd.api.types.is_object_dtype(dtype):
        return str(dtype)
    kinds = {
        type(v).__name__ for v in column.iloc[:, 0] if v is not None and not (type(v) is float and v != v)
    }
    return f"values of type {', '.join(sorted(kinds)) or 'None'}"


def _storable_hint(rows: pd.DataFrame) -> str:
    if any(dtype.kind == "c" for dtype in rows.dtypes if isinstance(dtype, np.dtype)):
        return "give the real and imaginary parts (or the absolute value) columns of their own"
    if any(isinstance(dtype, pd.SparseDtype) for dtype in rows.dtypes):
        return "return the column dense (Series.sparse.to_dense())"
    return "outputs must be numbers, strings, booleans or missing values"


def storable_rows(frame: pd.DataFrame, tasks: Sequence[SimTask], reference: str = "model") -> pd.DataFrame:
    """``frame``, or when it cannot be stored, the same rows with each simulation whose own rows cannot be
    stored replaced by one ``failed`` row naming the column (found by halving the simulations, so a few bad ones
    among many cost a few checks); when even that cannot be stored, a failed row for every simulation in it."""
    problem = storage_problem(frame)
    if problem is None:
        return frame
    rows_of: dict[tuple, list[int]] = {}
    for position, key in enumerate(row_keys(frame)):
        rows_of.setdefault(key, []).append(position)
    bad: dict[tuple, str] = {}

    def search(keys: list[tuple]) -> None:
        rows = frame.iloc[[position for key in keys for position in rows_of[key]]]
        rows = rows.loc[:, rows.notna().any()]  # a column these rows leave empty is another's (see emptied)
        if len(keys) == 1:
            error = unstorable_error(rows, reference)
            if error is not None:
                bad[keys[0]] = error
        elif storage_problem(rows) is not None:
            half = len(keys) // 2
            search(keys[:half])
            search(keys[half:])

    search(list(rows_of))
    task_of = {t.key: t for t in tasks}
    if bad:
        keep = [key not in bad for key in row_keys(frame)]
        kept = frame[keep]
        # A column only the failed simulations filled would keep its unstorable type (complex, say) while empty.
        emptied = [
            c
            for c in kept.columns
            if c not in _FIXED_COLUMNS and kept[c].isna().all() and storage_problem(kept[[c]]) is not None
        ]
        failed = failure_rows(
            [task_of.get(key) or SimTask(*key, {}) for key in bad], "failed", list(bad.values())
        )
        result = order_columns(pd.concat([kept.drop(columns=emptied), failed], ignore_index=True))
        if storage_problem(result) is None:
            return result
    # The fault lies in how the simulations' rows combine: none of them can be kept.
    everyone = [task_of.get(key) or SimTask(*key, {}) for key in rows_of]
    return failure_rows(
        everyone, "failed", f"ContractError: the rows of {reference} cannot be stored: {problem}"
    )


_FIXED_COLUMNS = frozenset(KEY_COLUMNS + STATUS_COLUMNS)


def row_keys(frame: pd.DataFrame):
    """(param_id, replicate, seed) of each row."""
    return zip(frame["param_id"].tolist(), frame["replicate"].tolist(), frame["seed"].tolist(), strict=True)


def assemble(records, frames, frame_keys) -> pd.DataFrame:
    """One table of a batch's rows: each frame a model returned, after its simulation's key and status
    (``frame_keys``, one mapping a frame), then the rows already whole (``records``: scalar outputs, failures),
    columns in their order (``order_columns``) and whole numbers kept whole."""
    parts = []
    if frames:
        lengths = [len(f) for f in frames]
        stacked = pd.concat(frames, ignore_index=True)
        key_table = (
            pd.DataFrame.from_records(frame_keys)
            .loc[[i for i, n in enumerate(lengths) for _ in range(n)]]
            .reset_index(drop=True)
        )
        parts.append(pd.concat([key_table, stacked], axis=1))
    if records:
        parts.append(pd.DataFrame.from_records(records))
    result = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
    return order_columns(_whole_numbers_kept(result, records, frames, frame_keys))


EXACT_IN_FLOAT = 2**53  # a 64-bit float holds every whole number up to this, and not every one beyond it


def _whole_numbers_kept(result: pd.DataFrame, records, frames, frame_keys) -> pd.DataFrame:
    """The batch's rows with every digit of whole numbers beyond 2**53 (an ID, a hash) that pandas put into a
    float column: beside a missing value or a failed simulation's row (then the column becomes nullable Int64), or
    beside a fractional number, where no numeric type holds both (then it stays as the values were, and
    ``part_table`` stores it as text, naming it)."""
    for column in result.columns:
        values = result[column]
        if isinstance(values, pd.DataFrame) or values.dtype.kind != "f":
            continue
        if (
            not np.nanmax(np.abs(values.to_numpy(dtype="float64", na_value=np.nan)), initial=0)
            >= EXACT_IN_FLOAT
        ):
            continue  # a rounded whole number is still at least 2**53: none was rounded
        given = _given_values(column, records, frames, frame_keys)
        if not any(_beyond_float(value) for value in given):
            continue
        whole = all(_missing(value) or _is_whole(value) for value in given)
        try:
            result[column] = pd.array(given, dtype="Int64") if whole else pd.Series(given, dtype=object)
        except (OverflowError, TypeError, ValueError):  # beyond int64 too: as the values were
            result[column] = pd.Series(given, dtype=object)
    return result


def _given_values(column: str, records, frames, frame_keys) -> list[Any]:
    """The column's values as the model (or the parameters) gave them, in ``assemble``'s row order."""
    values: list[Any] = []
    for frame, keys in zip(frames, frame_keys, strict=True):
        held = frame[column] if column in frame.columns else None
        if isinstance(held, pd.Series):
            values.extend(held.tolist())
        else:
            values.extend([keys.get(column)] * len(frame))
    values.extend(record.get(column) for record in records)
    return values


def _is_whole(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _beyond_float(value: Any) -> bool:
    return _is_whole(value) and abs(int(value)) > EXACT_IN_FLOAT


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def order_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Key columns first, status columns last, typed the same way in every part."""
    ordered = (
        KEY_COLUMNS + [c for c in frame.columns if c not in KEY_COLUMNS + STATUS_COLUMNS] + STATUS_COLUMNS
    )
    frame = frame[ordered]
    frame["error"] = frame["error"].astype("string")
    frame["status"] = frame["status"].astype("string")
    frame["duration_s"] = frame["duration_s"].astype("float64")
    return frame


def failure_rows(tasks: Sequence[SimTask], status: str, error: str | list[str]) -> pd.DataFrame:
    """One row per simulation with its keys, parameters, the status and the error (one for all, or a list with
    one per simulation); no model outputs."""
    errors = error if isinstance(error, list) else [error] * len(tasks)
    records = [
        {
            **t.params,
            "param_id": t.param_id,
            "replicate": t.replicate,
            "seed": t.seed,
            "status": status,
            "error": text,
            "duration_s": float("nan"),
        }
        for t, text in zip(tasks, errors, strict=True)
    ]
    return order_columns(pd.DataFrame.from_records(records))
