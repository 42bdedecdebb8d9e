"""One Arrow schema for a sweep's parts: numeric types widened, a column whose types cannot be reconciled (or
whole numbers beyond 2**53 beside fractions) made text, the output's column order, and each part cast to it. Split
from ``simcal.store``, from which every public name here is still importable."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from simcal.worker import EXACT_IN_FLOAT, KEY_COLUMNS, STATUS_COLUMNS

log = logging.getLogger("simcal.store")  # the records of the code moved here keep their logger
ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError)


def unify_schemas(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for all parts: numeric types widen; a column whose types cannot be reconciled (a number in
    some parts, text in others) becomes text, with a warning naming it."""
    try:
        return pa.unify_schemas(schemas, promote_options="permissive")
    except ARROW_ERRORS:
        pass
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    fields, as_text = [], []
    for name, kinds in types.items():
        try:
            fields.append(
                pa.unify_schemas([pa.schema([(name, k)]) for k in kinds], promote_options="permissive").field(
                    0
                )
            )
        except ARROW_ERRORS:
            fields.append(pa.field(name, pa.large_string()))
            as_text.append(f"{name} ({', '.join(sorted({str(k) for k in kinds}))})")
    log.warning("output columns with different types across simulations are stored as text: %s", as_text)
    return pa.schema(fields)


def whole_numbers_as_text(
    unified: pa.Schema, parts: Sequence[Path | pa.Table], schemas: list[pa.Schema]
) -> pa.Schema:
    """The unified schema, with text for a column that whole numbers beyond 2**53 in some parts and fractional
    numbers in others made floats: no float holds the first exactly (Arrow refuses the cast, so the output could
    never be written), and text keeps every digit of both, as for a column mixing numbers and text."""
    fields = []
    for field in unified:
        whole_in = [
            part
            for part, schema in zip(parts, schemas, strict=True)
            if field.name in schema.names and pa.types.is_integer(schema.field(field.name).type)
        ]
        if pa.types.is_floating(field.type) and any(_beyond_float(part, field.name) for part in whole_in):
            log.warning(
                "output column %r holds whole numbers beyond 2**53 in some simulations and fractional numbers in "
                "others; stored as text, which keeps every digit of both",
                field.name,
            )
            field = pa.field(field.name, pa.large_string())
        fields.append(field)
    return pa.schema(fields)


def _beyond_float(part: Path | pa.Table, column: str) -> bool:
    """Whether a part (a file, or a table in memory) holds a whole number beyond 2**53 in ``column``."""
    values = part[column] if isinstance(part, pa.Table) else pq.read_table(part, columns=[column])[column]
    return extreme(values) > EXACT_IN_FLOAT


def extreme(column: pa.ChunkedArray) -> int:
    """The largest magnitude in an integer column (0 when it holds none)."""
    extremes = pc.min_max(column).as_py().values()
    return max((abs(v) for v in extremes if v is not None), default=0)


def columns_in_order(schema: pa.Schema) -> pa.Schema:
    """The columns in the order docs/simulation.md gives a sweep's output: key columns first, then the parameters
    and outputs, status columns last. The parts' unified schema lists first the columns of whichever part came
    first, and a part of failed simulations only has no outputs, which put them after status, error and
    duration_s in the output file."""
    first = [name for name in KEY_COLUMNS if name in schema.names]
    last = [name for name in STATUS_COLUMNS if name in schema.names]
    middle = [name for name in schema.names if name not in first and name not in last]
    return pa.schema([schema.field(name) for name in first + middle + last])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    columns = [
        _cast(table[f.name], f) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _cast(column: pa.ChunkedArray, field: pa.Field) -> pa.ChunkedArray:
    """The column as the unified type; a nested column (a struct or list, which Arrow cannot cast to text) that
    unify_schemas made text becomes JSON text, so that no part can make writing the output fail for ever."""
    try:
        return column.cast(field.type)
    except ARROW_ERRORS:
        if not pa.types.is_string(field.type) and not pa.types.is_large_string(field.type):
            raise
    log.warning(
        "output column %r holds nested values (%s); they are stored as JSON text", field.name, column.type
    )
    return pa.chunked_array(
        [pa.array([None if v is None else _as_text(v) for v in column.to_pylist()], type=field.type)]
    )


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
