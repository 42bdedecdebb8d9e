"""Experiment tracking of real workflow runs in a real local MLflow store (kd_gat.tracking.backend: mlflow).

The shared tiny pipeline (preprocess -> kd_gat -> evaluation through the wrappers) tracks its training jobs into
the default store, results/mlruns: one run per job with its settings, epochs, final metrics, artifacts and tags,
under one parent run of the invocation. A Paramspace sweep run in a copy of that pipeline adds one run per
instance, named and tagged by the instance, with the instance's values among its parameters.
A dry run of a copy with the tracking section changed has nothing to do: tracking is no rerun trigger.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from evaluation.pipeline_run import CONFIG, DATASET, HERE, SEED, VARIANTS, shared_run, tool_env
from testkit import REPO, import_required, run_snakemake

from kdgat.chain import STAGES, SWEEP_RULE, training_rule
from kdgat.tracking import FILE_STORE_OPT_IN, INVOCATION_ENV, flatten, numeric, source_commit
from kdgat.training.settings import StageSettings

MlflowClient = import_required("mlflow", "pip install -e '.[tracking]'").MlflowClient

pytestmark = pytest.mark.integration

SWEEP_ROWS = pd.DataFrame({"hidden": [8, 12], "lr": [0.003, 0.01]})


@pytest.fixture(autouse=True)
def file_store_allowed(monkeypatch):
    monkeypatch.setenv(FILE_STORE_OPT_IN, "true")  # MLflow 3 reads its file store only when told it is wanted


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


def store(workdir: Path):
    client = MlflowClient(tracking_uri=(workdir / "results" / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("kd_gat")
    assert experiment is not None, "no kd_gat experiment in the pipeline's results/mlruns"
    return client, client.search_runs([experiment.experiment_id])


def invocation_runs(runs: list, invocation: str | None = None) -> tuple:
    """(the parent run of one invocation, its job runs); without ``invocation``, the store must hold one."""
    parents = [run for run in runs if run.data.tags.get("kdgat.role") == "invocation"]
    if invocation is not None:
        parents = [run for run in parents if run.data.tags["kdgat.invocation"] == invocation]
    (parent,) = parents
    jobs = [run for run in runs if run.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, jobs


def model_folder(workdir: Path, run) -> Path:
    """Where the job wrote model.pt, metrics.json and history.csv (the path its run records)."""
    model = Path(run.data.tags["kdgat.model_path"])
    assert model.is_relative_to(workdir), model
    return model.parent


def is_ancestor(commit: str, head: str) -> bool:
    done = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, head], check=False)
    return len(commit) == 40 and done.returncode == 0


def test_the_pipeline_store_holds_one_run_per_training_job(pipeline, tmp_path):
    client, runs = store(pipeline)
    _, jobs = invocation_runs([run for run in runs if "kdgat.sweep_instance" not in run.data.tags])
    by_job = {(run.data.tags["kdgat.variant"], run.data.tags["kdgat.stage"], int(run.data.tags["kdgat.seed"])): run
              for run in jobs}  # fmt: skip
    section = yaml.safe_load(CONFIG.read_text())["kd_gat"]
    assert len(jobs) == len(by_job) == len(VARIANTS) * len(STAGES) * len(section["seeds"])
    commit = source_commit(REPO)
    for (variant, stage, seed), run in by_job.items():
        tags, where = run.data.tags, f"seed {seed} {variant}/{stage}"
        assert run.info.status == "FINISHED", where
        assert (
            tags["kdgat.dataset"] == DATASET
            and tags["snakemake.rule"] == f"kd_gat_{training_rule(stage, variant)}"
        )  # pipeline.smk: kd_gat_*
        assert is_ancestor(tags["mlflow.source.git.commit"], commit), (
            where
        )  # the checkout's commit at the run
        # Parameters: the stage settings the rule handed the wrapper, flattened (model.hidden, training.lr, ...).
        job = {key: value for key, value in section.items() if key != "seeds"} | {"seed": seed}
        settings = StageSettings.from_config(job, stage, variant).as_dict()
        assert run.data.params == {key: str(value) for key, value in flatten(settings).items()}, where
        folder = model_folder(pipeline, run)
        assert folder.parts[-3:] == (f"seed_{seed}", variant, stage)
        # Per-epoch metrics: every history.csv row, at its epoch.
        history = pd.read_csv(folder / "history.csv")
        logged = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.step for m in logged] == history["epoch"].tolist(), where
        assert [m.value for m in logged] == pytest.approx(history["val_loss"].tolist(), rel=1e-9), where
        # Final metrics: metrics.json's numbers; artifacts: history.csv, metrics.json, model.pt by reference.
        final = {k.removeprefix("final/"): v for k, v in run.data.metrics.items() if k.startswith("final/")}
        assert final == pytest.approx(numeric(json.loads((folder / "metrics.json").read_text()))), where
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert artifacts == {"history.csv", "metrics.json", "evaluation"}, where
        assert tags["kdgat.model_sha256"] == hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
        # The variant's evaluation: its metrics.json and figures, the files the evaluation job wrote.
        evaluation = pipeline / "results" / "evaluation" / DATASET / f"seed_{seed}" / variant
        attached = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "evaluation")}
        assert attached == {"metrics.json", "roc.svg", "pr.svg", "confusion.svg"}, where
        downloads = tmp_path / str(seed) / variant / stage
        downloads.mkdir(parents=True)
        copy = client.download_artifacts(run.info.run_id, "evaluation/roc.svg", str(downloads))
        assert Path(copy).read_bytes() == (evaluation / "roc.svg").read_bytes(), where


def test_a_paramspace_sweep_is_one_run_per_instance(pipeline, tmp_path):
    workdir = tmp_path / "pipeline"
    # A copy of the finished pipeline (mtimes and Snakemake's metadata kept): only the sweep's jobs run.
    shutil.copytree(pipeline, workdir, symlinks=True, ignore=shutil.ignore_patterns("mlruns", "report.html"))
    SWEEP_ROWS.to_csv(tmp_path / "params.tsv", sep="\t", index=False)
    config = yaml.safe_load(CONFIG.read_text())
    config["kd_gat"]["sweep"] = {"enabled": True, "table": str(tmp_path / "params.tsv"), "variant": "teacher"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))  # same params as before
    invocation = "sweep-test-invocation"
    done = run_snakemake(
        "kd_gat_all", "--snakefile", str(HERE / "pipeline.smk"), "--directory", str(workdir),
        "--configfile", str(tmp_path / "config.yaml"), "--cores", "2", "--rerun-triggers", "mtime",
        cwd=workdir, env=tool_env() | {INVOCATION_ENV: invocation},
    )  # fmt: skip
    ran = [line.split()[0] for line in done.stdout.splitlines() if line.startswith("kd_gat_")]
    assert set(ran) <= {"kd_gat_all", f"kd_gat_{SWEEP_RULE}"}, ran  # the copy needed no retraining

    client, runs = store(workdir)
    parent, jobs = invocation_runs(runs, invocation)
    assert parent.info.status == "FINISHED"
    instances = {run.data.tags["kdgat.sweep_instance"]: run for run in jobs}
    assert len(jobs) == len(instances) == len(SWEEP_ROWS)
    for row in SWEEP_ROWS.itertuples(index=False):
        instance = f"hidden~{row.hidden}_lr~{row.lr}"
        run = instances[instance]
        tags, params = run.data.tags, run.data.params
        assert tags["snakemake.rule"] == f"kd_gat_{SWEEP_RULE}" and tags["kdgat.stage"] == "gat", instance
        assert run.info.run_name.endswith(f"sweep/{instance}/gat seed {tags['kdgat.seed']}"), (
            run.info.run_name
        )
        assert run.info.status == "FINISHED"
        assert params["overrides.hidden"] == str(row.hidden) and params["model.hidden"] == str(row.hidden)
        assert float(params["overrides.lr"]) == float(params["training.lr"]) == row.lr
        folder = model_folder(workdir, run)
        assert instance in folder.parts
        history = pd.read_csv(folder / "history.csv")
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == len(history)


def test_changing_the_tracking_section_retrains_and_reevaluates_nothing(pipeline, tmp_path):
    """kd_gat.tracking's description (config/README.md): "changing this section retrains nothing". The training
    and evaluation rules get it as a TrackingSettings object, which Snakemake's params rerun trigger leaves out: a
    dry run of the finished pipeline with tracking switched off, or pointed at another store, experiment and model
    mode, has nothing to do, while a changed training setting still reruns its rules."""
    workdir = tmp_path / "run"
    # a copy, as the shared run's readers need it unchanged: copytree keeps the mtimes, .snakemake the params
    shutil.copytree(pipeline, workdir, symlinks=True, ignore=shutil.ignore_patterns("mlruns", "report.html"))
    targets = [f"results/evaluation/{DATASET}/seed_{SEED}/{variant}/metrics.json" for variant in VARIANTS]

    def dry_run(kd_gat: dict) -> str:
        (tmp_path / "changed.yaml").write_text(yaml.safe_dump({"kd_gat": kd_gat}))
        return run_snakemake(
            "--snakefile", str(HERE / "pipeline.smk"), "--directory", str(workdir),
            "--configfile", str(CONFIG), str(tmp_path / "changed.yaml"), "-n", "kd_gat_all", *targets,
            cwd=workdir, env=tool_env(),
        ).stdout  # fmt: skip

    for tracking in (
        {"backend": "none"},
        {"backend": "mlflow", "uri": "elsewhere/mlruns", "experiment": "another", "model": "copy"},
    ):
        dry = dry_run({"tracking": tracking})
        assert "Nothing to be done" in dry, (tracking, dry[-3000:])
    # what does decide the models still retrains them (the distilled student's GAT also as its teacher's changed)
    dry = dry_run({"training": {"gat": {"epochs": 2, "batch_size": 32, "patience": 2, "lr": 0.01}}})
    rerun = re.search(r"params have changed since last execution:\n\s+(.+)\n", dry)
    assert rerun, dry[-3000:]
    changed = set(rerun.group(1).split(", "))
    assert {"kd_gat_train_gat_teacher", "kd_gat_train_gat_student"} <= changed, dry[-3000:]
    planned = set(re.findall(r"^rule (\w+):$", dry, re.M))
    assert {f"kd_gat_{training_rule('gat', variant)}" for variant in VARIANTS} <= planned, dry[-3000:]


def test_an_exported_invocation_key_the_tracking_searches_cannot_match_stops_the_dry_run(tmp_path):
    """A quote in KDGAT_TRACKING_INVOCATION left every job with its own parent run and every retry with a new run,
    without a word (kdgat.tracking.check_invocation_key): the workflow now refuses it while it is parsed."""
    done = run_snakemake(
        "-n", "kd_gat_all", "--snakefile", str(HERE / "pipeline.smk"), "--directory", str(tmp_path),
        "--configfile", str(CONFIG), cwd=tmp_path, env=tool_env() | {INVOCATION_ENV: "it's"}, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-3000:]
    assert f'kd_gat.tracking: {INVOCATION_ENV}="it\'s": an invocation key is 1-250 letters' in done.stdout
