"""Calibration: designs, parameter spaces, targets, the calibration loop (design, search, refine) on a real Dask
cluster, its analysis and pages, and the plain sweep's summary and page."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import re
import threading
import time
from pathlib import Path

import matplotlib
import numpy as np
import optuna
import pandas as pd
import pytest
import simcal_calibration_models
import yaml
from distributed import Client, LocalCluster
from scipy import stats
from simcal_calibration_models import BOUNDS, POISSON
from testkit import REPO, one_set_sweep_files, one_simulation_file, one_trial_calibration_files

from simcal.analyze import analyze_files, summarize_sweep, summarize_sweep_files
from simcal.backends import Terminated
from simcal.calibrate import (
    TRIAL_COLUMNS,
    CalibrationSettings,
    Proposer,
    calibrate,
    calibrate_files,
    local_search,
    losses_for,
    parse_targets,
    run_rounds,
    top_parameter_sets,
    trials_table,
)
from simcal.calibration_rounds import new_parameter_sets
from simcal.calibration_targets import ObservedKeys
from simcal.contract import ContractError, param_id, replicate_seed
from simcal.design import Design, parse_bounds, sample_design, write_design
from simcal.local_search import MAX_RADIUS
from simcal.logs import failure_logged
from simcal.models.sir import SPACE, mean_field_curves, observe
from simcal.models.sir import simulate as sir_simulate
from simcal.observed import generate_observed
from simcal.runner import TooManyFailures, read_results
from simcal.settings import SimulationSettings
from simcal.space import (
    Choice,
    Integer,
    ParameterSpace,
    Real,
    check_parameter_sets,
)
from simcal.targets import (
    mean_replicate_mse,
    negbin_log_likelihood,
    negbin_nll,
    poisson_log_likelihood,
    poisson_nll,
    replicate_mean_mse,
)
from simcal.visualize import (
    MAX_SUMMARY_ROWS,
    fit_figure,
    history_figure,
    loss_figure,
    render_page,
    sweep_outputs_figure,
    sweep_series_figure,
    visualize,
    visualize_sweep,
)

SIR = "simcal.models.sir:simulate"


@pytest.fixture(scope="module")
def client():
    """One LocalCluster with two worker processes for the module (starting one costs about a second)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as connected:
            yield connected


# -- designs and settings ------------------------------------------------------------------------------------------
def test_designs_stay_in_bounds_and_repeat_with_the_seed():
    bounds = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.01, "high": 1.0, "log": True}}
    for kind in ("sobol", "lhs", "random"):
        design = sample_design(bounds, 16, kind, seed=5)
        assert design["beta"].between(0.1, 0.6).all() and design["gamma"].between(0.01, 1.0).all()
        pd.testing.assert_frame_equal(design, sample_design(bounds, 16, kind, seed=5))
    lhs = sample_design({"x": {"low": 0, "high": 1}}, 10, "lhs", seed=1)
    assert sorted((lhs["x"] * 10).astype(int)) == list(range(10))  # one point per stratum
    with pytest.raises(ContractError, match="design parameters.beta: need low < high"):
        sample_design({"beta": {"low": 1, "high": 0}}, 4)
    with pytest.raises(ContractError, match="n must be an integer >= 1"):
        sample_design(bounds, 0)


def test_integer_parameters_get_every_whole_number_of_their_range():
    design = sample_design({"days": {"low": 10, "high": 13, "integer": True}}, 64, "sobol", seed=2)
    assert design["days"].dtype == np.int64 and set(design["days"]) == {10, 11, 12, 13}
    # evenly: 64 Sobol points put 16 in each quarter of the unit interval, so each whole number gets a quarter
    # (rounding low + u (high - low) would give the ends half a share each)
    assert design["days"].value_counts().to_dict() == {10: 16, 11: 16, 12: 16, 13: 16}
    # a parameter the model declares an Integer is sampled as one without saying so
    declared = sample_design({"days": {"low": 10, "high": 13}}, 8, "sobol", seed=2, model_ref=SIR)
    assert declared["days"].dtype == np.int64
    with pytest.raises(ContractError, match="days: an integer parameter needs whole-number bounds"):
        sample_design({"days": {"low": 10, "high": 12.5, "integer": True}}, 4)
    with pytest.raises(
        ContractError, match=r"days: bound 12.5 is not a whole number \(integer in \[1, inf\]"
    ):
        sample_design({"days": {"low": 10, "high": 12.5}}, 4, model_ref=SIR)


def test_another_seed_draws_another_design():
    bounds = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.01, "high": 1.0, "log": True}}
    for kind in ("sobol", "lhs", "random"):
        first, other = (sample_design(bounds, 16, kind, seed=seed) for seed in (5, 6))
        assert not first.equals(other), kind


@pytest.mark.parametrize(
    "spec",
    [
        {"low": 0.1, "high": 0.6},
        {"low": 0.01, "high": 1.0, "log": True},
        {"low": 10, "high": 13, "integer": True},
        {"low": 1, "high": 1000, "log": True, "integer": True},
    ],
)
def test_unit_coordinates_are_the_inverse_of_scale(spec):
    """The local search works in unit coordinates of the refined sets and scales its proposals back: a set's unit
    coordinate must scale back to the set itself, and the ends of the unit interval to the bounds."""
    (bound,) = parse_bounds({"x": spec})
    if bound.integer:
        values = np.arange(bound.low, bound.high + 1)
    else:
        values = np.linspace(bound.low, bound.high, 11)
    units = bound.unit(values)
    assert ((units >= 0) & (units <= 1)).all()
    np.testing.assert_allclose(bound.scale(units), values, rtol=1e-12)
    np.testing.assert_allclose(bound.scale(np.array([0.0, 1.0])), [bound.low, bound.high], rtol=1e-12)
    if bound.integer:
        # each whole number sits in the middle of its share of the unit interval (with log: of its share on the log
        # scale, log(k + 1) - log(k)): a step of less than half a share either way keeps it
        if bound.log:
            share = np.log((values + 1) / values) / np.log((bound.high + 1) / bound.low)
        else:
            share = 1.0 / (bound.high - bound.low + 1)
        for step in (-0.49 * share, 0.49 * share):
            assert (bound.scale(units + step) == values).all()


@pytest.mark.parametrize("kind", ["random", "sobol", "lhs"])
def test_log_scaled_integer_bounds_give_every_whole_number_its_share_of_the_log_scale(kind):
    """Bounds 1..10 with log and integer: a design draws k with the probability log(k + 1) - log(k) over
    log(11), the share of [k, k + 1) in [1, 11) on the log scale (the floor of a log-uniform draw over [1, 11)).
    Rounding a log-uniform draw over [1, 10] gave the ends half a share: 10 about 2.2% of the draws (log(10/9.5)
    over log(10)), where its share of the log scale is 4.0%. Checked with a chi-square test of the counts."""
    n = 2**14
    drawn = sample_design({"k": {"low": 1, "high": 10, "log": True, "integer": True}}, n, kind, seed=11)["k"]
    whole = np.arange(1, 11)
    counts = drawn.value_counts().reindex(whole, fill_value=0).to_numpy()
    expected = n * np.log((whole + 1) / whole) / np.log(11)
    assert counts.sum() == n and set(drawn) == set(whole.tolist())
    p_value = stats.chisquare(counts, expected).pvalue
    assert p_value > 1e-4, (
        f"{kind}: counts {counts.tolist()}, expected {expected.round(1).tolist()}, p {p_value:.2g}"
    )


def test_later_sobol_rounds_continue_one_sequence():
    bounds = parse_bounds(BOUNDS)
    settings = CalibrationSettings.from_config(
        {"initial_points": 16, "rounds": 2, "proposals_per_round": 8, "sampler": "sobol", "seed": 4}
    )
    proposer = Proposer(bounds, settings)
    drawn = [pd.DataFrame(proposer.ask(r)[1]) for r in range(3)]
    one_sequence = Design(bounds, "sobol", 4).draw(32)
    pd.testing.assert_frame_equal(pd.concat(drawn, ignore_index=True), one_sequence)
    assert proposer.later.balanced_block(8) and not proposer.later.balanced_block(12)


def test_a_sobol_draw_is_a_balanced_block_only_at_a_power_of_two_from_a_multiple_of_it():
    """simcal.design.Design: a Sobol draw of 2^m points keeps the sequence's balance only when it starts at a
    multiple of 2^m (after 4 points, 4 more do and 8 do not); Latin hypercube and random designs have no blocks to
    keep, so any draw of theirs is as good as another."""
    bounds = parse_bounds(BOUNDS)
    sobol = Design(bounds, "sobol", 4)
    assert sobol.balanced_block(8) and not sobol.balanced_block(6)
    sobol.draw(4)
    assert sobol.balanced_block(4) and not sobol.balanced_block(8)
    sobol.draw(4)
    assert sobol.balanced_block(8) and not sobol.balanced_block(16)
    for kind in ("lhs", "random"):
        design = Design(bounds, kind, 4)
        design.draw(3)
        assert design.balanced_block(12) and design.balanced_block(8), kind


def test_settings_name_the_setting_and_the_renamed_key():
    with pytest.raises(
        ContractError, match=r"calibration.calibrate.batch_size was renamed proposals_per_round"
    ):
        CalibrationSettings.from_config({"batch_size": 16})
    with pytest.raises(ContractError, match=r"calibration.calibrate.refine: unknown keys \['top'\]"):
        CalibrationSettings.from_config({"refine": {"top": 3}})
    with pytest.raises(
        ContractError, match=r"calibration.calibrate.proposals_per_round must be an integer >= 1"
    ):
        CalibrationSettings.from_config({"proposals_per_round": 0})
    with pytest.raises(ContractError, match=r"sampler must be one of"):
        CalibrationSettings.from_config({"sampler": "cmaes"})
    settings = CalibrationSettings.from_config({"refine": {"top_k": 0}})
    assert settings.refine.top_k == 0 and settings.refine.replicates == 32


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seed": -1}, r"calibration.calibrate.seed must be an integer in \[0, 2\*\*32 - 1\], got -1"),
        (
            {"seed": 2**32},
            r"calibration.calibrate.seed must be an integer in \[0, 2\*\*32 - 1\], got 4294967296",
        ),
        (
            {"refine": False},
            r"calibration.calibrate.refine: expected .*top_k: 0 turns the step off\), got False",
        ),
        ("sobol", r"calibration.calibrate: expected a mapping of settings, got 'sobol'"),
        # the schema's minimum (2), whether or not the step runs: the library and the config say the same
        ({"refine": {"top_k": 0, "replicates": 1}}, r"refine.replicates must be an integer >= 2, got 1"),
    ],
)
def test_settings_out_of_range_or_of_the_wrong_kind_are_named(options, message):
    """A seed the samplers cannot take fails when the settings are read, not inside Optuna or scipy once the
    simulation store is open; ``refine: false`` is no way to turn the refine step off (it would mean its defaults);
    ``refine.replicates`` below 2 is refused as the schema refuses it, even with the step off."""
    with pytest.raises(ContractError, match=message):
        CalibrationSettings.from_config(options)
    assert CalibrationSettings.from_config({"seed": 2**32 - 1, "refine": None}).refine.top_k == 8


# -- parameter spaces ----------------------------------------------------------------------------------------------
def test_a_misspelt_parameter_is_an_error_naming_it(tmp_path):
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 20}, 7)

    def run(parameters=BOUNDS, fixed=None):
        calibrate(SIR, observed, parameters, POISSON, tmp_path / "s.parquet", tmp_path / "t.parquet",
                  {"initial_points": 2, "rounds": 0}, {"replicates": 1}, fixed_params=fixed)  # fmt: skip

    with pytest.raises(ContractError, match=r"calibration.fixed: 'populaton' is not a parameter of "
                       r"simcal.models.sir:simulate \(did you mean 'population'\?\)"):  # fmt: skip
        run(fixed={"days": 20, "populaton": 500})
    with pytest.raises(ContractError, match=r"calibration.parameters: 'gama' is not a parameter .*'gamma'"):
        run(parameters={"beta": BOUNDS["beta"], "gama": BOUNDS["gamma"]})
    with pytest.raises(
        ContractError, match=r"calibration.parameters.beta: bound -0.2 is below its lower bound 0"
    ):
        run(parameters={"beta": {"low": -0.2, "high": 0.3}, "gamma": BOUNDS["gamma"]})
    with pytest.raises(ContractError, match=r"parameter 'days' = 20.5 is not a whole number"):
        run(fixed={"days": 20.5})
    with pytest.raises(ContractError, match=r"required parameter\(s\) \['gamma'\] .* have no value"):
        run(parameters={"beta": BOUNDS["beta"]})
    with pytest.raises(ContractError, match=r"\['beta'\] are both calibrated \(parameters\) and fixed"):
        run(fixed={"beta": 0.3})
    with pytest.raises(
        ContractError, match=r"refine.replicates \(4\) must exceed simulation.replicates \(4\)"
    ):
        calibrate(SIR, observed, BOUNDS, POISSON, tmp_path / "s.parquet", tmp_path / "t.parquet",
                  {"initial_points": 2, "rounds": 0, "refine": {"replicates": 4}}, {"replicates": 4},
                  fixed_params={"days": 20})  # fmt: skip
    assert not (tmp_path / "s.parquet.partial").exists()  # every check ran before anything was simulated


@pytest.mark.parametrize(
    ("parameters", "fixed", "expected"),
    [
        (
            {"a": {"low": 0.0, "high": 2.0}},
            {"seed": 5},
            r"calibration.fixed: parameter names \['seed'\] are reserved",
        ),
        (
            {"a": {"low": 0.0, "high": 2.0}, "status": {"low": 0.0, "high": 1.0}},
            None,
            r"calibration.parameters: parameter names \['status'\] are reserved",
        ),
        (  # the refine step read the best sets' 'loss' back as the parameter and ran the model at that value
            {"a": {"low": 0.0, "high": 2.0}, "loss": {"low": 0.0, "high": 0.5}},
            None,
            r"calibration.parameters: \['loss'\] would share a column of the trials table",
        ),
        (
            {"a": {"low": 0.0, "high": 2.0}, "loss_y": {"low": 0.0, "high": 0.5}},
            None,
            r"calibration.parameters: \['loss_y'\] would share a column of the trials table .*'loss_y'",
        ),
    ],
    ids=["fixed-seed", "calibrated-status", "calibrated-loss", "calibrated-loss-of-a-target"],
)
def test_reserved_names_are_refused_in_calibration_inputs_before_anything_runs(
    tmp_path, client, parameters, fixed, expected
):
    """A model that declares no parameters cannot catch them: a fixed ``seed`` would replace every simulation's
    planned seed (all of them lost), a calibrated ``status`` would be overwritten by the simulations' status, a
    calibrated ``loss`` (or ``loss_<target>``) by the trials table's loss."""
    target = [{"name": "y", "function": "simcal_calibration_models:distance_to_one"}]
    with pytest.raises(ContractError, match=expected):
        calibrate("simcal_calibration_models:undeclared", pd.DataFrame({"x": [1]}), parameters, target,
                  tmp_path / "s.parquet", tmp_path / "t.parquet",
                  {"initial_points": 4, "rounds": 0, "refine": {"top_k": 0}}, {"replicates": 1},
                  fixed_params=fixed, client=client)  # fmt: skip
    assert not (tmp_path / "s.parquet.partial").exists()  # refused before any simulation ran


