"""A stochastic SIR epidemic (chain binomial, daily steps), its mean-field twin, and an observed-data generator.

``simulate(params, seed)`` returns one row per day with the new infections (``incidence``) and the number
infected (``prevalence``). ``mean_field`` runs the same daily recursion on expected values (no randomness): a
model whose loss surface has no Monte Carlo noise, for testing optimisers. Their parameters are declared in
``SPACE``: ``beta`` (transmission rate per day) and ``gamma`` (recovery rate per day) are required;
``population``, ``initial_infected`` and ``days`` have defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from simcal.space import Integer, ParameterSpace, Real

SPACE = ParameterSpace(
    beta=Real(low=0.0, description="transmission rate per day"),
    gamma=Real(low=0.0, description="recovery rate per day"),
    population=Integer(default=10_000, low=1, description="people"),
    initial_infected=Integer(default=10, low=1, description="infected on day 0"),
    days=Integer(default=100, low=1, description="days simulated"),
)
DEFAULTS = SPACE.defaults


def _start(params: Mapping[str, Any]) -> tuple[float, float, int, int, int]:
    p = SPACE.complete(params)
    population, infected = int(p["population"]), int(p["initial_infected"])
    if infected > population:
        raise ValueError(f"initial_infected ({infected}) exceeds population ({population})")
    return float(p["beta"]), float(p["gamma"]), population, infected, int(p["days"])


@SPACE.declare
def simulate(params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    beta, gamma, population, infected, days = _start(params)
    rng = np.random.default_rng(seed)
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


def mean_field_curves(
    beta, gamma, population: int, initial_infected: int, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """(daily new infections, number infected) of the mean-field recursion for arrays of ``beta`` and ``gamma``
    (broadcast together), each of shape ``broadcast(beta, gamma).shape + (days,)``. Vectorised, so a dense grid of
    parameters costs one pass."""
    beta, gamma = np.broadcast_arrays(np.asarray(beta, dtype=float), np.asarray(gamma, dtype=float))
    susceptible = np.full(beta.shape, float(population - initial_infected))
    infected = np.full(beta.shape, float(initial_infected))
    recover_fraction = 1.0 - np.exp(-gamma)
    incidence = np.zeros(beta.shape + (days,))
    prevalence = np.zeros(beta.shape + (days,))
    for day in range(days):
        new_infections = susceptible * (1.0 - np.exp(-beta * infected / population))
        recoveries = infected * recover_fraction
        susceptible = susceptible - new_infections
        infected = infected + new_infections - recoveries
        incidence[..., day] = new_infections
        prevalence[..., day] = infected
    return incidence, prevalence


@SPACE.declare
def mean_field(params: Mapping[str, Any], seed: int) -> pd.DataFrame:
    """The chain binomial's daily recursion on expected values; ``seed`` is ignored (the model is deterministic)."""
    beta, gamma, population, infected, days = _start(params)
    incidence, prevalence = mean_field_curves(beta, gamma, population, infected, days)
    return pd.DataFrame({"day": np.arange(days), "incidence": incidence, "prevalence": prevalence})


@SPACE.declare
def observe(
    params: Mapping[str, Any],
    seed: int,
    noise: str = "poisson",
    dispersion: float = 10.0,
    process: str = "stochastic",
) -> pd.DataFrame:
    """Observed daily incidence: one epidemic at known parameters plus reporting noise.

    ``process`` is ``"stochastic"`` (one run of ``simulate``) or ``"mean_field"``. ``noise`` is ``"poisson"``,
    ``"negbin"`` (negative binomial with the given ``dispersion``) or ``"none"``.
    """
    processes = {"stochastic": simulate, "mean_field": mean_field}
    if process not in processes:
        raise ValueError(f"process {process!r} is unknown; expected one of {sorted(processes)}")
    truth = processes[process](params, seed)
    rng = np.random.default_rng([seed, 1])
    mean = truth["incidence"].to_numpy(dtype=float)
    if noise == "poisson":
        observed = rng.poisson(mean)
    elif noise == "negbin":
        # numpy's parametrisation: n successes, p = n / (n + mean) gives the requested mean
        observed = rng.negative_binomial(dispersion, dispersion / (dispersion + np.maximum(mean, 1e-9)))
    elif noise == "none":
        observed = np.round(mean).astype(np.int64)
    else:
        raise ValueError(f"noise {noise!r} is unknown; expected 'poisson', 'negbin' or 'none'")
    return pd.DataFrame({"day": truth["day"], "incidence": observed})
