"""The simulation contract: model references, parameter identities, seeds and output normalisation.

A model is any importable function ``"package.module:function"`` called as ``function(params, seed)`` that
returns a pandas DataFrame or a dict of named tables (DataFrames) and scalars.

The seeds (``simcal.seeds``), the normalisation of what a model returns (``simcal.model_outputs``) and the error
(``simcal.contract_error``) live in modules of their own; every name they had here is still importable from here.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from simcal.contract_error import ContractError
from simcal.model_outputs import (
    OUTPUT_PREFIX,
    TABLE_COLUMN,
    normalise_output,
    output_table,
    rename_clashing,
    scalar_output,
    unique_names,
)
from simcal.seeds import replicate_seed, replicate_seeds


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


def target_names_and_weights(
    targets: Sequence[Mapping[str, Any]], key: str = "calibration.targets"
) -> tuple[list[str], list[float]]:
    """Each target's name (``name``, or target_<index> when it has none) and weight, with what the calibrate job
    refuses of them together: every weight 0 (the total loss would be 0 everywhere) or a name given twice (one
    column loss_<name> each). Read by the calibrate job and by the check while the workflow is parsed, so a
    config the job would refuse stops the dry run, not the job after the design's sweep."""
    weights = []
    for index, spec in enumerate(targets):
        weight = spec.get("weight", 1.0)
        # a negative weight would reward a worse fit to that target: the total is minimised
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
            raise ContractError(f"{key}[{index}].weight: expected a finite number >= 0, got {weight!r}")
        weights.append(float(weight))
    if not any(weights):  # a weight-0 target is recorded only: the total would be 0 everywhere
        raise ContractError(
            f"{key}: every weight is 0; at least one target needs a weight > 0 (a target of weight 0 "
            "is recorded in the trials table but not part of the loss)"
        )
    names = [str(spec.get("name") or f"target_{index}") for index, spec in enumerate(targets)]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ContractError(
            f"{key}: names must differ (column loss_<name>), got {names}: {twice} named more than once (a target "
            "without a name is target_<index>)"
        )
    return names, weights


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


__all__ = [
    "CONFIG_KEYS",
    "OUTPUT_PREFIX",
    "REFERENCE",
    "TABLE_COLUMN",
    "TARGET_KEYS",
    "ContractError",
    "canonical_json",
    "canonical_param_sets",
    "canonical_params",
    "check_model_signature",
    "check_options",
    "is_whole_number",
    "mapping_of",
    "normalise_output",
    "output_table",
    "param_id",
    "python_scalar",
    "reject_unknown_keys",
    "rename_clashing",
    "replicate_seed",
    "replicate_seeds",
    "resolve_callable",
    "resolve_model",
    "scalar_output",
    "target_names_and_weights",
    "target_options",
    "to_plain",
    "unique_names",
]
