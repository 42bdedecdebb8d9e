"""Calibration targets: loss functions comparing simulated outputs with observed data.

A target is any ``"package.module:function"`` called as ``function(simulated, observed, **options) -> float``,
where ``simulated`` holds the successful replicates of one parameter set (column ``replicate`` tells them apart).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def _aligned(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str]
) -> pd.DataFrame:
    keys = [on] if isinstance(on, str) else list(on)
    for name, frame in (("simulated", simulated), ("observed", observed)):
        missing = [c for c in [*keys, column] if c not in frame.columns]
        if missing:
            raise KeyError(f"{name} data has no column(s) {missing}; it has {list(frame.columns)}")
    obs = observed[[*keys, column]].rename(columns={column: "observed"})
    sim = simulated[["replicate", *keys, column]].rename(columns={column: "simulated"})
    return sim.merge(obs, on=keys, how="inner")


def replicate_mean_mse(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str] = "day"
) -> float:
    """MSE between the observed series and the mean over replicates (no penalty for replicate spread)."""
    joined = _aligned(simulated, observed, column, on)
    if joined.empty:
        return float("nan")
    keys = [on] if isinstance(on, str) else list(on)
    mean = joined.groupby(keys, sort=False).agg(
        simulated=("simulated", "mean"), observed=("observed", "first")
    )
    return float(np.mean((mean["simulated"] - mean["observed"]) ** 2))


def mean_replicate_mse(
    simulated: pd.DataFrame, observed: pd.DataFrame, column: str, on: str | list[str] = "day"
) -> float:
    """Mean over replicates of each replicate's MSE (penalises replicate spread)."""
    joined = _aligned(simulated, observed, column, on)
    if joined.empty:
        return float("nan")
    squared = (joined["simulated"] - joined["observed"]) ** 2
    return float(squared.groupby(joined["replicate"]).mean().mean())
