"""Parameter spaces and quasi-random designs (Sobol, Latin hypercube) from scipy.stats.qmc."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import qmc

from simcal.contract import ContractError

DESIGNS = ("sobol", "lhs", "random")


@dataclass(frozen=True)
class Bound:
    name: str
    low: float
    high: float
    log: bool = False

    def scale(self, unit: np.ndarray) -> np.ndarray:
        if self.log:
            return np.exp(np.log(self.low) + unit * (np.log(self.high) - np.log(self.low)))
        return self.low + unit * (self.high - self.low)


def parse_bounds(
    parameters: Mapping[str, Mapping[str, Any]], where: str = "calibration.parameters"
) -> list[Bound]:
    if not parameters:
        raise ContractError(f"{where}: at least one parameter with low/high bounds is needed")
    bounds = []
    for name, spec in parameters.items():
        try:
            low, high, log = float(spec["low"]), float(spec["high"]), bool(spec.get("log", False))
        except (KeyError, TypeError, ValueError) as error:
            raise ContractError(
                f"{where}.{name}: expected {{low: number, high: number, log: bool}}, got {spec!r}"
            ) from error
        if not low < high or (log and low <= 0):
            raise ContractError(
                f"{where}.{name}: need low < high (and low > 0 when log: true), got {low}, {high}"
            )
        bounds.append(Bound(str(name), low, high, log))
    return bounds


class Design:
    """A stream of quasi-random points; successive ``draw`` calls continue the same sequence."""

    def __init__(self, bounds: list[Bound], kind: str = "sobol", seed: int = 0):
        if kind not in DESIGNS:
            raise ContractError(f"design {kind!r} is unknown; expected one of {list(DESIGNS)}")
        self.bounds, self.kind = bounds, kind
        dims = len(bounds)
        if kind == "sobol":
            self.engine = qmc.Sobol(d=dims, scramble=True, seed=seed)
        elif kind == "lhs":
            self.engine = qmc.LatinHypercube(d=dims, seed=seed)
        else:
            self.engine = np.random.default_rng(seed)

    def draw(self, n: int) -> pd.DataFrame:
        if self.kind == "random":
            unit = self.engine.random((n, len(self.bounds)))
        else:
            with warnings.catch_warnings():
                # Sobol balance is best at powers of two; other sizes are still valid low-discrepancy points.
                warnings.simplefilter("ignore", UserWarning)
                unit = self.engine.random(n)
        return pd.DataFrame({b.name: b.scale(unit[:, i]) for i, b in enumerate(self.bounds)})


def sample_design(
    parameters: Mapping[str, Mapping[str, Any]], n: int, kind: str = "sobol", seed: int = 0
) -> pd.DataFrame:
    """``n`` parameter sets within the bounds."""
    return Design(parse_bounds(parameters), kind, seed).draw(int(n))
