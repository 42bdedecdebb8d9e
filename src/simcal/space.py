"""A model's declared parameters: names, types, bounds and defaults, checked before anything runs.

A model module declares its space next to the function::

    SPACE = ParameterSpace(
        beta=Real(low=0, description="transmission rate per day"),
        days=Integer(default=100, low=1),
    )

    @SPACE.declare
    def simulate(params, seed): ...

``space_of("package.module:function")`` finds it again. With a declared space a misspelt name (``populaton``), a
value of the wrong type or outside the bounds, or a missing required parameter is an error naming the parameter
(and the parameter set), instead of a parameter the model silently ignores. The model gets each value as its declared
type: an ``Integer`` written 20.0 (a CSV column pandas read as floats) as the int 20; 20.5 is refused. Models
without a declaration are run unchecked.
"""

from __future__ import annotations

import difflib
import logging
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simcal.contract import ContractError, resolve_callable

log = logging.getLogger(__name__)

ATTRIBUTE = "parameter_space"
_REQUIRED = object()


@dataclass(frozen=True)
class Parameter:
    """One declared parameter. ``low``/``high`` are inclusive bounds (None: unbounded)."""

    default: Any = _REQUIRED
    low: float | None = None
    high: float | None = None
    description: str = ""
    kind: str = field(default="real", init=False)

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed here, or None."""
        if isinstance(value, str):  # a number stored as text ('0.1' in a CSV column that also holds a word)
            return f"{value!r} is text, not a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"{value!r} is not a number"
        if not math.isfinite(value):
            return f"{value!r} is not finite"
        return self._bounds_problem(value)

    def typed(self, value: Any) -> Any:
        """``value`` (one ``problem`` took) as the declared type: unchanged here, see ``Integer``."""
        return value

    def _bounds_problem(self, value: float) -> str | None:
        if self.low is not None and value < self.low:
            return f"{value!r} is below its lower bound {self.low}"
        if self.high is not None and value > self.high:
            return f"{value!r} is above its upper bound {self.high}"
        return None

    def describe(self) -> str:
        bounds = f"[{'-inf' if self.low is None else self.low}, {'inf' if self.high is None else self.high}]"
        default = "required" if self.required else f"default {self.default!r}"
        return f"{self.kind} in {bounds}, {default}"


@dataclass(frozen=True)
class Real(Parameter):
    kind: str = field(default="real", init=False)


@dataclass(frozen=True)
class Integer(Parameter):
    kind: str = field(default="integer", init=False)

    def problem(self, value: Any) -> str | None:
        basic = super().problem(value)
        if basic is not None:
            return basic
        if not float(value).is_integer():
            return f"{value!r} is not a whole number"
        return None

    def typed(self, value: Any) -> Any:
        """A whole float (20.0: a CSV column pandas read as floats) as the int the model declared it takes."""
        if isinstance(value, float | np.floating):
            return int(value)
        return value


@dataclass(frozen=True)
class Choice(Parameter):
    """One of a fixed set of values (strings, numbers or booleans)."""

    options: tuple = ()
    kind: str = field(default="choice", init=False)

    def problem(self, value: Any) -> str | None:
        # Python's 1 == True: a flag is one only of flags, a number only of numbers (a CSV's 1/0 for True/False)
        if not any(value == option and _is_flag(value) == _is_flag(option) for option in self.options):
            return f"{value!r} is not one of {list(self.options)}"
        return None

    def describe(self) -> str:
        default = "required" if self.required else f"default {self.default!r}"
        return f"one of {list(self.options)}, {default}"


class ParameterSpace(Mapping[str, Parameter]):
    """The parameters a model accepts, by name."""

    def __init__(self, **parameters: Parameter):
        for name, spec in parameters.items():
            if not isinstance(spec, Parameter):
                raise TypeError(f"parameter {name!r}: expected Real, Integer or Choice, got {spec!r}")
            _check_declaration(name, spec)
            if not spec.required and spec.problem(spec.default) is not None:
                raise ValueError(f"parameter {name!r}: default {spec.problem(spec.default)}")
        self._parameters = dict(parameters)

    def __getitem__(self, name: str) -> Parameter:
        return self._parameters[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parameters)

    def __len__(self) -> int:
        return len(self._parameters)

    def declare(self, function: Callable) -> Callable:
        """Attach this space to a model function (returns the function itself)."""
        setattr(function, ATTRIBUTE, self)
        return function

    @property
    def defaults(self) -> dict[str, Any]:
        return {name: spec.default for name, spec in self.items() if not spec.required}

    def unknown(self, names: Iterable[str], where: str, model: str = "the model") -> None:
        """Fail naming the first name the model does not declare, with the closest declared name."""
        for name in names:
            if name not in self:
                close = difflib.get_close_matches(str(name), list(self), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ContractError(
                    f"{where}: {name!r} is not a parameter of {model}{hint}; it declares {sorted(self)}"
                )

    def check_values(self, params: Mapping[str, Any], where: str, model: str = "the model") -> None:
        """Known names and allowed values, without asking for every required parameter (e.g. fixed values)."""
        self.unknown(params, where, model)
        for name, value in params.items():
            problem = self[name].problem(value)
            if problem is not None:
                raise ContractError(f"{where}: parameter {name!r} = {problem} ({self[name].describe()})")

    def check(self, params: Mapping[str, Any], where: str, model: str = "the model") -> None:
        """A complete parameter set: known names, allowed values, every required parameter present."""
        self.check_values(params, where, model)
        missing = [name for name, spec in self.items() if spec.required and name not in params]
        if missing:
            raise ContractError(f"{where}: required parameter(s) {missing} of {model} have no value")

    def complete(self, params: Mapping[str, Any], where: str = "parameters") -> dict[str, Any]:
        """The parameters with defaults filled in, after ``check``, each value as its declared type (see
        ``typed``); for use inside the model itself."""
        self.check(params, where)
        return {**self.defaults, **self.typed(params)}

    def typed(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``params`` (values ``check_values`` took) with each declared parameter's value as its declared type: a
        whole float of an ``Integer`` parameter as an int (``range(params["n"])`` fails on 20.0)."""
        return {name: self[name].typed(value) if name in self else value for name, value in params.items()}

    def _typed_sets(self, sets: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """``typed`` of every set; a set with no value to change is kept as it is (no copy per row)."""
        integers = [name for name, spec in self.items() if isinstance(spec, Integer)]
        return [
            self.typed(params)
            if any(isinstance(params.get(name), float | np.floating) for name in integers)
            else params
            for params in sets
        ]


def _is_flag(value: Any) -> bool:
    return isinstance(value, bool | np.bool_)


def _check_declaration(name: str, spec: Parameter) -> None:
    """Bounds that are numbers with low <= high, a choice with options: a NaN bound would bound nothing, and
    low > high would refuse every value with a message blaming the value."""
    if isinstance(spec, Choice):
        if not spec.options:
            raise ValueError(f"parameter {name!r}: a Choice needs at least one option")
        return
    for key in ("low", "high"):
        bound = getattr(spec, key)
        if bound is not None and (
            isinstance(bound, bool) or not isinstance(bound, numbers.Real) or math.isnan(bound)
        ):
            raise ValueError(f"parameter {name!r}: {key} must be a number or None, got {bound!r}")
    if spec.low is not None and spec.high is not None and spec.low > spec.high:
        raise ValueError(f"parameter {name!r}: low {spec.low} is above high {spec.high}")


def space_of(model_ref: str) -> ParameterSpace | None:
    """The space declared on a model function, or None when it declares none."""
    space = getattr(resolve_callable(model_ref), ATTRIBUTE, None)
    return space if isinstance(space, ParameterSpace) else None


def check_fixed(
    model_ref: str, fixed: Mapping[str, Any], where: str = "fixed parameters"
) -> Mapping[str, Any]:
    """Fixed values against the model's declared space, named as fixed: merged into every parameter set, a
    misspelt or out-of-bounds fixed value would otherwise be blamed on the table's first row. Returns them as
    their declared types (``ParameterSpace.typed``)."""
    space = space_of(model_ref) if fixed else None
    if space is None:
        return fixed
    space.check_values(fixed, where, model_ref)
    return space.typed(fixed)


def check_parameter_sets(
    model_ref: str,
    sets: Iterable[Mapping[str, Any]],
    where: str = "parameter table",
    labels: Iterable[str] | None = None,
) -> list[Mapping[str, Any]]:
    """Check complete parameter sets (fixed values merged in) against the model's declared space, and return them
    with their values as the declared types (``ParameterSpace.typed``: what the model is to get).

    ``labels`` name each set in messages (e.g. "line 3"); by default "parameter set <i>" (0-based).
    """
    space = space_of(model_ref)
    sets = sets if isinstance(sets, list) else list(sets)
    if space is None:
        _warn_of_numbers_read_as_text(sets, where, labels, model_ref)
        return sets
    word = _first_word_among_numbers(space, sets)
    if word is not None:  # named before any other row: see _first_word_among_numbers
        first, name = word
        label = list(labels)[first] if labels is not None else f"parameter set {first}"
        # only the word's own column: another text column's '0.3' in this row would not be what is wrong here
        space.check_values({name: sets[first][name]}, f"{where}, {label}", model_ref)
    names = iter(labels) if labels is not None else None
    for index, params in enumerate(sets):
        label = next(names) if names is not None else f"parameter set {index}"
        space.check(params, f"{where}, {label}", model_ref)
    return space._typed_sets(sets)


def _warn_of_numbers_read_as_text(
    sets: list[Mapping[str, Any]], where: str, labels: Iterable[str] | None, model_ref: str
) -> None:
    """Log a warning for each column of numbers that one word turned into text, for a model without a declared space
    (which would refuse the word, naming its row). A CSV column holding ``abc`` among numbers is read as text
    throughout: the model gets '0.1' for 0.1 in every row and typically fails on each, which its errors do not
    explain. A column of more words than numbers (IDs such as ``07``, ``B12`` and ``C3``) is taken as text on
    purpose and not warned of."""
    if not sets:
        return
    text_columns = [name for name, value in sets[0].items() if isinstance(value, str)]
    named: list[str] | None = None
    for name in text_columns:
        values = [params.get(name) for params in sets]
        numeric = [isinstance(value, str) and reads_as_number(value) for value in values]
        numbers_in = sum(numeric)
        if not len(values) / 2 < numbers_in < len(values):  # mostly words: a column of text (IDs) on purpose
            continue
        index = numeric.index(False)
        if named is None:
            named = list(labels) if labels is not None else [f"parameter set {i}" for i in range(len(sets))]
        log.warning(
            "%s, %s: column %r is %r, a word among numbers (%d of %d values read as numbers), so the whole column is "
            "text: %s gets every value of it as text ('0.1', not 0.1); fix the value, or declare the model's "
            "parameter space (simcal.space), which refuses it naming its row",
            where, named[index], name, values[index], numbers_in, len(values), model_ref,
        )  # fmt: skip


def _first_word_among_numbers(space: ParameterSpace, sets: list[Mapping[str, Any]]) -> tuple[int, str] | None:
    """The position of the first set whose value of a numeric parameter is text that is no number at all, and
    that parameter's name.

    A CSV column holding one word (``abc``) among numbers is read as text throughout, so checking the sets in
    order would blame the first row for its ``'0.1'`` rather than the row that holds the word.
    """
    if not sets:
        return None
    names = [
        name
        for name, spec in space.items()
        if not isinstance(spec, Choice) and isinstance(sets[0].get(name), str)
    ]
    if not names:
        return None
    for index, params in enumerate(sets):
        for name in names:
            value = params.get(name)
            if isinstance(value, str) and not reads_as_number(value):
                return index, name
    return None


def reads_as_number(value: object) -> bool:
    """Whether ``float()`` takes ``value`` (a word is no number; '0.1' and 1 are)."""
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
