"""The calibration analysis (simcal.analyze.analyze, under the analyze_calibration wrapper's analyze_files) on
hand-built trials tables, with every expected number worked out by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from simcal.analyze import analyze, analyze_files
from simcal.contract import ContractError

TRIAL_COLUMNS = ["trial", "round", "phase", "method", "param_id", "replicates", "beta", "gamma", "log10_rho",
                 "loss", "replicates_ok", "replicates_failed"]  # fmt: skip
# A trials table of one parameter, beta, as several tests below write it.
BETA_TRIALS = ["trial", "round", "phase", "method", "param_id", "replicates", "beta", "loss"]
NAMES = ["beta", "gamma", "log10_rho"]
TRUE = {"beta": 0.3, "gamma": 0.1, "log10_rho": -2.0}


def refined_trials() -> pd.DataFrame:
    """Design, two search rounds, a refine step and one local-search round, as calibrate writes them. The refine
    step re-simulates the three best sets so far (f, b, d) under the same param_id with more replicates."""
    rows = [
        (0, 0, "design", "sobol", "a", 2, 0.50, 0.20, -1.0, 9.0, 2, 0),
        (1, 0, "design", "sobol", "b", 2, 0.33, 0.08, -2.5, 3.0, 2, 0),
        (2, 0, "design", "sobol", "c", 2, 0.10, 0.05, -3.0, np.nan, 0, 2),  # every replicate failed
        (3, 1, "search", "tpe", "d", 2, 0.28, 0.09, -1.5, 4.0, 2, 0),
        (4, 1, "search", "tpe", "e", 2, 0.40, 0.15, -0.5, 5.0, 2, 0),
        # f has the lowest loss, but over 2 replicates only
        (5, 2, "search", "tpe", "f", 2, 0.31, 0.11, -2.0, 2.0, 2, 0),
        (6, 2, "search", "tpe", "g", 2, 0.20, 0.02, -1.2, 6.0, 2, 0),
        (7, 3, "refine", "refine", "f", 5, 0.31, 0.11, -2.0, 2.6, 5, 0),
        (8, 3, "refine", "refine", "b", 5, 0.33, 0.08, -2.5, 2.5, 5, 0),
        (9, 3, "refine", "refine", "d", 5, 0.28, 0.09, -1.5, 2.9, 5, 0),
        (10, 4, "refine", "local", "h", 5, 0.35, 0.14, -3.0, 2.7, 5, 0),
    ]
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def test_the_best_and_top_k_come_from_the_refine_rows_with_hand_computed_statistics(tmp_path):
    refined_trials().to_parquet(tmp_path / "trials.parquet")
    paths = {name: tmp_path / name for name in ("best.json", "top_k.parquet", "summary.json")}
    returned = analyze_files(
        tmp_path / "trials.parquet", NAMES, paths["best.json"], paths["top_k.parquet"], paths["summary.json"],
        top_k=3, true_params=TRUE,
    )  # fmt: skip
    best = json.loads(paths["best.json"].read_text())
    top = pd.read_parquet(paths["top_k.parquet"])
    summary = json.loads(paths["summary.json"].read_text())

    # Refine losses: b 2.5 < f 2.6 < h 2.7 < d 2.9. f's search loss 2.0 (2 replicates) does not count.
    assert returned == best
    assert best == {
        "param_id": "b", "loss": 2.5, "params": {"beta": 0.33, "gamma": 0.08, "log10_rho": -2.5},
        "round": 3, "trial": 8, "phase": "refine", "replicates": 5,
    }  # fmt: skip
    assert list(top["param_id"]) == ["b", "f", "h"] and list(top["rank"]) == [1, 2, 3]
    assert list(top["loss"]) == [2.5, 2.6, 2.7]

    # |0.33 - 0.3| / 0.3 = 0.1; |0.08 - 0.1| / 0.1 = 0.2 (the best lies below the truth: still positive);
    # |-2.5 - (-2)| / |-2| = 0.25 (a negative true value: still positive)
    assert summary["relative_error"] == pytest.approx({"beta": 0.1, "gamma": 0.2, "log10_rho": 0.25})
    assert summary["true_params_left_out"] == {}

    # Top-3 sets b, f, h. The code takes the population std (ddof=0) of the k sets kept:
    # beta 0.33, 0.31, 0.35: mean 0.33, deviations 0, -0.02, 0.02, std sqrt(0.0008 / 3) (ddof=1 would be 0.02)
    # gamma 0.08, 0.11, 0.14: mean 0.11, deviations -0.03, 0, 0.03, std sqrt(0.0018 / 3) (ddof=1: 0.03)
    # log10_rho -2.5, -2.0, -3.0: mean -2.5, deviations 0, 0.5, -0.5, std sqrt(0.5 / 3) (ddof=1: 0.5)
    expected_top_k = {
        "beta": {"mean": 0.33, "std": math.sqrt(0.0008 / 3), "min": 0.31, "max": 0.35},
        "gamma": {"mean": 0.11, "std": math.sqrt(0.0018 / 3), "min": 0.08, "max": 0.14},
        "log10_rho": {"mean": -2.5, "std": math.sqrt(0.5 / 3), "min": -3.0, "max": -2.0},
    }
    assert set(summary["top_k"]) == set(NAMES)
    for name, expected in expected_top_k.items():
        assert summary["top_k"][name] == pytest.approx(expected), name

    # Design and search rounds only (the refine rounds 3 and 4 use more replicates): round minima 3.0 (c's NaN
    # ignored), 4.0, 2.0; their running minimum 3.0, 3.0, 2.0.
    assert summary["best_loss_by_round"] == {"0": 3.0, "1": 3.0, "2": 2.0}
    # The loss quantiles are over the pool the best is chosen from: refine losses 2.5, 2.6, 2.7, 2.9,
    # median (2.6 + 2.7) / 2 = 2.65.
    assert summary["loss"] == pytest.approx({"min": 2.5, "median": 2.65, "max": 2.9})
    assert (summary["chosen_from"], summary["trials"], summary["trials_with_finite_loss"]) == (
        "refine",
        11,
        10,
    )
    assert (summary["rounds"], summary["replicates_failed"]) == (5, 2)


def test_true_parameters_without_a_relative_error_are_listed_with_why_and_logged(caplog):
    """A true parameter that is not calibrated (a fixed one, or a misspelt name) or whose true value is 0 has no
    relative error: the summary and the log say so rather than leaving it out silently."""
    true_params = {"beta": 0.3, "gamma": 0.0, "population": 1000, "log10_rh": -2.0}
    with caplog.at_level("WARNING", logger="simcal.analyze"):
        _, _, summary = analyze(refined_trials(), NAMES, top_k=3, true_params=true_params)

    assert summary["relative_error"] == pytest.approx({"beta": 0.1})
    calibrated = "not calibrated (the calibrated parameters are ['beta', 'gamma', 'log10_rho'])"
    assert summary["true_params_left_out"] == {
        "gamma": "true value 0: its relative error is undefined",
        "population": calibrated,
        "log10_rh": calibrated,
    }
    for name, why in summary["true_params_left_out"].items():
        assert f"true parameter {name!r} has no relative error: {why}" in caplog.text


def test_a_parameter_set_proposed_again_in_a_later_round_counts_once_in_the_top_k():
    """Without a refine step the best is chosen from every trial. TPE over an integer parameter can propose a
    design point again (same param_id, same seeds, so the same resumed simulations and the same loss); the top-k
    lists each parameter set once, at its earliest trial."""
    rows = [
        (0, 0, "design", "sobol", "p", 2, 2, 0.30, 1.5),
        (1, 0, "design", "sobol", "q", 2, 3, 0.20, 4.0),
        (2, 1, "search", "tpe", "p", 2, 2, 0.30, 1.5),  # p again
        (3, 1, "search", "tpe", "r", 2, 4, 0.25, 2.0),
    ]
    columns = ["trial", "round", "phase", "method", "param_id", "replicates", "n", "beta", "loss"]
    best, top, summary = analyze(pd.DataFrame(rows, columns=columns), ["n", "beta"], top_k=2)

    assert (best["param_id"], best["trial"], best["round"], best["phase"]) == ("p", 0, 0, "design")
    assert (
        list(top["param_id"]) == ["p", "r"] and list(top["trial"]) == [0, 3] and list(top["rank"]) == [1, 2]
    )
    # n over the distinct top-2 sets p, r: 2 and 4, mean 3, population std 1 (with p twice: 2, 2, mean 2, std 0)
    assert summary["top_k"]["n"] == pytest.approx({"mean": 3.0, "std": 1.0, "min": 2.0, "max": 4.0})
    assert summary["chosen_from"] == "all trials" and summary["best_loss_by_round"] == {"0": 1.5, "1": 1.5}
    assert "relative_error" not in summary  # no true parameters given


def test_a_round_whose_every_set_failed_carries_the_best_so_far():
    """best_loss_by_round has every design and search round: one with no finite loss repeats the running best,
    and rounds before the first finite loss are null (JSON), not left out."""
    rows = [
        (0, 0, "design", "sobol", "a", 2, 0.10, np.nan),
        (1, 1, "search", "tpe", "b", 2, 0.20, 4.0),
        (2, 2, "search", "tpe", "c", 2, 0.30, np.nan),  # the model failed on every set of round 2
        (3, 3, "search", "tpe", "d", 2, 0.40, 5.0),
        (4, 4, "search", "tpe", "e", 2, 0.50, 3.0),
    ]
    _, _, summary = analyze(pd.DataFrame(rows, columns=BETA_TRIALS), ["beta"], top_k=1)
    assert summary["best_loss_by_round"] == {"0": None, "1": 4.0, "2": 4.0, "3": 4.0, "4": 3.0}
    json.dumps(summary, allow_nan=False)  # null, not NaN, in the summary file


def test_the_summary_counts_every_failed_replicate_of_every_trial():
    trials = refined_trials()
    counts = ["replicates_ok", "replicates_failed"]
    # whole numbers, missing where nothing came back, as calibrate writes them
    trials[counts] = trials[counts].astype("Int64")
    trials.loc[trials["param_id"] == "e", counts] = (1, 1)
    trials.loc[len(trials)] = (11, 4, "refine", "local", "i", 5, 0.36, 0.13, -2.9, np.nan, pd.NA, pd.NA)
    _, _, summary = analyze(trials, NAMES, top_k=3)
    # c: 2 failed in the design, e: 1 in the search, i: nothing came back (no count)
    assert summary["replicates_failed"] == 2 + 1


def test_a_failed_simulation_of_a_set_simulated_again_counts_once_in_replicates_failed():
    """replicates_failed counts distinct failed simulations (param_id × replicate). A set TPE proposes again, or
    one the refine step simulates with more replicates, reads its first replicates back from the parts, failed
    ones included (a calibration never reruns them): its rows repeat those failures."""
    trials = refined_trials()
    counts = ["replicates_ok", "replicates_failed"]
    trials[counts] = trials[counts].astype("Int64")
    # b's replicate 1 failed in the design; the refine step reads it back (5 replicates: 1 failed, 4 ok)
    trials.loc[trials["param_id"] == "b", counts] = [(1, 1), (4, 1)]
    # TPE proposes d again in round 2: the same two simulations, the same failed replicate
    again = trials.loc[trials["param_id"] == "d"].iloc[[0]].assign(trial=11, round=2)
    trials = pd.concat([trials, again], ignore_index=True)
    trials.loc[(trials["param_id"] == "d") & (trials["phase"] == "search"), counts] = (1, 1)
    # ... and the refine step a third time, with 3 new replicates of which one fails: 2 of d's 5 failed
    trials.loc[(trials["param_id"] == "d") & (trials["phase"] == "refine"), counts] = (3, 2)
    _, _, summary = analyze(trials, NAMES, top_k=3)
    # c: 2 failed in the design; b: its replicate 1; d: its replicate of the search rows and one of the refine's
    assert summary["replicates_failed"] == 2 + 1 + 2


def test_a_tie_on_the_loss_goes_to_the_earlier_trial_whatever_the_row_order():
    """Two refine rows with the same loss: the earlier trial is the best and ranks first in the top-k, also in a
    trials table whose rows are not in trial order (tables concatenated or sorted by hand)."""
    rows = [
        (3, 1, "refine", "refine", "late", 5, 0.40, 2.0),
        (0, 0, "design", "sobol", "late", 2, 0.40, 1.0),
        (2, 1, "refine", "refine", "early", 5, 0.20, 2.0),
        (1, 0, "design", "sobol", "early", 2, 0.20, 3.0),
    ]
    best, top, _ = analyze(pd.DataFrame(rows, columns=BETA_TRIALS), ["beta"], top_k=2)
    assert (best["param_id"], best["trial"], best["params"]) == ("early", 2, {"beta": 0.20})
    assert list(top["param_id"]) == ["early", "late"] and list(top["trial"]) == [2, 3]


def test_an_infinite_loss_is_not_a_finite_loss_in_the_analysis():
    """The best, the top-k and the summary count only finite losses: +inf (a target that overflowed, in a table
    not written by calibrate) is neither chosen nor counted, and a table of nothing else is refused."""
    rows = [
        (0, 0, "design", "sobol", "a", 2, 0.1, np.inf),
        (1, 1, "search", "tpe", "b", 2, 0.2, 4.0),
        (2, 1, "search", "tpe", "c", 2, 0.3, 6.0),
    ]
    best, top, summary = analyze(pd.DataFrame(rows, columns=BETA_TRIALS), ["beta"], top_k=3)
    assert best["param_id"] == "b" and list(top["param_id"]) == ["b", "c"]
    assert (summary["trials"], summary["trials_with_finite_loss"]) == (3, 2)
    assert summary["loss"] == {"min": 4.0, "median": 5.0, "max": 6.0}
    assert summary["best_loss_by_round"] == {"0": None, "1": 4.0}  # round 0 had no finite loss
    only_infinite = pd.DataFrame(rows[:1], columns=BETA_TRIALS)
    with pytest.raises(ContractError, match=r"^no trial has a finite loss"):
        analyze(only_infinite, ["beta"], top_k=1)


def test_without_top_k_ten_parameter_sets_are_kept_as_the_wrapper_documents():
    """analyze_calibration's meta.yaml and config/README.md give top_k the default 10."""
    rows = [(i, 0, "design", "sobol", f"p{i}", 2, 0.01 * i, float(i)) for i in range(12)]
    _, top, _ = analyze(pd.DataFrame(rows, columns=BETA_TRIALS), ["beta"])
    assert list(top["param_id"]) == [f"p{i}" for i in range(10)]


