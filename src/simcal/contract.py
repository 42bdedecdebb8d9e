"""The simulation contract: model references, parameter identities, seeds and output normalisation.

A model is any importable function ``"package.module:function"`` called as ``function(params, seed)`` that
returns a pandas DataFrame or a dict of named tables (DataFrames) and scalars.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd


class ContractError(ValueError):
    """A model, target or parameter table does not follow the simulation contract."""


def reject_unknown_keys(options: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Fail naming the config section and its unknown keys (the schema catches them too, but the library
    is also called directly)."""
    known = set(known)
    unknown = set(options) - known
    if unknown:
        raise ContractError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")


def resolve_callable(reference: str, what: str = "model") -> Callable:
    """Import ``"package.module:function"`` and return the callable, or fail naming the reference."""
    if not isinstance(reference, str) or reference.count(":") != 1:
        raise ContractError(f"{what} reference {reference!r} must look like 'package.module:function'")
    module_name, attribute = reference.split(":")
    if not module_name or not attribute:
        raise ContractError(f"{what} reference {reference!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ContractError(
            f"{what} reference {reference!r}: cannot import module {module_name!r} ({error})"
        ) from error
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ContractError(
                f"{what} reference {reference!r}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ContractError(
            f"{what} reference {reference!r}: {attribute!r} is a {type(target).__name__}, not callable"
        )
    return target


def to_plain(value: Any, key: str = "") -> Any:
    """Convert numpy scalars to Python ones so JSON and hashing see the same value whatever produced it."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:  # fast path: most values are already plain
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ContractError(f"parameter {key!r} is {value}: parameter values must be finite (no NaN/Inf)")
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | str) or value is None:
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        if not math.isfinite(value):
            raise ContractError(f"parameter {key!r} is {value}: parameter values must be finite (no NaN/Inf)")
        return value
    raise ContractError(
        f"parameter {key!r} has unsupported type {type(value).__name__} (use numbers, strings, booleans)"
    )


def canonical_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters with plain Python values, keys sorted."""
    return {str(key): to_plain(params[key], str(key)) for key in sorted(params, key=str)}


def _hash_form(value: Any) -> Any:
    # 2.0 and 2 are the same parameter value (a CSV column may be read either way): hash them the same way.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def canonical_json(params: Mapping[str, Any], already_canonical: bool = False) -> str:
    plain = params if already_canonical else canonical_params(params)
    hashed = {key: _hash_form(value) for key, value in plain.items()}
    return json.dumps(hashed, sort_keys=True, separators=(",", ":"), allow_nan=False)


def param_id(params: Mapping[str, Any], already_canonical: bool = False) -> str:
    """Stable identity of a parameter set: BLAKE2b of its canonical JSON (16 hex digits).

    ``already_canonical`` skips re-converting a dict that came from ``canonical_params``.
    """
    return hashlib.blake2b(canonical_json(params, already_canonical).encode(), digest_size=8).hexdigest()


def replicate_seed(
    pid: str, replicate: int, master_seed: int | None = None, common_random_numbers: bool = False
) -> int:
    """Seed of one replicate (0 <= seed < 2**32), independent of scheduling order and batching.

    - No master seed, independent streams (the default): BLAKE2b of ``"<param_id>:<replicate>"``, the seeds every
      earlier version of simcal gave, so existing results stay reproducible.
    - With ``master_seed``: ``numpy.random.SeedSequence(entropy=(master_seed, param_id), spawn_key=(replicate,))``;
      another master seed draws a fresh, independent set of replicates.
    - ``common_random_numbers``: the seed depends on (master seed, replicate) only, so every parameter set sees
      the same random numbers and differences between sets are not drowned in sampling noise (calibration).
    """
    replicate = int(replicate)
    if master_seed is None and not common_random_numbers:
        digest = hashlib.blake2b(f"{pid}:{replicate}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little") % 2**32
    master = 0 if master_seed is None else int(master_seed)
    entropy = master if common_random_numbers else (master, int(pid, 16))
    sequence = np.random.SeedSequence(entropy, spawn_key=(replicate,))
    return int(sequence.generate_state(1, np.uint32)[0])


def scalar_output(value: Any, name: str, reference: str) -> Any:
    """One value of a dict output as a plain scalar, or a ContractError naming the output and its shape."""
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    if np.ndim(value) != 0:
        raise ContractError(
            f"{reference} returned a {type(value).__name__} of shape {np.shape(value)} for output {name!r}; "
            "the values of a dict output must be scalars or DataFrames (put arrays into a DataFrame column)"
        )
    return value.item() if hasattr(value, "item") else value


def normalise_output(result: Any, reference: str = "model") -> pd.DataFrame:
    """Turn a model's return value into one long table.

    A DataFrame is kept as is (column names as strings). A dict may hold scalars (one column each, repeated on
    every row) and tables (stacked, with a ``table`` column naming each one).
    """
    if isinstance(result, pd.DataFrame):
        frame = result.reset_index(drop=True)
        if not all(type(c) is str for c in frame.columns):
            frame.columns = [str(c) for c in frame.columns]
        return frame
    if not isinstance(result, Mapping):
        raise ContractError(
            f"{reference} returned {type(result).__name__}; expected a pandas DataFrame or a dict"
        )
    tables: list[pd.DataFrame] = []
    scalars: dict[str, Any] = {}
    for name, value in result.items():
        if isinstance(value, pd.DataFrame):
            tables.append(value.reset_index(drop=True).assign(table=str(name)))
        elif isinstance(value, pd.Series):
            tables.append(value.rename(str(value.name or "value")).to_frame().assign(table=str(name)))
        else:
            scalars[str(name)] = scalar_output(value, str(name), reference)
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(index=[0])
    if scalars and frame.empty:  # only empty tables: the scalars still make one row
        frame = pd.DataFrame(index=[0])
    for name, value in scalars.items():
        frame[name] = value
    return frame
