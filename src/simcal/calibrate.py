"""Calibration in rounds on one Dask cluster: a quasi-random design, then Optuna TPE in ask/tell form.

Each round is one batch of parameter sets × replicates simulated through the same ``Simulator`` (so the same
batching, failure rows and resumable Parquet parts as a plain sweep). Rounds are deterministic for a fixed seed,
so a rerun after a crash finds its finished simulations in ``<simulations>.partial`` and skips them.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from simcal.contract import ContractError, param_id, reject_unknown_keys, resolve_callable
from simcal.design import Bound, Design, parse_bounds
from simcal.runner import PartStore, SimulationSettings, Simulator, check_failures, plan_tasks
from simcal.tables import parameter_sets, write_parquet

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "sobol", "lhs", "random")


@dataclass
class CalibrationSettings:
    initial_design: str = "sobol"
    initial_points: int = 32
    sampler: str = "tpe"
    rounds: int = 4
    batch_size: int = 16
    seed: int = 1

    @classmethod
    def from_config(cls, options: Mapping[str, Any] | None) -> CalibrationSettings:
        options = dict(options or {})
        reject_unknown_keys(options, cls.__dataclass_fields__, "calibration.calibrate")
        settings = cls(**options)
        if settings.sampler not in SAMPLERS:
            raise ContractError(
                f"calibration.calibrate.sampler {settings.sampler!r}: expected one of {list(SAMPLERS)}"
            )
        if settings.initial_points < 1 or settings.rounds < 0 or settings.batch_size < 1:
            raise ContractError(
                "calibration.calibrate: initial_points >= 1, rounds >= 0 and batch_size >= 1 are required"
            )
        return settings


@dataclass
class Target:
    name: str
    function: Any
    options: dict[str, Any]
    weight: float = 1.0


def parse_targets(targets: Sequence[Mapping[str, Any]]) -> list[Target]:
    if not targets:
        raise ContractError("calibration.targets: at least one target is needed")
    parsed = []
    for index, spec in enumerate(targets):
        spec = dict(spec)
        if "function" not in spec:
            raise ContractError(f"calibration.targets[{index}]: 'function' (module:function) is required")
        function = resolve_callable(spec.pop("function"), what=f"calibration.targets[{index}].function")
        name = str(spec.pop("name", None) or f"target_{index}")
        weight = float(spec.pop("weight", 1.0))
        parsed.append(Target(name, function, spec, weight))
    return parsed


def losses_for(frames: list[pd.DataFrame], observed: pd.DataFrame, targets: list[Target]) -> pd.DataFrame:
    """One row per param_id: each target's loss, the weighted total, and replicate counts."""
    if not frames:
        return pd.DataFrame(columns=["param_id", "loss", "replicates_ok", "replicates_failed"])
    sims = pd.concat(frames, ignore_index=True)
    rows = []
    for pid, group in sims.groupby("param_id", sort=False):
        ok = group[group["status"] == "ok"]
        replicate_status = group.drop_duplicates("replicate")["status"]
        row: dict[str, Any] = {
            "param_id": pid,
            "replicates_ok": int((replicate_status == "ok").sum()),
            "replicates_failed": int((replicate_status != "ok").sum()),
        }
        total = 0.0
        for target in targets:
            value = float(target.function(ok, observed, **target.options)) if len(ok) else float("nan")
            row[f"loss_{target.name}"] = value
            total += target.weight * value
        row["loss"] = total if math.isfinite(total) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


