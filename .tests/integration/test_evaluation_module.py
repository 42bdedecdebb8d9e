"""The evaluation module run by Snakemake on a real (tiny) pipeline, and its group jobs under a cluster executor."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from evaluation.pipeline_run import CONFIG, DATASET, HERE, SEED, VARIANTS, shared_run, tool_env
from sklearn.metrics import f1_score, matthews_corrcoef, roc_auc_score, roc_curve
from testkit import run_snakemake

from kdgat.chain import MODELS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.summary import SCENARIO_COLUMNS
from kdgat.evaluation.thresholds import FIXED_ALPHA_MODELS
from kdgat.model_store import load_model
from kdgat.training import dqn as dqn_training
from kdgat.training import gat as gat_training
from kdgat.training.settings import StageSettings
from resource_history import restored_reason

pytestmark = pytest.mark.integration

METRIC_KEYS = {
    "accuracy", "precision", "recall", "f1", "specificity", "balanced_accuracy", "mcc", "roc_auc", "pr_auc",
    "detection_rate_at_fpr_0.05", "detection_rate_at_fpr_0.01", "detection_rate_at_fpr_0.001", "confusion_matrix",
}  # fmt: skip
OUTPUT_FILES = (("model", "pt"), ("metrics", "json"), ("history", "csv"))
SCORE_OF = {"vgae": "vgae_score", "gat": "gat_prob", "fusion": "fusion_score"}
PRED_OF = {"vgae": "vgae_pred", "gat": "gat_pred", "fusion": "fusion_pred"}


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


def evaluation_dir(workdir: Path, variant: str, dataset: str = DATASET) -> Path:
    return workdir / "results" / "evaluation" / dataset / f"seed_{SEED}" / variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_for_every_model_split_and_scenario(pipeline, variant):
    document = json.loads((evaluation_dir(pipeline, variant) / "metrics.json").read_text())
    assert (document["dataset"], document["variant"], document["seed"]) == (DATASET, variant, SEED)
    assert set(document["test"]) == {"dos", "clean"}
    for block in [document["val"], document["test_pooled"], *document["test"].values()]:
        assert set(block) == {*MODELS, *FIXED_ALPHA_MODELS}
        for metrics in block.values():
            assert METRIC_KEYS <= set(metrics)
    # The normal-only scenario: threshold-free metrics are undefined, with the reason, not a crash.
    clean = document["test"]["clean"]["fusion"]
    assert clean["n_attack"] == 0 and clean["roc_auc"] is None
    assert "one class" in clean["undefined"]["roc_auc"]
    assert clean["specificity"] is not None
    # Speed: batched throughput and single-window latency for each model, recorded with the metrics.
    for model in MODELS:
        assert document["speed"][model]["graphs_per_s"] > 0
        assert document["speed"][model]["latency_ms"] > 0
    assert (pipeline / f"benchmarks/evaluation/{DATASET}/seed_{SEED}/{variant}.tsv").is_file()
    # The fusion's α on every split, as a histogram that accounts for every window.
    alpha = document["fusion_alpha"]
    assert set(alpha) == {"val", "dos", "clean", "test_pooled"}
    assert sum(alpha["test_pooled"]["counts"]) == document["test_pooled"]["fusion"]["n"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_metrics_agree_with_scikit_learn_on_the_scores(pipeline, variant):
    folder = evaluation_dir(pipeline, variant)
    document = json.loads((folder / "metrics.json").read_text())
    scores = pd.read_parquet(folder / "scores.parquet")
    # VGAE threshold: Youden's J recomputed from the validation scores, then reused unchanged on test.
    val = scores[scores["split"] == "val"]
    fpr, tpr, thresholds = roc_curve(val["label"], val["vgae_score"], drop_intermediate=False)
    expected = thresholds[1:][np.argmax((tpr - fpr)[1:])]
    threshold = document["thresholds"]["vgae"]["threshold"]
    assert threshold == pytest.approx(expected)
    test = scores[scores["split"] == "test"]
    assert (test["vgae_pred"] == (test["vgae_score"] >= threshold).astype(int)).all()
    for scenario, frame in test.groupby("scenario"):
        for model in MODELS:
            metrics = document["test"][scenario][model]
            assert metrics["n"] == len(frame)
            assert metrics["accuracy"] == pytest.approx((frame["label"] == frame[PRED_OF[model]]).mean())
            if frame["label"].nunique() == 2:
                assert metrics["roc_auc"] == pytest.approx(
                    roc_auc_score(frame["label"], frame[SCORE_OF[model]])
                )
                assert metrics["f1"] == pytest.approx(f1_score(frame["label"], frame[PRED_OF[model]]))
                if metrics["mcc"] is not None:
                    assert metrics["mcc"] == pytest.approx(
                        matthews_corrcoef(frame["label"], frame[PRED_OF[model]])
                    )


def test_summary_table_shows_the_kd_trade_off(pipeline):
    table = pd.read_csv(pipeline / "results/evaluation/summary.csv")
    assert table["variant"].tolist() == list(VARIANTS)
    teacher, student_kd, student = (table.iloc[i] for i in range(3))
    assert teacher["size_vs_teacher"] == pytest.approx(1.0)
    assert student_kd["params_total"] < teacher["params_total"]
    assert student_kd["size_vs_teacher"] == pytest.approx(
        student_kd["params_total"] / teacher["params_total"]
    )
    # The parameter counts are those of the trained model files.
    gat = load_model(pipeline / f"results/kd_gat/{DATASET}/seed_{SEED}/student/gat/model.pt")
    assert student["params_gat"] == sum(p.numel() for p in gat.parameters())
    for column in ("f1_fusion", "latency_ms_fusion"):
        assert table[column].notna().all()
    markdown = (pipeline / "results/evaluation/summary.md").read_text()
    assert f"| {DATASET} | student_kd |" in markdown and "size vs teacher" in markdown
    assert "Did distillation help?" in markdown and "one seed: no interval, no claim" in markdown
    assert "What the fusion's α does" in markdown and "Engineering floors" in markdown
    assert "## ROC-AUC per test scenario" in markdown and "latency, batched path (ms/window)" in markdown
    # The α section's row: every test window of the one seed, as many as the metrics.json histogram holds.
    alpha = json.loads((evaluation_dir(pipeline, "teacher") / "metrics.json").read_text())["fusion_alpha"]
    windows = sum(alpha["test_pooled"]["counts"])
    assert f"| {DATASET} | teacher | {windows} | {alpha['test_pooled']['mean']:.2f} |" in markdown
    per_dataset = pd.read_csv(pipeline / f"results/evaluation/{DATASET}/summary.csv")
    pd.testing.assert_frame_equal(per_dataset, table)
    # The per-dataset report is headed with the seeds its tables are over (the training curves are the first
    # seed's), not with the first seed alone.
    heading = (pipeline / f"results/evaluation/{DATASET}/summary.md").read_text().splitlines()[0]
    assert heading == f"# {DATASET} evaluation summary over seed {SEED}"


def test_scenario_metrics_hold_every_model_and_the_baselines(pipeline):
    table = pd.read_csv(pipeline / "results/evaluation/scenario_metrics.csv")
    assert list(table.columns) == SCENARIO_COLUMNS
    models = {*MODELS, *FIXED_ALPHA_MODELS, *BASELINES}
    assert set(table["model"]) == models
    assert len(table) == len(VARIANTS) * 1 * 2 * len(models)  # variants × seeds × scenarios × models
    assert (table["seed"] == SEED).all()
    # Each row is the metrics.json (or baselines.json) figure of that variant, seed, scenario and model.
    document = json.loads((evaluation_dir(pipeline, "teacher") / "metrics.json").read_text())
    row = table[
        (table["variant"] == "teacher") & (table["scenario"] == "dos") & (table["model"] == "fixed_alpha_0.5")
    ]
    assert row["f1"].item() == pytest.approx(document["test"]["dos"]["fixed_alpha_0.5"]["f1"])
    baselines = json.loads((pipeline / f"results/evaluation/{DATASET}/baselines.json").read_text())
    rows = table[(table["scenario"] == "dos") & (table["model"] == "baseline_id_counts")]
    assert len(rows) == len(VARIANTS)
    assert rows["f1"].tolist() == pytest.approx([baselines["test"]["dos"]["baseline_id_counts"]["f1"]] * 3)
    assert rows["roc_auc"].notna().all()
    per_dataset = pd.read_csv(pipeline / f"results/evaluation/{DATASET}/scenario_metrics.csv")
    pd.testing.assert_frame_equal(per_dataset, table)


# ----------------------------------------------------------------------------------------------------------------
# Group jobs under a cluster executor (snakemake-executor-plugin-cluster-generic, jobs run on this machine)
# ----------------------------------------------------------------------------------------------------------------
def copy_dataset(source: Path, workdir: Path, name: str) -> None:
    for sub in ("preprocess", "kd_gat"):
        shutil.copytree(source / "results" / sub / DATASET, workdir / "results" / sub / name)
    for checkpoint in (workdir / "results/kd_gat" / name).rglob("*"):
        if checkpoint.is_file() and checkpoint.name not in {"model.pt", "history.csv", "val.pt", "test.pt"}:
            checkpoint.unlink()


def run_on_cluster(workdir: Path, check: bool):
    return run_snakemake(
        "--snakefile", str(HERE / "Snakefile"), "--directory", str(workdir),
        "--executor", "cluster-generic", "--cluster-generic-submit-cmd", str(HERE / "submit.sh"),
        "--jobs", "2", "--keep-going", "--latency-wait", "10",
        "results/evaluation/grp_a/summary.csv", "results/evaluation/grp_b/summary.csv",
        cwd=workdir, check=check,
    )  # fmt: skip


def log_of(workdir: Path, dataset: str, variant: str) -> str:
    """The evaluation's log; empty when the job never started (a failed group job stops its queued members)."""
    path = workdir / f"logs/evaluation/{dataset}/seed_{SEED}/{variant}.log"
    return path.read_text() if path.exists() else ""


