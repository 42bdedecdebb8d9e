"""Each calibration wrapper's own test/Snakefile, run by Snakemake in a scratch directory."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from testkit import REPO, run_snakemake

pytestmark = pytest.mark.integration


def run_wrapper_test(name: str, tmp_path, *targets: str) -> None:
    test_dir = REPO / "wrappers" / name / "test"
    for data in test_dir.glob("*.csv"):
        shutil.copy(data, tmp_path)
    run_snakemake(
        "--snakefile", str(test_dir / "Snakefile"), "--directory", str(tmp_path), "--cores", "2", *targets,
        cwd=tmp_path,
    )  # fmt: skip


def test_simulate_wrapper(tmp_path):
    run_wrapper_test("simulate", tmp_path)
    result = pd.read_parquet(tmp_path / "results/sweep.parquet")
    assert result.drop_duplicates(["param_id", "replicate"]).shape[0] == 3 * 2
    assert set(result["day"]) == set(range(30)) and (result["status"] == "ok").all()
    assert "started a LocalCluster with 2 worker(s)" in (tmp_path / "logs/simulate.log").read_text()


def test_sweep_summary_and_page_wrappers(tmp_path):
    run_wrapper_test("visualize_sweep", tmp_path, "results/sweep.html")
    table = pd.read_parquet(tmp_path / "results/sweep_table.parquet")
    assert len(table) == 4 and (table["replicates_ok"] == 2).all() and "incidence_sum_sd" in table
    assert (tmp_path / "results/sweep.html").read_text().count("data:image/png;base64,") == 2
    assert (tmp_path / "results/series.png").read_bytes()[:4] == b"\x89PNG"


def test_sample_design_and_generate_observed_wrappers(tmp_path):
    run_wrapper_test("sample_design", tmp_path)
    design = pd.read_csv(tmp_path / "results/design.csv")
    assert len(design) == 8 and design["gamma"].between(0.03, 0.3).all()
    run_wrapper_test("generate_observed", tmp_path)
    observed = pd.read_csv(tmp_path / "results/observed.csv")
    assert list(observed.columns) == ["day", "incidence"] and len(observed) == 60


def test_calibrate_analyze_visualize_wrappers(tmp_path):
    run_wrapper_test("visualize_calibration", tmp_path, "results/calibration.html")
    best = json.loads((tmp_path / "results/best.json").read_text())
    trials = pd.read_parquet(tmp_path / "results/trials.parquet")
    assert (
        len(trials) == 8 + 2 * 4 + 3 and best["loss"] == trials.loc[trials["phase"] == "refine", "loss"].min()
    )
    assert (tmp_path / "results/calibration.html").read_text().count("data:image/png;base64,") == 3
