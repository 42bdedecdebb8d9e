"""Calibration in rounds on one Dask cluster: a quasi-random design, then Optuna TPE in ask/tell form, then a
refine step that re-simulates the best parameter sets with more replicates before the best one is chosen.

Phases (column ``phase`` of the trials table):

- ``design``: round 0, ``initial_points`` parameter sets from a Sobol, Latin hypercube or random design;
- ``search``: rounds 1..``rounds``, ``proposals_per_round`` parameter sets each from the sampler (Optuna TPE told
  every loss, or more points of the same design sequence);
- ``refine``: the ``refine.top_k`` distinct parameter sets with the lowest loss so far, simulated again with
  ``refine.replicates`` replicates (their first replicates are the ones already run: same param_id, same seeds).
  With ``refine.rounds`` > 0 a local search follows (``method`` ``local``, same phase): each round fits a
  quadratic to the refine rows around the best one and simulates its minimum within a trust radius and a few
  points around it (simcal.local_search), with the same replicates. With ``refine.scan`` > 0 a floor scan ends it
  (``method`` ``scan``): that many parameter sets along the fitted valley's floor near the best one. The best
  parameter set is the refine row with the lowest loss: a loss over few replicates is noisy, and the lowest of many
  noisy losses is optimistic.

Each round is one batch of parameter sets × replicates simulated through the same ``Simulator`` (so the same
batching, failure rows and resumable Parquet parts as a plain sweep). Rounds are deterministic for a fixed seed,
so a rerun after a crash finds its finished simulations in ``<simulations>.partial`` and skips them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from output_locks import output_lock
from simcal.backends import Terminated, check_backend

# The calibrate section's settings, the targets and losses, the proposer and the rounds live in modules of their
# own (calibration_settings, calibration_targets, calibration_proposer, calibration_rounds); their names are still
# importable from here.
from simcal.calibration_proposer import FAILED_LOSS, Proposer
from simcal.calibration_rounds import (
    Rounds,
    RoundStopped,
    TrialsSoFar,
    local_search,
    log_round,
    top_parameter_sets,
)
from simcal.calibration_settings import (
    RENAMED,
    SAMPLERS,
    WHERE,
    CalibrationSettings,
    RefineSettings,
    check_refine_replicates,
    check_round_plans,
)
from simcal.calibration_targets import (
    BUILT_IN_TARGETS,
    TRIAL_COLUMNS,
    Target,
    TargetColumns,
    check_observed_columns,
    losses_for,
    parse_targets,
    reject_trial_columns,
)
from simcal.contract import ContractError, resolve_model
from simcal.design import Bound, parse_bounds
from simcal.files import refuse_text_name
from simcal.model_code import model_code_digest, model_package_digest
from simcal.observed import read_observed
from simcal.runner import (
    PartStore,
    SimulationSettings,
    Simulator,
    TooManyFailures,
    check_failures,
)
from simcal.space import check_fixed, space_of
from simcal.tables import check_fixed_values, reject_reserved, write_parquet

log = logging.getLogger(__name__)


def check_model_parameters(
    model_ref: str, bounds_spec: Mapping[str, Any], fixed: Mapping[str, Any]
) -> list[Bound]:
    """Bounds of the calibrated parameters, checked against each other, ``fixed`` and the model's declared space.

    Names the simulations' own columns use (``seed``, ``status``...) are refused first: a model without a declared
    space cannot catch them, and they would replace the planned seed or be overwritten in every output row.
    """
    check_fixed_values(fixed, "calibration.fixed")
    reject_reserved(bounds_spec, "calibration.parameters")
    space = space_of(model_ref)
    bounds = parse_bounds(bounds_spec, "calibration.parameters", space, model_ref)
    clash = set(fixed) & {b.name for b in bounds}
    if clash:
        raise ContractError(f"calibration: {sorted(clash)} are both calibrated (parameters) and fixed")
    if space is not None:
        space.unknown(fixed, "calibration.fixed", model_ref)
        example = {**fixed, **{b.name: b.scale(np.array([0.5]))[0].item() for b in bounds}}
        space.check(example, "calibration.fixed with calibration.parameters", model_ref)
    return bounds


def calibration_manifest(
    model_ref: str,
    bounds: Sequence[Bound],
    fixed: Mapping[str, Any],
    targets: Sequence[Target],
    observed: pd.DataFrame,
    settings: CalibrationSettings,
    simulation: SimulationSettings,
) -> dict[str, Any]:
    """The resume record of a calibration, keyed by its whole plan as a sweep's is: everything that decides which
    simulations it runs. Its rounds are proposed as it goes (from the losses, hence the targets and the observed
    data), so there is no list of simulations to digest up front; rows are still kept by the keys each round plans.
    """
    values = pd.util.hash_pandas_object(observed, index=False).to_numpy().tobytes()
    observed_digest = hashlib.blake2b(repr(list(observed.columns)).encode() + values, digest_size=16)
    manifest = {
        "model": model_ref,
        "model_code": model_code_digest(model_ref),
        "model_package": model_package_digest(model_ref),
        "fixed": dict(fixed),
        "parameters": {
            b.name: {"low": b.low, "high": b.high, "log": b.log, "integer": b.integer} for b in bounds
        },
        "targets": [
            {"name": t.name, "function": t.reference, "weight": t.weight, **t.options} for t in targets
        ],
        "observed": observed_digest.hexdigest(),
        "calibration": asdict(settings),
        "replicates": simulation.replicates,
        "seed": simulation.seed,
        "common_random_numbers": simulation.common_random_numbers,
    }
    return json.loads(json.dumps(manifest, default=str))  # as it reads back from _manifest.json


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
    """Run the calibration; write the simulations file and the trials table; return the trials.

    The trials table is written even when too many simulations failed (TooManyFailures is raised after it), and
    then also kept as ``<trials>.failed.parquet``, a name that Snakemake's clean-up of a failed job's outputs
    leaves alone. Any other error of a round (a target that raises, no workers) and a stop by SIGTERM or Ctrl-C
    keep the finished rounds' trials there too, and say so in a note on the error; so does any failure or stop after
    the trials table is written (the merge of the simulations, the cluster's close, the removal of the parts). A
    run removes the file an earlier failed run kept when it starts, so that it is never taken for this run's. The returned table's
    ``attrs["resumed_simulations"]`` counts the simulations an earlier run had finished (read back from the parts).
    """
    if not isinstance(settings, CalibrationSettings):
        settings = CalibrationSettings.from_config(settings)
    refuse_text_name(simulations_output, "simulations")  # before the rounds, not after them
    refuse_text_name(trials_output, "trials")
    if not isinstance(simulation, SimulationSettings):
        simulation = SimulationSettings.from_config(simulation)
    resolve_model(model_ref)  # a bad reference or signature fails here, before anything is written
    check_backend(backend, backend_options, threads, client)
    fixed = dict(fixed_params or {})
    bounds = check_model_parameters(model_ref, parameters, fixed)
    # An Integer's 20.0 in calibration.fixed reaches the model as 20 (checked above, named as fixed)
    fixed = dict(check_fixed(model_ref, fixed, "calibration.fixed"))
    names = [b.name for b in bounds]
    parsed_targets = parse_targets(targets)
    reject_trial_columns(bounds, parsed_targets)
    check_observed_columns(observed, parsed_targets)
    check_refine_replicates(settings, simulation)
    check_round_plans(settings, simulation)
    manifest = calibration_manifest(model_ref, bounds, fixed, parsed_targets, observed, settings, simulation)
    # One calibration at a time per simulations output (see simcal.runner.simulate).
    with output_lock(simulations_output, "simulations output", stale_temporaries=True):
        kept = Path(trials_output).with_name(Path(trials_output).stem + ".failed.parquet")
        if kept.exists():  # an earlier failed run's table: this run's failure writes its own, or none
            kept.unlink()
            log.info("removed %s, the trials an earlier failed calibration kept", kept)
        # rerun_failed as in a sweep: the failed rows of earlier runs go before the first round, and every round
        # (re)plans its simulations from this run's own proposer, so no loss told earlier is kept (docs/simulation.md)
        store = PartStore(
            simulations_output, manifest, simulation.rerun_failed, timeout_s=simulation.timeout_s
        )
        proposer = Proposer(bounds, settings)
        trials: list[pd.DataFrame] = []
        began = time.perf_counter()
        # Everything up to finalize stays inside the block, so the progress file says failed (with the error) when
        # the threshold stops the run, and says finished only once the simulations file exists.
        with Simulator(model_ref, simulation, backend, backend_options, threads, client) as simulator:
            columns = TargetColumns(parsed_targets, model_ref, {*fixed, *(bound.name for bound in bounds)})
            rounds = Rounds(simulator, store, observed, parsed_targets, fixed, simulation, columns)
            stopped: TooManyFailures | None = None
            where = ""
            try:
                run_rounds(rounds, proposer, trials, names, settings, simulation, began)
            except RoundStopped as stop:
                trials.append(stop.table)
                stopped = stop.error
                where = (
                    f" The calibration stopped in round {stop.table['round'].iloc[0]}; no later round ran."
                )
            except (Exception, Terminated, KeyboardInterrupt) as error:
                # A target that raises, no workers left, a lost scheduler, SIGTERM (a walltime, scancel or pod
                # deletion) or Ctrl-C: the rounds that finished are kept for the researcher (their simulations
                # resume from the parts anyway), under the name a failed job keeps.
                if trials:
                    write_parquet(trials_table(trials), kept)
                    error.add_note(
                        f"The trials table of the {len(trials)} round(s) that finished is in {kept}."
                    )
                raise
            table = trials_table(trials)
            write_parquet(table, trials_output)

            def keep_trials(error: BaseException) -> None:
                """A step after the trials table was written failed (the failure threshold, the merge of the
                simulations, a SIGTERM while the cluster closes or the parts go): Snakemake deletes the table with
                the failed job's outputs, so it is kept as a failed job's is, unless a failure above kept it."""
                if not kept.exists():
                    write_parquet(table, kept)
                    error.add_note(
                        f"The trials table of every round, written before it failed, is in {kept}."
                    )

            simulator.on_failure(keep_trials)
            try:
                if stopped is not None:
                    raise stopped
                check_failures(store, simulation.max_failed_fraction)
            except TooManyFailures as error:
                write_parquet(table, kept)
                raise TooManyFailures(f"{error}{where} The trials table so far is in {kept}.") from error
            store.finalize(drop_parts=False)
            # Once the cluster has closed, as simulate does: a stop while it closes keeps them, and the progress
            # file says finished only after they are gone
            simulator.after_close(store.drop_parts)
        # After the table is written (to_parquet would store attrs): what the calibrate wrapper marks its benchmark by
        table.attrs["resumed_simulations"] = simulator.resumed
        return table


def run_rounds(
    rounds: Rounds,
    proposer: Proposer,
    trials: list[pd.DataFrame],
    names: list[str],
    settings: CalibrationSettings,
    simulation: SimulationSettings,
    began: float,
) -> None:
    """The design and search rounds, then the refine step, each round's trial rows appended to ``trials``."""
    refine = settings.refine
    so_far = TrialsSoFar()  # each round's table folded in once: a round's work does not grow with the rounds
    for round_index in range(settings.rounds + 1):
        method, proposals = proposer.ask(round_index)
        phase = "design" if round_index == 0 else "search"
        labels = {"round": round_index, "phase": phase, "method": method}
        # While no simulation has succeeded, a probe that fails whole says the model is broken (as in a sweep):
        # stop rather than spend the budget. Once one has, failures mark a region, which the penalty handles.
        table = rounds.run(proposals, simulation.replicates, labels, fail_fast=not so_far.succeeded)
        for proposal, loss in zip(proposals, table["loss"], strict=True):
            proposer.tell(proposal, float(loss))
        trials.append(table)
        log_round(round_index, method, table, so_far.fold(trials).best_loss, simulation.replicates, began)
        _refuse_targets_without_a_loss(so_far, getattr(rounds, "no_key_matched", None))
    best = top_parameter_sets(pd.concat(trials, ignore_index=True), names, refine.top_k)
    if best:
        labels = {"round": settings.rounds + 1, "phase": "refine", "method": "refine"}
        table = rounds.run(best, refine.replicates, labels)
        trials.append(table)
        log_round(
            settings.rounds + 1, "refine", table, so_far.fold(trials).best_loss, refine.replicates, began
        )
        local_search(rounds, proposer.bounds, trials, settings, began, so_far)
    elif refine.top_k:
        log.warning("refine skipped: no parameter set has a finite loss")


def _refuse_targets_without_a_loss(so_far: TrialsSoFar, no_key_matched: str | None = None) -> None:
    """Stop once simulations have succeeded but no parameter set has a finite loss: the targets cannot score this
    model's output against these observed data (most often no simulated row matches an observed key, e.g. days
    read as text), and every later round would be spent on NaN losses the sampler cannot learn from. Stop also
    when no observed key of a built-in target matched any simulated row of the last round (``no_key_matched``,
    the refusal ``Rounds`` found, naming the keys; a stand-in for the simulations has none), whatever the losses:
    they would mean nothing. ``so_far``: every round's trials, folded in (``TrialsSoFar.fold``)."""
    if no_key_matched is not None:
        raise ContractError(no_key_matched)
    if so_far.scored and not so_far.finite:
        raise ContractError(
            f"calibration targets gave no finite loss for any of the {so_far.scored} parameter set(s) whose "
            f"simulations succeeded (first: {so_far.first_scored}): check that the simulated "
            f"rows match the observed data on the targets' key columns (on), that the outputs are numbers, and for a "
            f"count likelihood that every replicate has a value at every observed key"
        )


def trials_table(trials: list[pd.DataFrame]) -> pd.DataFrame:
    """The trials table of the rounds' trial rows: numbered, with whole-number replicate counts."""
    table = pd.concat(trials, ignore_index=True)
    table.insert(0, "trial", np.arange(len(table)))
    for column in ("replicates_ok", "replicates_failed"):  # whole numbers, missing where nothing came back
        if column in table:
            table[column] = table[column].astype("Int64")
    return table


def calibrate_files(
    observed: str | Path,
    simulations: str | Path,
    trials: str | Path,
    *,
    model: str,
    parameters: Mapping[str, Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any] | None = None,
    simulation: Mapping[str, Any] | None = None,
    fixed: Mapping[str, Any] | None = None,
    backend: str = "local",
    backend_options: Mapping[str, Any] | None = None,
    threads: int = 1,
) -> pd.DataFrame:
    """``calibrate`` with the observed data read from a CSV, TSV or Parquet file; the keywords are the calibrate
    wrapper's params."""
    observed_data = read_observed(observed)
    check_observed_columns(observed_data, parse_targets(targets), f"observed data ({observed})")
    return calibrate(
        model, observed_data, parameters, targets, simulations, trials, settings, simulation, fixed,
        backend, backend_options, threads,
    )  # fmt: skip


def parameter_names(parameters: Mapping[str, Any]) -> list[str]:
    return [b.name for b in parse_bounds(parameters)]


__all__ = [
    "BUILT_IN_TARGETS",
    "FAILED_LOSS",
    "RENAMED",
    "SAMPLERS",
    "TRIAL_COLUMNS",
    "WHERE",
    "CalibrationSettings",
    "Proposer",
    "RefineSettings",
    "RoundStopped",
    "Rounds",
    "Target",
    "calibrate",
    "calibrate_files",
    "check_observed_columns",
    "check_refine_replicates",
    "local_search",
    "losses_for",
    "parameter_names",
    "parse_targets",
    "reject_trial_columns",
    "run_rounds",
    "top_parameter_sets",
    "trials_table",
]
