"""The exploration notebook runs as a `notebook:` rule in the pipeline; its executed copy lands in the results."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest
from evaluation.pipeline_run import DATASET, SEED, VARIANTS, shared_run

from kdgat.chain import MODELS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.thresholds import FIXED_ALPHA_MODELS

pytestmark = pytest.mark.integration


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
            # F1 on an attack-free scenario is 0 with false alarms and undefined (None -> NaN) without any.
            f1 = document["test"][scenario]["gat"]["f1"]
            assert row["f1_mean"].item() == pytest.approx(float("nan") if f1 is None else f1, nan_ok=True)
            if scenario == "dos":
                assert row["f1_n"].item() == 1
    clean = table[table["scenario"] == "clean"]
    assert clean["roc_auc_mean"].isna().all()  # one class: no ROC curve
    assert (workdir / "results/evaluation/notebook/scenario_f1.svg").read_text().lstrip().startswith("<?xml")
