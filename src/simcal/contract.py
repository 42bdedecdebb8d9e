"""The simulation contract: model references, parameter identities, seeds and output normalisation.

A model is any importable function ``"package.module:function"`` called as ``function(params, seed)`` that
returns a pandas DataFrame or a dict of named tables (DataFrames) and scalars.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import inspect
import json
import math
import numbers
import re
from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from wrapper_rules import InputError


class ContractError(ValueError, InputError):
    """A model, target or parameter table does not follow the simulation contract."""


def mapping_of(value: Any, where: str) -> dict[str, Any]:
    """``value`` (None for none) as a dict, or fail naming ``where``: a wrapper's params come from YAML, where a
    string or a list may stand where a mapping belongs."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ContractError(
            f"{where}: expected a mapping of names to values, got {type(value).__name__} {value!r}"
        )
    return dict(value)


def reject_unknown_keys(options: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Fail naming the config section and its unknown keys (the schema catches them too, but the library
    is also called directly)."""
    known = set(known)
    unknown = set(options) - known
    if unknown:
        raise ContractError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")


# The key of the calibration workflow's config that names each kind of reference. The workflow checks a reference
# while it is parsed only where its module imports in the Snakemake process (simcal.config_checks); one that imports
# nowhere is met first by a job, whose message then names the key too.
CONFIG_KEYS = {"model": "calibration.model", "observed-data generator": "calibration.observed.generator"}


def _set_by(what: str) -> str:
    key = CONFIG_KEYS.get(what)
    return (
        f"; in the calibration workflow {key} names it, and its module must import where the jobs run"
        if key
        else ""
    )


# A "package.module:function" reference: dotted names around one colon, no empty part ("pkg..mod", "mod:fn.").
# The calibration schema's two reference patterns are this one (test_calibration_config.py checks it).
_DOTTED = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*"
REFERENCE = re.compile(f"{_DOTTED}:{_DOTTED}")


def resolve_callable(reference: str, what: str = "model") -> Callable:
    """Import ``"package.module:function"`` and return the callable, or fail naming the reference."""
    if not isinstance(reference, str) or not REFERENCE.fullmatch(reference):
        raise ContractError(f"{what} reference {reference!r} must look like 'package.module:function'")
    module_name, attribute = reference.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ContractError(
            f"{what} reference {reference!r}: cannot import module {module_name!r} ({error}){_set_by(what)}"
        ) from error
    # The module's own code failed (a missing data file, a typo, an exit at import): name the reference.
    except (Exception, SystemExit) as error:
        raise ContractError(
            f"{what} reference {reference!r}: importing module {module_name!r} failed with "
            f"{type(error).__name__}: {error} (the traceback above shows where){_set_by(what)}"
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


def resolve_model(reference: str) -> Callable:
    """``resolve_callable`` of a model, which must also be callable as ``model(params, seed)``
    (``check_model_signature``). Other references resolved as ``what="model"`` (an observed-data generator whose
    declared space is looked up) may take required options, so only the sweep and the calibration check."""
    model = resolve_callable(reference)
    check_model_signature(model, reference)
    return model


def check_model_signature(model: Callable, reference: str, key: str | None = None) -> None:
    """Fail naming the reference when ``model`` cannot be called as ``model(params, seed)``, the way every
    simulation calls it (two positional arguments): before anything runs, not as a TypeError in every row.
    Defaults, ``*args`` and ``**kwargs`` are accepted as Python would; a decorated function is judged by its
    wrapper's own signature (the wrapper may supply arguments), an object by its ``__call__``, a
    ``functools.partial`` by what it leaves; a callable whose signature cannot be read (some builtins) is
    accepted. The message starts "model reference '<reference>'", or with ``key`` (the config key that names the
    model, for the check while the workflow is parsed) "<key>: '<reference>'", as the other parse-time messages
    do."""
    try:
        signature = inspect.signature(model, follow_wrapped=False)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None)
    except TypeError as error:
        name = reference.rsplit(":", 1)[-1]
        hint = (
            f"; {name!r} is a class, so that call would make an instance: name an instance in the reference "
            f"(model = {name}(), a module attribute)"
            if inspect.isclass(model) and any("__call__" in vars(klass) for klass in model.__mro__)
            else ", any other argument with a default"
        )
        where = f"{key}: {reference!r}" if key else f"model reference {reference!r}"
        raise ContractError(
            f"{where}: {name}{signature} cannot be called as {name}(params, seed), the way "
            f"every simulation calls a model ({error}); expected (params, seed){hint}"
        ) from error


# A calibration target's own keys (calibration.targets[i]); every other key is an option of its loss function.
TARGET_KEYS = frozenset({"function", "name", "weight"})


def target_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The options a calibration target gives its loss function: the target's keys other than TARGET_KEYS (read by
    the calibrate job and by the check while the workflow is parsed, so the two cannot disagree)."""
    return {key: value for key, value in spec.items() if key not in TARGET_KEYS}


def check_options(
    function: Callable, options: Mapping[str, Any], where: str, reference: str, leading: int = 2
) -> None:
    """Fail naming ``where`` when ``function`` cannot be called with ``leading`` positional arguments and the
    keyword ``options`` (a misspelt option, a required one left out): before anything runs, not at the first
    call after a round of simulations. A function whose signature cannot be read is left to that call."""
    try:
        # follow_wrapped=False: a decorator's own (*args, **kwargs) may take more than the function it wraps.
        signature = inspect.signature(function, follow_wrapped=False)
    except (TypeError, ValueError):
        return
    parameters = list(signature.parameters.values())
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        named = [p.name for p in parameters[leading:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        unknown = [str(name) for name in options if name not in named]
        if unknown:
            close = difflib.get_close_matches(unknown[0], named, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ContractError(
                f"{where}: {reference} has no option {unknown[0]!r}{hint}; its options are {named}"
            )
    try:
        signature.bind(*[None] * leading, **options)
    except TypeError as error:
        raise ContractError(
            f"{where}: {reference} cannot take the options {sorted(options)}: {error}"
        ) from error


def is_whole_number(value: Any, minimum: int = 0) -> bool:
    """A whole number >= ``minimum``, given as an int or a whole float (7.0); not a bool, 1.5, nan or "7"."""
    return (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and (isinstance(value, numbers.Integral) or float(value).is_integer())
        and value >= minimum
    )


def python_scalar(value: Any) -> Any:
    """A numpy scalar as Python's (anything else as it is), a float16 or float32 one as written: 0.1, not
    0.10000000149011612, as a float32 column of a parameter table gives it (tables.check_parameter_table), so that
    submit(), fixed values and the service client's requests plan the param_ids and seeds a sweep of it plans."""
    if isinstance(value, np.floating) and value.dtype.itemsize < 8:
        return float(str(value))
    return value.item() if isinstance(value, np.generic) else value


def to_plain(value: Any, key: str = "") -> Any:
    """Convert numpy scalars to Python ones so JSON and hashing see the same value whatever produced it."""
    kind = type(value)
    if kind is str or kind is int or kind is bool:  # fast path: most values are already plain
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ContractError(f"parameter {key!r} is {value}: parameter values must be finite (no NaN/Inf)")
        return value
    value = python_scalar(value)
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
    if all(type(key) is str for key in params):  # the usual case: no str() per key
        return {key: to_plain(params[key], key) for key in sorted(params)}
    return {str(key): to_plain(params[key], str(key)) for key in sorted(params, key=str)}


def _hash_form(value: Any) -> Any:
    # 2.0 and 2 are the same parameter value (a CSV column may be read either way): hash them the same way.
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


# What json.dumps(..., sort_keys=True, separators=(",", ":"), allow_nan=False) builds on every call, built once.
_CANONICAL_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(params: Mapping[str, Any], already_canonical: bool = False) -> str:
    plain = params if already_canonical else canonical_params(params)
    hashed = {key: _hash_form(value) for key, value in plain.items()}
    return _CANONICAL_ENCODER.encode(hashed)


def param_id(params: Mapping[str, Any], already_canonical: bool = False) -> str:
    """Stable identity of a parameter set: BLAKE2b of its canonical JSON (16 hex digits).

    ``already_canonical`` skips re-converting a dict that came from ``canonical_params``.
    """
    return hashlib.blake2b(canonical_json(params, already_canonical).encode(), digest_size=8).hexdigest()


def canonical_param_sets(param_sets: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """``(param_id(p), canonical_params(p))`` of every parameter set, in order: the same ids and values, built
    column by column (no JSON encoder per set) when the sets share their names and hold plain values."""
    sets = param_sets if isinstance(param_sets, list) else list(param_sets)
    by_columns = _canonical_by_columns(sets)
    if by_columns is not None:
        return by_columns
    result = []
    for params in sets:
        plain = canonical_params(params)
        result.append((param_id(plain, already_canonical=True), plain))
    return result


_encode_json_string = json.encoder.encode_basestring_ascii  # what the canonical encoder does to a str


def _json_fragments(values: list[Any]) -> list[str] | None:
    """The canonical JSON text of each value of one column (after ``_hash_form``), or None when the column is
    not one plain type (the caller then takes the general path, which also raises the errors)."""
    kinds = set(map(type, values))
    if kinds == {float}:
        array = np.array(values, dtype=np.float64)
        if not np.isfinite(array).all():
            return None
        fragments = list(map(float.__repr__, values))
        for index in np.flatnonzero((array == np.trunc(array)) & (np.abs(array) < 2**53)).tolist():
            fragments[index] = int.__repr__(int(values[index]))  # 2.0 is hashed as 2 (see _hash_form)
        return fragments
    if kinds == {int}:
        return list(map(int.__repr__, values))
    if kinds == {str}:
        return list(map(_encode_json_string, values))
    if kinds == {bool}:
        return ["true" if v else "false" for v in values]
    return None


def _canonical_by_columns(sets: list[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]] | None:
    if not sets or type(sets[0]) is not dict:
        return None
    first = sets[0].keys()
    if not first or not all(type(name) is str for name in first):
        return None
    if not all(type(params) is dict and params.keys() == first for params in sets):
        return None
    names = sorted(first)
    columns = [[params[name] for params in sets] for name in names]
    prefixed = []
    for name, values in zip(names, columns, strict=True):
        fragments = _json_fragments(values)
        if fragments is None:
            return None
        prefix = _encode_json_string(name) + ":"
        prefixed.append([prefix + fragment for fragment in fragments])
    blake2b = hashlib.blake2b
    ids = [
        blake2b(f"{{{','.join(row)}}}".encode(), digest_size=8).hexdigest()
        for row in zip(*prefixed, strict=True)
    ]
    if list(first) == names:  # keys already sorted: a copy is the canonical dict
        plains = [params.copy() for params in sets]
    else:
        plains = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return list(zip(ids, plains, strict=True))


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
    return replicate_seeds([pid], [replicate], master_seed, common_random_numbers)[0][0]


def replicate_seeds(
    pids: Sequence[str],
    replicates: Sequence[int],
    master_seed: int | None = None,
    common_random_numbers: bool = False,
) -> list[list[int]]:
    """``replicate_seed`` of every replicate of every parameter set, ``[[seed of (pid, r) for r] for pid]``: the
    same integers, computed for all of them at once."""
    replicates = [int(r) for r in replicates]
    if master_seed is None and not common_random_numbers:
        return [
            [
                int.from_bytes(hashlib.blake2b(f"{pid}:{r}".encode(), digest_size=8).digest(), "little")
                % 2**32
                for r in replicates
            ]
            for pid in pids
        ]
    master = 0 if master_seed is None else int(master_seed)
    entropies = [master] if common_random_numbers else [(master, int(pid, 16)) for pid in pids]
    if len(entropies) * len(replicates) < 64 or any(r < 0 or r > _MASK32 for r in replicates):
        seeds = [  # few seeds (or a replicate number of several words): numpy's own SeedSequence
            [int(np.random.SeedSequence(entropy, spawn_key=(r,)).generate_state(1, np.uint32)[0])
             for r in replicates]
            for entropy in entropies
        ]  # fmt: skip
    else:
        seeds = _seed_sequence_states(master, None if common_random_numbers else entropies, replicates)
    return seeds * len(pids) if common_random_numbers else seeds  # the same seeds for every parameter set


# numpy.random.SeedSequence (numpy/random/bit_generator.pyx: the mixing of O'Neill's seed_seq_fe128) vectorised
# over many entropies and replicates, so a sweep does not build a SeedSequence object per simulation. With a spawn
# key the entropy words are padded to the pool size and mixed first, then each replicate's word is mixed in, then
# one 32-bit word of state is drawn from the pool. The unit test compares every step's outcome with numpy's own
# SeedSequence on many (master seed, param_id, replicate) triples.
_POOL_SIZE = 4
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715
_MASK32 = 0xFFFFFFFF


def _uint32_words(value: int) -> list[int]:
    """How SeedSequence splits a non-negative integer into 32-bit words (least significant first; 0 is [0])."""
    if value < 0:
        raise ContractError(f"seed entropy {value} must be >= 0")
    words = [value & _MASK32]
    value >>= 32
    while value:
        words.append(value & _MASK32)
        value >>= 32
    return words


# The arithmetic is on uint64 arrays holding 32-bit words: a product of two words fits, and masking keeps the
# low 32 bits, which is what SeedSequence's uint32 arithmetic computes.
def _hashmix(value: np.ndarray, hash_const: int) -> tuple[np.ndarray, int]:
    value = value ^ np.uint64(hash_const)
    hash_const = (hash_const * _MULT_A) & _MASK32
    value = (value * np.uint64(hash_const)) & np.uint64(_MASK32)
    return value ^ (value >> np.uint64(16)), hash_const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = (np.uint64(_MIX_MULT_L) * x - np.uint64(_MIX_MULT_R) * y) & np.uint64(_MASK32)
    return result ^ (result >> np.uint64(16))


def _seed_sequence_states(
    master: int, entropies: list[tuple[int, int]] | None, replicates: list[int]
) -> list[list[int]]:
    """``SeedSequence(entropy, spawn_key=(r,)).generate_state(1, np.uint32)[0]`` for every replicate r (each a
    32-bit word), one list per entropy ``(master, param_id as an integer)``, or one list for ``master`` alone
    when ``entropies`` is None."""
    master_words = _uint32_words(master)
    if entropies is None:
        groups = [(np.array([master_words + [0] * (_POOL_SIZE - len(master_words))], dtype=np.uint64), None)]
        rows_total = 1
    else:
        # A param_id is 64 bits: two words, or one when its high half is zero (SeedSequence drops leading zeros).
        values = np.array([pid for _, pid in entropies], dtype=np.uint64)
        low, high = values & np.uint64(_MASK32), values >> np.uint64(32)
        groups = []
        for two_words in (True, False):
            rows = np.flatnonzero(high != 0 if two_words else high == 0)
            if not len(rows):
                continue
            columns = [np.full(len(rows), w, dtype=np.uint64) for w in master_words] + [low[rows]]
            if two_words:
                columns.append(high[rows])
            columns += [np.zeros(len(rows), dtype=np.uint64)] * (_POOL_SIZE - len(columns))
            groups.append((np.stack(columns, axis=1), rows))
        rows_total = len(entropies)
    states: list[list[int]] = [[] for _ in range(rows_total)]
    for table, rows in groups:
        hash_const = _INIT_A
        pool = []
        for column in range(_POOL_SIZE):
            mixed, hash_const = _hashmix(table[:, column], hash_const)
            pool.append(mixed)
        for source in range(_POOL_SIZE):
            for target in range(_POOL_SIZE):
                if source != target:
                    mixed, hash_const = _hashmix(pool[source], hash_const)
                    pool[target] = _mix(pool[target], mixed)
        for column in range(_POOL_SIZE, table.shape[1]):
            for target in range(_POOL_SIZE):
                mixed, hash_const = _hashmix(table[:, column], hash_const)
                pool[target] = _mix(pool[target], mixed)
        # The replicate's word is mixed into each of the 4 pool words; a one-word state reads only the first.
        mixed_replicates, _ = _hashmix(np.asarray(replicates, dtype=np.uint64), hash_const)
        state = _mix(pool[0][:, None], mixed_replicates[None, :]) ^ np.uint64(_INIT_B)
        state = (state * np.uint64((_INIT_B * _MULT_B) & _MASK32)) & np.uint64(_MASK32)
        state ^= state >> np.uint64(16)
        for row, seeds in zip(
            range(rows_total) if rows is None else rows.tolist(), state.tolist(), strict=True
        ):
            states[row] = seeds
    return states


def scalar_output(value: Any, name: str, reference: str) -> Any:
    """One value of a dict output as a plain scalar, or a ContractError naming the output and its shape."""
    kind = type(value)
    if kind is float or kind is int or kind is str or kind is bool or value is None:
        return value
    # numpy calls a dict or a set 0-dimensional, but Parquet would store it nested (a struct that no later part
    # of another type can be merged with), so it is refused like an array.
    if isinstance(value, Mapping | set | frozenset):
        raise ContractError(
            f"{reference} returned a {kind.__name__} for output {name!r}; the values of a dict output must be "
            "scalars (numbers, strings, booleans) or DataFrames (give each inner value its own output, or return "
            "a table)"
        )
    if isinstance(value, complex | np.complexfloating):
        raise ContractError(
            f"{reference} returned a complex number for output {name!r}, which Parquet cannot store; give its "
            "real and imaginary parts (or its absolute value) outputs of their own"
        )
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

    A DataFrame keeps its columns (names as strings, see ``output_table``) and its index as columns unless that
    holds just the row numbers. A dict may hold scalars (one column each, repeated on every row) and tables
    (DataFrames or Series, stacked, with a ``table`` column naming each one).
    """
    if isinstance(result, pd.DataFrame):
        return output_table(result)
    if not isinstance(result, Mapping):
        raise ContractError(
            f"{reference} returned {type(result).__name__}; expected a pandas DataFrame or a dict"
        )
    tables: list[pd.DataFrame] = []
    scalars: dict[str, Any] = {}
    for name, value in zip(unique_names([str(k) for k in result]), result.values(), strict=True):
        if isinstance(value, pd.DataFrame | pd.Series):
            table = output_table(
                value
                if isinstance(value, pd.DataFrame)
                else value.rename(str(value.name or "value")).to_frame()
            )
            if TABLE_COLUMN in table.columns:  # the table's own column of that name is kept, renamed
                table = table.rename(columns=rename_clashing(list(table.columns), {TABLE_COLUMN}))
            tables.append(table.assign(**{TABLE_COLUMN: name}))
        else:
            scalars[name] = scalar_output(value, name, reference)
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(index=[0])
    if scalars and frame.empty:  # only empty tables: the scalars still make one row
        frame = pd.DataFrame(index=[0])
    if scalars and len(frame.columns):  # a scalar named like a column of the tables must not overwrite it
        renamed = rename_clashing(list(scalars), set(frame.columns))
        if renamed:
            scalars = {renamed.get(k, k): v for k, v in scalars.items()}
    for name, value in scalars.items():
        frame[name] = value
    return frame


def output_table(frame: pd.DataFrame) -> pd.DataFrame:
    """A table a model returned, as rows of the output: column names as unique strings (``unique_names``), and
    the index as leading columns unless it holds just the row numbers 0, 1, 2, ... with no name.

    An index is data a model means to return (the ``day`` of ``set_index("day")``, the keys of a ``groupby``), so
    it is kept: each level under its name, or ``index`` (``level_<i>`` in a MultiIndex) when it has none. A level
    named like a column is renamed the way clashing outputs are (``output_`` prefix); the column keeps its name.
    """
    columns = list(frame.columns)
    # A set of the names rather than Index.is_unique, whose hash table costs more than many a simulation.
    plain = all(type(c) is str for c in columns) and len(set(columns)) == len(columns)
    names = columns if plain else unique_names([str(c) for c in columns])
    index = frame.index
    if _holds_row_numbers(index):
        table = frame.reset_index(drop=True)
        if names is not columns:
            table.columns = names
        return table
    levels = unique_names(
        [
            str(level) if level is not None else ("index" if index.nlevels == 1 else f"level_{i}")
            for i, level in enumerate(index.names)
        ]
    )
    renamed = rename_clashing(levels, set(names))
    levels = [renamed.get(level, level) for level in levels]
    return frame.set_axis(names, axis=1).set_axis(index.set_names(levels), axis=0).reset_index()


def _holds_row_numbers(index: pd.Index) -> bool:
    """True for an unnamed index of the rows' own numbers 0..n-1 (what pandas gives a table by default)."""
    if index.nlevels != 1 or index.name is not None:
        return False
    if type(index) is pd.RangeIndex:
        return index.start == 0 and index.step == 1
    return index.dtype.kind in "iu" and index.equals(pd.RangeIndex(len(index)))


def unique_names(names: Sequence[str]) -> list[str]:
    """The names, each repeat of an earlier one renamed by the ``rename_clashing`` rule (``output_`` prefix until
    it clashes with no other name): two outputs that share a name after ``str()`` (``x`` twice, or ``1`` and
    ``"1"``) are both kept, the first under the name."""
    if len(set(names)) == len(names):
        return list(names)
    every = set(names)
    seen: set[str] = set()
    unique = []
    for name in names:
        if name in seen:
            name = rename_clashing([name], every | seen)[name]
        seen.add(name)
        unique.append(name)
    return unique


TABLE_COLUMN = "table"  # names each row's table when a dict output holds several
OUTPUT_PREFIX = "output_"


def rename_clashing(names: Sequence[str], reserved: Container[str]) -> dict[str, str]:
    """``{name: new name}`` for each of ``names`` found in ``reserved``: the name with an ``output_`` prefix,
    repeated until it clashes with nothing reserved, none of ``names`` and no new name given before it."""
    taken = set(names)
    renamed = {}
    for name in names:
        if name in reserved:
            new = name
            while new in reserved or new in taken:
                new = OUTPUT_PREFIX + new
            taken.add(new)
            renamed[name] = new
    return renamed