@pytest.mark.parametrize(
    ("true_params", "message"),
    [
        ([0.3, 0.1], "analyze: true_params must map each parameter to its true value, e.g. {beta: 0.3}; got list "
                     "[0.3, 0.1]"),
        ("beta=0.3", "analyze: true_params must map each parameter to its true value, e.g. {beta: 0.3}; got str "
                     "'beta=0.3'"),
        ({"beta": "about 0.3"}, "analyze: true_params.beta (a calibrated parameter) must be a number, got str "
                                "'about 0.3'"),
        ({"beta": True}, "analyze: true_params.beta (a calibrated parameter) must be a number, got bool True"),
    ],
)  # fmt: skip
def test_true_params_that_are_no_mapping_of_numbers_are_named_and_nothing_is_written(
    tmp_path, true_params, message
):
    """The analyze_calibration wrapper hands params.true_params over as the rule gives it: a list died as
    "'list' object has no attribute 'items'", a word as "could not convert string to float", True counted as 1. A
    parameter held fixed may be a word (a categorical parameter): it is only listed as not calibrated."""
    trials = tmp_path / "trials.parquet"
    refined_trials().to_parquet(trials)
    outputs = [tmp_path / "best.json", tmp_path / "top.parquet", tmp_path / "summary.json"]
    with pytest.raises(ContractError) as error:
        analyze_files(trials, NAMES, *outputs, true_params=true_params)
    assert str(error.value) == message
    assert not any(path.exists() for path in outputs)
    best = analyze_files(trials, NAMES, *outputs, true_params={"beta": 0.3, "process": "stochastic"})
    summary = json.loads(outputs[2].read_text())
    assert best["params"]["beta"] == 0.33 and list(summary["true_params_left_out"]) == ["process"]
