"""Calibration: designs, targets, recovery of known SIR parameters, analysis and the HTML page."""

from __future__ import annotations

import base64
import json
import re

import pandas as pd
import pytest
import yaml
from testkit import REPO

from simcal.analyze import analyze_files
from simcal.calibrate import calibrate
from simcal.contract import ContractError
from simcal.design import sample_design
from simcal.models.sir import observe
from simcal.runner import read_results
from simcal.targets import mean_replicate_mse, replicate_mean_mse
from simcal.visualize import visualize


def test_designs_stay_in_bounds_and_repeat_with_the_seed():
    bounds = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.01, "high": 1.0, "log": True}}
    for kind in ("sobol", "lhs", "random"):
        design = sample_design(bounds, 16, kind, seed=5)
        assert design["beta"].between(0.1, 0.6).all() and design["gamma"].between(0.01, 1.0).all()
        pd.testing.assert_frame_equal(design, sample_design(bounds, 16, kind, seed=5))
    lhs = sample_design({"x": {"low": 0, "high": 1}}, 10, "lhs", seed=1)
    assert sorted((lhs["x"] * 10).astype(int)) == list(range(10))  # one point per stratum
    with pytest.raises(ContractError, match="calibration.parameters.beta: need low < high"):
        sample_design({"beta": {"low": 1, "high": 0}}, 4)


def test_targets_on_a_hand_computed_example():
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


@pytest.fixture(scope="module")
def default_calibration(tmp_path_factory):
    """The calibration of config/config.yaml, run through the library on a LocalCluster.

    A fixed simulation batch size sends every round through the cluster (the automatic one may run a small round
    inside its timing probe).
    """
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())["calibration"]
    out = tmp_path_factory.mktemp("calibration")
    true_params = config["observed"]["true_params"]
    observed = observe(
        {**config["fixed"], **true_params}, config["observed"]["seed"], **config["observed"]["options"]
    )
    observed.to_csv(out / "observed.csv", index=False)
    trials = calibrate(
        config["model"], observed, config["parameters"], config["targets"], out / "simulations.parquet",
        out / "trials.parquet", config["calibrate"], {**config["simulation"], "batch_size": 16},
        fixed_params=config["fixed"], backend="local", threads=2,
    )  # fmt: skip
    return config, out, trials


def test_default_calibration_recovers_the_true_parameters_within_15_percent(default_calibration):
    config, out, trials = default_calibration
    best = trials.loc[trials["loss"].idxmin()]
    for name, true_value in config["observed"]["true_params"].items():
        assert abs(best[name] - true_value) / true_value < 0.15, (name, best[name], true_value)
    settings = config["calibrate"]
    assert len(trials) == settings["initial_points"] + settings["rounds"] * settings["batch_size"]
    assert set(trials["method"]) == {settings["initial_design"], settings["sampler"]}
    sims = read_results(out / "simulations.parquet")
    assert sims.drop_duplicates(["param_id", "replicate"]).shape[0] == (
        trials["param_id"].nunique() * config["simulation"]["replicates"]
    )


def test_analysis_and_page(default_calibration):
    config, out, trials = default_calibration
    names = list(config["parameters"])
    best = analyze_files(
        out / "trials.parquet", names, out / "best.json", out / "top_k.parquet", out / "summary.json", top_k=5,
        true_params=config["observed"]["true_params"],
    )  # fmt: skip
    assert best["loss"] == pytest.approx(trials["loss"].min())
    top = pd.read_parquet(out / "top_k.parquet")
    assert list(top["rank"]) == [1, 2, 3, 4, 5] and top["loss"].is_monotonic_increasing
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trials"] == len(trials)
    assert all(err < 0.15 for err in summary["relative_error"].values())
    by_round = list(summary["best_loss_by_round"].values())
    assert by_round == sorted(by_round, reverse=True)

    pngs = {name: out / f"{name}.png" for name in ("fit", "loss", "history")}
    visualize(
        out / "trials.parquet", out / "simulations.parquet", out / "observed.csv", out / "best.json",
        out / "summary.json", names, out / "page.html", pngs,
    )  # fmt: skip
    page = (out / "page.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 3
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for title in ("Observed vs simulated", "Loss against each parameter", "Optimization history"):
        assert title in page
    assert "http" not in page.replace("http-equiv", "")  # self-contained: nothing fetched
    for path in pngs.values():
        assert path.read_bytes()[:4] == b"\x89PNG"


def test_calibration_fails_naming_the_error_when_too_many_simulations_fail(tmp_path):
    observed = pd.DataFrame({"day": [0, 1], "incidence": [1.0, 2.0]})
    with pytest.raises(
        Exception, match=r"2 of 2 simulations failed .*ValueError: beta and gamma must be positive"
    ):
        calibrate(
            "simcal.models.sir:simulate", observed, {"beta": {"low": -0.2, "high": -0.1}, "gamma": {"low": 0.1, "high": 0.2}},
            [{"function": "simcal.targets:replicate_mean_mse", "column": "incidence"}], tmp_path / "s", tmp_path / "t.parquet",
            {"initial_points": 2, "rounds": 0}, {"replicates": 1, "max_failed_fraction": 0.5}, fixed_params={"days": 5},
        )  # fmt: skip


def small_calibration(out, rounds: int, caplog=None) -> pd.DataFrame:
    observed = observe({"beta": 0.3, "gamma": 0.1, "days": 40}, 7)
    return calibrate(
        "simcal.models.sir:simulate", observed, {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.03, "high": 0.3}},
        [{"function": "simcal.targets:mean_replicate_mse", "column": "incidence", "on": "day"}],
        out / "simulations.parquet", out / "trials.parquet", {"initial_points": 8, "rounds": rounds, "batch_size": 4},
        {"replicates": 2, "batch_size": 8}, fixed_params={"days": 40}, backend="local", backend_options={"processes": False},
        threads=2,
    )  # fmt: skip


def test_calibration_is_deterministic_and_resumes_from_its_finished_simulations(tmp_path, caplog):
    first = small_calibration(tmp_path / "a", rounds=2)
    second = small_calibration(tmp_path / "b", rounds=2)
    pd.testing.assert_frame_equal(first, second)  # same seed: same proposals, same simulations, same losses

    # Pretend the first calibration crashed after its simulations were written, then rerun with one more round.
    finished = tmp_path / "a/simulations.parquet"
    partial = tmp_path / "a/simulations.parquet.partial"
    partial.mkdir()
    finished.rename(partial / "part-all.parquet")
    manifest = {"model": "simcal.models.sir:simulate", "replicates": 2}
    (partial / "_manifest.json").write_text(json.dumps(manifest))
    caplog.set_level("INFO", logger="simcal")
    third = small_calibration(tmp_path / "a", rounds=3)
    pd.testing.assert_frame_equal(third[third["round"] < 3].reset_index(drop=True), first)
    resumed = [r.getMessage() for r in caplog.records if r.getMessage().startswith("resuming:")]
    assert (
        resumed
        == ["resuming: 16 of 16 simulations already done in " + str(finished) + ".partial"]
        + [f"resuming: 8 of 8 simulations already done in {finished}.partial"] * 2
    )
