"""Models used by the simcal tests (importable by Dask workers: spawned workers inherit sys.path)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd


def noisy_line(params, seed):
    """Cheap: a dict of scalars depending on params and the seed only."""
    rng = np.random.default_rng(seed)
    return {"y": params["a"] * 2.0 + rng.normal(), "pid": os.getpid()}


def series(params, seed):
    """A small table per simulation."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"t": np.arange(3), "value": params["a"] + rng.normal(size=3)})


def fails_for_negative(params, seed):
    if params["a"] < 0:
        raise ValueError(f"a must be >= 0, got {params['a']}")
    return {"y": float(params["a"])}


def counted_sleep(params, seed):
    """Sleeps, and appends one line per call to the file named by SIMCAL_TEST_COUNT (to count executions)."""
    time.sleep(float(params.get("sleep_s", 0.05)))
    count_file = os.environ.get("SIMCAL_TEST_COUNT")
    if count_file:
        with open(count_file, "a") as handle:
            handle.write(f"{params['a']}\n")
    return {"y": float(params["a"])}


def dies_once(params, seed):
    """Kills its worker process the first time it runs (a transient failure), then succeeds."""
    marker = Path(os.environ["SIMCAL_TEST_MARKER"])
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)
    return {"y": float(params["a"])}


def always_dies(params, seed):
    """Kills its worker every time: the batch is lost once Dask gives up on it."""
    os._exit(1)


not_callable = 42
