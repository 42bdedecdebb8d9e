"""Models for the Dask-on-SLURM tests: the SIR model made slow enough to interrupt, one that always fails, and one
that kills its worker for some parameter sets."""

import os
import time

from simcal.models.sir import simulate as sir_simulate


def slow_sir(params, seed):
    time.sleep(float(params["delay_s"]))
    return sir_simulate({k: v for k, v in params.items() if k != "delay_s"}, seed)


def always_fails(params, seed):
    raise RuntimeError(f"always_fails: refusing params {dict(params)} (test model)")


def crashes_late_for_high_beta(params, seed):
    """Kills its worker process 0.3 s in when beta > crash_above_beta; the others take 1.5 s, so on a worker of
    two threads one of them is running beside it when it dies."""
    if params["beta"] > params["crash_above_beta"]:
        time.sleep(0.3)
        os._exit(11)
    time.sleep(1.5)
    return sir_simulate({k: v for k, v in params.items() if k != "crash_above_beta"}, seed)