def test_the_space_checks_tables_fixed_values_and_the_model_itself():
    space = ParameterSpace(
        rate=Real(low=0, high=1),
        count=Integer(default=3, low=1),
        mode=Choice(default="a", options=("a", "b")),
    )
    assert space.complete({"rate": 0.5}) == {"count": 3, "mode": "a", "rate": 0.5}
    with pytest.raises(ContractError, match=r"parameter 'mode' = 'c' is not one of \['a', 'b'\]"):
        space.check({"rate": 0.5, "mode": "c"}, "here")
    with pytest.raises(ContractError, match=r"parameter 'rate' = True is not a number"):
        space.check({"rate": True}, "here")
    with pytest.raises(ValueError, match="parameter 'count': default 0 is below its lower bound 1"):
        ParameterSpace(count=Integer(default=0, low=1))
    rows = [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.3, "gama": 0.1}]
    with pytest.raises(ContractError, match=r"params.csv, line 3: 'gama' is not a parameter"):
        check_parameter_sets(SIR, rows, "params.csv", ["line 2", "line 3"])
    check_parameter_sets(
        "simcal_calibration_models:undeclared", [{"anything": 1}]
    )  # nothing declared: unchecked
    with pytest.raises(
        ContractError, match=r"'populaton' is not a parameter"
    ):  # called directly, the model checks
        from simcal.models.sir import simulate

        simulate({"beta": 0.3, "gamma": 0.1, "populaton": 10}, 1)
    assert set(SPACE) == {"beta", "gamma", "population", "initial_infected", "days"}


def test_generated_observed_data_check_the_true_parameters(tmp_path):
    out = tmp_path / "observed.tsv"
    observed = generate_observed("simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1, "days": 30}, out, 7)
    pd.testing.assert_frame_equal(pd.read_csv(out, sep="\t"), observed)
    assert oct(out.stat().st_mode & 0o777) != oct(0o600)  # the umask decides, not mkstemp's private mode
    with pytest.raises(
        ContractError, match=r"observed.true_params, the true parameters: 'bta' is not a parameter"
    ):
        generate_observed("simcal.models.sir:observe", {"bta": 0.3, "gamma": 0.1}, out, 7)
    with pytest.raises(ContractError, match=r"unknown table format '.xlsx'"):
        generate_observed("simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1}, tmp_path / "o.xlsx", 7)


def test_generated_observed_data_are_the_generators_output_at_the_seed_with_the_fixed_values(tmp_path):
    fixed, true = {"days": 12}, {"beta": 0.3, "gamma": 0.1}
    made = {}
    for seed in (3, 4):
        made[seed] = generate_observed(
            "simcal.models.sir:observe", true, tmp_path / f"{seed}.csv", seed, fixed=fixed
        )
    for seed, observed in made.items():
        pd.testing.assert_frame_equal(observed, observe({**fixed, **true}, seed))
    assert not made[3].equals(made[4])


def test_written_designs_are_checked_against_the_model(tmp_path):
    design = write_design(BOUNDS, 8, tmp_path / "design.tsv", seed=3, model=SIR)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "design.tsv", sep="\t"), design)
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(ContractError, match=r"design parameters: 'populaton' is not a parameter"):
        write_design({"populaton": {"low": 1, "high": 2}}, 8, tmp_path / "bad.csv", model=SIR)


# -- targets -------------------------------------------------------------------------------------------------------
def test_mse_targets_on_a_hand_computed_example():
    observed = pd.DataFrame({"day": [0, 1], "incidence": [1.0, 3.0]})
    simulated = pd.DataFrame(
        {"replicate": [0, 0, 1, 1], "day": [0, 1, 0, 1], "incidence": [0.0, 2.0, 2.0, 6.0]}
    )
    # replicate means are (1, 4): errors (0, 1) -> MSE 0.5
    assert replicate_mean_mse(simulated, observed, "incidence", "day") == pytest.approx(0.5)
    # replicate 0 errors (-1, -1) -> 1; replicate 1 errors (1, 3) -> 5; mean 3
    assert mean_replicate_mse(simulated, observed, "incidence", "day") == pytest.approx(3.0)
    with pytest.raises(KeyError, match="observed data has no column"):
        replicate_mean_mse(simulated, observed.rename(columns={"incidence": "cases"}), "incidence", "day")


def test_mean_replicate_mse_averages_each_replicates_own_mse():
    """Replicate 1 has no row on day 1: its MSE is over day 0 alone, and the two MSEs weigh alike (not its rows)."""
    observed = pd.DataFrame({"day": [0, 1], "incidence": [1.0, 3.0]})
    simulated = pd.DataFrame({"replicate": [0, 0, 1], "day": [0, 1, 0], "incidence": [2.0, 5.0, 4.0]})
    # replicate 0: errors (1, 2) -> 2.5; replicate 1: error 3 -> 9; mean 5.75 (pooled rows would give 14 / 3)
    assert mean_replicate_mse(simulated, observed, "incidence", "day") == pytest.approx(5.75)


def test_the_total_loss_is_the_weighted_sum_of_the_targets():
    targets = parse_targets(
        [
            {"name": "mse", "function": "simcal.targets:replicate_mean_mse", "column": "y", "weight": 0.5},
            {"name": "nll", "function": "simcal.targets:poisson_nll", "column": "y", "weight": 2},
            {"name": "off", "function": "simcal.targets:replicate_mean_mse", "column": "y", "weight": 0},
        ]
    )
    frame = pd.DataFrame(
        {"param_id": "p", "replicate": [0, 1], "status": "ok", "day": [0, 0], "y": [1.0, 3.0]}
    )
    row = losses_for([frame], pd.DataFrame({"day": [0], "y": [4]}), targets).iloc[0]
    assert row["loss_mse"] == row["loss_off"] == pytest.approx(4.0)  # mean 2 against 4
    assert row["loss_nll"] == pytest.approx(-stats.poisson.logpmf(4, 2.0))
    assert row["loss"] == pytest.approx(0.5 * 4.0 + 2 * row["loss_nll"])
    # a target that is not finite (no floor under a simulated 0) leaves the total NaN, as a failed set's is
    targets[1].options["min_mean"] = 0.0
    row = losses_for([frame.assign(y=0.0)], pd.DataFrame({"day": [0], "y": [4]}), targets).iloc[0]
    assert row["loss_nll"] == math.inf and math.isnan(row["loss"])
    # with weight 0 the same target is recorded but not scored (0 x inf would be NaN: a failed set to the sampler)
    targets[1].weight = 0.0
    row = losses_for([frame.assign(y=0.0)], pd.DataFrame({"day": [0], "y": [4]}), targets).iloc[0]
    assert row["loss_nll"] == math.inf and row["loss"] == pytest.approx(0.5 * 16.0)


def test_the_replicate_mean_targets_use_the_mean_of_every_replicate():
    """Three replicates, skewed so that their mean and median differ: the expected value is the mean."""
    observed = pd.DataFrame({"day": [0, 1], "incidence": [3, 1]})
    per_day = {0: [0.0, 1.0, 8.0], 1: [1.0, 1.0, 4.0]}  # replicates 0, 1, 2
    simulated = pd.DataFrame(
        [(r, day, values[r]) for day, values in per_day.items() for r in range(3)],
        columns=["replicate", "day", "incidence"],
    )
    mean = np.array([np.mean(per_day[0]), np.mean(per_day[1])])
    seen = observed["incidence"].to_numpy()
    assert replicate_mean_mse(simulated, observed, "incidence") == pytest.approx(np.mean((mean - seen) ** 2))
    expected = -stats.poisson.logpmf(seen, mean).sum()
    assert poisson_nll(simulated, observed, "incidence") == pytest.approx(expected)
    assert negbin_nll(simulated, observed, "incidence", dispersion=3.0) == pytest.approx(
        -stats.nbinom.logpmf(seen, 3.0, 3.0 / (3.0 + mean)).sum()
    )


@pytest.mark.parametrize("dispersion", [0.05, 1.0, 10.0, 1e3, 99_999.0, 100_001.0, 1e6])
def test_count_log_likelihoods_agree_with_scipy(dispersion):
    rng = np.random.default_rng(1)
    counts = np.concatenate([[0, 0, 1, 7, 250, 10_000], rng.integers(0, 2000, 200)]).astype(float)
    means = np.concatenate([[1e-9, 3.0, 0.2, 7.5, 180.0, 12_500.0], rng.uniform(0.01, 3000, 200)])
    expected = stats.poisson.logpmf(counts, means)
    np.testing.assert_allclose(poisson_log_likelihood(counts, means), expected, rtol=1e-12, atol=1e-9)
    p = dispersion / (dispersion + means)
    np.testing.assert_allclose(
        negbin_log_likelihood(counts, means, dispersion),
        stats.nbinom.logpmf(counts, dispersion, p),
        rtol=1e-9,
        atol=1e-6,
    )


def test_negative_binomial_tends_to_the_poisson_without_losing_digits():
    counts = np.array([0.0, 1, 5, 100, 10_000])
    means = np.array([0.5, 1.5, 5.0, 80.0, 11_000.0])
    # the true difference is about counts^2 / (2 k); at k = 1e15 it is below 1e-7 for every count here
    np.testing.assert_allclose(
        negbin_log_likelihood(counts, means, 1e15), poisson_log_likelihood(counts, means), atol=1e-6
    )
    assert np.isfinite(negbin_log_likelihood(counts, means, 1e-3)).all()


@pytest.mark.parametrize("dispersion", [1e3, 99_999.0, 100_001.0, 1e6, 1e9])
def test_the_negative_binomial_is_exact_where_its_large_dispersion_series_takes_over(dispersion):
    """For a whole count c, Γ(c + k) / Γ(k) is the product of k + i over i < c: the log-likelihood written with
    that exact product (a sum of log1p terms, no cancelling gammaln) is the reference. scipy's nbinom loses digits
    at large k itself, so it cannot check the Stirling series the code uses past k = 1e5 to 1e-9."""
    counts = np.array([0.0, 1, 7, 250, 2_000, 10_000])
    means = np.array([0.5, 1.5, 7.5, 180.0, 2_300.0, 12_500.0])
    rising = np.array([math.fsum(np.log1p(np.arange(int(c)) / dispersion)) for c in counts])
    expected = (
        rising
        - np.array([math.lgamma(c + 1.0) for c in counts])
        - (dispersion + counts) * np.log1p(means / dispersion)
        + counts * np.log(means)
    )
    np.testing.assert_allclose(
        negbin_log_likelihood(counts, means, dispersion), expected, rtol=1e-12, atol=1e-9
    )


def test_count_targets_use_the_replicate_mean_and_floor_it():
    observed = pd.DataFrame({"day": [0, 1], "incidence": [2, 0]})
    simulated = pd.DataFrame({"replicate": [0, 0, 1, 1], "day": [0, 1, 0, 1], "incidence": [1, 0, 3, 0]})
    # replicate mean (2, 0), the 0 floored to min_mean 1e-3: -log P(2 | 2) - log P(0 | 1e-3)
    assert poisson_nll(simulated, observed, "incidence") == pytest.approx(
        -stats.poisson.logpmf(2, 2.0) + 1e-3
    )
    assert poisson_nll(simulated, observed, "incidence", min_mean=1e-12) == pytest.approx(
        -stats.poisson.logpmf(2, 2.0)
    )
    # without a floor, 0 observed where 0 is expected is certain (0 log 0 = 0), not a NaN loss
    assert poisson_nll(simulated, observed, "incidence", min_mean=0.0) == pytest.approx(
        -stats.poisson.logpmf(2, 2.0)
    )
    assert negbin_nll(simulated, observed, "incidence", dispersion=4.0, min_mean=0.0) == pytest.approx(
        -stats.nbinom.logpmf(2, 4.0, 4.0 / 6.0)
    )
    assert negbin_nll(simulated, observed, "incidence", dispersion=4.0) == pytest.approx(
        -stats.nbinom.logpmf(2, 4.0, 4.0 / 6.0) - stats.nbinom.logpmf(0, 4.0, 4.0 / 4.001)
    )
    # the floor lifts only a mean below it: means (1, 0) with min_mean 0.5 are scored as (1, 0.5), not shifted
    lower = simulated.assign(incidence=[0, 0, 2, 0])
    assert poisson_nll(lower, observed, "incidence", min_mean=0.5) == pytest.approx(
        -stats.poisson.logpmf(2, 1.0) - stats.poisson.logpmf(0, 0.5)
    )
    assert negbin_nll(lower, observed, "incidence", dispersion=4.0, min_mean=0.5) == pytest.approx(
        -stats.nbinom.logpmf(2, 4.0, 4.0 / 5.0) - stats.nbinom.logpmf(0, 4.0, 4.0 / 4.5)
    )
    dead = simulated.assign(incidence=0)  # expected 0 where 2 were seen: large but finite, thanks to min_mean
    assert poisson_nll(dead, observed, "incidence") == pytest.approx(-stats.poisson.logpmf(2, 1e-3) + 1e-3)
    with pytest.raises(
        ValueError, match=r"observed column 'incidence' must hold counts .* found 0.5 at day 1"
    ):
        poisson_nll(simulated, observed.assign(incidence=[2, 0.5]), "incidence")
    with pytest.raises(ValueError, match="negbin_nll: dispersion must be a finite number > 0, got 0"):
        negbin_nll(simulated, observed, "incidence", dispersion=0)


def test_a_target_that_fails_is_named_with_its_parameter_set():
    # (A simulated column the set lacks is no failure of the target: the set's loss is NaN, see
    # test_losses_for_gives_a_set_without_a_target_column_nan_and_scores_its_other_targets.)
    targets = parse_targets([{"name": "peak", "function": "simcal.targets:poisson_nll", "column": "peak"}])
    frame = pd.DataFrame({"param_id": "abc", "replicate": [0], "status": "ok", "day": [0], "peak": [1]})
    observed = pd.DataFrame({"day": [0], "incidence": [1]})
    with pytest.raises(ContractError, match=r"target 'peak' \(simcal.targets:poisson_nll\) failed on parameter "
                       r"set abc: KeyError.*observed data has no column"):  # fmt: skip
        losses_for([frame], observed, targets)
    with pytest.raises(ContractError, match=r"names must differ"):
        parse_targets([{"function": "simcal.targets:poisson_nll", "name": "a"}] * 2)


def test_top_parameter_sets_are_distinct_finite_and_ranked_by_loss_then_trial():
    # a was proposed twice (losses 1.0 and 3.0): it counts once, at its best; NaN and inf rank nowhere;
    # c and d tie on 2.0 and the earlier trial (d, row 2) comes first.
    trials = pd.DataFrame(
        {
            "param_id": ["a", "b", "d", "a", "c", "e"],
            "x": [1.0, 2.0, 4.0, 1.0, 3.0, 5.0],
            "loss": [3.0, float("nan"), 2.0, 1.0, 2.0, float("inf")],
        }
    )
    assert top_parameter_sets(trials, ["x"], 3) == [{"x": 1.0}, {"x": 4.0}, {"x": 3.0}]
    assert top_parameter_sets(trials, ["x"], 10) == [{"x": 1.0}, {"x": 4.0}, {"x": 3.0}]
    assert all(type(value) is float for row in top_parameter_sets(trials, ["x"], 3) for value in row.values())