class Proposer:
    """Where the next parameter sets come from: the design for round 0, then the chosen sampler."""

    def __init__(self, bounds: list[Bound], settings: CalibrationSettings):
        self.bounds, self.settings = bounds, settings
        self.design = Design(bounds, settings.initial_design, settings.seed)
        self.later = (
            None if settings.sampler == "tpe" else Design(bounds, settings.sampler, settings.seed + 1)
        )
        sampler = optuna.samplers.TPESampler(
            seed=settings.seed, n_startup_trials=0, multivariate=True, constant_liar=True
        )
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(direction="minimize", sampler=sampler)
        self.distributions = {
            b.name: optuna.distributions.FloatDistribution(b.low, b.high, log=b.log) for b in bounds
        }
        self.pending: dict[str, list] = {}

    def ask(self, round_index: int) -> tuple[str, list[dict[str, float]]]:
        if round_index == 0:
            return self.settings.initial_design, self.design.draw(self.settings.initial_points).to_dict(
                "records"
            )
        if self.later is not None:
            return self.settings.sampler, self.later.draw(self.settings.batch_size).to_dict("records")
        trials = [self.study.ask(self.distributions) for _ in range(self.settings.batch_size)]
        proposals = [dict(t.params) for t in trials]
        for trial, params in zip(trials, proposals, strict=True):
            self.pending.setdefault(param_id(params), []).append(trial)
        return "tpe", proposals

    def tell(self, params: dict[str, float], loss: float) -> None:
        pid = param_id(params)
        state_ok = math.isfinite(loss)
        trials = self.pending.pop(pid, None)
        if trials:
            for trial in trials:
                if state_ok:
                    self.study.tell(trial, loss)
                else:
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif state_ok:  # design points join the study's history so TPE learns from them
            self.study.add_trial(
                optuna.trial.create_trial(params=params, distributions=self.distributions, value=loss)
            )


def calibrate(
    model_ref: str,
    observed: pd.DataFrame,
    parameters: Mapping[str, Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    simulations_output: str | Path,
    trials_output: str | Path,
    settings: CalibrationSettings | Mapping[str, Any] | None = None,
    simulation: SimulationSettings | Mapping[str, Any] | None = None,
    fixed_params: Mapping[str, Any] | None = None,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    threads: int = 1,
    client: Any = None,
) -> pd.DataFrame:
    """Run the calibration; write the simulations dataset and the trials table; return the trials."""
    if not isinstance(settings, CalibrationSettings):
        settings = CalibrationSettings.from_config(settings)
    if not isinstance(simulation, SimulationSettings):
        simulation = SimulationSettings.from_config(simulation)
    bounds = parse_bounds(parameters)
    parsed_targets = parse_targets(targets)
    resolve_callable(model_ref)
    fixed = dict(fixed_params or {})
    clash = set(fixed) & {b.name for b in bounds}
    if clash:
        raise ContractError(f"calibration: {sorted(clash)} are both calibrated and fixed")
    store = PartStore(simulations_output, {"model": model_ref, "replicates": simulation.replicates})
    proposer = Proposer(bounds, settings)
    trials: list[pd.DataFrame] = []
    began = time.perf_counter()
    with Simulator(model_ref, simulation, backend, backend_options, threads, client) as simulator:
        for round_index in range(settings.rounds + 1):
            method, proposals = proposer.ask(round_index)
            full_sets = [{**fixed, **p} for p in proposals]
            tasks = plan_tasks(full_sets, simulation.replicates)
            summary = simulator.run(tasks, store, collect=True)
            losses = losses_for(summary.frames, observed, parsed_targets).set_index("param_id")
            rows = []
            for proposal, full in zip(proposals, full_sets, strict=True):
                pid = param_id(full)
                loss = float(losses.loc[pid, "loss"]) if pid in losses.index else float("nan")
                proposer.tell(proposal, loss)
                rows.append(
                    {
                        "round": round_index,
                        "method": method,
                        "param_id": pid,
                        **proposal,
                        **losses.loc[pid].to_dict(),
                    }
                    if pid in losses.index
                    else {"round": round_index, "method": method, "param_id": pid, **proposal, "loss": loss}
                )
            round_table = pd.DataFrame(rows)
            trials.append(round_table)
            best_so_far = pd.concat(trials)["loss"].min()
            log.info(
                "round %d (%s): %d parameter sets x %d replicates, best loss this round %.4g, overall %.4g (%.1f s)",
                round_index, method, len(proposals), simulation.replicates, round_table["loss"].min(), best_so_far,
                time.perf_counter() - began,
            )  # fmt: skip
    check_failures(store, simulation.max_failed_fraction)
    table = pd.concat(trials, ignore_index=True)
    table.insert(0, "trial", np.arange(len(table)))
    write_parquet(table, trials_output)
    store.finalize()
    return table


def parameter_names(parameters: Mapping[str, Any]) -> list[str]:
    return [b.name for b in parse_bounds(parameters)]


__all__ = ["CalibrationSettings", "calibrate", "losses_for", "parameter_names", "parameter_sets"]
