"""The ``timeout_s`` a part's simulations ran under, and which of its timed-out simulations a resumed sweep runs
again.

Each part records the limit of the run that wrote it in its Parquet metadata (``simcal.timeout_s``: a number, or
null for no limit). A resumed sweep or calibration whose ``simulation.timeout_s`` is larger (or null) runs again
the simulations of a part that timed out under the smaller limit: they might finish now. Every other row is kept
as it is (ok, failed, crashed, or timed out under this run's limit or a larger one). A part written before the
record existed is judged by the limit its timeout rows name in their error ("ran longer than timeout_s = 0.5 s");
a row that names none (a start-up timeout) is kept.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

TIMEOUT_KEY = b"simcal.timeout_s"
_NAMED = re.compile(r"timeout_s = (\S+) s")


def with_timeout(table: pa.Table, timeout_s: float | None) -> pa.Table:
    """``table`` with ``timeout_s`` (the limit its simulations ran under) recorded in its schema's metadata."""
    metadata = dict(table.schema.metadata or {})
    metadata[TIMEOUT_KEY] = json.dumps(timeout_s).encode()
    return table.replace_schema_metadata(metadata)


def timed_out_sooner(
    rows: pd.DataFrame, metadata: Mapping[bytes, bytes] | None, timeout_s: float | None
) -> np.ndarray:
    """A mask of ``rows`` (a part's ``status`` and ``error`` columns, ``metadata`` its schema's) that timed out
    under a smaller limit than ``timeout_s`` (None: no limit, larger than any)."""
    timed_out = rows["status"].eq("timeout").to_numpy(dtype=bool, na_value=False)
    if not timed_out.any():
        return timed_out
    current = math.inf if timeout_s is None else float(timeout_s)
    recorded = (metadata or {}).get(TIMEOUT_KEY)
    if recorded is not None:
        ran_under = json.loads(recorded)
        limit = math.inf if ran_under is None else float(ran_under)
        return timed_out & (limit < current)
    # A part of an older version: the limit each timeout row's error names (NaN where none: kept).
    limits = np.array([_named_limit(error) for error in rows["error"].tolist()], dtype=float)
    return timed_out & (limits < current)


def _named_limit(error: object) -> float:
    found = _NAMED.search(error) if isinstance(error, str) else None
    if found is None:
        return math.nan
    try:
        return float(found.group(1))
    except ValueError:
        return math.nan
