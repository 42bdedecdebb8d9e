"""`snakemake --report` of a real pipeline run holds the evaluation figures, their captions and the rule graph."""

from __future__ import annotations

import json
import re

import pytest
from evaluation.pipeline_run import DATASET, SEED, VARIANTS, shared_run

pytestmark = pytest.mark.integration
EVALUATED = f"results/evaluation/{DATASET}/seed_{SEED}"


@pytest.fixture(scope="session")
def report(tmp_path_factory) -> str:
    return (shared_run(tmp_path_factory) / "report.html").read_text()


def embedded(report: str, name: str):
    """A JSON object the report assigns to a JavaScript variable (`var <name> = {...};`)."""
    match = re.search(rf"var {name} = (\{{.*?\}});\n", report)
    assert match, f"the report has no `var {name}`"
    return json.loads(match.group(1))


def test_report_has_every_figure_with_its_caption(report):
    results = embedded(report, "results")
    categories = embedded(report, "categories")
    expected = {
        "ROC curves": [f"{EVALUATED}/{v}/roc.svg" for v in VARIANTS],
        "Precision-recall curves": [f"{EVALUATED}/{v}/pr.svg" for v in VARIANTS],
        "Confusion matrices": [f"{EVALUATED}/{v}/confusion.svg" for v in VARIANTS],
        "Training curves": [f"results/evaluation/{DATASET}/training_curves.svg"],
        "Teacher vs students": [
            f"results/evaluation/{DATASET}/size_f1.svg",
            "results/evaluation/size_f1.svg",
            "results/evaluation/summary.csv",
            "results/evaluation/summary.md",
            "results/evaluation/scenario_metrics.csv",
            "results/evaluation/notebook/scenario_f1.svg",
        ],
    }
    for category, paths in expected.items():
        assert category in categories, f"category {category!r} missing from the report"
        listed = {p for files in categories[category].values() for p in files}
        assert set(paths) <= listed, f"{category}: {sorted(set(paths) - listed)} missing"
        for path in paths:
            item = results[path]
            assert item["caption"].strip(), f"{path} has no caption"
            if path.endswith(".svg"):
                assert item["data_uri"].startswith("data:image/svg+xml")
    # Captions are rendered with the job's wildcards and params, and labels tell the variants apart.
    roc = results[f"{EVALUATED}/student_kd/roc.svg"]
    assert DATASET in roc["caption"] and "student_kd" in roc["caption"] and f"seed {SEED}" in roc["caption"]
    assert roc["labels"] == {"dataset": DATASET, "variant": "student_kd", "seed": str(SEED)}
    assert "Youden" in results[f"{EVALUATED}/teacher/confusion.svg"]["caption"]
    assert "95% t interval" in results["results/evaluation/summary.md"]["caption"]
    assert "baseline_unknown_id" in results["results/evaluation/scenario_metrics.csv"]["caption"]


def test_report_includes_the_rule_graph(report):
    graph = embedded(report, "rulegraph_spec")
    rules = {node["rule"] for data in graph["data"] if data["name"] == "node-data" for node in data["values"]}
    assert {f"evaluation_evaluate_{v}" for v in VARIANTS} | {"evaluation_summarize_dataset"} <= rules
    assert {"preprocess_build_graphs", "kd_gat_train_gat_teacher", "evaluation_explore"} <= rules
