"""Models used by the calibration tests (importable by Dask workers: spawned workers inherit sys.path), and the
SIR problem those tests share: its parameter bounds and its Poisson target."""

from __future__ import annotations

import os
import signal
import time

from simcal.models.sir import SPACE, mean_field
from simcal.targets import poisson_nll

BOUNDS = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.03, "high": 0.3}}
POISSON = [
    {"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence", "on": "day"}
]


@SPACE.declare
def mean_field_failing_above(params, seed):
    """The mean-field SIR, except that it raises for beta > 0.45 (a region where the model breaks)."""
    if params["beta"] > 0.45:
        raise ValueError(f"unstable for beta={params['beta']:.3f} > 0.45")
    return mean_field(params, seed)


def undeclared(params, seed):
    """A model without a declared parameter space: its parameters cannot be checked."""
    return {"y": float(params["a"])}


def distance_to_one(simulated, observed, **options):
    """A target for ``undeclared``: the mean squared distance of its output y from 1."""
    return float((simulated["y"] - 1.0).pow(2).mean())


SCORED = {"parameter_sets": 0}


def past_the_design() -> bool:
    """Counts the parameter set being scored (in the driver); True from the fifth on, after a design of four.
    Reset ``SCORED`` before use."""
    SCORED["parameter_sets"] += 1
    return SCORED["parameter_sets"] > 4


def distance_to_one_four_times(simulated, observed, **options):
    """``distance_to_one`` for the first four parameter sets it scores, then it raises: a target that breaks
    after the design."""
    if past_the_design():
        raise ValueError("cannot score a fifth parameter set")
    return distance_to_one(simulated, observed)


def distance_to_one_then_sigterm(simulated, observed, **options):
    """``distance_to_one`` for the first four parameter sets, then SIGTERM to this process (the driver), as a
    walltime or ``scancel`` sends it mid-run."""
    if past_the_design():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises in the main thread before this ends
    return distance_to_one(simulated, observed)


def poisson_nll_after_a_pause(simulated, observed, pause_s=0.5, **options):
    """``poisson_nll`` after ``pause_s`` seconds: the scoring of a round that takes longer than the progress
    file's rewrite interval (as a slow target or sampler does between a calibration's rounds)."""
    time.sleep(pause_s)
    return poisson_nll(simulated, observed, **options)


@SPACE.declare
def mean_field_failing_above_until_fixed(params, seed):
    """``mean_field_failing_above`` until SIMCAL_TEST_FIXED is set in the worker's environment (a failure that a
    fix outside the model's source file, or a flaky node, caused)."""
    if params["beta"] > 0.45 and not os.environ.get("SIMCAL_TEST_FIXED"):
        raise ValueError(f"unstable for beta={params['beta']:.3f} > 0.45")
    return mean_field(params, seed)


@SPACE.declare
def mean_field_slowly(params, seed):
    """The mean-field SIR after 0.2 s: simulations slow enough that a calibration stopped after its first batch
    leaves most of its round unsimulated."""
    time.sleep(0.2)
    return mean_field(params, seed)


def mean_field_cases_where_gamma_above(params, seed):
    """The mean-field SIR of beta, gamma and days (0.2 s each), whose rows hold a column ``cases`` (the incidence)
    only where gamma is above the parameter ``cases_above``: a column the model returns for some parameter sets
    only, as one present once an event happened. No declared space (it takes ``cases_above`` beside the SIR's)."""
    time.sleep(0.2)
    rows = mean_field({name: params[name] for name in ("beta", "gamma", "days")}, seed)
    if params["gamma"] > params["cases_above"]:
        rows["cases"] = rows["incidence"]
    return rows
