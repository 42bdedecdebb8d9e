"""The calibration module and the simulate wrapper driven by real Snakemake runs."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import yaml
from testkit import REPO, run_snakemake

pytestmark = pytest.mark.integration

SMALL_CONFIG = {
    "calibration": {
        "name": "sir_small",
        "fixed": {"population": 2000, "initial_infected": 5, "days": 60},
        "calibrate": {
            "initial_points": 8,
            "rounds": 1,
            "proposals_per_round": 4,
            "seed": 3,
            "refine": {"top_k": 2, "replicates": 4},
        },
        "simulation": {"replicates": 2, "batch_size": 4},
        "sweep": {"enabled": True, "n": 4, "replicates": 2},
        "analyze": {"top_k": 3},
    }
}


def downstream(tmp: Path, config: dict) -> Path:
    """A downstream project that imports the module exactly as the README says."""
    (tmp / "config.yaml").write_text(yaml.safe_dump(config))
    snakefile = tmp / "Snakefile"
    snakefile.write_text(
        textwrap.dedent(
            f"""
            configfile: "config.yaml"


            module calibration:
                snakefile:
                    "{REPO}/workflow/modules/calibration/Snakefile"
                config:
                    config


            use rule * from calibration as calibration_*


            rule all:
                default_target: True
                input:
                    rules.calibration_all.input,
            """
        )
    )
    return snakefile


def test_module_imported_downstream_runs_end_to_end_with_report(tmp_path):
    snakefile = downstream(tmp_path, SMALL_CONFIG)
    run_snakemake("--snakefile", str(snakefile), "--directory", str(tmp_path), "--cores", "2", cwd=tmp_path)
    results = tmp_path / "results/calibration/sir_small"
    best = json.loads((results / "analysis/best.json").read_text())
    assert set(best["params"]) == {"beta", "gamma"}
    trials = pd.read_parquet(results / "trials.parquet")
    assert list(trials["phase"]) == ["design"] * 8 + ["search"] * 4 + ["refine"] * 2
    refine = trials[trials["phase"] == "refine"]
    assert best["loss"] == pytest.approx(refine["loss"].min()) and best["replicates"] == 4
    assert len(pd.read_parquet(results / "analysis/top_k.parquet")) == 2  # ranked among the refined sets
    sweep = pd.read_parquet(results / "sweep/simulations.parquet")
    assert sweep.drop_duplicates(["param_id", "replicate"]).shape[0] == 4 * 2
    assert (sweep["status"] == "ok").all() and (sweep["days"] == 60).all()
    summary = pd.read_parquet(results / "sweep/summary.parquet")
    assert len(summary) == 4 and (summary["replicates_ok"] == 2).all()
    assert {"incidence_mean_mean", "incidence_max_sd", "prevalence_max_mean"} <= set(summary.columns)
    assert (results / "sweep/sweep.html").read_text().count("data:image/png;base64,") == 2
    page = (results / "calibration.html").read_text()
    assert page.count("data:image/png;base64,") == 3
    log = (tmp_path / "logs/calibration/sir_small/calibrate.log").read_text()
    assert "round 1 (tpe)" in log and "round 2 (refine)" in log and "dashboard" in log
    assert (tmp_path / "benchmarks/calibration/sir_small/calibrate.tsv").exists()

    run_snakemake(
        "--snakefile", str(snakefile), "--directory", str(tmp_path), "--report", "report.html", cwd=tmp_path
    )
    report = (tmp_path / "report.html").read_text()
    assert "calibration.html" in report and "history.png" in report and "series.png" in report


def test_settings_that_decide_no_row_rerun_no_finished_sweep_or_calibration(tmp_path):
    config = yaml.safe_load(yaml.safe_dump(SMALL_CONFIG))
    snakefile = str(downstream(tmp_path, config))
    targets = [
        f"results/calibration/sir_small/{name}" for name in ("sweep/simulations.parquet", "trials.parquet")
    ]
    args = ("--snakefile", snakefile, "--directory", str(tmp_path), "--cores", "1", *targets)
    run_snakemake(*args, cwd=tmp_path)
    # where the simulations run decides none of their rows: neither the sweep nor the calibration reruns
    config["calibration"]["backend"] = {"kind": "scheduler", "scheduler": {"address": "tcp://127.0.0.1:1"}}
    downstream(tmp_path, config)
    assert "Nothing to be done" in run_snakemake("-n", *args, cwd=tmp_path).stdout
    # nor do how often progress is written and how long the rule waits for a worker
    config["calibration"]["simulation"] |= {"progress_seconds": 60, "no_worker_timeout_s": 30}
    downstream(tmp_path, config)
    dry = run_snakemake("-n", *args, cwd=tmp_path).stdout
    assert "Nothing to be done" in dry, dry[-3000:]
    # what does decide them still reruns the sweep, and the calibration too
    config["calibration"]["sweep"]["replicates"] = 3
    downstream(tmp_path, config)
    dry = run_snakemake("-n", *args, cwd=tmp_path).stdout
    assert "params have changed since last execution:\n        calibration_simulate\n" in dry, dry[-3000:]
    config["calibration"]["simulation"]["timeout_s"] = 100
    downstream(tmp_path, config)
    dry = run_snakemake("-n", *args, cwd=tmp_path).stdout
    assert (
        "params have changed since last execution:\n        calibration_calibrate, calibration_simulate\n"
        in dry
    ), dry[-3000:]


def test_bad_calibration_settings_stop_the_run_naming_the_setting(tmp_path):
    renamed = {"calibration": {**SMALL_CONFIG["calibration"], "calibrate": {"batch_size": 4}}}
    failed = run_snakemake(
        "-n", "--snakefile", str(downstream(tmp_path, renamed)), "--directory", str(tmp_path), cwd=tmp_path,
        check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    assert "calibrate.batch_size was renamed proposals_per_round" in failed.stdout
    assert "On instance['calibration']['calibrate']" in failed.stdout

    misspelt = {"calibration": {**SMALL_CONFIG["calibration"], "fixed": {"populaton": 2000, "days": 20}}}
    failed = run_snakemake(
        "--snakefile", str(downstream(tmp_path, misspelt)), "--directory", str(tmp_path), "--cores", "1",
        "results/calibration/sir_small/trials.parquet", cwd=tmp_path, check=False,
    )  # fmt: skip
    assert failed.returncode != 0
    # named as the fixed value it is, against the model, while the workflow is parsed: no job runs
    expected = "calibration.fixed: 'populaton' is not a parameter of simcal.models.sir:simulate (did you mean"
    assert expected in failed.stdout, failed.stdout
    assert "Building DAG of jobs" not in failed.stdout, failed.stdout
    assert not (tmp_path / "logs/calibration/sir_small/generate_observed.log").exists()
    assert not (tmp_path / "results/calibration/sir_small/simulations.parquet.partial").exists()


PREFIXED = """
configfile: "config.yaml"


