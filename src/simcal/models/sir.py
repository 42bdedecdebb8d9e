"""A stochastic SIR epidemic (chain binomial, daily steps) and an observed-incidence generator.

``simulate(params, seed)`` returns one row per day with the new infections (``incidence``).
Parameters: ``beta`` (transmission rate per day), ``gamma`` (recovery rate per day), and optionally
``population``, ``initial_infected``, ``days``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

DEFAULTS = {"population": 10_000, "initial_infected": 10, "days": 100}


def simulate(params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    p = {**DEFAULTS, **params}
    beta, gamma = float(p["beta"]), float(p["gamma"])
    if not (beta > 0 and gamma > 0):
        raise ValueError(f"beta and gamma must be positive, got beta={beta}, gamma={gamma}")
    population, days = int(p["population"]), int(p["days"])
    rng = np.random.default_rng(seed)
    infected = int(p["initial_infected"])
    susceptible = population - infected
    recover_probability = 1.0 - np.exp(-gamma)
    incidence = np.zeros(days, dtype=np.int64)
    prevalence = np.zeros(days, dtype=np.int64)
    for day in range(days):
        infect_probability = 1.0 - np.exp(-beta * infected / population)
        new_infections = rng.binomial(susceptible, infect_probability)
        recoveries = rng.binomial(infected, recover_probability)
        susceptible -= new_infections
        infected += new_infections - recoveries
        incidence[day] = new_infections
        prevalence[day] = infected
    return pd.DataFrame({"day": np.arange(days), "incidence": incidence, "prevalence": prevalence})


def observe(
    params: Mapping[str, Any], seed: int, noise: str = "poisson", dispersion: float = 10.0
) -> pd.DataFrame:
    """Observed daily incidence: one simulation at known parameters plus reporting noise.

    ``noise`` is ``"poisson"`` or ``"negbin"`` (negative binomial with the given ``dispersion``) or ``"none"``.
    """
    truth = simulate(params, seed)
    rng = np.random.default_rng([seed, 1])
    mean = truth["incidence"].to_numpy(dtype=float)
    if noise == "poisson":
        observed = rng.poisson(mean)
    elif noise == "negbin":
        # numpy's parametrisation: n successes, p = n / (n + mean) gives the requested mean
        observed = rng.negative_binomial(dispersion, dispersion / (dispersion + np.maximum(mean, 1e-9)))
    elif noise == "none":
        observed = mean.astype(np.int64)
    else:
        raise ValueError(f"noise {noise!r} is unknown; expected 'poisson', 'negbin' or 'none'")
    return pd.DataFrame({"day": truth["day"], "incidence": observed})