# -- the calibration loop ------------------------------------------------------------------------------------------
def test_losses_that_are_not_finite_are_told_to_the_sampler_as_penalised_trials():
    """TPE models only completed trials, so a failed parameter set is told as completed (marked failed) with a loss
    that ranks below every finite one, told before or after it: a finite loss told later (100) may exceed any
    penalty computed from the losses so far, so the penalty is +inf."""
    settings = CalibrationSettings.from_config({"initial_points": 4, "rounds": 1, "proposals_per_round": 3})
    proposer = Proposer(parse_bounds(BOUNDS), settings)
    _, design = proposer.ask(0)
    for params, loss in zip(design, [float("nan"), 1.0, float("nan"), 12.0], strict=True):
        proposer.tell(params, loss)
    _, searched = proposer.ask(1)
    for params, loss in zip(searched, [math.inf, 100.0, 0.5], strict=True):  # +inf: failed as NaN is
        proposer.tell(params, loss)
    trials = proposer.study.trials
    assert len(trials) == 7 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    failed = [(t.params, t.value) for t in trials if t.user_attrs.get("failed")]
    assert failed == [(design[0], math.inf), (design[2], math.inf), (searched[0], math.inf)]
    # TPE's good/bad split sorts the trials by loss: every failed one comes after every finite one.
    ranked = sorted(trials, key=lambda trial: trial.value)
    assert [t.user_attrs.get("failed", False) for t in ranked] == [False] * 4 + [True] * 3
    assert max(t.value for t in trials if not t.user_attrs.get("failed")) == 100.0


def test_a_parameter_set_proposed_twice_in_a_round_is_told_once_per_proposal():
    """Three whole numbers to choose from: TPE proposes some twice in a round of 8. Each proposal completes one
    asked trial; the study holds one trial per proposal, each with the loss of its own parameters."""
    settings = CalibrationSettings.from_config({"initial_points": 4, "rounds": 2, "proposals_per_round": 8})
    proposer = Proposer(parse_bounds({"n": {"low": 1, "high": 3, "integer": True}}), settings)
    told = []  # 8 proposals among 3 values: each search round repeats some
    for round_index in range(3):
        _, proposals = proposer.ask(round_index)
        for params in proposals:
            proposer.tell(params, float(params["n"]))
        told += proposals
    trials = proposer.study.trials
    assert len(trials) == len(told), (len(trials), len(told))
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.value == t.params["n"] for t in trials)
    assert proposer.pending == {}


def tpe_proposals_in_a_failing_region(seed: int, tell_failed: bool) -> int:
    """TPE proposals with beta > 0.35 after a design where every set there failed (NaN loss), told or not."""
    settings = CalibrationSettings.from_config(
        {"initial_points": 16, "rounds": 1, "proposals_per_round": 8, "seed": seed}
    )
    proposer = Proposer(parse_bounds(BOUNDS), settings)
    _, design = proposer.ask(0)
    for params in design:
        if params["beta"] <= 0.35:
            proposer.tell(params, (params["beta"] - 0.3) ** 2)
        elif tell_failed:
            proposer.tell(params, float("nan"))
    _, proposals = proposer.ask(1)
    return sum(p["beta"] > 0.35 for p in proposals)


def test_parameter_sets_that_failed_steer_the_sampler_away_from_their_region():
    told = [tpe_proposals_in_a_failing_region(seed, True) for seed in (1, 2, 3)]
    untold = [tpe_proposals_in_a_failing_region(seed, False) for seed in (1, 2, 3)]
    assert sum(told) < sum(untold) / 2, (told, untold)


def grid_poisson_nll(observed: np.ndarray, beta, gamma, fixed: dict) -> np.ndarray:
    """The poisson_nll target of the mean-field model at every (beta, gamma), computed in one vectorised pass."""
    incidence, _ = mean_field_curves(
        beta, gamma, fixed["population"], fixed["initial_infected"], fixed["days"]
    )
    return -poisson_log_likelihood(observed, np.maximum(incidence, 1e-3)).sum(axis=-1)


MEAN_FIELD = {"population": 10_000, "initial_infected": 10, "days": 100}
SEARCH = {"initial_points": 32, "rounds": 12, "proposals_per_round": 16, "refine": {"top_k": 0}}


def optimise_in_process(observed: np.ndarray, seed: int, sampler: str = "tpe") -> pd.DataFrame:
    """The calibration's proposer driven without Dask: every proposal's loss computed on the spot."""
    settings = CalibrationSettings.from_config({**SEARCH, "seed": seed, "sampler": sampler})
    proposer, rows = Proposer(parse_bounds(BOUNDS), settings), []
    for round_index in range(settings.rounds + 1):
        _, proposals = proposer.ask(round_index)
        table = pd.DataFrame(proposals)
        table["loss"] = grid_poisson_nll(observed, table["beta"], table["gamma"], MEAN_FIELD)
        for params, loss in zip(proposals, table["loss"], strict=True):
            proposer.tell(params, float(loss))
        rows.append(table)
    return pd.concat(rows, ignore_index=True)


def test_calibration_reaches_the_likelihood_region_of_the_grid_optimum(tmp_path, client):
    """On a model without Monte Carlo noise (the mean-field SIR), the calibrated parameters lie inside the 95%
    likelihood-ratio region of the best fit a dense grid finds on the same data: the data cannot tell them apart.

    Tolerance: the region is {NLL <= min NLL + chi2(2 dof, 0.95) / 2 = 3.0}. The median over three sampler seeds
    is asserted, on the proposer driven in-process (224 evaluations each); the same budget of Sobol points alone
    (no optimiser) must miss it, and one run of ``calibrate`` on the Dask cluster must propose and score exactly
    what the in-process run of its seed did.
    """
    observed_frame = observe({**MEAN_FIELD, "beta": 0.3, "gamma": 0.1}, 7, process="mean_field")
    observed = observed_frame["incidence"].to_numpy(dtype=float)
    beta, gamma = np.linspace(0.1, 0.6, 251), np.linspace(0.03, 0.3, 271)
    grid_best = grid_poisson_nll(observed, beta[:, None], gamma[None, :], MEAN_FIELD).min()
    runs = {seed: optimise_in_process(observed, seed) for seed in (1, 2, 3)}
    excess = [run["loss"].min() - grid_best for run in runs.values()]
    tolerance = stats.chi2.ppf(0.95, 2) / 2
    assert np.median(excess) <= tolerance, excess
    unguided = [optimise_in_process(observed, seed, "sobol")["loss"].min() - grid_best for seed in (1, 2, 3)]
    assert np.median(unguided) > tolerance, unguided

    trials = calibrate(
        "simcal.models.sir:mean_field", observed_frame, BOUNDS, POISSON, tmp_path / "sims.parquet",
        tmp_path / "trials.parquet", {**SEARCH, "seed": 1}, {"replicates": 1, "batch_size": 32},
        fixed_params=MEAN_FIELD, client=client,
    )  # fmt: skip
    expected = runs[1]
    np.testing.assert_allclose(trials[["beta", "gamma"]].to_numpy(), expected[["beta", "gamma"]].to_numpy())
    np.testing.assert_allclose(trials["loss"], expected["loss"], rtol=1e-9)


def test_trials_are_written_when_the_failure_threshold_stops_the_run(tmp_path, client):
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    with pytest.raises(TooManyFailures, match=r"simulations failed .*ValueError: unstable for beta=.* The "
                       r"trials table so far is in .*trials.failed.parquet"):  # fmt: skip
        calibrate(
            "simcal_calibration_models:mean_field_failing_above", observed, BOUNDS, POISSON, tmp_path / "s.parquet",
            tmp_path / "trials.parquet", {"initial_points": 8, "rounds": 1, "proposals_per_round": 4,
                                          "refine": {"top_k": 2, "replicates": 2}},
            {"replicates": 1, "max_failed_fraction": 0.1, "batch_size": 4}, fixed_params={"days": 30}, client=client,
        )  # fmt: skip
    kept = pd.read_parquet(tmp_path / "trials.failed.parquet")
    pd.testing.assert_frame_equal(kept, pd.read_parquet(tmp_path / "trials.parquet"))
    # `simcal status` reads the progress file: a calibration the threshold stopped says so, as a sweep does.
    progress = json.loads((tmp_path / "s.parquet.progress.json").read_text())
    assert progress["state"] == "failed" and progress["message"].startswith("TooManyFailures: "), progress
    assert "trials table so far is in" in progress["message"] and not (tmp_path / "s.parquet").exists()
    # The resume record names the whole plan, as a sweep's does: model, parameters, fixed values, seeds, rounds.
    manifest = json.loads((tmp_path / "s.parquet.partial" / "_manifest.json").read_text())
    assert manifest["fixed"] == {"days": 30} and set(manifest["parameters"]) == {"beta", "gamma"}
    assert (manifest["replicates"], manifest["seed"], manifest["calibration"]["rounds"]) == (1, None, 1)
    unstable = kept["beta"] > 0.45
    assert unstable.any() and kept.loc[unstable, "loss"].isna().all()
    assert (kept.loc[unstable, "replicates_failed"] == 1).all()
    assert kept.loc[~unstable, "loss"].notna().all() and set(kept["phase"]) == {"design", "search", "refine"}
    # Rerun with a looser threshold: it resumes, finishes, and leaves no stale failed table beside the trials.
    finished = calibrate(
        "simcal_calibration_models:mean_field_failing_above", observed, BOUNDS, POISSON, tmp_path / "s.parquet",
        tmp_path / "trials.parquet", {"initial_points": 8, "rounds": 1, "proposals_per_round": 4,
                                      "refine": {"top_k": 2, "replicates": 2}},
        {"replicates": 1, "max_failed_fraction": 1.0, "batch_size": 4}, fixed_params={"days": 30}, client=client,
    )  # fmt: skip
    pd.testing.assert_frame_equal(finished, kept)
    assert (tmp_path / "s.parquet").exists() and not (tmp_path / "trials.failed.parquet").exists()