def test_one_group_job_per_dataset_and_finished_siblings_survive_a_failure(pipeline, tmp_path):
    for name in ("grp_a", "grp_b"):
        copy_dataset(pipeline, tmp_path, name)
    config = {
        "datasets": {"grp_a": {}, "grp_b": {}},
        "kd_gat": {"seeds": [SEED]},
        "evaluation": {
            "device": "cpu",
            "threads": 1,
            "speed": {"repeats": 1, "latency_runs": 2, "max_graphs": 16},
        },
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    # grp_a: every evaluation finishes, then the dataset summary (a group member) fails on a broken history.csv.
    history = tmp_path / f"results/kd_gat/grp_a/seed_{SEED}/student/gat/history.csv"
    good_history = history.read_bytes()
    history.write_text('epoch,note\n1,"unterminated\n')
    # grp_b: the student evaluation (a group member) fails on a corrupt model file.
    model = tmp_path / f"results/kd_gat/grp_b/seed_{SEED}/student/vgae/model.pt"
    good_model = model.read_bytes()
    model.write_bytes(b"not a model")

    first = run_on_cluster(tmp_path, check=False)
    assert first.returncode != 0
    assert len(re.findall(r"Submitted group job", first.stdout)) == 2, first.stdout[-3000:]
    assert not re.search(r"Submitted job ", first.stdout)  # every job ran inside its dataset's group job
    assert "cannot load the vgae model" in log_of(tmp_path, "grp_b", "student")

    # Snakemake removed the finished siblings' declared outputs with the failed group job ...
    for variant in VARIANTS:
        assert not (evaluation_dir(tmp_path, variant, "grp_a") / "metrics.json").exists()
    # ... but each had committed them to the stash first.
    stashed = {}
    for dataset in ("grp_a", "grp_b"):
        for variant in VARIANTS:
            match = re.search(r"committed results to the stash (\S+)", log_of(tmp_path, dataset, variant))
            if match:
                stashed[dataset, variant] = (tmp_path / match.group(1) / "metrics.json").read_bytes()
    assert {("grp_a", v) for v in VARIANTS} <= set(stashed)
    assert ("grp_b", "student") not in stashed

    history.write_bytes(good_history)
    model.write_bytes(good_model)
    second = run_on_cluster(tmp_path, check=True)
    assert len(re.findall(r"Submitted group job", second.stdout)) == 2
    for dataset in ("grp_a", "grp_b"):
        for variant in VARIANTS:
            log = log_of(tmp_path, dataset, variant)
            metrics = evaluation_dir(tmp_path, variant, dataset) / "metrics.json"
            benchmark = tmp_path / f"benchmarks/evaluation/{dataset}/seed_{SEED}/{variant}.tsv"
            if (dataset, variant) in stashed:
                # reused, not recomputed: same bytes (speed figures would differ on a new measurement)
                assert "restored" in log and "scoring" not in log, log
                assert metrics.read_bytes() == stashed[dataset, variant]
                # the copy's benchmark teaches learned resources nothing (resource_history.mark_restored)
                assert benchmark.is_file() and "result stash entry" in restored_reason(benchmark)
            else:
                assert "scoring" in log and "restored" not in log, log
                assert restored_reason(benchmark) is None
    assert (tmp_path / "results/evaluation/grp_a/training_curves.svg").is_file()
    assert pd.read_csv(tmp_path / "results/evaluation/grp_b/summary.csv")["variant"].tolist() == list(
        VARIANTS
    )


def test_a_finished_evaluation_is_not_rerun_when_its_stash_moves(pipeline, tmp_path):
    workdir = tmp_path / "run"
    # a copy, as the shared run's readers need it unchanged: copy2 keeps the mtimes, .snakemake the params
    shutil.copytree(pipeline, workdir, symlinks=True)
    targets = [f"results/evaluation/{DATASET}/seed_{SEED}/{variant}/metrics.json" for variant in VARIANTS]

    def dry_run(evaluation: dict) -> str:
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump({"evaluation": evaluation}))
        return run_snakemake(
            "--snakefile", str(HERE / "pipeline.smk"), "--directory", str(workdir),
            "--configfile", str(CONFIG), str(tmp_path / "changed.yaml"), "-n", *targets,
            cwd=workdir, env=tool_env(),
        ).stdout  # fmt: skip

    # where finished results are stashed decides none of them
    dry = dry_run({"stash_dir": "elsewhere/.stash"})
    assert "Nothing to be done" in dry, dry[-3000:]
    # what does decide them still reruns every evaluation
    dry = dry_run({"fpr_targets": [0.1]})
    rerun = re.search(r"params have changed since last execution:\n\s+(.+)\n", dry)
    evaluations = {f"evaluation_evaluate_{variant}" for variant in VARIANTS}
    assert rerun and evaluations <= set(rerun.group(1).split(", ")), dry[-3000:]


