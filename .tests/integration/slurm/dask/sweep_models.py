"""Models for the Dask-on-SLURM tests: the SIR model made slow enough to interrupt, and one that always fails."""

import time

from simcal.models.sir import simulate as sir_simulate


def slow_sir(params, seed):
    time.sleep(float(params["delay_s"]))
    return sir_simulate({k: v for k, v in params.items() if k != "delay_s"}, seed)


def always_fails(params, seed):
    raise RuntimeError(f"always_fails: refusing params {dict(params)} (test model)")
