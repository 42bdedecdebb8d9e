"""The calibration part of `make demo` (config/config.yaml through workflow/Snakefile) for real: the sweep and the
calibration both start a LocalCluster and run their timing probe on it, and `simcal status` reports both runs
from their progress files. There is no in-process path left in the runner: with `processes: false` the local
backend's workers are threads, but they are still reached through a Dask client like any other."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
from testkit import REPO, run_snakemake, venv_bin

pytestmark = pytest.mark.integration


def test_demo_sweep_and_calibration_run_on_a_local_cluster(tmp_path):
    run_snakemake(
        "--snakefile", str(REPO / "workflow/Snakefile"), "--configfile", str(REPO / "config/config.yaml"),
        "--directory", str(tmp_path), "--cores", "2", "calibration_all", cwd=tmp_path, timeout=900,
    )  # fmt: skip
    logs = tmp_path / "logs/calibration/sir"
    for name in ("simulate.log", "calibrate.log"):
        text = (logs / name).read_text()
        assert "started a LocalCluster with 2 worker(s) at tcp://127.0.0.1:" in text, name
        assert "timing probe:" in text and "Dask dashboard: http://127.0.0.1:" in text, name

    status = subprocess.run(
        [venv_bin("simcal"), "status", "--json", "results"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    runs = {row["output"]: row for row in json.loads(status.stdout)}
    sweep, calibration = (
        "results/calibration/sir/sweep/simulations.parquet",
        "results/calibration/sir/simulations.parquet",
    )
    assert set(runs) == {sweep, calibration}
    for output, row in runs.items():
        assert row["state"] == "finished" and row["done"] == row["total"] > 0 and row["backend"] == "local"
        # Ended: `simcal status` shows no dashboard (its cluster closed with it); the file keeps the link it had
        assert row["dashboard"] is None
        assert json.loads((tmp_path / row["progress_file"]).read_text())["dashboard"].startswith(
            "http://127.0.0.1:"
        )
        simulations = pd.read_parquet(tmp_path / output).drop_duplicates(["param_id", "replicate"])
        assert len(simulations) == row["total"], output