def target_column_typo_calibration(tmp_path, client) -> str:
    """A calibration whose target's column, ``cases``, is the observed data's name for the model's ``incidence``:
    no parameter set returns it. The message of the ContractError it stops with."""
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    observed = observed.rename(columns={"incidence": "cases"})  # the observed data's name, not the model's
    target = [{"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "cases", "on": "day"}]
    settings = {"initial_points": 8, "rounds": 1, "proposals_per_round": 4, "refine": {"top_k": 0}}
    with pytest.raises(ContractError) as stopped:
        calibrate(
            "simcal_calibration_models:mean_field_slowly", observed, BOUNDS, target, tmp_path / "s.parquet",
            tmp_path / "t.parquet", settings, {"replicates": 1, "batch_size": 1}, fixed_params={"days": 30},
            client=client,
        )  # fmt: skip
    return str(stopped.value)


def test_a_target_column_no_parameter_set_returns_stops_the_calibration_after_its_round(tmp_path, client):
    """The model declares no outputs, so a target's column is known to be missing only once rows come back. Before
    sim6 the round ran and the target then failed with a bare KeyError; a column that no parameter set of the round
    returned stops the calibration at the round's end, before any later round, naming the target, the column and
    the columns the model returned (a column some sets return and others not is not refused: see
    test_a_target_column_some_parameter_sets_return_scores_them_and_gives_the_others_nan_with_a_warning)."""
    message = target_column_typo_calibration(tmp_path, client)
    assert message.startswith(
        "calibration target 'incidence' (calibration.targets, options column and on): the rows model "
        "simcal_calibration_models:mean_field_slowly returned, for every parameter set so far, have no column(s) "
        "['cases']; they have ["
    ), message
    returned = message.split("they have ")[1].split("]")[0]
    assert "'incidence'" in returned and "'day'" in returned and "'status'" not in returned
    assert "'beta'" not in returned  # a parameter's column is no output
    parts = list((tmp_path / "s.parquet.partial").glob("*.parquet"))
    assert (
        pd.concat([pd.read_parquet(p) for p in parts])["param_id"].nunique() == 8
    )  # the design, no search round


def test_a_resumed_round_whose_rows_lack_a_target_column_is_refused_as_one_run_now(tmp_path, client):
    """The column check covers the rows read back from an earlier run's parts, not only the batches a run
    simulates: a rerun of the calibration above finds its whole design round in the parts, runs nothing, and stops
    with the same message. Without the check of those rows it would stop only at the generic "no finite loss"
    refusal, which names no column."""
    first = target_column_typo_calibration(tmp_path, client)
    assert "have no column(s) ['cases']" in first, first
    partial = tmp_path / "s.parquet.partial"
    parts = sorted(path.name for path in partial.glob("*.parquet"))
    assert target_column_typo_calibration(tmp_path, client) == first
    assert sorted(path.name for path in partial.glob("*.parquet")) == parts  # nothing simulated again


def test_a_target_column_some_parameter_sets_return_scores_them_and_gives_the_others_nan_with_a_warning(
    tmp_path, client, caplog
):
    """A model may return a target's column for some parameter sets only (here ``cases``, where gamma is above a
    value). Before, the calibration was refused as soon as its first stored batch lacked the column, although later
    batches had it. A set without it cannot be scored: its loss is NaN (told to the sampler as failed) and a
    warning names the sets and the column; the sets that return it are scored, and the search goes on."""
    caplog.set_level(logging.WARNING, logger="simcal")
    settings = {"initial_points": 8, "rounds": 1, "proposals_per_round": 4, "refine": {"top_k": 0}}
    design = Proposer(parse_bounds(BOUNDS), CalibrationSettings.from_config(settings)).ask(0)[1]
    # The first batches stored (batch_size 1, two workers: the first two design points) lack the column
    cases_above = max(point["gamma"] for point in design[:2])
    assert sum(point["gamma"] > cases_above for point in design) >= 2, design
    observed = observe({"beta": 0.5, "gamma": 0.1, "days": 30}, 7, process="mean_field")
    target = [{"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "cases", "on": "day"}]
    trials = calibrate(
        "simcal_calibration_models:mean_field_cases_where_gamma_above", observed.rename(columns={"incidence": "cases"}),
        BOUNDS, target, tmp_path / "s.parquet", tmp_path / "t.parquet", settings,
        {"replicates": 1, "batch_size": 1}, fixed_params={"days": 30, "cases_above": cases_above},
        client=client,
    )  # fmt: skip
    has_cases = trials["gamma"] > cases_above
    assert np.isfinite(trials.loc[has_cases, "loss"]).all() and has_cases.sum() >= 2, trials
    assert (
        trials.loc[~has_cases, "loss"].isna().all() and trials.loc[~has_cases, "loss_incidence"].isna().all()
    )
    assert set(trials["phase"]) == {"design", "search"}
    warnings = [r.getMessage() for r in caplog.records if "cannot be scored" in r.getMessage()]
    assert warnings and all("returned no value in column(s) ['cases']" in w for w in warnings), warnings
    named = " ".join(warnings)
    assert all(pid in named for pid in trials.loc[~has_cases, "param_id"]), (named, trials)
    assert not any(pid in named for pid in trials.loc[has_cases, "param_id"]), named


def test_losses_for_gives_a_set_without_a_target_column_nan_and_scores_its_other_targets(caplog):
    """losses_for, the unit the calibration scores with: a set whose rows hold other outputs but no value in a
    target's column (absent from its batch, or NaN beside a set that has it) gets NaN from that target and a
    warning naming it; its other targets still score it; a set of empty tables ("no events") is left to the
    target as before (no warning)."""
    caplog.set_level(logging.WARNING, logger="simcal")
    keys = {"replicate": 0, "seed": 1, "status": "ok", "error": None, "duration_s": 0.1}
    with_y = pd.DataFrame({"param_id": "p0", "a": 1.0, "t": [0, 1], "y": [1.0, 2.0], "z": [5.0, 6.0], **keys})
    without_y = pd.DataFrame({"param_id": "p1", "a": 2.0, "t": [0, 1], "z": [5.0, 6.0], **keys})
    empty = pd.DataFrame({"param_id": ["p2"], "a": 3.0, "t": [np.nan], **keys})
    observed = pd.DataFrame({"t": [0, 1], "y": [1.0, 2.0], "z": [5.0, 6.0]})
    targets = parse_targets(
        [
            {"name": "y", "function": "simcal.targets:replicate_mean_mse", "column": "y", "on": "t"},
            {"name": "z", "function": "simcal.targets:replicate_mean_mse", "column": "z", "on": "t"},
        ]
    )
    for frames in ([with_y, without_y, empty], [pd.concat([with_y, without_y, empty], ignore_index=True)]):
        caplog.clear()
        losses = losses_for(frames, observed, targets, {"a"}).set_index("param_id")
        assert losses.loc["p0", "loss"] == 0.0 and losses.loc["p1", "loss_z"] == 0.0
        assert math.isnan(losses.loc["p1", "loss_y"]) and math.isnan(losses.loc["p1", "loss"])
        assert [r.getMessage() for r in caplog.records] == [
            "calibration target 'y': 1 parameter set(s) returned no value in column(s) ['y'], so they cannot be "
            "scored on it: their loss is NaN (told to the sampler as failed): p1"
        ]


def test_a_target_that_fails_mid_run_keeps_the_finished_rounds_trials(tmp_path, client):
    """An error that is not the failure threshold (here a target that raises from the first search round on)
    still keeps the trials of the rounds that finished, and the error and the progress file say where."""
    settings = {"initial_points": 4, "rounds": 3, "proposals_per_round": 4, "refine": {"top_k": 0}}
    simcal_calibration_models.SCORED["parameter_sets"] = 0
    with pytest.raises(
        ContractError, match=r"target .* failed on parameter set .*cannot score a fifth"
    ) as caught:
        calibrate(
            "simcal_calibration_models:undeclared", pd.DataFrame({"y": [1.0]}), {"a": {"low": 0.0, "high": 1.0}},
            [{"function": "simcal_calibration_models:distance_to_one_four_times"}], tmp_path / "s.parquet",
            tmp_path / "trials.parquet", settings, {"replicates": 1}, client=client,
        )  # fmt: skip
    assert not (tmp_path / "trials.parquet").exists()  # the design finished; the whole run did not
    kept = tmp_path / "trials.failed.parquet"
    assert caught.value.__notes__ == [f"The trials table of the 1 round(s) that finished is in {kept}."]
    trials = pd.read_parquet(kept)
    assert list(trials["phase"]) == ["design"] * 4 and trials["loss"].notna().all(), trials
    progress = json.loads((tmp_path / "s.parquet.progress.json").read_text())
    assert progress["state"] == "failed" and str(kept) in progress["message"], progress


def test_a_failed_table_of_an_earlier_run_is_gone_once_a_new_run_fails_before_any_round_finishes(
    tmp_path, client
):
    """<trials>.failed.parquet stayed from an earlier failed run when a later one, with other settings, failed
    before any round finished (and so wrote none): only a success removed it, and the researcher could take the
    earlier run's trials for this run's. A run removes it when it starts."""
    kept = tmp_path / "trials.failed.parquet"
    target = [{"function": "simcal_calibration_models:distance_to_one_four_times"}]

    def run(initial_points):
        simcal_calibration_models.SCORED["parameter_sets"] = 0
        with pytest.raises(ContractError, match=r"cannot score a fifth") as caught:
            calibrate(
                "simcal_calibration_models:undeclared", pd.DataFrame({"y": [1.0]}), {"a": {"low": 0.0, "high": 1.0}},
                target, tmp_path / "s.parquet", tmp_path / "trials.parquet",
                {"initial_points": initial_points, "rounds": 2, "proposals_per_round": 4, "refine": {"top_k": 0}},
                {"replicates": 1}, client=client,
            )  # fmt: skip
        return getattr(caught.value, "__notes__", [])

    assert run(initial_points=4) == [f"The trials table of the 1 round(s) that finished is in {kept}."]
    assert len(pd.read_parquet(kept)) == 4  # the earlier run's design
    assert run(initial_points=6) == []  # a design of six: the target fails within it
    assert not kept.exists()


def test_a_calibration_stopped_by_sigterm_keeps_the_finished_rounds_trials(tmp_path, caplog):
    """SIGTERM mid-run (a walltime, scancel or pod deletion) is not an Exception but simcal's Terminated: the
    trials of the rounds that finished are still kept, as for any other error, and the rule's one-line log of the
    stop says where."""
    settings = {"initial_points": 4, "rounds": 3, "proposals_per_round": 4, "refine": {"top_k": 0}}
    simcal_calibration_models.SCORED["parameter_sets"] = 0
    with pytest.raises(Terminated) as caught, failure_logged("calibrate"):
        calibrate(
            "simcal_calibration_models:undeclared", pd.DataFrame({"y": [1.0]}), {"a": {"low": 0.0, "high": 1.0}},
            [{"function": "simcal_calibration_models:distance_to_one_then_sigterm"}], tmp_path / "s.parquet",
            tmp_path / "trials.parquet", settings, {"replicates": 1}, backend="local",
            backend_options={"workers": 1, "processes": False},
        )  # fmt: skip
    assert not (tmp_path / "trials.parquet").exists()
    kept = tmp_path / "trials.failed.parquet"
    assert caught.value.__notes__ == [f"The trials table of the 1 round(s) that finished is in {kept}."]
    trials = pd.read_parquet(kept)
    assert list(trials["phase"]) == ["design"] * 4 and trials["loss"].notna().all(), trials
    stops = [
        r.getMessage()
        for r in caplog.records
        if r.name == "simcal" and "stopped by SIGTERM" in r.getMessage()
    ]
    assert len(stops) == 1 and stops[0].endswith(f"is in {kept}."), stops


class ScriptedRounds:
    """Stands in for the simulations of ``run_rounds``: round i gets ``ok[i]`` successful replicates per set (loss
    ``loss[i]`` where they succeeded), and records the fail_fast each round was run with."""

    def __init__(self, ok: list[int], loss: list[float]):
        self.ok, self.loss, self.fail_fast, self.fixed = ok, loss, [], {}

    def run(self, proposals, replicates, labels, fail_fast=False):
        self.fail_fast.append(fail_fast)
        ok, loss = self.ok[labels["round"]], self.loss[labels["round"]]
        return pd.DataFrame(
            [{**labels, "param_id": f"{labels['round']}-{i}", "replicates": replicates, **p, "replicates_ok": ok,
              "replicates_failed": replicates - ok, "loss": loss if ok else math.nan} for i, p in enumerate(proposals)]
        )  # fmt: skip


def scripted_search(ok: list[int], loss: list[float]) -> tuple[ScriptedRounds, list[pd.DataFrame]]:
    settings = CalibrationSettings.from_config(
        {"initial_points": 2, "rounds": len(ok) - 1, "proposals_per_round": 2, "refine": {"top_k": 0}}
    )
    rounds, trials = ScriptedRounds(ok, loss), []
    run_rounds(rounds, Proposer(parse_bounds(BOUNDS), settings), trials, ["beta", "gamma"], settings,
            SimulationSettings.from_config({"replicates": 2}), 0.0)  # fmt: skip
    return rounds, trials


def test_the_fail_fast_rule_holds_only_until_a_simulation_has_succeeded():
    """While no simulation has succeeded a round whose probe fails whole stops the run; after one has, failures
    mark a region (the sampler's penalty), and a round that fails whole must not stop the calibration."""
    rounds, trials = scripted_search(ok=[0, 0, 1, 0, 2], loss=[math.nan, math.nan, 3.0, math.nan, 2.0])
    assert rounds.fail_fast == [True, True, True, False, False]
    assert len(trials) == 5


def test_targets_that_score_no_successful_simulation_stop_the_run_after_that_round():
    with pytest.raises(ContractError, match=r"targets gave no finite loss for any of the 2 parameter set\(s\) whose "
                       r"simulations succeeded \(first: 1-0\): check .*key columns \(on\)"):  # fmt: skip
        scripted_search(ok=[0, 2, 2, 2], loss=[math.nan, math.nan, 1.0, 1.0])
    _, trials = scripted_search(ok=[0, 2, 2], loss=[math.nan, 1.0, math.nan])  # one finite loss is enough
    assert len(trials) == 3


class WatchedRounds:
    """Stands in for the simulations of ``run_rounds`` (every replicate succeeds, the loss a bowl around beta 0.3,
    gamma 0.1) and counts the work the rounds' bookkeeping does on the trial tables: the rows of every table read
    by a column (``table[...]``) and the rows ``pd.concat`` copies out of them."""

    fixed: dict = {}

    def __init__(self, monkeypatch):
        self.rows_read = self.rows_concatenated = 0
        rounds = self

        class Watched(pd.DataFrame):  # the tables this returns; pandas makes plain DataFrames from them
            def __getitem__(self, key):
                rounds.rows_read += len(self)
                return super().__getitem__(key)

        self.watched, concat = Watched, pd.concat

        def counted_concat(objs, *args, **kwargs):
            objs = list(objs)
            rounds.rows_concatenated += sum(len(o) for o in objs if isinstance(o, Watched))
            return concat(objs, *args, **kwargs)

        monkeypatch.setattr(pd, "concat", counted_concat)

    def run(self, proposals, replicates, labels, fail_fast=False):
        return self.watched(
            [{**labels, "param_id": param_id(p), "replicates": replicates, **p, "replicates_ok": replicates,
              "replicates_failed": 0, "loss": (p["beta"] - 0.3) ** 2 + (p["gamma"] - 0.1) ** 2} for p in proposals]
        )  # fmt: skip


def watched_search(monkeypatch, rounds: int) -> tuple[WatchedRounds, list[pd.DataFrame]]:
    settings = CalibrationSettings.from_config(
        {"sampler": "random", "initial_points": 4, "rounds": rounds, "proposals_per_round": 4,
         "refine": {"top_k": 3, "replicates": 3, "rounds": 2}}
    )  # fmt: skip
    watched, trials = WatchedRounds(monkeypatch), []
    run_rounds(watched, Proposer(parse_bounds(BOUNDS), settings), trials, ["beta", "gamma"], settings,
               SimulationSettings.from_config({"replicates": 2}), 0.0)  # fmt: skip
    return watched, trials


def test_a_rounds_bookkeeping_does_not_grow_with_the_number_of_rounds(monkeypatch, caplog):
    """Each round's fail-fast rule, its log line's best loss so far and the check for targets without a finite loss
    read every earlier round's table (two of them through a pd.concat of all of them), so a calibration's work grew
    with the square of its rounds. Counted in rows read or copied: four times the rounds, four times the work, and
    each line's overall figure is still the best loss of every round up to it."""
    caplog.set_level(logging.INFO, logger="simcal.calibrate")
    work = {}
    for rounds in (10, 40):
        caplog.clear()
        watched, trials = watched_search(monkeypatch, rounds)
        work[rounds] = (watched.rows_read + watched.rows_concatenated) / sum(len(t) for t in trials)
        overall = re.findall(r"overall (\S+) \(", caplog.text)
        assert len(overall) == len(trials) > rounds + 1, caplog.text
        assert overall == [f"{pd.concat(trials[: i + 1])['loss'].min():.6g}" for i in range(len(trials))]
    assert work[40] <= 1.2 * work[10], work  # rows of work per trial row, the same at 10 and 40 rounds


def test_observed_keys_that_match_no_simulated_row_stop_the_calibration_after_the_design(tmp_path, client):
    """Observed days read as text never equal the simulated whole numbers: every loss would be NaN. The design's
    trials are kept, and no search round is spent on losses the sampler cannot learn from. The error names the
    target and shows observed and simulated keys side by side (before, it said only that no loss was finite)."""
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 20}, 7, process="mean_field")
    with pytest.raises(
        ContractError,
        match=r"calibration target 'incidence': none of the 20 observed keys \(day\) matches a simulated row of "
        r"the 4 parameter set\(s\) of this round, so no loss means anything: observed '0', '1', '2', '3', '4' "
        r"\.\.\. \(15 more\); simulated 0, 1, 2, 3, 4 \.\.\. \(15 more\)\. The targets match rows on \['day'\]",
    ) as caught:
        calibrate(
            "simcal.models.sir:mean_field", observed.assign(day=observed["day"].astype(str)), BOUNDS, POISSON,
            tmp_path / "s.parquet", tmp_path / "trials.parquet",
            {"initial_points": 4, "rounds": 3, "proposals_per_round": 4, "refine": {"top_k": 0}},
            {"replicates": 1}, fixed_params={"days": 20}, client=client,
        )  # fmt: skip
    kept = tmp_path / "trials.failed.parquet"
    assert str(kept) in caught.value.__notes__[0]
    trials = pd.read_parquet(kept)
    assert list(trials["phase"]) == ["design"] * 4 and (trials["replicates_ok"] == 1).all()


def test_observed_keys_the_model_never_simulates_are_warned_of_once_per_calibration(tmp_path, client, caplog):
    """Observed for 40 days and at day 0.5, the model simulates 30 days: the MSE target scores each set on the 30
    days both have and left the other 11 observed days out of the loss without a word. Now one warning per
    calibration (three rounds here, four sets each) says how many and which, and the losses are still scored."""
    caplog.set_level(logging.WARNING, logger="simcal")
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 40}, 7, process="mean_field", noise="none")
    half_day = pd.DataFrame({"day": [0.5], "incidence": [1.0]})
    observed = pd.concat([observed.iloc[:1], half_day, observed.iloc[1:]], ignore_index=True)
    target = [
        {"name": "mse", "function": "simcal.targets:replicate_mean_mse", "column": "incidence", "on": "day"}
    ]
    trials = calibrate(
        "simcal.models.sir:mean_field", observed, BOUNDS, target, tmp_path / "s.parquet", tmp_path / "t.parquet",
        {"initial_points": 4, "rounds": 2, "proposals_per_round": 4, "refine": {"top_k": 0}},
        {"replicates": 1}, fixed_params={"days": 30}, client=client,
    )  # fmt: skip
    assert list(trials["round"]) == [0] * 4 + [1] * 4 + [2] * 4 and np.isfinite(trials["loss"]).all(), trials
    warnings = [r.getMessage() for r in caplog.records if "observed keys" in r.getMessage()]
    assert warnings == [
        "calibration target 'mse': 11 of the 41 observed keys (day) have no simulated row in 4 of the 4 parameter "
        "set(s) of this round, so they are left out of those sets' loss: 0.5, 30.0, 31.0, 32.0, 33.0 ... (6 more) "
        "(told once per calibration)"
    ], warnings


