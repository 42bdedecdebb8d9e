"""The exploration notebook runs as a `notebook:` rule in the pipeline; its executed copy lands in the results."""

from __future__ import annotations

import json
import math

import nbformat
import pandas as pd
import pytest
from evaluation.pipeline_run import DATASET, SEED, VARIANTS, shared_run
from testkit import REPO

from kdgat.chain import MODELS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.thresholds import FIXED_ALPHA_MODELS

pytestmark = pytest.mark.integration
NOTEBOOK = REPO / "workflow/notebooks/explore_evaluation.py.ipynb"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return shared_run(tmp_path_factory)


def test_executed_notebook_is_kept_with_the_results(workdir):
    notebook = nbformat.read(workdir / "results/evaluation/notebook/explore_evaluation.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.get("execution_count") for cell in code), "some cells did not run"
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    shown = json.dumps([o.get("data", {}) for o in outputs], ensure_ascii=False)
    assert "student_kd − student" in shown and "one seed: no interval" in shown
    assert "share_alpha_ge_0.9" in shown  # the α distribution


def test_notebook_tables_match_the_metrics(workdir):
    table = pd.read_csv(workdir / "results/evaluation/notebook/scenario_f1.csv")
    models = {*MODELS, *FIXED_ALPHA_MODELS, *BASELINES}
    assert len(table) == len(VARIANTS) * len(models) * 2  # two test scenarios, each over the seeds
    for variant in VARIANTS:
        path = workdir / f"results/evaluation/{DATASET}/seed_{SEED}/{variant}/metrics.json"
        document = json.loads(path.read_text())
        for scenario in ("dos", "clean"):
            row = table[
                (table["variant"] == variant) & (table["model"] == "gat") & (table["scenario"] == scenario)
            ]
            metrics = document["test"][scenario]["gat"]
            if scenario == "dos":
                assert row["f1_mean"].item() == pytest.approx(metrics["f1"]) and row["f1_n"].item() == 1
            else:  # attack-free: no F1 (0 after one false alarm, undefined without), its false-alarm rate instead
                assert row["attack_free"].item() and row["f1_n"].item() == 0
                assert math.isnan(row["f1_mean"].item())
                assert row["false_alarm_rate_mean"].item() == pytest.approx(1 - metrics["specificity"])
    clean = table[table["scenario"] == "clean"]
    assert clean["roc_auc_mean"].isna().all()  # one class: no ROC curve
    assert (workdir / "results/evaluation/notebook/scenario_f1.svg").read_text().lstrip().startswith("<?xml")


def run_code(workdir, tmp_path, scenarios: pd.DataFrame, variants=VARIANTS) -> tuple[dict, str]:
    """The notebook's code cells, as the `explore` rule runs them, on the pipeline's inputs with the scenario
    table replaced and only ``variants``' metrics.json: (their variables, what they printed)."""
    import contextlib
    import io
    import types

    scenarios.to_csv(tmp_path / "scenario_metrics.csv", index=False)
    evaluated = workdir / f"results/evaluation/{DATASET}/seed_{SEED}"
    snakemake = types.SimpleNamespace(
        input=types.SimpleNamespace(
            summary=str(workdir / "results/evaluation/summary.csv"),
            scenarios=str(tmp_path / "scenario_metrics.csv"),
            metrics=[str(evaluated / variant / "metrics.json") for variant in variants],
        ),
        output=types.SimpleNamespace(
            table=str(tmp_path / "table.csv"), heatmap=str(tmp_path / "heatmap.svg")
        ),
        scriptdir=str(NOTEBOOK.parent),
    )
    names, printed = {"snakemake": snakemake}, io.StringIO()
    with contextlib.redirect_stdout(printed):
        for cell in nbformat.read(NOTEBOOK, as_version=4).cells:
            if cell.cell_type == "code":
                exec(compile(cell.source, str(NOTEBOOK), "exec"), names)
    return names, printed.getvalue()


def test_a_scenario_no_model_has_an_f1_on_keeps_its_heatmap_column(workdir, tmp_path):
    # An attack-free scenario on which no model raised a false alarm: every F1 is undefined. The caption and the
    # notebook promise n/a cells; the heatmap must not drop the scenario.
    scenarios = pd.read_csv(workdir / "results/evaluation/scenario_metrics.csv")
    scenarios.loc[scenarios["scenario"] == "clean", "f1"] = float("nan")
    names, _ = run_code(workdir, tmp_path, scenarios)
    assert list(names["heat"].columns) == [f"{DATASET}\ndos", f"{DATASET}\nclean"]
    assert names["heat"][f"{DATASET}\nclean"].isna().all()


def test_partial_results_without_a_student_say_why_there_is_no_distillation_comparison(workdir, tmp_path):
    scenarios = pd.read_csv(workdir / "results/evaluation/scenario_metrics.csv")
    names, printed = run_code(workdir, tmp_path, scenarios[scenarios["variant"] == "teacher"], ["teacher"])
    assert names["kd_gain"].empty
    assert (
        "no distillation comparison: it needs student and student_kd (and teacher); found ['teacher']"
        in printed
    )
