"""Parameter bounds and quasi-random designs (Sobol, Latin hypercube) from scipy.stats.qmc."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import qmc

from simcal.contract import ContractError, is_whole_number
from simcal.files import write_table
from simcal.space import Choice, Integer, ParameterSpace, space_of
from simcal.tables import reject_reserved, reject_unusable_names
from wrapper_rules.memory import memory_limit

log = logging.getLogger(__name__)

DESIGNS = ("sobol", "lhs", "random")
SOBOL_MAX_POINTS = 2**30  # scipy's Sobol engine (bits=30) draws no more distinct points
BOUND_KEYS = {"low", "high", "log", "integer"}


@dataclass(frozen=True)
class Bound:
    name: str
    low: float
    high: float
    log: bool = False
    integer: bool = False

    def scale(self, unit: np.ndarray) -> np.ndarray:
        """Points of the unit interval to parameter values. Integers: the floor of a value drawn over [low, high + 1),
        uniformly or, with ``log``, log-uniformly, so that every whole number k gets the share of [k, k + 1): the
        same share each, or log(k + 1) - log(k) of log(high + 1) - log(low) (rounding a draw over [low, high] gave
        the two ends half a share each)."""
        if self.integer:
            if self.log:
                values = np.floor(
                    np.exp(np.log(self.low) + unit * (np.log(self.high + 1) - np.log(self.low)))
                )
            else:
                values = np.floor(self.low + unit * (self.high - self.low + 1))
            return np.clip(values, self.low, self.high).astype(np.int64)
        if self.log:
            return np.exp(np.log(self.low) + unit * (np.log(self.high) - np.log(self.low)))
        return self.low + unit * (self.high - self.low)

    def unit(self, values: np.ndarray) -> np.ndarray:
        """The inverse of ``scale``: parameter values to the unit interval (an integer to the middle of its
        share)."""
        values = np.asarray(values, dtype=float)
        if self.log and self.integer:  # the middle of [k, k + 1) on the log scale
            position = (np.log(values * (values + 1)) / 2 - np.log(self.low)) / (
                np.log(self.high + 1) - np.log(self.low)
            )
        elif self.log:
            position = (np.log(values) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
        elif self.integer:
            position = (values - self.low + 0.5) / (self.high - self.low + 1)
        else:
            position = (values - self.low) / (self.high - self.low)
        return np.clip(position, 0.0, 1.0)


def parse_bounds(
    parameters: Mapping[str, Mapping[str, Any]],
    where: str = "calibration.parameters",
    space: ParameterSpace | None = None,
    model: str = "the model",
) -> list[Bound]:
    """Bounds from ``{name: {low, high, log, integer}}``; a name may not be empty or have spaces around it (as a
    parameter table's column); with a declared ``space`` each name must be one of the model's parameters, inside
    its declared bounds (an integer parameter gets integer bounds)."""
    if not isinstance(parameters, Mapping):
        raise ContractError(
            f"{where}: expected {{name: {{low: number, high: number}}, ...}}, got {parameters!r}"
        )
    if not parameters:
        raise ContractError(f"{where}: at least one parameter with low/high bounds is needed")
    # as a table's columns: the model would get ' gamma' (or ''), and its params.get('gamma', default) the default
    reject_unusable_names(parameters, where, "parameter")
    if space is not None:
        space.unknown(parameters, where, model)
    bounds = []
    for name, spec in parameters.items():
        if not isinstance(spec, Mapping) or not {"low", "high"} <= set(spec) or set(spec) - BOUND_KEYS:
            raise ContractError(
                f"{where}.{name}: expected {{low: number, high: number, log: bool, integer: bool}}, got {spec!r}"
            )
        try:
            low, high = float(spec["low"]), float(spec["high"])
        except (TypeError, ValueError) as error:
            raise ContractError(f"{where}.{name}: low and high must be numbers, got {spec!r}") from error
        flags = {key: spec.get(key, False) for key in ("log", "integer")}
        for key, flag in flags.items():  # bool() would read the text 'false' as true
            if not isinstance(flag, bool | np.bool_):
                raise ContractError(f"{where}.{name}.{key}: expected true or false, got {flag!r}")
        log_scale, integer = bool(flags["log"]), bool(flags["integer"])
        if not (math.isfinite(low) and math.isfinite(high)):  # an infinite bound would draw inf or NaN values
            raise ContractError(f"{where}.{name}: low and high must be finite numbers, got {low}, {high}")
        if not math.isfinite(high - low):  # -1e308..1e308: every drawn value was inf, the design unusable
            raise ContractError(
                f"{where}.{name}: high - low must be a finite number (at most about 1.8e308), got {low:g}, {high:g}"
            )
        if not low < high or (log_scale and low <= 0):
            hint = ""
            if low == high:  # nothing to sample or calibrate (an integer one at low 3, high 3 too)
                fixed = (
                    f"{where.removesuffix('parameters')}fixed" if where.endswith(".parameters") else "fixed"
                )
                held = int(low) if low.is_integer() else low
                hint = f"; a parameter held at one value belongs in {fixed}: {{{name}: {held}}}"
            raise ContractError(
                f"{where}.{name}: need low < high (and low > 0 when log: true), got {low}, {high}{hint}"
            )
        if space is not None:
            declared = space[name]
            if isinstance(declared, Choice):
                raise ContractError(
                    f"{where}.{name}: {model} declares it as a choice ({declared.describe()}); only numbers "
                    "can be calibrated or sampled: set it in fixed instead"
                )
            for value in (low, high):
                problem = declared.problem(value)
                if problem is not None:
                    raise ContractError(f"{where}.{name}: bound {problem} ({declared.describe()})")
            integer = integer or isinstance(declared, Integer)
        if integer and not (low.is_integer() and high.is_integer()):
            raise ContractError(
                f"{where}.{name}: an integer parameter needs whole-number bounds, got {low}, {high}"
            )
        if integer and max(abs(low), abs(high)) > 2**53:  # drawn as int64 through floats: 1e20 wrapped around
            raise ContractError(
                f"{where}.{name}: an integer parameter's bounds must lie within +-2**53, got {low:g}, {high:g}"
            )
        bounds.append(Bound(str(name), low, high, log_scale, integer))
    return bounds


class Design:
    """A stream of quasi-random points; successive ``draw`` calls continue the same sequence.

    A Sobol sequence is balanced in blocks of powers of two: draws of 2^m points starting at a multiple of 2^m
    keep that balance (``balanced_block`` says whether a draw will).
    """

    def __init__(self, bounds: list[Bound], kind: str = "sobol", seed: int = 0):
        if kind not in DESIGNS:
            raise ContractError(f"design {kind!r} is unknown; expected one of {list(DESIGNS)}")
        self.bounds, self.kind, self.drawn = bounds, kind, 0
        dims = len(bounds)
        if kind == "sobol":
            self.engine = qmc.Sobol(d=dims, scramble=True, seed=seed)
        elif kind == "lhs":
            self.engine = qmc.LatinHypercube(d=dims, seed=seed)
        else:
            self.engine = np.random.default_rng(seed)

    def balanced_block(self, n: int) -> bool:
        power_of_two = n > 0 and n & (n - 1) == 0
        return self.kind != "sobol" or (power_of_two and self.drawn % n == 0)

    def draw(self, n: int) -> pd.DataFrame:
        if self.kind == "random":
            unit = self.engine.random((n, len(self.bounds)))
        else:
            with warnings.catch_warnings():
                # Sobol balance is best at powers of two; other sizes are still valid low-discrepancy points.
                warnings.simplefilter("ignore", UserWarning)
                unit = self.engine.random(n)
        self.drawn += n
        return pd.DataFrame({b.name: b.scale(unit[:, i]) for i, b in enumerate(self.bounds)})


def sample_design(
    parameters: Mapping[str, Mapping[str, Any]],
    n: int,
    kind: str = "sobol",
    seed: int = 0,
    model_ref: str | None = None,
    where: str = "design parameters",
) -> pd.DataFrame:
    """``n`` parameter sets within the bounds (checked against ``model_ref``'s declared space when given)."""
    if not (isinstance(n, int | np.integer) and not isinstance(n, bool) and n >= 1):
        raise ContractError(f"{where}: the number of parameter sets n must be an integer >= 1, got {n!r}")
    if not is_whole_number(seed, 0):  # numpy's own words, 'expected non-negative integer', name no setting
        raise ContractError(f"{where}: the design's seed must be a whole number >= 0, got {seed!r}")
    # The design is a sweep's parameter table, which refuses these names: say so before writing it.
    reject_reserved(parameters if isinstance(parameters, Mapping) else {}, where)
    space = space_of(model_ref) if model_ref else None
    bounds = parse_bounds(parameters, where, space, model_ref or "the model")
    check_design_size(int(n), len(bounds), kind, where)
    return Design(bounds, kind, int(seed)).draw(int(n))


def check_design_size(n: int, dims: int, kind: str, where: str = "design parameters") -> None:
    """Refuse, before anything is allocated, a design that cannot be drawn: a Sobol one of more than 2**30 points
    (scipy's limit), or one whose points, n x parameters x 8 bytes held twice (the unit points and the table),
    exceed the memory the process can have (``memory_limit``): numpy's MemoryError (or scipy's ValueError after
    the allocation) named no param."""
    if kind == "sobol" and n > SOBOL_MAX_POINTS:
        raise ContractError(
            f"{where}: the number of parameter sets n = {n} is more than a Sobol design draws (2**30 = "
            f"{SOBOL_MAX_POINTS}); give fewer, or kind lhs or random"
        )
    need, limit = 2 * n * max(dims, 1) * 8, memory_limit()
    if limit is not None and need > limit:
        raise ContractError(
            f"{where}: the number of parameter sets n = {n} does not fit in memory: {n} x {dims} parameter(s) x 8 "
            f"bytes, held twice while drawn, is {need / 2**30:.3g} GiB, but this process can have at most "
            f"{limit / 2**30:.3g} GiB (the machine's memory, its cgroup's limit or `ulimit -v`); give fewer"
        )


def write_design(
    parameters: Mapping[str, Mapping[str, Any]],
    n: int,
    output: str | Path,
    kind: str = "sobol",
    seed: int = 0,
    model: str | None = None,
) -> pd.DataFrame:
    """Sample a design and write it atomically as CSV, TSV or Parquet (chosen by the output's suffix); with
    ``model`` the parameters are checked against the model's declared space."""
    design = sample_design(parameters, n, kind, seed, model)
    write_table(design, output)
    log.info("wrote %d parameter sets (%s design, seed %d) to %s", len(design), kind, seed, output)
    return design