def test_observed_keys_a_count_likelihood_lacks_are_named_and_a_round_without_a_match_is_refused(caplog):
    """The unit Rounds asks per round: a likelihood's warning says the loss is NaN; a set with no keyed rows (empty
    tables) is left out; a round where no key matches is refused only while none has matched before."""
    targets = parse_targets(POISSON)
    observed = pd.DataFrame({"day": [0, 1, 2], "incidence": [1, 2, 3]})
    keys = ObservedKeys(targets, observed)
    sim = pd.DataFrame(
        {"param_id": "p0", "replicate": 0, "status": "ok", "day": [0, 1], "incidence": [1.0, 2.0]}
    )
    empty = pd.DataFrame({"param_id": ["p1"], "replicate": 0, "status": "ok", "day": [np.nan]})
    none = sim.assign(param_id="p2", day=[7, 8])
    caplog.set_level(logging.WARNING, logger="simcal")
    assert keys.check([sim, empty]) is None
    assert keys.check([sim]) is None  # told once
    assert keys.check([none]) is None  # matched in an earlier round: the set's loss is NaN, no refusal
    assert [r.getMessage() for r in caplog.records] == [
        "calibration target 'incidence': 1 of the 3 observed keys (day) have no simulated row in 1 of the 1 "
        "parameter set(s) of this round, so those sets' loss is NaN (a count likelihood needs a simulated value at "
        "every observed key): 2 (told once per calibration)"
    ]
    refusal = ObservedKeys(targets, observed).check([none, empty])  # days made float by the NaN of empty
    assert refusal is not None and refusal.startswith(
        "calibration target 'incidence': none of the 3 observed keys (day) matches a simulated row of the 1 "
        "parameter set(s) of this round, so no loss means anything: observed 0, 1, 2; simulated 7.0, 8.0."
    ), refusal


def test_the_progress_file_stays_fresh_while_a_round_is_scored_between_simulations(tmp_path, client):
    """Between a calibration's rounds no simulation comes back (the targets score, the sampler proposes): the
    progress file is still rewritten every progress_seconds, so `simcal status` on another host does not call a
    busy calibration stale. Here each round's scoring takes 8 x 0.5 s, the file is rewritten every 0.5 s."""
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 20}, 7, process="mean_field")
    target = {**POISSON[0], "function": "simcal_calibration_models:poisson_nll_after_a_pause", "pause_s": 0.5}
    output = tmp_path / "s.parquet"
    seen: list[tuple[float, float, str]] = []  # (when read, the record's updated_epoch, its state)
    done = threading.Event()

    def watch() -> None:
        path = Path(f"{output}.progress.json")
        while not done.wait(0.05):
            with contextlib.suppress(OSError, ValueError):  # not written yet
                record = json.loads(path.read_text())
                seen.append((time.monotonic(), record["updated_epoch"], record["state"]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        calibrate(
            "simcal.models.sir:mean_field", observed, BOUNDS, [target], output, tmp_path / "trials.parquet",
            {"initial_points": 8, "rounds": 1, "proposals_per_round": 8, "refine": {"top_k": 0}},
            {"replicates": 1, "progress_seconds": 0.5}, fixed_params={"days": 20}, client=client,
        )  # fmt: skip
    finally:
        done.set()
        watcher.join()
    assert json.loads(Path(f"{output}.progress.json").read_text())["state"] == "finished"
    running = [(when, updated) for when, updated, state in seen if state == "running"]
    changes = [
        when for (when, updated), (_, before) in zip(running[1:], running, strict=False) if updated != before
    ]
    gaps = np.diff([running[0][0], *changes, running[-1][0]])
    assert running[-1][0] - running[0][0] > 8  # both rounds were scored while the file said running
    assert gaps.max() < 2.0, f"the progress file went {gaps.max():.1f} s without a rewrite while running"


@pytest.mark.parametrize("batch_size", ["auto", 2])
def test_a_model_that_always_fails_stops_the_calibration_after_its_design(tmp_path, client, batch_size):
    """The sweep's fail-fast rule applies to the design: when every probed simulation fails, the calibration stops
    there (naming the model's error) instead of running its whole budget, and still writes its trials table."""
    settings = {"initial_points": 4, "rounds": 6, "proposals_per_round": 8, "refine": {"top_k": 0}}  # 52 sets

    def run() -> None:
        with pytest.raises(TooManyFailures, match=r"all \d+ simulations of .* failed, so the other \d+ were not "
                           r"started. First errors: .*RuntimeError: always_fails: no result.* The calibration "
                           r"stopped in round \d; no later round ran. The trials table so far is in "
                           r".*trials.failed.parquet"):  # fmt: skip
            calibrate(
                "simcal_models:always_fails", pd.DataFrame({"y": [1.0]}), {"a": {"low": 0.0, "high": 1.0}},
                [{"function": "simcal_calibration_models:distance_to_one"}], tmp_path / "s.parquet",
                tmp_path / "trials.parquet", settings, {"replicates": 1, "batch_size": batch_size}, client=client,
            )  # fmt: skip

    run()
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert list(trials["phase"]) == ["design"] * 4 and trials["loss"].isna().all()
    ran = int(trials["replicates_failed"].sum())
    progress = json.loads((tmp_path / "s.parquet.progress.json").read_text())
    assert 2 <= ran <= 4 and progress["done"] == progress["failed"] == ran, (ran, progress)
    assert progress["state"] == "failed" and "TooManyFailures" in progress["message"]
    # A rerun resumes the failed simulations and runs the rest of the design; while no simulation has succeeded,
    # the probe of the first search round stops it again.
    run()
    trials = pd.read_parquet(tmp_path / "trials.parquet")
    assert list(trials["phase"]) == ["design"] * 4 + ["search"] * 8, trials
    assert int(trials["replicates_failed"].sum()) <= 4 + 8, trials


def small_calibration(out: Path, rounds: int, client, refine=None) -> pd.DataFrame:
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 40}, 7)
    return calibrate(
        SIR, observed, BOUNDS, POISSON, out / "simulations.parquet", out / "trials.parquet",
        {"initial_points": 8, "rounds": rounds, "proposals_per_round": 4, "refine": refine or {"top_k": 3, "replicates": 5}},
        {"replicates": 2, "batch_size": 8}, fixed_params={"days": 40}, client=client,
    )  # fmt: skip


@pytest.fixture(scope="module")
def refined(tmp_path_factory, client):
    out = tmp_path_factory.mktemp("refined")
    observe({"beta": 0.3, "gamma": 0.1, "days": 40}, 7).to_csv(out / "observed.csv", index=False)
    return out, small_calibration(out, 2, client)


def test_refine_simulates_the_best_sets_again_with_more_replicates(refined):
    out, trials = refined
    progress = json.loads((out / "simulations.parquet.progress.json").read_text())
    assert progress["state"] == "finished" and (out / "simulations.parquet").exists()
    assert list(trials["phase"]) == ["design"] * 8 + ["search"] * 8 + ["refine"] * 3
    searched, refine = trials[trials["phase"] != "refine"], trials[trials["phase"] == "refine"]
    top3 = searched.sort_values("loss", kind="stable").drop_duplicates("param_id").head(3)["param_id"]
    assert list(refine["param_id"]) == list(top3)
    assert (refine["replicates"] == 5).all() and (refine["replicates_ok"] == 5).all()
    assert (refine["round"] == 3).all() and (searched["replicates"] == 2).all()
    sims = read_results(out / "simulations.parquet")
    replicates = sims.drop_duplicates(["param_id", "replicate"]).groupby("param_id")["replicate"].count()
    assert (replicates[refine["param_id"]] == 5).all()
    assert (replicates.drop(refine["param_id"]) == 2).all()
    # each refine loss is the target over all five replicates (the first two reused: same param_id, same seeds)
    observed = pd.read_csv(out / "observed.csv")
    for _, row in refine.iterrows():
        expected = poisson_nll(sims[sims["param_id"] == row["param_id"]], observed, "incidence", "day")
        assert row["loss"] == pytest.approx(expected)


def test_with_the_refine_step_off_its_replicates_need_not_exceed_the_simulations(tmp_path, client):
    """refine.replicates must exceed simulation.replicates only for a refine step that runs: with top_k 0 (the
    error's own way out) a refine.replicates at or below the simulations' is no error, and nothing is refined."""
    trials = small_calibration(tmp_path, 0, client, {"top_k": 0, "replicates": 2})
    assert list(trials["phase"]) == ["design"] * 8 and (trials["replicates"] == 2).all()


def test_the_trials_tables_replicate_counts_are_whole_numbers_missing_where_nothing_came_back():
    """A round the failure threshold stopped has rows whose simulations never ran (no counts, only a NaN loss):
    the counts stay whole numbers (nullable Int64), not floats with NaN, and the trials are numbered in order."""
    design = pd.DataFrame({"round": 0, "phase": "design", "param_id": ["a", "b"], "loss": [1.0, 2.0],
                           "replicates_ok": [2, 1], "replicates_failed": [0, 1]})  # fmt: skip
    stopped = pd.DataFrame([
        {"round": 1, "phase": "search", "param_id": "c", "loss": 3.0, "replicates_ok": 2, "replicates_failed": 0},
        {"round": 1, "phase": "search", "param_id": "d", "loss": np.nan},  # nothing came back
    ])  # fmt: skip
    table = trials_table([design, stopped])
    assert list(table["trial"]) == [0, 1, 2, 3] and list(table.columns[:2]) == ["trial", "round"]
    assert table["replicates_ok"].dtype == "Int64" and table["replicates_failed"].dtype == "Int64"
    assert table["replicates_ok"].tolist() == [2, 1, 2, pd.NA]
    assert table["replicates_failed"].tolist() == [0, 1, 0, pd.NA]


def test_local_search_proposes_only_sets_not_simulated_yet_with_the_fixed_values_in_their_id():
    """The refine rows' param_ids include the fixed values (days here): a local-search point at a refined set is
    not proposed again (its replicates would be simulated anew under the same id), nor twice in one round."""
    bounds = parse_bounds(BOUNDS)
    refined = {b.name: b.scale(np.array([0.5]))[0].item() for b in bounds}
    seen = {param_id({"days": 40, **refined})}
    points = np.array([[0.5, 0.5], [0.25, 0.75], [0.25, 0.75]])
    proposals = new_parameter_sets(points, bounds, {"days": 40}, seen)
    fresh = {b.name: b.scale(np.array([u]))[0].item() for b, u in zip(bounds, (0.25, 0.75), strict=True)}
    assert proposals == [fresh]
    assert seen == {param_id({"days": 40, **refined}), param_id({"days": 40, **fresh})}


def test_the_names_refused_for_calibrated_parameters_are_the_trials_tables_own_columns(refined):
    """TRIAL_COLUMNS is written by hand: a column the trials table gains later must join it, or a parameter of
    that name would be overwritten again (a parameter named 'loss' was)."""
    _, trials = refined
    own = set(trials.columns) - {"param_id", *BOUNDS} - {f"loss_{target['name']}" for target in POISSON}
    assert own == set(TRIAL_COLUMNS)


def test_the_trials_columns_wrappers_calibrate_meta_yaml_lists_are_those_of_a_trials_file_in_its_order(
    refined,
):
    """meta.yaml's trials output lists the columns in the order the file has them: it said loss_<target> and loss
    came before replicates_ok and replicates_failed, which the file has first. "parameters" stands for the
    calibrated parameters and "loss_<target>" for one column per target, in that place."""
    out, _ = refined
    meta = yaml.safe_load((REPO / "wrappers/calibrate/meta.yaml").read_text())
    text = " ".join(meta["output"]["trials"]["description"].split())
    inside = text[text.index("(") + 1 : text.rindex(")")]
    listed = [item.split()[0] for item in re.sub(r"\([^()]*\)", "", inside).split(",")]
    written = []
    for column in pd.read_parquet(out / "trials.parquet").columns:
        if column in BOUNDS:
            column = "parameters"
        elif column in {f"loss_{target['name']}" for target in POISSON}:
            column = "loss_<target>"
        if not written or written[-1] != column:
            written.append(column)
    assert listed == written, f"meta.yaml lists {listed}, the trials file has {written}"


def test_local_search_rounds_add_new_sets_at_the_refine_replicates(tmp_path, client):
    trials = small_calibration(tmp_path, 1, client, refine={"top_k": 3, "replicates": 5, "rounds": 2})
    refine = trials[trials["phase"] == "refine"]
    local = refine[refine["method"] == "local"]
    assert list(refine["method"].iloc[:3]) == ["refine"] * 3 and set(local["round"]) == {3, 4}
    assert (local["replicates"] == 5).all() and (local["replicates_ok"] == 5).all()
    earlier = set(trials["param_id"].iloc[: -len(local)])
    assert local["param_id"].is_unique and not set(local["param_id"]) & earlier
    assert 1 <= local.groupby("round").size().max() <= 5  # the model's minimum and two points per parameter
    sims = read_results(tmp_path / "simulations.parquet")
    replicates = sims.drop_duplicates(["param_id", "replicate"]).groupby("param_id")["replicate"].count()
    assert (replicates[local["param_id"]] == 5).all()
    # the first local round starts from the best refined set: its proposals lie within the largest trust radius
    # of it (a share of each parameter's range) and inside the box
    best = refine.iloc[:3].loc[refine.iloc[:3]["loss"].idxmin()]
    first = local[local["round"] == 3]
    assert first["beta"].between(0.1, 0.6).all() and first["gamma"].between(0.03, 0.3).all()
    for name, width in (("beta", 0.5), ("gamma", 0.27)):
        assert ((first[name] - best[name]).abs() <= MAX_RADIUS * width + 1e-9).all()


class BowlRounds:
    """A stand-in for the calibration's rounds: each parameter set's loss is its squared distance from (0.5, 0.5),
    computed at once (the search's own bookkeeping is under test here, not the simulations), with the param_id
    the real rounds give it (the search leaves out the sets it has seen by their param_id)."""

    fixed: dict = {}

    def run(self, proposals, replicates, labels, fail_fast=False):
        rows = [
            {**labels, "param_id": param_id({**self.fixed, **p}), "replicates": replicates, **p,
             "loss": (p["a"] - 0.5) ** 2 + (p["b"] - 0.5) ** 2}
            for p in proposals
        ]  # fmt: skip
        return pd.DataFrame(rows)


def test_the_trust_radius_is_carried_from_round_to_round_and_halved_by_a_round_without_gain(caplog):
    """simcal.local_search: a round that finds nothing better halves the radius for the next. Starting at the
    loss's minimum, no round can gain, so each round's radius is half the last (rebuilding the region every round
    from the points' spread, which the far refine points keep the same, passed the other tests)."""
    caplog.set_level(logging.INFO, logger="simcal.calibrate")
    bounds = parse_bounds(
        {"a": {"low": 0.0, "high": 1.0}, "b": {"low": 0.0, "high": 1.0}}, "calibration.parameters"
    )
    start = [{"a": 0.5, "b": 0.5}, {"a": 0.3, "b": 0.6}, {"a": 0.6, "b": 0.35}]
    rounds = BowlRounds()
    trials = [rounds.run(start, 32, {"round": 2, "phase": "refine", "method": "refine"})]
    settings = CalibrationSettings.from_config({"rounds": 0, "refine": {"top_k": 3, "rounds": 3}})
    local_search(rounds, bounds, trials, settings, began=0.0)
    radii = [float(r) for r in re.findall(r"\(local, radius ([0-9.e-]+)\)", caplog.text)]
    assert len(radii) == 3, caplog.text
    assert radii[1] == pytest.approx(radii[0] / 2, rel=0.01)  # the log prints 3 digits
    assert radii[2] == pytest.approx(radii[0] / 4, rel=0.01)
    assert min(pd.concat(trials)["loss"]) == 0.0  # the start was the minimum: no round found better