module cal_a:
    snakefile:
        "{module}"
    config:
        config
    prefix:
        "cal_a"


use rule * from cal_a as cal_a_*
"""


def test_a_relative_observed_path_in_the_working_directory_under_a_module_prefix_is_refused_naming_the_key(
    tmp_path,
):
    """calibration.observed.path is documented as read from the working directory, and the module checked the file
    there, while Snakemake looked for the calibrate rule's input behind the module's `prefix:`: the dry run
    stopped with a MissingInputException for cal_a/data/observed.csv, naming no key, although data/observed.csv
    was there. Refused naming the key; the same file behind the prefix, or given absolute, is read."""
    observed = tmp_path / "data" / "observed.csv"
    observed.parent.mkdir()
    observed.write_text("day,incidence\n0,1\n1,2\n")
    config = {"calibration": {**SMALL_CONFIG["calibration"], "observed": {"path": "data/observed.csv"}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        PREFIXED.format(module=REPO / "workflow/modules/calibration/Snakefile")
    )
    refused = run_snakemake("-n", "--cores", "1", "cal_a_all", cwd=tmp_path, check=False)
    assert refused.returncode != 0, refused.stdout
    assert "MissingInputException" not in refused.stdout, refused.stdout
    assert (
        "calibration.observed.path: 'data/observed.csv' is relative, and the calibration module is imported with a "
        "`prefix:`, behind which Snakemake looks for it (cal_a/data/observed.csv), while the file is in the "
        "working directory: give an absolute path"
    ) in refused.stdout, refused.stdout

    config["calibration"]["observed"]["path"] = str(observed)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    absolute = run_snakemake("-n", "--cores", "1", "cal_a_all", cwd=tmp_path)
    assert f"input: {observed}" in absolute.stdout, absolute.stdout

    config["calibration"]["observed"]["path"] = "data/observed.csv"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "cal_a" / "data").mkdir(parents=True)
    observed.rename(tmp_path / "cal_a" / "data" / "observed.csv")
    behind = run_snakemake("-n", "--cores", "1", "cal_a_all", cwd=tmp_path)
    assert "input: cal_a/data/observed.csv" in behind.stdout, behind.stdout


def test_simulate_rule_fails_over_threshold_and_resumes_with_a_new_one(tmp_path):
    (tmp_path / "params.csv").write_text("beta,gamma\n0.2,0.1\n0.3,0.1\n0.4,0.1\n0.5,0.1\n")
    # A model of the lab's own (importable from the working directory) that fails at run time for one valid-looking
    # parameter set; values outside a declared space are refused before the sweep starts, so SIR cannot serve.
    (tmp_path / "lab_model.py").write_text(
        textwrap.dedent(
            """
            from simcal.models.sir import simulate as sir

            def simulate(params, seed):
                if params["beta"] == 0.3:
                    raise ValueError("beta = 0.3 diverges in this lab's model")
                return sir(params, seed)
            """
        )
    )

    def snakefile(max_failed: float) -> Path:
        path = tmp_path / "Snakefile"
        path.write_text(
            textwrap.dedent(
                f"""
                rule simulate:
                    input:
                        "params.csv",
                    output:
                        "sweep.parquet",
                    log:
                        "simulate.log",
                    params:
                        model="lab_model:simulate",
                        settings={{"replicates": 2, "batch_size": 2, "max_failed_fraction": {max_failed}}},
                        fixed={{"days": 20}},
                    threads: 2
                    wrapper:
                        "file:{REPO}/wrappers/simulate"
                """
            )
        )
        return path

    failed = run_snakemake(
        "--snakefile",
        str(snakefile(0.1)),
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        cwd=tmp_path,
        check=False,
    )
    assert failed.returncode != 0
    log = (tmp_path / "simulate.log").read_text()
    assert "2 of 8 simulations failed" in log and "beta = 0.3 diverges in this lab's model" in log
    assert not (tmp_path / "sweep.parquet").exists()
    kept = list((tmp_path / "sweep.parquet.partial").glob("part-*.parquet"))
    assert len(kept) == 4  # all batches finished; the threshold failed the rule

    run_snakemake(
        "--snakefile", str(snakefile(0.3)), "--directory", str(tmp_path), "--cores", "2", cwd=tmp_path
    )
    assert "8 simulations (0 run now, 8 resumed)" in (tmp_path / "simulate.log").read_text()
    result = pd.read_parquet(tmp_path / "sweep.parquet")
    assert (result.drop_duplicates(["param_id", "replicate"])["status"] == "failed").sum() == 2
