"""The "realistic" model of bench_simulate.py (~10 ms a simulation), in a module of its own so that the worker
processes and the one-simulation Snakemake jobs import only what the model needs.

Its epidemics are a chain binomial drawn with numpy's binomial sampler (what simcal.models.sir did before its
counts became quantiles of fixed uniforms, compiled with numba): numpy alone, so that a one-simulation job's cost
is the model and Python's start-up, not a numba import. Ten regions (five before) keep it at ~10 ms a simulation:
without the library model's per-call checks and tables, five cost ~5 ms."""

from __future__ import annotations

import numpy as np
import pandas as pd

REGIONS = 10
POPULATION, INFECTED, DAYS = 10_000, 10, 365


def chain_binomial(beta: float, gamma: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(daily new infections, number infected) of one regional epidemic."""
    rng = np.random.default_rng(seed)
    susceptible, infected = POPULATION - INFECTED, INFECTED
    recover_probability = 1.0 - np.exp(-gamma)
    incidence = np.zeros(DAYS, dtype=np.int64)
    prevalence = np.zeros(DAYS, dtype=np.int64)
    for day in range(DAYS):
        new_infections = rng.binomial(susceptible, 1.0 - np.exp(-beta * infected / POPULATION))
        recoveries = rng.binomial(infected, recover_probability)
        susceptible -= new_infections
        infected += new_infections - recoveries
        incidence[day], prevalence[day] = new_infections, infected
    return incidence, prevalence


def regional_sir(params: dict, seed: int) -> pd.DataFrame:
    """``REGIONS`` independent SIR epidemics over a year, and their summed daily incidence and prevalence (365
    rows)."""
    seeds = np.random.SeedSequence(seed).generate_state(REGIONS)
    runs = [chain_binomial(float(params["beta"]), float(params["gamma"]), int(s)) for s in seeds]
    return pd.DataFrame(
        {
            "day": np.arange(DAYS),
            "incidence": sum(run[0] for run in runs),
            "prevalence": sum(run[1] for run in runs),
        }
    )