def test_the_floor_scan_ends_the_refine_step_at_its_replicates(tmp_path, client):
    refine = {"top_k": 4, "replicates": 5, "rounds": 2, "scan": 6}
    trials = small_calibration(tmp_path, 1, client, refine=refine)
    refined = trials[trials["phase"] == "refine"]
    scan = refined[refined["method"] == "scan"]
    local = refined[refined["method"] == "local"]
    assert 1 <= len(scan) <= 6 and set(scan["round"]) == {local["round"].max() + 1}
    assert trials.index[trials["method"] == "scan"].min() > local.index.max()  # the scan comes last
    assert (scan["replicates"] == 5).all() and (scan["replicates_ok"] == 5).all()
    assert not set(scan["param_id"]) & set(trials["param_id"].iloc[: -len(scan)])
    sims = read_results(tmp_path / "simulations.parquet")
    replicates = sims.drop_duplicates(["param_id", "replicate"]).groupby("param_id")["replicate"].count()
    assert (replicates[scan["param_id"]] == 5).all()


def test_the_floor_scan_is_skipped_with_a_message_when_too_few_sets_allow_a_fit(tmp_path, client, caplog):
    caplog.set_level(logging.INFO, logger="simcal.calibrate")
    trials = small_calibration(tmp_path, 1, client, refine={"top_k": 3, "replicates": 5, "scan": 6})
    assert "scan" not in set(trials["method"])  # 3 refined sets: a quadratic in 2 parameters needs 7
    assert "floor scan skipped" in caplog.text


def test_analysis_chooses_the_best_among_the_refined_sets_and_the_page_shows_it(refined):
    out, trials = refined
    best = analyze_files(
        out / "trials.parquet", ["beta", "gamma"], out / "best.json", out / "top_k.parquet", out / "summary.json",
        top_k=5, true_params={"beta": 0.3, "gamma": 0.1},
    )  # fmt: skip
    refine = trials[trials["phase"] == "refine"]
    assert best["loss"] == refine["loss"].min() and best["phase"] == "refine" and best["replicates"] == 5
    top = pd.read_parquet(out / "top_k.parquet")
    assert list(top["rank"]) == [1, 2, 3] and top["loss"].is_monotonic_increasing  # the three refined sets
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen_from"] == "refine" and summary["trials"] == len(trials)
    assert set(summary["relative_error"]) == {"beta", "gamma"}
    by_round = list(summary["best_loss_by_round"].values())
    assert len(by_round) == 3 and by_round == sorted(by_round, reverse=True)

    pngs = {name: out / f"{name}.png" for name in ("fit", "loss", "history")}
    visualize(
        out / "trials.parquet", out / "simulations.parquet", out / "observed.csv", out / "best.json",
        out / "summary.json", ["beta", "gamma"], out / "page.html", pngs,
    )  # fmt: skip
    page = (out / "page.html").read_text()
    assert_self_contained_page(page, 3)
    for title in (
        "Observed vs simulated",
        "Loss against each parameter",
        "Optimization history",
        "refine step",
    ):
        assert title in page
    for path in pngs.values():
        assert path.read_bytes()[:4] == b"\x89PNG"


def assert_self_contained_page(page: str, pictures: int) -> None:
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == pictures
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched


def test_text_from_the_data_is_shown_as_text_on_the_page():
    """The page's title, picture names and summary come from the data (parameter, column and target names, a
    model's error messages): markup in them is escaped, never run as HTML in the researcher's browser."""
    page = render_page(
        "fit of a<b & c", "<p>intro</p>", {"x</h2><script>bad()</script>": b"\x89PNG"},
        {"error": "</pre><script>alert(1)</script>"},
    )  # fmt: skip
    assert "<script>" not in page and "<p>intro</p>" in page  # the intro is the page's own HTML
    assert "<title>fit of a&lt;b &amp; c</title>" in page
    assert "x&lt;/h2&gt;&lt;script&gt;bad()&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_calibration_is_deterministic_and_resumes_from_its_finished_simulations(tmp_path, client, caplog):
    first = small_calibration(tmp_path / "a", 2, client)
    second = small_calibration(tmp_path / "b", 2, client)
    pd.testing.assert_frame_equal(first, second)  # same seed: same proposals, same simulations, same losses

    # Nothing resumed from an earlier run, though its refine step asks again for simulations of its own rounds
    assert first.attrs["resumed_simulations"] == 0
    keys = ["param_id", "replicate", "seed"]
    finished_before = set(
        map(tuple, read_results(tmp_path / "a/simulations.parquet")[keys].drop_duplicates().values)
    )

    # Pretend the first calibration crashed after its simulations were written, then rerun with one more round.
    finished = tmp_path / "a/simulations.parquet"
    partial = tmp_path / "a/simulations.parquet.partial"
    partial.mkdir()
    finished.rename(partial / "part-all.parquet")
    (partial / "_manifest.json").write_text(json.dumps({"model": SIR, "replicates": 2}))
    caplog.set_level("INFO", logger="simcal")
    # Only the third run's messages: where an earlier test left the simcal logger at INFO, caplog also holds the
    # first two runs' (their refine step resumes 6 of 15 simulations), which failed this test under -n 2.
    caplog.clear()
    third = small_calibration(tmp_path / "a", 3, client)
    searched = first[first["phase"] != "refine"].reset_index(drop=True)
    pd.testing.assert_frame_equal(third[third["round"] < 3].reset_index(drop=True), searched)
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming:")]
    assert (
        resumed[:3]
        == [f"resuming: 16 of 16 simulations already done in {partial}"]
        + [f"resuming: 8 of 8 simulations already done in {partial}"] * 2
    )
    # What the calibrate wrapper marks its benchmark by: each simulation of the first run the third one planned
    planned = set(map(tuple, read_results(tmp_path / "a/simulations.parquet")[keys].drop_duplicates().values))
    assert third.attrs["resumed_simulations"] == len(finished_before & planned) > 0


def test_calibration_draws_seeds_from_the_master_seed_and_common_random_numbers(tmp_path, client):
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 40}, 7)
    simulation = {"replicates": 2, "batch_size": 8, "seed": 5}
    runs = {"master": simulation, "crn": {**simulation, "common_random_numbers": True}}
    seeds = {}
    for name, settings in runs.items():
        calibrate(
            SIR, observed, BOUNDS, POISSON, tmp_path / name / "s.parquet", tmp_path / name / "t.parquet",
            {"initial_points": 4, "rounds": 1, "proposals_per_round": 4, "refine": {"top_k": 2, "replicates": 3}},
            settings, fixed_params={"days": 40}, client=client,
        )  # fmt: skip
        seeds[name] = read_results(tmp_path / name / "s.parquet").drop_duplicates(["param_id", "replicate"])
    master = seeds["master"]
    expected = [replicate_seed(p, r, 5) for p, r in zip(master["param_id"], master["replicate"], strict=True)]
    assert master["seed"].tolist() == expected
    assert expected != [
        replicate_seed(p, r) for p, r in zip(master["param_id"], master["replicate"], strict=True)
    ]
    crn = seeds["crn"]
    assert crn["param_id"].nunique() > 1
    assert (
        crn.groupby("replicate")["seed"].nunique() == 1
    ).all()  # every set sees replicate r's random numbers


def test_calibrate_files_reads_the_observed_data_and_names_missing_columns(tmp_path, client):
    observe({"beta": 0.3, "gamma": 0.1, "days": 20}, 7).rename(columns={"incidence": "cases"}).to_parquet(
        tmp_path / "observed.parquet"
    )
    with pytest.raises(ContractError, match=r"calibration target 'incidence': observed data \(.*observed.parquet\) "
                       r"have no column\(s\) \['incidence'\]; they have \['day', 'cases'\]"):  # fmt: skip
        calibrate_files(tmp_path / "observed.parquet", tmp_path / "s.parquet", tmp_path / "t.parquet", model=SIR,
                        parameters=BOUNDS, targets=POISSON)  # fmt: skip


# -- the plain sweep's summary and page ----------------------------------------------------------------------------
def sweep_frame() -> pd.DataFrame:
    rows = []
    for pid, a, outputs in (("p1", 1.0, {0: [1, 3], 1: [2, 6]}), ("p2", 2.0, {0: [10, 10], 1: None})):
        for replicate, values in outputs.items():
            if values is None:
                rows.append({"param_id": pid, "replicate": replicate, "seed": 9, "a": a, "t": None, "y": None,
                             "status": "failed", "error": "ValueError: boom", "duration_s": 0.1})  # fmt: skip
                continue
            for t, y in enumerate(values):
                rows.append({"param_id": pid, "replicate": replicate, "seed": replicate, "a": a, "t": t, "y": y,
                             "status": "ok", "error": None, "duration_s": 0.1})  # fmt: skip
    return pd.DataFrame(rows)


def test_sweep_summary_has_one_row_per_parameter_set():
    table, summary = summarize_sweep(sweep_frame(), ["a"], ["y"], ["sum", "max"])
    p1, p2 = table.set_index("param_id").loc["p1"], table.set_index("param_id").loc["p2"]
    # p1: replicate sums 4 and 8, maxima 3 and 6; p2: one successful replicate (sum 20, max 10)
    assert (p1["y_sum_mean"], p1["y_sum_sd"], p1["y_max_mean"]) == (6.0, pytest.approx(np.sqrt(8)), 4.5)
    assert (p2["y_sum_mean"], p2["replicates_ok"], p2["replicates_failed"]) == (20.0, 1, 1)
    assert np.isnan(p2["y_sum_sd"])  # one replicate: no spread to speak of
    assert summary["status"] == {"ok": 3, "failed": 1} and summary["most_common_errors"] == {
        "ValueError: boom": 1
    }
    everything, _ = summarize_sweep(sweep_frame(), ["a"])  # default: every numeric output, mean and max
    assert {"y_mean_mean", "y_max_sd"} <= set(everything.columns) and "a_mean_mean" not in everything
    assert "t_mean_mean" not in everything  # t is 0, 1 in every simulation: a coordinate
    # a flag column (bool) is no output to average unless named; a failure without its error text still counts
    flagged = sweep_frame().assign(extinct=lambda f: f["y"].fillna(0) > 5, error=None)
    flagged_table, flagged_summary = summarize_sweep(flagged, ["a"])
    assert not [c for c in flagged_table.columns if c.startswith("extinct")]
    assert flagged_summary["most_common_errors"] == {"unknown error": 1}
    # a file without the error column at all (KeyError: 'error' before)
    _, bare_summary = summarize_sweep(sweep_frame().drop(columns="error"), ["a"], ["y"])
    assert bare_summary["most_common_errors"] == {"unknown error": 1}
    assert bare_summary["status"] == {"ok": 3, "failed": 1}
    with pytest.raises(ContractError, match=r"the simulations file has no column\(s\) \['z'\]"):
        summarize_sweep(sweep_frame(), ["a"], ["z"])
    with pytest.raises(ContractError, match=r"sweep columns \['error'\] are not numeric"):
        summarize_sweep(sweep_frame(), ["a"], ["error"])
    with pytest.raises(ContractError, match=r"sweep statistics \['median'\] are unknown"):
        summarize_sweep(sweep_frame(), ["a"], ["y"], ["median"])


def test_sweep_statistics_columns_or_parameter_names_given_twice_or_no_statistic_are_refused_naming_the_setting():
    """`statistics: [sum, sum]`, `columns: [y, y]`, `parameter_names: [a, a]` (the schema does not refuse them) and an
    empty list of statistics failed inside pandas (SpecificationError, "Duplicate column names found", "No objects to
    concatenate"), naming no setting."""
    for args, message in (
        ((["a"], ["y"], ["sum", "sum"]), r"^sweep statistics name 'sum' twice; give each once"),
        ((["a"], ["y", "y"]), r"^sweep columns name 'y' twice; give each once"),
        # a summary of replicates_ok/failed alone and a page saying "no numeric output to summarise"
        (
            (["a"], []),
            r"^sweep columns: the list is empty; name output columns, or give null \(every output\)",
        ),
        ((["a", "a"], ["y"]), r"^parameter_names name 'a' twice; give each once"),
        (
            (["a"], ["y"], []),
            r"^sweep statistics: the list is empty; give some of \['mean', 'sum', 'max', 'min', 'last'\]",
        ),
    ):
        with pytest.raises(ContractError, match=message):
            summarize_sweep(sweep_frame(), *args)


def test_the_last_statistic_is_each_replicates_last_row_even_when_that_is_missing():
    """pandas' GroupBy.last skips NaN: a replicate whose last row's output is NaN got an earlier row's value as
    its 'last'. It is the last row's value (documented as each replicate's rows reduced by last)."""
    frame = sweep_frame()
    frame.loc[(frame["param_id"] == "p1") & (frame["replicate"] == 1) & (frame["t"] == 1), "y"] = math.nan
    table, _ = summarize_sweep(frame, ["a"], ["y"], ["last", "max"])
    p1, p2 = table.set_index("param_id").loc["p1"], table.set_index("param_id").loc["p2"]
    # p1: replicate 0 ends at 3, replicate 1 at NaN (not its earlier 2); the mean over replicates skips the NaN
    assert (p1["y_last_mean"], p1["y_max_mean"]) == (3.0, 2.5)
    assert np.isnan(p1["y_last_sd"])  # one replicate with a last value: no spread
    assert p2["y_last_mean"] == 10.0
    assert list(table.columns[-4:]) == ["y_last_mean", "y_last_sd", "y_max_mean", "y_max_sd"]
    only_last, _ = summarize_sweep(frame, ["a"], ["y", "t"], ["last"])
    assert only_last.set_index("param_id").loc["p1", ["y_last_mean", "t_last_mean"]].tolist() == [3.0, 1.0]


def test_each_statistic_skips_missing_rows_and_is_missing_for_a_replicate_whose_every_row_is_missing():
    """pandas' sum of a replicate whose output is NaN in every row is 0, which the mean over replicates counted as
    a value (p1's y_sum_mean 2.0 from 4 and 0). It is NaN, as that replicate's mean, max and min are."""
    frame = sweep_frame()
    frame.loc[(frame["param_id"] == "p1") & (frame["replicate"] == 1), "y"] = math.nan
    frame.loc[(frame["param_id"] == "p2") & (frame["t"] == 1), "y"] = math.nan
    table, _ = summarize_sweep(frame, ["a"], ["y"], ["sum", "mean", "max", "min"])
    p1, p2 = table.set_index("param_id").loc["p1"], table.set_index("param_id").loc["p2"]
    # p1: replicate 0 (1, 3) alone has values, so every statistic is replicate 0's and has no spread
    assert p1[["y_sum_mean", "y_mean_mean", "y_max_mean", "y_min_mean"]].tolist() == [4.0, 2.0, 3.0, 1.0]
    assert p1[["y_sum_sd", "y_mean_sd", "y_max_sd", "y_min_sd"]].isna().all()
    # p2: its one successful replicate (10, NaN) reduced over the row that has a value
    assert p2[["y_sum_mean", "y_mean_mean", "y_max_mean", "y_min_mean"]].tolist() == [10.0, 10.0, 10.0, 10.0]


def test_sweep_columns_naming_a_parameter_are_refused_pointing_at_the_renamed_output():
    """A model output named like a parameter is stored as output_<name>; `columns: [a]` summarised the parameter a
    itself (its own value, sd 0) as if it were the output, and listed it among the summary's outputs."""
    frame = sweep_frame().assign(output_a=lambda f: f["y"] * 10)
    with pytest.raises(
        ContractError,
        match=r"^sweep columns \['a'\] are parameters \(parameter_names\), not outputs; the model's output 'a' is "
        r"stored as 'output_a'",
    ):
        summarize_sweep(frame, ["a"], ["a", "y"])
    with pytest.raises(
        ContractError, match=r"^sweep columns \['a'\] are parameters \(parameter_names\), not outputs$"
    ):
        summarize_sweep(sweep_frame(), ["a"], ["a"])
    table, summary = summarize_sweep(frame, ["a"], ["output_a", "duration_s"], ["sum"])
    assert summary["outputs"] == ["output_a", "duration_s"]
    assert table.set_index("param_id").loc["p1", "output_a_sum_mean"] == 60.0  # sums 40 and 80


