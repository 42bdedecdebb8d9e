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


def local_search(
    rounds: Rounds,
    bounds: list[Bound],
    trials: list[pd.DataFrame],
    settings,
    began,
    so_far: TrialsSoFar | None = None,
) -> None:
    """``refine.rounds`` rounds of the trust-region search on the refine rows, then the floor scan of
    ``refine.scan`` points (each appended to ``trials``). The rounds stop early when one has nothing new to propose
    (the radius has shrunk below the parameters' resolution); the scan then starts from that radius."""
    refine = settings.refine
    so_far = TrialsSoFar() if so_far is None else so_far
    region = None
    index = settings.rounds + 2
    for local_round in range(refine.rounds):
        units, losses, seen = refine_rows(so_far.fold(trials).refine, bounds)
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
        run_local(rounds, trials, so_far, proposals, refine.replicates, index, "local", what, began)
        index += 1
    if not refine.scan:
        return
    units, losses, seen = refine_rows(so_far.fold(trials).refine, bounds)
    if units is None:
        return
    region = region or TrustRegion.around(units, losses)
    scan = floor_scan(units, losses, region.radius, refine.scan)
    proposals = new_parameter_sets(scan, bounds, rounds.fixed, seen)
    if not proposals:
        log.info("floor scan skipped: too few refined parameter sets for a fit, or nothing new to try")
        return
    what = f"floor scan, radius {region.radius:.3g}"
    run_local(rounds, trials, so_far, proposals, refine.replicates, index, "scan", what, began)


def refine_rows(refined_tables: list[pd.DataFrame], bounds: list[Bound]):
    """(unit coordinates, losses, param_ids) of every refine row so far (``TrialsSoFar.refine``); (None, None, None)
    with a warning when no refined parameter set has a finite loss."""
    refined = pd.concat(refined_tables, ignore_index=True) if refined_tables else pd.DataFrame({"loss": []})
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


def run_local(rounds: Rounds, trials, so_far, proposals, replicates: int, index: int, method, what, began):
    table = rounds.run(proposals, replicates, {"round": index, "phase": "refine", "method": method})
    trials.append(table)
    log_round(index, what, table, so_far.fold(trials).best_loss, replicates, began)


def log_round(round_index, method, table, best_so_far, replicates, began) -> None:
    """The line of a round; ``best_so_far``: the lowest loss of every round up to this one (``TrialsSoFar``)."""
    log.info(
        "round %d (%s): %d parameter sets x %d replicates, best loss this round %.6g, overall %.6g (%.1f s)",
        round_index, method, len(table), replicates, table["loss"].min(), best_so_far, time.perf_counter() - began,
    )  # fmt: skip


class TrialsSoFar:
    """What the trial tables of the rounds so far add up to, each table folded in once as the list of them grows:
    the best loss, whether any simulation succeeded, the trial rows scored (some replicate succeeded), the first of
    them and whether any has a finite loss, and the refine rows. A round's checks and log line read these rather
    than concatenating every earlier round's table (which made a calibration's work grow with the square of its
    rounds); the figures are those of the concatenated tables."""

    def __init__(self):
        self.folded = 0  # how many tables of the list are folded in
        self.best_loss = float("nan")  # pd.concat(trials)["loss"].min(): NaN until a round has a loss
        self.succeeded = False
        self.scored = 0
        self.first_scored: str | None = None
        self.finite = False
        self.refine: list[pd.DataFrame] = []

    def fold(self, trials: list[pd.DataFrame]) -> TrialsSoFar:
        """Fold in the tables appended to ``trials`` since the last call (the list only grows)."""
        for table in trials[self.folded :]:
            self._add(table)
        self.folded = len(trials)
        return self

    def _add(self, table: pd.DataFrame) -> None:
        if "loss" in table:
            lowest = table["loss"].min()
            if not pd.isna(lowest) and (pd.isna(self.best_loss) or lowest < self.best_loss):
                self.best_loss = lowest
            self.finite = self.finite or bool(np.isfinite(table["loss"].astype(float)).any())
        if "replicates_ok" in table:
            ok = table["replicates_ok"].fillna(0)
            self.succeeded = self.succeeded or bool(ok.sum() > 0)
            scored = ok > 0
            self.scored += int(scored.sum())
            if self.first_scored is None and scored.any():
                self.first_scored = table.loc[scored, "param_id"].iloc[0]
        if "phase" in table:
            refined = table["phase"] == "refine"
            if refined.any():
                self.refine.append(table if refined.all() else table[refined])
