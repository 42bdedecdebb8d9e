"""The kd_gat module run by Snakemake from a downstream Snakefile on the default synthetic datasets: all three
chains, the quality floor, a Paramspace sweep, and the prefixed rule names."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from sklearn.metrics import f1_score
from testkit import REPO, run_snakemake

from kdgat.graph_store import load_graph_sets
from kdgat.inference import score_graphs
from kdgat.model_store import load_model

pytestmark = pytest.mark.integration

DOWNSTREAM = REPO / ".tests" / "integration" / "kd_gat" / "Snakefile"
VARIANTS = ("teacher", "student_kd", "student")
STAGES = ("vgae", "gat", "dqn")
SPOOFING_OR_DOS = ("dos", "gear", "rpm")


def default_config(**kd_gat_changes) -> dict:
    """The shipped config/config.yaml (synthetic datasets, demo presets) restricted to preprocess + kd_gat."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config = {key: config[key] for key in ("datasets", "preprocess", "kd_gat")} | {"catalog": str(REPO)}
    config["kd_gat"].update(kd_gat_changes)
    return config


def run(workdir, config, *targets, extra=()):
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(
        *targets, "--snakefile", str(DOWNSTREAM), "--directory", str(workdir), "--configfile",
        str(workdir / "config.yaml"), "--cores", "2", *extra, cwd=workdir,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kd_gat_pipeline")
    config = default_config()
    run(workdir, config)
    return workdir, config


def test_every_chain_writes_its_artifacts(pipeline):
    workdir, config = pipeline
    for dataset in config["datasets"]:
        for variant in VARIANTS:
            for stage in STAGES:
                folder = workdir / "results" / "kd_gat" / dataset / variant / stage
                metrics = json.loads((folder / "metrics.json").read_text())
                assert metrics["variant"] == variant and metrics["stage"] == stage
                assert len(pd.read_csv(folder / "history.csv")) == metrics["epochs_run"]
                assert load_model(folder / "model.pt") is not None
                log = (workdir / "logs" / "kd_gat" / dataset / variant / f"{stage}.log").read_text()
                assert "epoch 1/" in log and "graphs/s=" in log and "eta=" in log
                assert (workdir / "benchmarks" / "kd_gat" / dataset / variant / f"{stage}.tsv").is_file()
    # Checkpoints are dropped after success; a second run has nothing to do (mtime trigger only: other modules'
    # code may legitimately change while this test runs).
    assert not list((workdir / "checkpoints").rglob("*.pt"))
    assert "Nothing to be done" in run(workdir, config, extra=("-n", "--rerun-triggers", "mtime")).stdout


@pytest.fixture(scope="module")
def test_scores(pipeline):
    """{(dataset, variant): {scenario: score_graphs frame}} on the test scenarios."""
    workdir, config = pipeline
    scores = {}
    for dataset in config["datasets"]:
        scenarios = load_graph_sets(workdir / "results" / "preprocess" / dataset / "test.pt")
        for variant in VARIANTS:
            models = [
                load_model(workdir / "results" / "kd_gat" / dataset / variant / s / "model.pt")
                for s in STAGES
            ]
            scores[dataset, variant] = {
                name: score_graphs(*models, graphs) for name, graphs in scenarios.items()
            }
    return scores


def pooled_f1(frames: dict) -> dict:
    scores = pd.concat(frames.values())
    return {
        "gat": f1_score(scores["label"], scores["gat_prob"] > 0.5),
        "fusion": f1_score(scores["label"], scores["fusion_pred"]),
    }


def test_quality_floor_teacher_gat_on_dos_and_spoofing(test_scores):
    failures = []
    for (dataset, variant), frames in test_scores.items():
        for name, scores in frames.items():
            if variant == "teacher" and any(kind in name for kind in SPOOFING_OR_DOS):
                f1 = f1_score(scores["label"], scores["gat_prob"] > 0.5)
                if f1 < 0.95:
                    failures.append(f"{dataset}/{name}: teacher GAT F1 {f1:.3f} < 0.95")
    assert not failures, failures


def test_quality_floor_fusion_not_worse_than_gat(test_scores):
    for key, frames in test_scores.items():
        f1 = pooled_f1(frames)
        assert f1["fusion"] >= f1["gat"] - 0.01, (key, f1)


def test_quality_floor_distilled_student_not_worse_than_plain_student(test_scores):
    datasets = {dataset for dataset, _ in test_scores}
    for dataset in datasets:
        distilled, plain = (
            pooled_f1(test_scores[dataset, "student_kd"]),
            pooled_f1(test_scores[dataset, "student"]),
        )
        assert distilled["fusion"] >= plain["fusion"] - 0.02, (dataset, distilled, plain)
        assert distilled["gat"] >= plain["gat"] - 0.02, (dataset, distilled, plain)


def test_student_kd_used_its_teacher_and_students_are_smaller(pipeline):
    workdir, config = pipeline
    dataset = next(iter(config["datasets"]))
    folder = workdir / "results" / "kd_gat" / dataset
    for stage in STAGES:
        teacher = json.loads((folder / "teacher" / stage / "metrics.json").read_text())
        distilled = json.loads((folder / "student_kd" / stage / "metrics.json").read_text())
        plain = json.loads((folder / "student" / stage / "metrics.json").read_text())
        assert distilled["knowledge_distillation"] and not plain["knowledge_distillation"]
        assert distilled["num_parameters"] == plain["num_parameters"] < teacher["num_parameters"]
        assert "train_kd" in pd.read_csv(folder / "student_kd" / stage / "history.csv").columns


def test_paramspace_sweep_selected_by_query(pipeline, tmp_path):
    workdir, config = pipeline
    table = pd.read_csv(REPO / "config" / "params.tsv", sep="\t")
    query = "heads == 4 and num_layers == 2"
    sweep = {
        "enabled": True,
        "table": str(REPO / "config" / "params.tsv"),
        "query": query,
        "variant": "teacher",
    }
    config = default_config(sweep=sweep)
    dataset = next(iter(config["datasets"]))
    run(
        workdir,
        config,
        f"results/kd_gat/{dataset}/sweep/hidden~16_heads~4_num_layers~2_lr~0.003/gat/metrics.json",
    )
    metrics = json.loads(
        (
            workdir
            / f"results/kd_gat/{dataset}/sweep/hidden~16_heads~4_num_layers~2_lr~0.003/gat/metrics.json"
        ).read_text()
    )
    # The row's values reached the model: 16 hidden × 4 heads × 2 layers of jumping knowledge.
    model = load_model(
        workdir / f"results/kd_gat/{dataset}/sweep/hidden~16_heads~4_num_layers~2_lr~0.003/gat/model.pt"
    )
    assert model.head[0].in_features == 16 * 4 * 2 and metrics["stage"] == "gat"
    # The query selects the sub-space: the dry run plans exactly the selected rows for every dataset.
    dry = run(
        workdir, config, "kd_gat_all", extra=("-n", "--forceall", "--allowed-rules", "kd_gat_train_gat_sweep")
    )
    selected = len(table.query(query))
    assert selected < len(table)
    assert f"kd_gat_train_gat_sweep{' ' * 1}" in dry.stdout
    planned = [line for line in dry.stdout.splitlines() if line.startswith("kd_gat_train_gat_sweep")]
    assert planned and int(planned[0].split()[-1]) == selected * len(config["datasets"])


def test_imported_module_exposes_the_nine_prefixed_rules(tmp_path):
    config = default_config()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    listing = run_snakemake(
        "--snakefile", str(DOWNSTREAM), "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
        "--list-rules", cwd=tmp_path,
    ).stdout  # fmt: skip
    rules = {f"kd_gat_train_{stage}_{variant}" for stage in STAGES for variant in VARIANTS}
    assert rules | {"kd_gat_all"} <= set(listing.split()), listing