def test_parameter_names_that_leave_out_a_swept_parameter_are_refused_naming_it(tmp_path):
    """Two sets that differ only in b, summarised with parameter_names [a]: two rows with the same a and no b, so
    the sets looked alike. parameter_names are the sweep's parameter columns (wrappers/analyze_sweep/meta.yaml), and
    an output cannot be told from a parameter by the file alone, so the summary is refused naming the column."""
    frame = sweep_frame().assign(b=lambda f: f["a"], a=1.0)
    frame.to_parquet(tmp_path / "sweep.parquet")
    said = (
        r"parameter sets param_id=p1 and param_id=p2 have the same parameter_names values \{'a': 1.0\}, so their "
        r"rows of the summary would look alike: parameter_names \['a'\] leave out a swept parameter that tells "
        r"them apart, one of the columns \['b'\]; give every parameter of the sweep"
    )
    with pytest.raises(ContractError, match=rf"^the simulations file: {said}"):
        summarize_sweep(frame, ["a"], ["y"])
    with pytest.raises(ContractError, match=rf"^{re.escape(str(tmp_path / 'sweep.parquet'))}: {said}"):
        summarize_sweep_files(
            tmp_path / "sweep.parquet", ["a"], tmp_path / "table.parquet", tmp_path / "s.json"
        )
    assert not (tmp_path / "table.parquet").exists() and not (tmp_path / "s.json").exists()
    table, summary = summarize_sweep(frame, ["a", "b"], ["y"])
    assert table[["param_id", "a", "b"]].values.tolist() == [["p1", 1.0, 1.0], ["p2", 1.0, 2.0]]
    assert summary["parameters"]["b"] == {"min": 1.0, "max": 2.0}
    with pytest.raises(
        ContractError, match=r"values \{\}, so .* alike: parameter_names \[\] leave out .* columns \['b'\]"
    ):
        summarize_sweep(frame, [], ["y"])  # no name tells any two sets apart
    with pytest.raises(ContractError, match=r"alike: no other column of the file tells them apart either"):
        summarize_sweep(sweep_frame().assign(a=1.0), ["a"], ["y"])  # one set under two param_ids
    # a fixed parameter left out (the same in every set) tells no sets apart, and is no reason to refuse
    fixed_left_out, _ = summarize_sweep(sweep_frame().assign(c=3.0), ["a"], ["y"])
    assert len(fixed_left_out) == 2


def test_the_sweep_summary_lists_the_five_most_common_errors_most_frequent_first_with_their_counts():
    """Seven distinct errors, error i on i + 1 simulations: the summary keeps the five most frequent, in order."""
    rows = []
    for index in range(7):
        for replicate in range(index + 1):
            rows.append({"param_id": f"p{index}", "replicate": replicate, "seed": replicate, "a": float(index),
                         "status": "failed", "error": f"ValueError: case {index}", "y": np.nan})  # fmt: skip
    rows.append(
        {"param_id": "ok", "replicate": 0, "seed": 0, "a": 9.0, "status": "ok", "error": None, "y": 1.0}
    )
    _, summary = summarize_sweep(pd.DataFrame(rows), ["a"], ["y"])
    assert list(summary["most_common_errors"].items()) == [
        ("ValueError: case 6", 7),
        ("ValueError: case 5", 6),
        ("ValueError: case 4", 5),
        ("ValueError: case 3", 4),
        ("ValueError: case 2", 3),
    ]
    assert summary["status"] == {"failed": 28, "ok": 1}


def test_a_parameter_or_column_missing_from_the_files_is_named_with_the_file(tmp_path):
    """A parameter name or output column the sweep or trials file lacks (a typo in parameter_names or columns):
    the message names the file, not only 'the simulations file'."""
    sweep_frame().to_parquet(tmp_path / "sweep.parquet")
    with pytest.raises(
        ContractError, match=rf"{re.escape(str(tmp_path / 'sweep.parquet'))} has no column\(s\) \['b'\]"
    ):
        summarize_sweep_files(
            tmp_path / "sweep.parquet", ["b"], tmp_path / "table.parquet", tmp_path / "s.json"
        )
    trials = sweep_frame().assign(loss=1.0)
    trials.to_parquet(tmp_path / "trials.parquet")
    with pytest.raises(
        ContractError, match=rf"{re.escape(str(tmp_path / 'trials.parquet'))} has no column\(s\) \['b'\]"
    ):
        analyze_files(tmp_path / "trials.parquet", ["b"], tmp_path / "best.json", tmp_path / "top.parquet",
                      tmp_path / "summary.json")  # fmt: skip


def test_a_sweep_summary_of_named_columns_reads_only_them_the_keys_status_and_parameters(
    tmp_path, monkeypatch
):
    """summarize_sweep_files read the whole simulations file even when columns named the outputs to summarise: a
    sweep of many parameters or outputs held every column in memory. With columns given it reads them, the keys,
    status and parameters, and writes what the whole file gave; a refusal still names the file's other columns."""
    path = tmp_path / "sweep.parquet"
    sweep_frame().assign(**{f"extra{i}": float(i) for i in range(20)}).to_parquet(path)
    whole = pd.read_parquet(path)
    expected_table, expected_summary = summarize_sweep(whole, ["a"], ["y"], ["sum", "last"], str(path))
    with pytest.raises(ContractError) as refused:
        summarize_sweep(whole, ["a"], ["y", "z"], ["sum"], str(path))
    read, real = [], pd.read_parquet

    def spy(path, *args, **kwargs):
        read.append(kwargs.get("columns"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", spy)
    table = summarize_sweep_files(path, ["a"], tmp_path / "table.parquet", tmp_path / "summary.json", ["y"],
                                  ["sum", "last"])  # fmt: skip
    assert read == [["param_id", "replicate", "seed", "a", "y", "status", "error", "duration_s"]]
    pd.testing.assert_frame_equal(table, expected_table)
    pd.testing.assert_frame_equal(real(tmp_path / "table.parquet"), expected_table)
    assert json.loads((tmp_path / "summary.json").read_text()) == expected_summary
    assert "'extra19'" in str(refused.value)  # the message names every column of the file
    with pytest.raises(ContractError, match=re.escape(str(refused.value))):
        summarize_sweep_files(
            path, ["a"], tmp_path / "other.parquet", tmp_path / "other.json", ["y", "z"], ["sum"]
        )


def test_one_parameter_name_given_as_a_string_is_one_name(tmp_path):
    """A rule's `parameter_names="beta"` (one calibrated or swept parameter) was read as the columns b, e, t, a by
    the analyze_* and visualize_* wrappers' library calls."""
    sweep = sweep_frame().rename(columns={"a": "beta"})
    sweep.to_parquet(tmp_path / "sweep.parquet")
    table = summarize_sweep_files(tmp_path / "sweep.parquet", "beta", tmp_path / "table.parquet",
                                  tmp_path / "summary.json", "y", "sum")  # fmt: skip
    assert {"beta", "y_sum_mean", "y_sum_sd"} <= set(table.columns) and "t_sum_mean" not in table
    visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", "beta",
                    tmp_path / "sweep.html", column="y", on="t")  # fmt: skip
    assert_self_contained_page((tmp_path / "sweep.html").read_text(), 2)
    trials = pd.DataFrame({"trial": [0, 1], "round": 0, "phase": "design", "param_id": ["p", "q"],
                           "beta": [0.3, 0.5], "loss": [1.0, 2.0]})  # fmt: skip
    trials.to_parquet(tmp_path / "trials.parquet")
    analyze_files(tmp_path / "trials.parquet", "beta", tmp_path / "best.json", tmp_path / "top.parquet",
                  tmp_path / "calibration.json")  # fmt: skip
    assert json.loads((tmp_path / "best.json").read_text())["params"] == {"beta": 0.3}
    one_simulation_file(tmp_path)
    pd.DataFrame({"day": [0, 1], "incidence": [1, 2]}).to_csv(tmp_path / "observed.csv", index=False)
    inputs = [
        tmp_path / name for name in ("trials.parquet", "simulations.parquet", "observed.csv", "best.json")
    ]
    visualize(*inputs, tmp_path / "calibration.json", "beta", tmp_path / "page.html")
    assert_self_contained_page((tmp_path / "page.html").read_text(), 3)
    # Neither a name nor a list of names (YAML's 3) is named, not a TypeError from inside the library.
    for names, what in ((3, "parameter_names"), (["y", 2], "columns")):
        with pytest.raises(ContractError, match=rf"^{what}: expected a name or a list of names, got \w+ "):
            summarize_sweep_files(tmp_path / "sweep.parquet", names if what == "parameter_names" else "beta",
                                  tmp_path / "t.parquet", tmp_path / "s.json", names if what == "columns" else "y")  # fmt: skip
    with pytest.raises(
        ContractError, match=r"^parameter_names: expected a name or a list of names, got int 3"
    ):
        analyze_files(tmp_path / "trials.parquet", 3, tmp_path / "b.json", tmp_path / "t.parquet",
                      tmp_path / "c.json")  # fmt: skip


def test_sweep_page_shows_outputs_and_series(tmp_path):
    sweep_frame().to_parquet(tmp_path / "sweep.parquet")
    summarize_sweep_files(tmp_path / "sweep.parquet", ["a"], tmp_path / "table.parquet", tmp_path / "summary.json",
                          ["y"], ["sum"])  # fmt: skip
    pngs = {"outputs": tmp_path / "outputs.png", "series": tmp_path / "series.png"}
    visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                    tmp_path / "sweep.html", pngs, column="y", on="t")  # fmt: skip
    page = (tmp_path / "sweep.html").read_text()
    assert_self_contained_page(page, 2)
    assert "status failed" in page and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs.values())
    with pytest.raises(ContractError, match=r"have no column\(s\) \['incidence'\] to plot; set plot.column"):
        visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                        tmp_path / "other.html", column="incidence", on="t")  # fmt: skip
    # every simulation failed (max_failed_fraction 1): failure rows have no outputs, and no setting would help
    failed = sweep_frame().assign(status="failed", error="boom").drop(columns=["t", "y"])
    failed.drop_duplicates(["param_id", "replicate"]).to_parquet(tmp_path / "failed.parquet")
    with pytest.raises(ContractError, match=r"failed.parquet: every simulation failed, so there are no outputs "
                       r"\['y', 't'\] to plot$"):  # fmt: skip
        visualize_sweep(tmp_path / "failed.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                        tmp_path / "failed.html", column="y", on="t")  # fmt: skip


def test_the_sweep_page_reads_only_the_columns_it_draws_from_the_simulations(tmp_path, monkeypatch):
    """visualize_sweep read the whole simulations file to draw one output against one coordinate: a sweep of 200
    parameters x 8,000 sets x 50 rows peaked at 1.7 GB (0.3 GB reading only the drawn columns). The columns read
    stay those drawn, however many others the file has; a misspelt one is still named with the file's columns."""
    others = {f"extra{i}": 1.0 for i in range(20)}  # parameters not drawn, other outputs
    sweep_frame().assign(**others).to_parquet(tmp_path / "sweep.parquet")
    summarize_sweep_files(tmp_path / "sweep.parquet", ["a"], tmp_path / "table.parquet", tmp_path / "summary.json",
                          ["y"], ["sum"])  # fmt: skip
    read, real = [], pd.read_parquet

    def spy(path, *args, **kwargs):
        read.append((Path(path).name, kwargs.get("columns")))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(pd, "read_parquet", spy)
    visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                    tmp_path / "sweep.html", column="y", on="t")  # fmt: skip
    assert_self_contained_page((tmp_path / "sweep.html").read_text(), 2)
    columns = [columns for name, columns in read if name == "sweep.parquet"]
    assert len(columns) == 1 and columns[0] is not None
    assert set(columns[0]) == {"y", "t", "param_id", "status", "a"}
    with pytest.raises(ContractError, match=r"have no column\(s\) \['incidence'\] to plot; .*'extra19'"):
        visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                        tmp_path / "other.html", column="incidence", on="t")  # fmt: skip


def test_the_sweep_pictures_plot_each_outputs_mean_and_sd_and_colour_the_series_by_the_first_parameter():
    frame = sweep_frame().assign(b=lambda f: 10.0 - f["a"])
    table, _ = summarize_sweep(frame, ["a", "b"], ["y"], ["sum"])
    figure = sweep_outputs_figure(table, ["a", "b"])
    for axis, name in zip(figure.axes, ("a", "b"), strict=True):
        assert axis.get_ylabel() == "y_sum"
        segments = axis.containers[0].lines[2][0].get_segments()  # the error bars, one per parameter set
        drawn = sorted((s[0][0], s[0][1], s[1][1]) for s in segments if len(s))  # none without a spread
        with_spread = table.dropna(subset=["y_sum_sd"])
        expected = sorted(
            zip(with_spread[name], with_spread["y_sum_mean"] - with_spread["y_sum_sd"],
                with_spread["y_sum_mean"] + with_spread["y_sum_sd"], strict=True)
        )  # fmt: skip
        assert drawn == pytest.approx(expected)
    series = sweep_series_figure(frame, ["b", "a"], "y", "t")
    assert series.axes[-1].get_ylabel() == "b"  # the colour bar
    curves = {tuple(points[:, 1]) for points in series_curves(series)[0]}
    ok = frame[frame["status"] == "ok"]
    assert curves == {tuple(runs.groupby("t")["y"].mean()) for _, runs in ok.groupby("param_id")}


def series_curves(figure) -> tuple[list[np.ndarray], np.ndarray]:
    """(each parameter set's curve as (x, y) points, NaN where it has none, and each curve's RGBA colour) of a
    sweep's series picture."""
    (curves,) = figure.axes[0].collections
    return [path.vertices for path in curves.get_paths()], curves.get_colors()


def test_the_sweep_series_picture_draws_every_set_in_one_artist_not_one_each():
    """A plot() call per parameter set (a Line2D each, its column looked up in a frame as wide as the sweep) took
    ~2 ms a set: 35 s for 16,000 sets, minutes for the 100,000 of a cheap model's sweep. One LineCollection holds
    them all, each set's curve its own segment, coloured by its value, a missing point breaking its line."""
    sets, days = 500, 4
    frame = pd.DataFrame({
        "param_id": np.repeat([f"p{i:03d}" for i in range(sets)], days), "replicate": 0, "status": "ok",
        "a": np.repeat(np.arange(sets, dtype=float), days), "t": np.tile(np.arange(days), sets),
    })  # fmt: skip
    frame["y"] = frame["a"] * frame["t"]
    frame.loc[(frame["param_id"] == "p007") & (frame["t"] == 2), "y"] = np.nan
    figure = sweep_series_figure(frame, ["a"], "y", "t")
    assert figure.axes[0].get_lines() == []
    segments, colours = series_curves(figure)
    assert len(segments) == len(colours) == sets
    by_set = dict(zip(sorted(frame["param_id"].unique()), segments, strict=True))
    np.testing.assert_array_equal(by_set["p003"], [[0, 0], [1, 3], [2, 6], [3, 9]])
    assert np.isnan(by_set["p007"][2, 1]) and by_set["p007"][3, 1] == 21  # a gap, then the line goes on
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_allclose(colours[[0, -1], :3], [viridis(0.0)[:3], viridis(1.0)[:3]])
    assert figure.axes[0].get_xlim()[1] >= 3 and figure.axes[0].get_ylim()[1] >= (sets - 1) * 3


