"""The "realistic" model of bench_simulate.py (~10 ms a simulation), in a module of its own so that the worker
processes and the one-simulation Snakemake jobs import only what the model needs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from simcal.models.sir import simulate as sir

REGIONS = 5


def regional_sir(params: dict, seed: int) -> pd.DataFrame:
    """``REGIONS`` independent SIR epidemics (simcal.models.sir) over a year, and their summed daily incidence and
    prevalence (365 rows)."""
    seeds = np.random.SeedSequence(seed).generate_state(REGIONS)
    runs = [sir({**params, "days": 365}, int(s)) for s in seeds]
    total = runs[0].copy()
    for run in runs[1:]:
        total[["incidence", "prevalence"]] += run[["incidence", "prevalence"]]
    return total
