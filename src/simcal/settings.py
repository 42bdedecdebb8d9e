"""Typed simulation settings (the `simulation` section of the calibration config), checked once on entry."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from simcal.contract import ContractError, mapping_of, reject_unknown_keys

WHERE = "simulation settings"
# Settings that decide no row of a sweep's table: how often progress is written and how long the job waits for a
# worker (without one it fails and writes nothing). The calibration module keeps them out of its rerun trigger.
MONITORING = ("progress_seconds", "no_worker_timeout_s")


@dataclass
class SimulationSettings:
    replicates: int = 1
    batch_size: int | None = None  # None: chosen from a timing probe run on a worker
    target_task_seconds: float = 0.3  # aim of the automatic batch size (tasks of roughly 0.1-1 s)
    probe_seconds: float = 0.05
    max_batch_size: int = 100_000
    max_failed_fraction: float = 0.0
    # Deaths a simulation may cause before it is recorded as crashed (see simcal.outcomes.Deaths: batches whose
    # worker died are split until the culprit is alone, which then runs in a process of its own; only that
    # process's deaths count). Clusters simcal starts run Dask with allowed-failures 0 so that simcal does this
    # counting; an existing scheduler first reruns tasks per its own distributed.scheduler.allowed-failures.
    allowed_failures: int = 0
    timeout_s: float | None = (
        None  # a simulation running longer is stopped and recorded with status "timeout"
    )
    seed: int | None = (
        None  # master seed; None keeps the seeds of earlier versions (see contract.replicate_seed)
    )
    common_random_numbers: bool = False  # the same seeds for every parameter set (replicate r gets seed r's)
    rerun_failed: bool = False  # on a rerun, run again the simulations that failed, timed out or crashed
    no_worker_timeout_s: float = 1800.0  # fail when no Dask worker has been connected for this long
    progress_seconds: float = 5.0

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> SimulationSettings:
        options = mapping_of(options, WHERE)
        if "retries" in options:
            raise ContractError(
                f"{WHERE}: 'retries' was removed (remove it from the config). A model's exceptions are failure rows "
                "and are never retried; a batch whose worker dies is run again in halves until the simulation that "
                "kills its worker is alone; that one then runs in a process of its own and is recorded as crashed "
                "once that process has died more than 'allowed_failures' times"
            )
        reject_unknown_keys(options, cls.__dataclass_fields__, WHERE)
        # numpy scalars (what Snakemake's Paramspace.instance gives) count, and are kept, as the Python values they
        # hold: np.int64(2) is an integer >= 1
        options = {
            key: value.item() if isinstance(value, np.generic) else value for key, value in options.items()
        }
        if options.get("batch_size") == "auto":
            options["batch_size"] = None
        settings = cls(**options)
        settings.check()
        return settings

    def check(self) -> None:
        def need(ok: bool, key: str, expected: str) -> None:
            if not ok:
                raise ContractError(f"{WHERE}: {key} must be {expected}, got {getattr(self, key)!r}")

        need(_is_int(self.replicates) and self.replicates >= 1, "replicates", "an integer >= 1")
        need(
            self.batch_size is None or (_is_int(self.batch_size) and self.batch_size >= 1),
            "batch_size",
            'an integer >= 1 or "auto"',
        )
        need(_positive(self.target_task_seconds), "target_task_seconds", "a number > 0")
        need(_positive(self.probe_seconds), "probe_seconds", "a number > 0")
        need(_is_int(self.max_batch_size) and self.max_batch_size >= 1, "max_batch_size", "an integer >= 1")
        need(
            _number(self.max_failed_fraction) and 0 <= self.max_failed_fraction <= 1,
            "max_failed_fraction",
            "in [0, 1]",
        )
        need(
            _is_int(self.allowed_failures) and self.allowed_failures >= 0,
            "allowed_failures",
            "an integer >= 0",
        )
        need(self.timeout_s is None or _positive(self.timeout_s), "timeout_s", "a number > 0 or null")
        need(self.seed is None or (_is_int(self.seed) and self.seed >= 0), "seed", "an integer >= 0 or null")
        need(isinstance(self.common_random_numbers, bool), "common_random_numbers", "true or false")
        need(isinstance(self.rerun_failed, bool), "rerun_failed", "true or false")
        need(_positive(self.no_worker_timeout_s), "no_worker_timeout_s", "a number > 0")
        need(_positive(self.progress_seconds), "progress_seconds", "a number > 0")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive(value: Any) -> bool:
    return _number(value) and value > 0


def sweep_plan_record(fixed: Mapping[str, Any] | None, settings: SimulationSettings) -> str:
    """What a sweep's table records of the plan that wrote it beside its model (simcal.store.SWEEP_PLAN_RECORD):
    the fixed parameters and the settings less MONITORING, as JSON with sorted keys. The dry run's check of
    calibration.sweep.columns compares it with the plan the config now makes: another plan is simulated again
    (the calibration module reruns simulate when any of them changed), so the old table's columns say nothing."""
    kept = {key: value for key, value in asdict(settings).items() if key not in MONITORING}
    return json.dumps({"fixed": dict(fixed or {}), "settings": kept}, sort_keys=True, default=str)
