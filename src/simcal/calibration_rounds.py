"""A calibration's rounds (``simcal.calibrate``): parameter sets simulated on the shared simulator and made into
trial rows (``Rounds``; ``RoundStopped`` when the fail-fast rule stops one), the log line of each, the best
parameter sets so far (``top_parameter_sets``, which the refine step simulates again) and the refine step's local
search and floor scan (``local_search``, simcal.local_search's trust region on the refine rows)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from simcal.calibration_targets import ObservedKeys, TargetColumns, losses_for
from simcal.contract import param_id
from simcal.design import Bound
from simcal.local_search import TrustRegion, floor_scan
from simcal.runner import SimulationSettings, TooManyFailures, plan_tasks

# The calibration's logger, as before these functions left simcal.calibrate: its round lines keep their logger.
log = logging.getLogger("simcal.calibrate")


class Rounds:
    """Simulate parameter sets on the shared simulator and turn them into trial rows."""

    def __init__(
        self, simulator, store, observed, targets, fixed, simulation: SimulationSettings, columns=None
    ):
        self.simulator, self.store, self.observed, self.targets = simulator, store, observed, targets
        self.fixed, self.simulation = fixed, simulation
        self.columns: TargetColumns | None = columns  # the columns the targets name, seen so far
        self.keys = ObservedKeys(targets, observed)  # the observed keys no simulated row has, told once
        # Set by the last round: its refusal when no observed key matched any simulated row (run_rounds raises it
        # once the round's trials are kept)
        self.no_key_matched: str | None = None

    def run(
        self,
        proposals: list[dict[str, Any]],
        replicates: int,
        labels: dict[str, Any],
        fail_fast: bool = False,
    ) -> pd.DataFrame:
        """The trial rows of ``proposals``. ``fail_fast``: the sweep's rule (stop when every simulation of the timing
        probe failed); then ``RoundStopped`` carries the rows of what ran."""
        full_sets = [{**self.fixed, **p} for p in proposals]
        tasks = plan_tasks(full_sets, replicates, self.simulation.seed, self.simulation.common_random_numbers)
        try:
            frames = self.simulator.run(tasks, self.store, collect=True, fail_fast=fail_fast).frames
        except TooManyFailures as error:
            done = self.store.read(t for t in tasks if self.store.is_done(t))
            raise RoundStopped(error, self._rows(proposals, full_sets, replicates, labels, done)) from error
        return self._rows(proposals, full_sets, replicates, labels, frames)

    def _rows(self, proposals, full_sets, replicates, labels, frames: list[pd.DataFrame]) -> pd.DataFrame:
        parameters = ()
        if self.columns is not None:  # a column no parameter set returned: refused, not a round of NaN losses
            for frame in frames:  # the rows this round ran, and those read back from an earlier run's parts
                if self.columns.add(frame):
                    break
            self.columns.refuse_unseen()
            parameters = self.columns.parameters
        self.no_key_matched = self.keys.check(frames)
        losses = losses_for(frames, self.observed, self.targets, parameters).set_index("param_id")
        rows = []
        for proposal, full in zip(proposals, full_sets, strict=True):
            pid = param_id(full)
            measured = losses.loc[pid].to_dict() if pid in losses.index else {"loss": float("nan")}
            rows.append({**labels, "param_id": pid, "replicates": replicates, **proposal, **measured})
        return pd.DataFrame(rows)


class RoundStopped(Exception):
    """A round stopped by the fail-fast rule (``error``), with the trial rows of the simulations it ran."""

    def __init__(self, error: TooManyFailures, table: pd.DataFrame):
        super().__init__(str(error))
        self.error, self.table = error, table


def top_parameter_sets(trials: pd.DataFrame, names: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` distinct parameter sets with the lowest finite loss (ties: the earlier trial first)."""
    finite = trials[np.isfinite(trials["loss"].astype(float))]
    ranked = finite.sort_values("loss", kind="stable").drop_duplicates("param_id").head(k)
    return [{name: plain(row[name]) for name in names} for _, row in ranked.iterrows()]


def plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def local_search(rounds: Rounds, bounds: list[Bound], trials: list[pd.DataFrame], settings, began) -> None:
    """``refine.rounds`` rounds of the trust-region search on the refine rows, then the floor scan of
    ``refine.scan`` points (each appended to ``trials``). The rounds stop early when one has nothing new to propose
    (the radius has shrunk below the parameters' resolution); the scan then starts from that radius."""
    refine = settings.refine
    region = None
    index = settings.rounds + 2
    for local_round in range(refine.rounds):
        units, losses, seen = refine_rows(trials, bounds)
        if units is None:
            return
        region = region or TrustRegion.around(units, losses)
        proposals = new_parameter_sets(region.propose(units, losses), bounds, rounds.fixed, seen)
        if not proposals:
            log.info(
                "local search: converged after %d rounds (nothing new within the trust radius)", local_round
            )
            break
        what = f"local, radius {region.radius:.3g}"
        run_local(rounds, trials, proposals, refine.replicates, index, "local", what, began)
        index += 1
    if not refine.scan:
        return
    units, losses, seen = refine_rows(trials, bounds)
    if units is None:
        return
    region = region or TrustRegion.around(units, losses)
    scan = floor_scan(units, losses, region.radius, refine.scan)
    proposals = new_parameter_sets(scan, bounds, rounds.fixed, seen)
    if not proposals:
        log.info("floor scan skipped: too few refined parameter sets for a fit, or nothing new to try")
        return
    what = f"floor scan, radius {region.radius:.3g}"
    run_local(rounds, trials, proposals, refine.replicates, index, "scan", what, began)


def refine_rows(trials: list[pd.DataFrame], bounds: list[Bound]):
    """(unit coordinates, losses, param_ids) of every refine row so far; (None, None, None) with a warning when no
    refined parameter set has a finite loss."""
    refined = pd.concat(trials, ignore_index=True).query("phase == 'refine'")
    losses = refined["loss"].to_numpy(dtype=float)
    if not np.isfinite(losses).any():
        log.warning("local search skipped: no refined parameter set has a finite loss")
        return None, None, None
    units = np.column_stack([b.unit(refined[b.name].to_numpy()) for b in bounds])
    return units, losses, set(refined["param_id"])


def new_parameter_sets(points: np.ndarray, bounds: list[Bound], fixed, seen: set) -> list[dict[str, Any]]:
    """The parameter sets of ``points`` (unit coordinates) not simulated yet at the refine step's replicates."""
    proposals = []
    for point in points:
        params = {b.name: plain(b.scale(np.array([u]))[0]) for b, u in zip(bounds, point, strict=True)}
        key = param_id({**fixed, **params})
        if key not in seen:
            seen.add(key)
            proposals.append(params)
    return proposals


def run_local(rounds: Rounds, trials, proposals, replicates: int, index: int, method: str, what: str, began):
    table = rounds.run(proposals, replicates, {"round": index, "phase": "refine", "method": method})
    trials.append(table)
    log_round(index, what, table, trials, replicates, began)


def log_round(round_index, method, table, trials, replicates, began) -> None:
    best_so_far = pd.concat(trials)["loss"].min()
    log.info(
        "round %d (%s): %d parameter sets x %d replicates, best loss this round %.6g, overall %.6g (%.1f s)",
        round_index, method, len(table), replicates, table["loss"].min(), best_so_far, time.perf_counter() - began,
    )  # fmt: skip