def test_the_sweep_summary_page_and_picture_say_how_many_sets_failed_outright(tmp_path):
    """A set whose every replicate failed has NaN means: the outputs picture left it out and neither the summary
    nor the page said how many sets that was (only the simulations' status counts)."""
    failed_set = (
        sweep_frame().query("param_id == 'p2'").assign(param_id="p3", a=3.0, status="failed", error="boom")
    )
    frame = pd.concat([sweep_frame(), failed_set.drop_duplicates("replicate")], ignore_index=True)
    frame.to_parquet(tmp_path / "sweep.parquet")
    table = summarize_sweep_files(tmp_path / "sweep.parquet", ["a"], tmp_path / "table.parquet",
                                  tmp_path / "summary.json", ["y"], ["sum"])  # fmt: skip
    assert list(table["replicates_ok"]) == [2, 1, 0]  # p2 lost one replicate, p3 both
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["parameter_sets"], summary["parameter_sets_failed"]) == (3, 1)
    figure = sweep_outputs_figure(table, ["a"])
    assert "1 of 3 parameter sets not drawn: every simulation of them failed" in figure.texts[-1].get_text()
    visualize_sweep(tmp_path / "sweep.parquet", tmp_path / "table.parquet", tmp_path / "summary.json", ["a"],
                    tmp_path / "sweep.html", column="y", on="t")  # fmt: skip
    page = (tmp_path / "sweep.html").read_text()
    assert "<tr><td>parameter sets with every simulation failed</td><td>1</td></tr>" in page


def test_the_sweep_outputs_picture_says_when_it_draws_only_some_of_the_summarised_outputs():
    """The picture draws at most MAX_SUMMARY_ROWS statistics; the others were left out without a word."""
    many = {f"y{i}_mean": [1.0, 2.0] for i in range(MAX_SUMMARY_ROWS + 2)}
    table = pd.DataFrame({"param_id": ["p1", "p2"], "a": [0.0, 1.0], "replicates_ok": [2, 2], **many})
    figure = sweep_outputs_figure(table, ["a"])
    assert len(figure.axes) == MAX_SUMMARY_ROWS
    title = figure.texts[-1].get_text()
    assert f"the first {MAX_SUMMARY_ROWS} of {MAX_SUMMARY_ROWS + 2} summarised outputs drawn" in title
    assert (
        "drawn;" not in sweep_outputs_figure(table.iloc[:, :5], ["a"]).texts[-1].get_text()
    )  # two: all drawn


def test_the_sweep_outputs_picture_draws_as_many_statistics_as_the_wrapper_documents():
    """wrappers/visualize_sweep/meta.yaml promises the first 6 summarised statistics, in the table's order."""
    from testkit import REPO

    meta = (REPO / "wrappers" / "visualize_sweep" / "meta.yaml").read_text()
    documented = int(re.search(r"the first (\d+) summarised statistics", " ".join(meta.split())).group(1))
    many = {f"y{i}_mean": [1.0, 2.0] for i in range(documented + 2)}
    table = pd.DataFrame({"param_id": ["p1", "p2"], "a": [0.0, 1.0], "replicates_ok": [2, 2], **many})
    figure = sweep_outputs_figure(table, ["a"])
    assert [axis.get_ylabel() for axis in figure.axes] == [f"y{i}" for i in range(documented)]
    assert (
        f"the first {documented} of {documented + 2} summarised outputs drawn" in figure.texts[-1].get_text()
    )


@pytest.mark.parametrize(("losses", "scale"), [([0.5, 2.0], "log"), ([0.0, 2.0], "linear")])
def test_the_loss_axes_are_logarithmic_only_when_every_finite_loss_is_positive(losses, scale):
    """A loss of exactly 0 (an MSE target fitted exactly) has no place on a log axis: both pictures stay linear."""
    trials = pd.DataFrame({"trial": [0, 1, 2], "round": 0, "phase": "design", "param_id": ["a", "b", "c"],
                           "beta": [0.1, 0.2, 0.3], "loss": [*losses, float("nan")]})  # fmt: skip
    assert history_figure(trials).axes[0].get_yscale() == scale
    best = {"param_id": "a", "params": {"beta": 0.1}}
    assert loss_figure(trials, ["beta"], best).axes[0].get_yscale() == scale


def test_a_sweep_picture_output_the_page_does_not_draw_is_named_with_the_pictures_it_has(tmp_path):
    """png_paths naming a picture the sweep page does not draw (the calibration page's 'fit', say): a
    ContractError naming it and the pictures there are, not a KeyError, and no page."""
    sweep = one_set_sweep_files(tmp_path, replicates_ok=1, incidence_mean_mean=1.5)
    with pytest.raises(
        ContractError, match=r"^no picture named 'fit'; the pictures are \['outputs', 'series'\]$"
    ):
        visualize_sweep(*sweep, ["beta"], tmp_path / "sweep.html", {"fit": tmp_path / "fit.png"})
    assert not (tmp_path / "sweep.html").exists() and not (tmp_path / "fit.png").exists()


def test_the_sweep_series_coloured_by_a_text_parameter_names_each_value_on_the_colour_bar():
    """A sweep over regions or scenario names: the series picture failed inside matplotlib (could not convert
    string to float) when the first parameter was text."""
    frame = sweep_frame().assign(region=lambda f: f["param_id"].map({"p1": "south", "p2": "north"}))
    series = sweep_series_figure(frame, ["region", "a"], "y", "t")
    bar = series.axes[-1]
    assert bar.get_ylabel() == "region"
    assert [tick.get_text() for tick in bar.get_yticklabels()] == ["north", "south"]
    segments, colours = series_curves(series)
    assert len(segments) == 2  # p2 has one successful replicate: still drawn
    assert len({tuple(colour) for colour in colours}) == 2


def test_the_calibration_pictures_show_the_best_sets_replicates_the_running_best_and_the_best_values():
    days = [0, 1, 2]
    sims = pd.DataFrame(
        [{"param_id": pid, "replicate": r, "day": d, "incidence": base + r + d, "status": "ok"}
         for pid, base in (("best", 10.0), ("other", 50.0)) for r in (0, 1, 2) for d in days]
        + [{"param_id": "best", "replicate": 3, "day": d, "incidence": 1e6, "status": "failed"} for d in days]
    )  # fmt: skip
    observed = pd.DataFrame({"day": days, "incidence": [11.0, 12.0, 13.0]})
    best = {"param_id": "best", "params": {"beta": 0.3, "gamma": 0.1}}
    lines = {
        line.get_label(): line for line in fit_figure(sims, observed, best, "incidence", "day").axes[0].lines
    }
    mine = sims[(sims["param_id"] == "best") & (sims["status"] == "ok")].groupby("day")["incidence"].mean()
    np.testing.assert_allclose(lines["replicate mean"].get_ydata(), mine.to_numpy())
    np.testing.assert_allclose(lines["observed"].get_ydata(), observed["incidence"])

    trials = pd.DataFrame(
        {"trial": range(6), "round": [0, 0, 0, 1, 1, 1], "loss": [5.0, np.inf, 3.0, 4.0, 1.0, 2.0],
         "beta": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "gamma": [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]}
    )  # fmt: skip
    history = {line.get_label(): line for line in history_figure(trials).axes[0].lines}
    assert history["best so far"].get_ydata().tolist() == [5.0, 5.0, 3.0, 3.0, 1.0, 1.0]
    loss = loss_figure(trials, ["beta", "gamma"], best)
    for axis, name in zip(loss.axes[:2], ("beta", "gamma"), strict=True):  # then the colour bar
        marker = next(line for line in axis.lines if line.get_label() == "best")
        assert list(marker.get_xdata()) == [best["params"][name]] * 2


@pytest.mark.parametrize(
    ("phase", "said"), [("refine", "chosen from the refine step"), ("design", "chosen from all trials")]
)
def test_the_calibration_page_says_where_the_best_set_was_chosen_from(tmp_path, phase, said):
    """analyze chooses the best among the refined sets when there was a refine step, else among every trial; the
    page says which, from best.json's phase."""
    paths = one_trial_calibration_files(tmp_path, phase=phase)
    visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta"], tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert f"(parameter set p, {said})." in page and page.count("chosen from") == 1


def test_optuna_is_pinned_alike_everywhere_and_installed_at_that_version():
    """The calibration figures in bench/RESULTS.md hold for one Optuna version (TPE changes between releases)."""
    import tomllib

    import yaml
    from testkit import REPO

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {"pyproject.toml": next(d for d in pyproject if d.startswith("optuna")).removeprefix("optuna")}
    pins["pixi.toml"] = tomllib.loads((REPO / "pixi.toml").read_text())["pypi-dependencies"]["optuna"]
    for path in (
        "workflow/envs/simcal.yaml",
    ):  # the wrappers' environment installs the library with its pins
        deps = yaml.safe_load((REPO / path).read_text())["dependencies"]
        pins[path] = next(d for d in deps if isinstance(d, str) and d.startswith("optuna ")).split()[1]
    assert set(pins.values()) == {f"=={optuna.__version__}"}, pins


@pytest.mark.parametrize("name", ["out.csv", "out.TSV", "out.txt"])
@pytest.mark.parametrize("output", ["simulations", "trials", "table", "top_k"])
def test_a_parquet_output_named_as_delimited_text_is_refused_before_anything_runs(tmp_path, name, output):
    """Like the simulate wrapper's output: calibrate's simulations and trials, analyze_sweep's table and
    analyze_calibration's top_k named trials.csv got Parquet bytes ("PAR1...") under that name, the calibration's
    after all its rounds. Refused naming the file, before any input is read or anything is written."""
    path = tmp_path / name
    others = {key: tmp_path / f"{key}.parquet" for key in ("simulations", "trials", "table", "top_k")}
    paths = {**others, output: path}
    holds = {"simulations": "simulations", "trials": "trials", "table": "parameter sets' summaries",
             "top_k": "top-k parameter sets"}[output]  # fmt: skip
    with pytest.raises(
        ContractError,
        match=rf"^{re.escape(str(path))}: the {re.escape(holds)} are written as Parquet, not as '\.\w+' text: "
        r"name the output \*\.parquet$",
    ):
        if output in ("simulations", "trials"):
            observed = tmp_path / "observed.parquet"
            observe({"beta": 0.3, "gamma": 0.1, "days": 20}, 7).to_parquet(observed)
            calibrate_files(observed, paths["simulations"], paths["trials"], model=SIR, parameters=BOUNDS,
                            targets=POISSON, settings={"initial_points": 2, "rounds": 1, "proposals_per_round": 1,
                            "refine": {"top_k": 0}}, simulation={"replicates": 1}, fixed={"days": 20},
                            backend_options={"workers": 1, "processes": False})  # fmt: skip
        elif output == "table":
            summarize_sweep_files(
                tmp_path / "sims.parquet", ["beta"], paths["table"], tmp_path / "summary.json"
            )
        else:
            analyze_files(tmp_path / "trials.parquet", ["beta"], tmp_path / "best.json", paths["top_k"],
                          tmp_path / "summary.json")  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == (
        ["observed.parquet"] if output in ("simulations", "trials") else []
    )


def sir_sweep(sets: list[dict], replicates: int = 2) -> pd.DataFrame:
    """The rows simulate writes for the SIR model (a ``day`` column beside its outputs), without a cluster."""
    frames = []
    for index, params in enumerate(sets):
        for replicate in range(replicates):
            seed = 100 * index + replicate
            rows = sir_simulate({**params, "population": 1000}, seed)
            keys = {"param_id": f"p{index}", "replicate": replicate, "seed": seed, **params}
            frames.append(rows.assign(**keys, status="ok", error=None, duration_s=0.1))
    return pd.concat(frames, ignore_index=True)


def test_a_time_column_is_a_coordinate_not_an_output_of_the_sweep_summary(caplog):
    """With columns null every numeric column was summarised, the SIR model's day too (day_mean_mean, the same
    for every parameter set). A column with the same value at each row position of every successful simulation
    of two or more parameter sets, varying along the rows, indexes the rows: it is left out and named."""
    caplog.set_level(logging.INFO, logger="simcal")
    sets = [{"beta": 0.3, "gamma": 0.1, "days": 30}, {"beta": 0.5, "gamma": 0.2, "days": 20}]
    sweep = sir_sweep(sets)
    table, summary = summarize_sweep(sweep, ["beta", "gamma", "days"])
    assert not [c for c in table.columns if c.startswith("day_")] and "incidence_mean_mean" in table
    assert summary["outputs"] == ["incidence", "prevalence"] and summary["coordinates"] == ["day"]
    assert "columns ['day'] are coordinates" in caplog.text
    named, named_summary = summarize_sweep(sweep, ["beta", "gamma", "days"], ["day", "incidence"])
    assert named.set_index("param_id").loc["p0", "day_max_mean"] == 29 and named_summary["coordinates"] == []
    # One parameter set (a deterministic model's replicates agree everywhere), or one row per simulation: nothing
    # tells a coordinate from an output, so every numeric column is summarised.
    _, one_set = summarize_sweep(sir_sweep(sets[:1]), ["beta", "gamma", "days"])
    assert one_set["outputs"] == ["day", "incidence", "prevalence"] and one_set["coordinates"] == []
    one_row_each = sweep_frame().drop_duplicates(["param_id", "replicate"]).assign(k=7.0)
    _, scalars = summarize_sweep(one_row_each, ["a"])
    assert scalars["outputs"] == ["t", "y", "k"] and scalars["coordinates"] == []
    # An output that merely starts the same (a count of 0 on day 0 in every simulation) differs later: kept.
    shifted = sweep.assign(cases=np.where(sweep["day"] == 0, 0, sweep["incidence"]))
    assert "cases" in summarize_sweep(shifted, ["beta", "gamma", "days"])[1]["outputs"]


def test_the_target_column_check_waits_for_a_batch_whose_simulations_returned_more_than_empty_tables():
    """An empty table ("no events") is an output: its row, status ok, holds no output column. The check stopped a
    calibration whose first batch returned only empty tables, naming a column the model returns once it has
    events; it waits now for rows with outputs, and still names a column no such row has."""
    from simcal.calibration_targets import TargetColumns, parse_targets
    from simcal.tasks import SimTask
    from simcal.worker import run_batch

    targets = parse_targets(
        [{"name": "sizes", "function": "simcal.targets:replicate_mean_mse", "column": "size", "on": "event"}]
    )

    def batch(*values):
        return run_batch("simcal_models:empty_for_odd", [SimTask(f"p{a}", 0, a, {"a": a}) for a in values])

    only_empty = batch(1, 3)
    assert (only_empty["status"] == "ok").all()
    columns = TargetColumns(targets, "simcal_models:empty_for_odd", {"a"})
    assert columns.add(only_empty) is False
    columns.refuse_unseen()  # nothing returned rows yet: nothing to tell
    assert columns.add(batch(1, 2)) is True
    typo = parse_targets(
        [{"name": "sizes", "function": "simcal.targets:replicate_mean_mse", "column": "sizes", "on": "event"}]
    )
    columns = TargetColumns(typo, "simcal_models:empty_for_odd", {"a"})
    assert columns.add(batch(1, 2)) is False
    with pytest.raises(ContractError, match=r"no column\(s\) \['sizes'\]; they have \['event', 'size'\]"):
        columns.refuse_unseen()