def test_module_jobs_train_what_the_library_trains_from_the_same_config(pipeline, tmp_path):
    """Two code paths, one behaviour: the kd_gat module's jobs (schema-validated config, settings shipped as
    params through the wrappers) and the library called here on the raw config section give the same models,
    metrics and histories for the distilled student's GAT and DQN."""
    section = yaml.safe_load(CONFIG.read_text())["kd_gat"]
    # kd_gat.seeds is the workflow's: each job gets its own seed as `seed`
    section = {key: value for key, value in section.items() if key != "seeds"} | {"seed": SEED}
    data = pipeline / "results" / "preprocess" / DATASET
    chain = pipeline / "results" / "kd_gat" / DATASET / f"seed_{SEED}"
    dqn_split = section.get("dqn", {})
    dqn_data = {"fit": data / f"{dqn_split.get('fit_split') or 'val'}.pt"}
    if dqn_split.get("stop_split"):
        dqn_data["stop"] = data / f"{dqn_split['stop_split']}.pt"
    inputs = {
        "gat": {
            "train": data / "train.pt",
            "val": data / "val.pt",
            "vgae": chain / "student_kd/vgae/model.pt",
            "teacher": chain / "teacher/gat/model.pt",
        },
        "dqn": {
            **dqn_data,
            "vgae": chain / "student_kd/vgae/model.pt",
            "gat": chain / "student_kd/gat/model.pt",
            **{f"teacher_{stage}": chain / f"teacher/{stage}/model.pt" for stage in ("vgae", "gat", "dqn")},
        },
    }
    timing = {"seconds", "graphs_per_s", "train_seconds"}
    threads = torch.get_num_threads()
    try:
        for stage, run in (("gat", gat_training.run), ("dqn", dqn_training.run)):
            outputs = {name: tmp_path / stage / f"{name}.{ext}" for name, ext in OUTPUT_FILES}
            run(
                metadata=data / "metadata.json",
                settings=StageSettings.from_config(section, stage, "student_kd"), outputs=outputs, threads=1,
                **inputs[stage],
            )  # fmt: skip
            job = chain / "student_kd" / stage
            ours, theirs = (
                json.loads((folder / "metrics.json").read_text()) for folder in (tmp_path / stage, job)
            )
            assert {k: v for k, v in ours.items() if k not in timing} == {
                k: v for k, v in theirs.items() if k not in timing
            }
            pd.testing.assert_frame_equal(
                pd.read_csv(outputs["history"]).drop(columns=list(timing), errors="ignore"),
                pd.read_csv(job / "history.csv").drop(columns=list(timing), errors="ignore"),
            )
            mine, module = (
                load_model(outputs["model"]).state_dict(),
                load_model(job / "model.pt").state_dict(),
            )
            assert all(torch.equal(mine[name], module[name]) for name in module)
    finally:
        torch.set_num_threads(threads)


def test_the_module_alone_checks_the_datasets_variants_and_seeds_it_evaluates_naming_the_key(tmp_path):
    """Without the kd_gat module, whose schema checks kd_gat.seeds, the evaluation module's own check
    (kdgat.evaluation.targets, test_the_evaluation_targets_refuse_what_cannot_be_evaluated_naming_the_key) runs at
    parse time: seeds [] used to fail with an IndexError in the Snakefile."""
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump({"datasets": {"tiny_eval": {}}, "kd_gat": {"seeds": []}})
    )
    proc = run_snakemake(
        "-n", "--snakefile", str(HERE / "Snakefile"), "--directory", str(tmp_path), "--cores", "1",
        cwd=tmp_path, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "config key 'kd_gat.seeds' must be a non-empty list of distinct integers" in proc.stdout, (
        proc.stdout[-3000:]
    )
