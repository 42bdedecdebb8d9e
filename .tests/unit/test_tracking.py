"""Experiment tracking of training jobs (kdgat.tracking) against real MLflow stores: a local file store and an
`mlflow server` on 127.0.0.1; an unreachable server; the epoch loop's observers never stopping training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch
from servicekit import free_port
from testkit import REPO, import_required, require

from kdgat.graph_store import save_graphs, vocabulary_digest
from kdgat.testing import toy_graphs
from kdgat.tracking import (
    COMMIT_ENV,
    CREDENTIAL_ENVS,
    INVOCATION_ENV,
    MlflowTracker,
    TrackingError,
    TrackingSettings,
    ensure_invocation_environment,
    is_file_store,
    log_evaluation,
    numeric,
    source_commit,
    tracked_job,
)
from kdgat.tracking.settings import flatten, retried
from kdgat.training import vgae
from kdgat.training.loop import LoopSettings, fit
from kdgat.training.settings import StageSettings

MlflowClient = import_required("mlflow", "pip install -e '.[tracking]'").MlflowClient

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SECTION = {
    "teacher_preset": "demo_student",
    "seed": 3,
    "device": "cpu",
    "training": {"vgae": {"epochs": 3, "batch_size": 32, "patience": 3}},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("graphs")
    # one preprocess run's files, recording its vocabulary as preprocess writes them (an unrecorded one would add
    # a warning of its own to the tests that count warnings)
    vocabulary = vocabulary_digest(range(20))
    save_graphs(toy_graphs(60, num_ids=20, seed=1), folder / "train.pt", vocabulary)
    save_graphs(toy_graphs(24, num_ids=20, seed=2), folder / "val.pt", vocabulary)
    metadata = {"num_ids": 20, "dataset": "toy", "vocabulary": {"digest": vocabulary}}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return {name: str(folder / file) for name, file in
            (("train", "train.pt"), ("val", "val.pt"), ("metadata", "metadata.json"))}  # fmt: skip


@pytest.fixture
def invocation(monkeypatch):
    monkeypatch.setenv(INVOCATION_ENV, f"test-{time.time_ns()}")
    monkeypatch.setenv(COMMIT_ENV, "0123abcd")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return os.environ[INVOCATION_ENV]


def train(data, out: Path, tracking, **extra) -> dict:
    outputs = {"model": out / "model.pt", "metrics": out / "metrics.json", "history": out / "history.csv"}
    settings = StageSettings.from_config(SECTION | extra.pop("section", {}), "vgae", "teacher")
    vgae.run(**data, settings=settings, outputs=outputs, tracking=tracking, threads=1, **extra)
    return {name: Path(path) for name, path in outputs.items()}


def runs(client: MlflowClient, experiment: str = "kd_gat") -> list:
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id]) if found else []


def children(client: MlflowClient) -> list:
    return [run for run in runs(client) if run.data.tags.get("kdgat.role") != "invocation"]


def test_settings_name_the_key_they_reject():
    with pytest.raises(TrackingError, match=r"kd_gat.tracking.backend must be one of \('none', 'mlflow'\)"):
        TrackingSettings.from_config({"backend": "wandb"})
    with pytest.raises(TrackingError, match=r"kd_gat.tracking: unknown keys \['url'\]"):
        TrackingSettings.from_config({"url": "http://x"})
    settings = TrackingSettings.from_config({"backend": "mlflow", "uri": "store"}, tags={"a": 1, "b": None})
    assert settings.tags == {"a": "1"} and settings.tracking_uri() == (Path.cwd() / "store").as_uri()
    assert TrackingSettings(uri="http://127.0.0.1:5000").tracking_uri() == "http://127.0.0.1:5000"


def test_settings_refuse_in_the_config_what_mlflow_would_refuse_only_in_the_job():
    # MLflow's file store looks an experiment up by splicing its name into a filter string: a quote breaks it.
    with pytest.raises(TrackingError, match=r"kd_gat.tracking.experiment \"it's\" has a single quote"):
        TrackingSettings.from_config({"backend": "mlflow", "uri": "mlruns", "experiment": "it's"})
    server = TrackingSettings.from_config({"backend": "mlflow", "uri": "http://h:5000", "experiment": "it's"})
    assert server.experiment == "it's"  # a server looks names up properly
    with pytest.raises(TrackingError, match=r"kd_gat.tracking.experiment is 501 characters long"):
        TrackingSettings.from_config({"backend": "mlflow", "experiment": "x" * 501})
    assert TrackingSettings.from_config({"backend": "none", "experiment": "x" * 501}).enabled is False


def test_a_home_path_of_an_unknown_user_is_refused_naming_the_key_not_a_traceback_in_the_job(tmp_path):
    # `uri: ~mlruns` (meant: ~/mlruns) is the home of a user "mlruns": Path.expanduser raised RuntimeError inside
    # the job, again in the tracker's warning, and the job failed with a traceback before it trained.
    uri = "~no-such-user-kdgat/mlruns"
    with pytest.raises(TrackingError, match=rf"kd_gat.tracking.uri '{uri}': no user 'no-such-user-kdgat'"):
        TrackingSettings.from_config({"backend": "mlflow", "uri": uri})
    assert TrackingSettings.from_config({"backend": "none", "uri": uri}).enabled is False


def test_a_file_uri_is_used_as_written_and_only_a_plain_path_is_made_one(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert TrackingSettings(backend="mlflow", uri="file:///srv/mlruns").tracking_uri() == "file:///srv/mlruns"
    assert TrackingSettings(backend="mlflow", uri="runs").tracking_uri() == (tmp_path / "runs").as_uri()


def test_an_experiment_name_of_exactly_mlflows_limit_is_accepted():
    name = "x" * 500  # MLflow's longest experiment name; 501 is refused (above)
    assert TrackingSettings.from_config({"backend": "mlflow", "experiment": name}).experiment == name


def test_an_empty_uri_is_refused_when_tracking_is_on():
    with pytest.raises(TrackingError, match=r"kd_gat.tracking: uri and experiment must not be empty"):
        TrackingSettings.from_config({"backend": "mlflow", "uri": "  "})
    assert TrackingSettings.from_config({"backend": "none", "uri": ""}).enabled is False


@pytest.mark.parametrize("key, value", [("experiment", 2024), ("experiment", 1.5), ("uri", ["mlruns"])])
def test_a_setting_that_is_no_string_is_refused_naming_the_key(key, value):
    # YAML `experiment: 2024` is a number: `kdgat train --config` took it, and the job trained untracked after
    # MLflow's warning "Invalid experiment name: 2024. Expects a string.", which names no setting.
    with pytest.raises(
        TrackingError, match=re.escape(f"kd_gat.tracking.{key} must be a string, got {value!r}")
    ):
        TrackingSettings.from_config({"backend": "mlflow", key: value})


def test_a_windows_drive_path_is_a_file_store_and_a_server_or_database_is_not():
    assert is_file_store(r"C:\runs\mlruns") and is_file_store("d:/mlruns")
    assert is_file_store("results/mlruns") and is_file_store("file:///tmp/mlruns")
    assert not is_file_store("http://127.0.0.1:5000") and not is_file_store("sqlite:///mlflow.db")


def test_a_null_or_padded_uri_and_a_home_path_mean_the_store_a_user_expects(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    null = TrackingSettings.from_config({"backend": "mlflow", "uri": None})  # YAML `uri:` with no value
    assert null.uri == "results/mlruns"
    padded = TrackingSettings.from_config({"backend": "mlflow", "uri": " results/mlruns "})
    assert padded.tracking_uri() == (tmp_path / "results" / "mlruns").as_uri()
    home = TrackingSettings.from_config({"backend": "mlflow", "uri": "~/mlruns"})
    assert home.tracking_uri() == (tmp_path / "home" / "mlruns").as_uri()


def test_a_store_path_with_a_space_is_locked_where_its_runs_are(data, tmp_path, invocation, monkeypatch):
    # The find-or-create lock must be in the store itself: its URI spells the space as %20.
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "my runs" / "mlruns"
    train(data, tmp_path / "job", {"backend": "mlflow", "uri": str(store)})
    assert (store / ".kdgat.lock").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["job", "my runs"]  # no "my%20runs" beside it
    (run,) = children(MlflowClient(tracking_uri=store.as_uri()))
    assert run.info.status == "FINISHED"


def test_invocation_environment_is_made_once_and_kept(monkeypatch):
    environ = {}
    names = ensure_invocation_environment(REPO, environ)
    assert set(names) == {INVOCATION_ENV, COMMIT_ENV}
    assert environ[COMMIT_ENV] == source_commit(REPO) and len(environ[COMMIT_ENV]) == 40
    kept = dict(environ)
    ensure_invocation_environment(
        REPO, environ
    )  # a job re-parsing the workflow keeps the main process's values
    assert environ == kept


def test_the_mlflow_credentials_that_are_set_go_to_the_jobs():
    import mlflow.environment_variables as mlflow_variables

    assert all(hasattr(mlflow_variables, name) for name in CREDENTIAL_ENVS)  # names MLflow reads
    environ = {"MLFLOW_TRACKING_TOKEN": "secret", "MLFLOW_TRACKING_USERNAME": ""}
    names = ensure_invocation_environment(REPO, environ)
    assert set(names) == {INVOCATION_ENV, COMMIT_ENV, "MLFLOW_TRACKING_TOKEN"}  # an empty one is not set


def test_a_source_commit_already_in_the_environment_is_kept_even_when_empty():
    # A job inherits the main process's value; outside a git checkout that value is "" and must stay so.
    environ = {INVOCATION_ENV: "mine", COMMIT_ENV: ""}
    assert ensure_invocation_environment(REPO, environ) == (INVOCATION_ENV, COMMIT_ENV)
    assert environ == {INVOCATION_ENV: "mine", COMMIT_ENV: ""}
    environ = {COMMIT_ENV: "exported"}
    ensure_invocation_environment(REPO, environ)
    assert environ[COMMIT_ENV] == "exported"


def test_params_leave_out_none_and_metrics_are_the_finite_numbers_with_booleans_as_0_and_1():
    values = {"a": None, "b": {"c": 1, "d": None, "e": {"f": "x"}}}
    assert flatten(values) == {"b.c": 1, "b.e.f": "x"}
    row = {"loss": 0.5, "nan": float("nan"), "inf": float("inf"), "ninf": -float("inf"), "stopped": True,
           "epoch": 3, "name": "gat", "none": None, "nested": {"ok": 2, "bad": float("nan")}}  # fmt: skip
    assert numeric(row) == {"loss": 0.5, "stopped": 1.0, "epoch": 3.0, "nested.ok": 2.0}


def test_a_search_that_fails_once_is_tried_again_and_one_that_keeps_failing_raises():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("meta.yaml read while another job rewrote it")
        return ["run"]

    assert retried(flaky, pause=0) == ["run"] and len(calls) == 2
    calls.clear()

    def broken():
        calls.append(1)
        raise OSError(f"failure {len(calls)}")

    with pytest.raises(OSError, match="failure 3"):
        retried(broken, pause=0)
    assert len(calls) == 3


def test_a_job_is_one_run_with_settings_epochs_final_metrics_and_artifacts(data, tmp_path, invocation):
    store = tmp_path / "mlruns"
    tracking = TrackingSettings.from_config(
        {"backend": "mlflow", "uri": str(store)},
        tags={"kdgat.dataset": "toy", "snakemake.rule": "train_vgae_teacher"},
    )
    out = train(data, tmp_path / "job", tracking)
    client = MlflowClient(tracking_uri=store.as_uri())
    (run,) = children(client)
    settings = StageSettings.from_config(SECTION, "vgae", "teacher").as_dict()
    assert run.data.params["training.epochs"] == "3" and run.data.params["preset"] == "demo_student"
    assert run.data.params["model.latent_dim"] == str(settings["model"]["latent_dim"])
    assert run.data.params["seed"] == "3" and run.data.params["variant"] == "teacher"
    history = pd.read_csv(out["history"])
    logged = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in logged] == history["epoch"].tolist()
    assert [m.value for m in logged] == pytest.approx(history["val_loss"].tolist(), rel=1e-12)
    metrics = json.loads(out["metrics"].read_text())
    assert run.data.metrics["final/best_val_loss"] == pytest.approx(metrics["best_val_loss"])
    assert run.data.metrics["final/num_parameters"] == metrics["num_parameters"]
    tags = run.data.tags
    assert (tags["kdgat.dataset"], tags["kdgat.stage"], tags["kdgat.variant"]) == ("toy", "vgae", "teacher")
    assert tags["snakemake.rule"] == "train_vgae_teacher" and tags["mlflow.source.git.commit"] == "0123abcd"
    assert tags["kdgat.model_path"] == str(out["model"].resolve())
    assert tags["kdgat.model_sha256"] == hashlib.sha256(out["model"].read_bytes()).hexdigest()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"history.csv", "metrics.json"}
    assert run.info.status == "FINISHED"
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert (
        parent.data.tags["kdgat.role"] == "invocation" and parent.data.tags["kdgat.invocation"] == invocation
    )


def test_the_run_name_leads_with_the_module_a_prefix_moved_the_outputs_of(data, tmp_path, invocation):
    """Two kd_gat modules behind prefixes training the same dataset: their runs were both named toy/teacher/vgae.
    The module tags a run with its module name where a prefix moves its outputs, and the run name leads with it.
    The name ends with the seed, which only a tag said (the runs of kd_gat.seeds shared one name)."""
    store = tmp_path / "mlruns"
    for module in ("kd_gat_a", "kd_gat_b", None):
        tags = {"kdgat.dataset": "toy", "snakemake.rule": f"{module or 'kd_gat'}_train_vgae_teacher"}
        tracking = TrackingSettings.from_config(
            {"backend": "mlflow", "uri": str(store)}, tags=tags | ({"kdgat.module": module} if module else {})
        )
        train(data, tmp_path / str(module), tracking)
    named = {
        run.data.tags["snakemake.rule"]: run.info.run_name for run in children(MlflowClient(store.as_uri()))
    }
    seed = SECTION["seed"]
    assert named == {
        "kd_gat_a_train_vgae_teacher": f"kd_gat_a/toy/teacher/vgae seed {seed}",
        "kd_gat_b_train_vgae_teacher": f"kd_gat_b/toy/teacher/vgae seed {seed}",
        "kd_gat_train_vgae_teacher": f"toy/teacher/vgae seed {seed}",
    }


def test_jobs_of_one_invocation_share_a_parent_and_a_retry_continues_its_run(data, tmp_path, invocation):
    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store), "model": "copy"}
    with pytest.raises(FileNotFoundError):  # the first attempt fails after its run has started
        train({**data, "val": str(tmp_path / "missing.pt")}, tmp_path / "a", tracking)
    client = MlflowClient(tracking_uri=store.as_uri())
    (failed,) = children(client)
    assert failed.info.status == "FAILED"
    train(data, tmp_path / "a", tracking)  # the retry: same invocation, same outputs
    train(data, tmp_path / "b", tracking, section={"seed": 4})
    jobs = children(client)
    assert len(jobs) == 2 and failed.info.run_id in {run.info.run_id for run in jobs}
    assert {run.info.status for run in jobs} == {"FINISHED"}
    assert len({run.data.tags["mlflow.parentRunId"] for run in jobs}) == 1
    assert len([run for run in runs(client) if run.data.tags.get("kdgat.role") == "invocation"]) == 1
    retried = client.get_run(failed.info.run_id)
    assert "model.pt" in {a.path for a in client.list_artifacts(retried.info.run_id)}
    assert [m.step for m in client.get_metric_history(retried.info.run_id, "val_loss")] == [1, 2, 3]


def test_a_retry_resumed_from_a_checkpoint_logs_each_epoch_once(data, tmp_path, invocation, monkeypatch):
    import kdgat.training.loop as loop

    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store)}
    checkpoint = tmp_path / "a" / "checkpoint.pt"

    def node_failure(pid, sig):  # the loop's SIGKILL test hook, as an exception so the test process lives
        raise RuntimeError("node failure after the checkpoint of epoch 2")

    monkeypatch.setattr(loop.os, "kill", node_failure)
    monkeypatch.setenv(loop.KILL_AFTER_EPOCH_ENV, "2")
    with pytest.raises(RuntimeError, match="node failure"):
        train(data, tmp_path / "a", tracking, checkpoint=checkpoint)
    monkeypatch.delenv(loop.KILL_AFTER_EPOCH_ENV)
    client = MlflowClient(tracking_uri=store.as_uri())
    (first,) = children(client)
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")] == [1, 2]

    train(data, tmp_path / "a", tracking, checkpoint=checkpoint)  # resumes after epoch 2, continues the run
    (run,) = children(client)
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    # Epochs 1 and 2 come back from the checkpoint; the run already holds them, so they are not logged again.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")] == [1, 2, 3]


def test_a_retry_that_trains_again_from_the_first_epoch_logs_each_epoch_once(
    data, tmp_path, invocation, monkeypatch
):
    """A retry in the same invocation continues its run; one without a checkpoint to resume (none configured, or
    one set aside) trains again from epoch 1, and logged epochs 1 and 2 a second time: MLflow keeps every value
    logged at a step (a metric's history is along timestamp and step, nothing replaces), so the run's history read
    1, 2, 1, 2, 3. The seeded retry computes the same epochs again: the run holds each once."""
    import kdgat.training.loop as loop

    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store)}

    def node_failure(pid, sig):  # the loop's SIGKILL test hook, as an exception so the test process lives
        raise RuntimeError("node failure after epoch 2")

    monkeypatch.setattr(loop.os, "kill", node_failure)
    monkeypatch.setenv(loop.KILL_AFTER_EPOCH_ENV, "2")
    with pytest.raises(RuntimeError, match="node failure"):
        train(data, tmp_path / "a", tracking)  # no checkpoint: nothing to resume from
    monkeypatch.delenv(loop.KILL_AFTER_EPOCH_ENV)
    client = MlflowClient(tracking_uri=store.as_uri())
    (first,) = children(client)
    before = {m.step: m.value for m in client.get_metric_history(first.info.run_id, "val_loss")}
    assert sorted(before) == [1, 2]

    outputs = train(data, tmp_path / "a", tracking)  # the retry starts again from epoch 1, in the same run
    (run,) = children(client)
    assert run.info.run_id == first.info.run_id and run.info.status == "FINISHED"
    for key in ("val_loss", "train_loss", "seconds"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3], key
    history = pd.read_csv(outputs["history"])
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_loss")}
    assert logged == pytest.approx(dict(zip(history["epoch"], history["val_loss"], strict=True)))
    assert {step: logged[step] for step in before} == pytest.approx(before)


def test_a_job_resumed_by_a_later_invocation_is_a_new_run_holding_every_epoch(
    data, tmp_path, invocation, monkeypatch
):
    # Snakemake itself killed, then `snakemake --rerun-incomplete`: a new invocation key. The job resumes from its
    # checkpoint in a new run that holds every epoch; the killed run is left as the kill left it.
    import kdgat.training.loop as loop

    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store)}
    checkpoint = tmp_path / "a" / "checkpoint.pt"

    def node_failure(pid, sig):
        raise RuntimeError("node failure after the checkpoint of epoch 2")

    monkeypatch.setattr(loop.os, "kill", node_failure)
    monkeypatch.setenv(loop.KILL_AFTER_EPOCH_ENV, "2")
    with pytest.raises(RuntimeError, match="node failure"):
        train(data, tmp_path / "a", tracking, checkpoint=checkpoint)
    monkeypatch.delenv(loop.KILL_AFTER_EPOCH_ENV)
    monkeypatch.setenv(INVOCATION_ENV, f"{invocation}-rerun")
    train(data, tmp_path / "a", tracking, checkpoint=checkpoint)
    client = MlflowClient(tracking_uri=store.as_uri())
    by_invocation = {run.data.tags["kdgat.invocation"]: run for run in children(client)}
    assert set(by_invocation) == {invocation, f"{invocation}-rerun"}
    killed, resumed = by_invocation[invocation], by_invocation[f"{invocation}-rerun"]
    assert killed.info.status == "FAILED" and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "val_loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(resumed.info.run_id, "val_loss")] == [1, 2, 3]


def test_a_finished_job_run_again_under_an_exported_key_is_a_new_run_and_the_first_stays_finished(
    data, tmp_path, invocation, caplog
):
    # KDGAT_TRACKING_INVOCATION exported to group two invocations (README); the second trains the same job again
    # with another epoch count. It continued the first run instead: set it RUNNING again, failed on the changed
    # param and left it RUNNING with the first model's SHA-256, the new model untracked.
    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store)}
    train(data, tmp_path / "a", tracking)
    with caplog.at_level(logging.WARNING, logger="kdgat.tracking"):
        out = train(data, tmp_path / "a", tracking, section={"training": {"vgae": {"epochs": 2}}})
    # Warnings only: the INFO line naming each run is captured too when an earlier test left the root at INFO
    # (CI, stop 54), and the first train() runs outside the at_level block.
    warned = [
        r.getMessage() for r in caplog.records if r.name == "kdgat.tracking" and r.levelno >= logging.WARNING
    ]
    assert warned == []
    client = MlflowClient(tracking_uri=store.as_uri())
    first, second = sorted(children(client), key=lambda run: run.info.start_time)
    assert (first.info.status, second.info.status) == ("FINISHED", "FINISHED")
    assert (first.data.params["training.epochs"], second.data.params["training.epochs"]) == ("3", "2")
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(second.info.run_id, "val_loss")] == [1, 2]
    assert second.data.tags["kdgat.model_sha256"] == hashlib.sha256(out["model"].read_bytes()).hexdigest()
    assert first.data.tags["kdgat.model_sha256"] != second.data.tags["kdgat.model_sha256"]


def test_the_same_job_of_another_working_directory_under_an_exported_key_is_a_run_of_its_own(
    data, tmp_path, invocation, monkeypatch
):
    # KDGAT_TRACKING_INVOCATION exported (README: to group invocations) by two runs of the workflow in two working
    # directories that share one store (a server, or a file store by absolute path): the same job has the same
    # relative model path in both. A job was known by that path alone, so the second directory's job took the
    # first's unfinished run (killed, or still training) for its own retry's and logged into it: one run held two
    # jobs' epochs, and the first job's run was finished by the other's model. Each job is its own run.
    import kdgat.training.loop as loop

    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store)}

    def node_failure(pid, sig):
        raise RuntimeError("node failure after epoch 2")

    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    monkeypatch.chdir(tmp_path / "first")
    monkeypatch.setattr(loop.os, "kill", node_failure)
    monkeypatch.setenv(loop.KILL_AFTER_EPOCH_ENV, "2")
    with pytest.raises(RuntimeError, match="node failure"):
        train(data, Path("results/vgae"), tracking)  # a relative output path, as Snakemake gives it
    monkeypatch.delenv(loop.KILL_AFTER_EPOCH_ENV)
    monkeypatch.chdir(tmp_path / "second")
    out = train(data, Path("results/vgae"), tracking)
    client = MlflowClient(tracking_uri=store.as_uri())
    first, second = sorted(children(client), key=lambda run: run.info.start_time)
    assert first.info.run_id != second.info.run_id
    assert first.info.status != "FINISHED" and second.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(first.info.run_id, "val_loss")] == [1, 2]
    assert [m.step for m in client.get_metric_history(second.info.run_id, "val_loss")] == [1, 2, 3]
    assert second.data.tags["kdgat.model_sha256"] == hashlib.sha256(out["model"].read_bytes()).hexdigest()
    assert "kdgat.model_sha256" not in first.data.tags


def test_an_unreachable_server_costs_one_warning_and_the_job_goes_on(data, tmp_path, invocation, caplog):
    port = free_port()  # nothing listens there: connections are refused
    tracking = {"backend": "mlflow", "uri": f"http://127.0.0.1:{port}"}
    with caplog.at_level(logging.INFO):
        out = train(data, tmp_path / "job", tracking)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]  # from any logger
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert (
        f"127.0.0.1:{port}" in warnings[0].getMessage()
        and "goes on without tracking" in warnings[0].getMessage()
    )
    assert json.loads(out["metrics"].read_text())["epochs_run"] == 3 and out["model"].stat().st_size > 0


def test_the_password_of_a_tracking_uri_is_never_written_to_the_jobs_log(data, tmp_path, invocation, caplog):
    """A tracking server behind basic auth (``https://user:token@host``) or a database store
    (``postgresql://user:password@db/mlflow``) carries its password in kd_gat.tracking.uri: the one warning of a
    failed tracking call named the URI whole, and MLflow's own error (the URL it called), in the job's log, which
    the project group reads. The password is shown as ***."""
    port = free_port()  # nothing listens there: connections are refused
    secret = "s3cret-token"
    with caplog.at_level(logging.INFO):
        out = train(
            data, tmp_path / "job", {"backend": "mlflow", "uri": f"http://mlflow:{secret}@127.0.0.1:{port}"}
        )
    assert out["model"].exists()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert f"http://mlflow:***@127.0.0.1:{port}" in warning and "goes on without tracking" in warning
    assert secret not in caplog.text
    with caplog.at_level(logging.INFO):
        train(
            data,
            tmp_path / "other",
            {"backend": "mlflow", "uri": f"htps://mlflow:{secret}@mlflow.example.org"},
        )
    assert "'htps://mlflow:***@mlflow.example.org': MLflow has no store for the scheme 'htps'" in caplog.text
    assert secret not in caplog.text


def test_a_misspelt_uri_scheme_is_named_in_the_one_warning(data, tmp_path, invocation, caplog):
    with caplog.at_level(logging.WARNING):
        out = train(data, tmp_path / "job", {"backend": "mlflow", "uri": "htps://mlflow.example.org"})
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert (
        "kd_gat.tracking.uri 'htps://mlflow.example.org': MLflow has no store for the scheme 'htps'"
        in warning
    )
    assert "goes on without tracking" in warning and out["model"].exists()


def test_an_evaluation_joins_the_run_of_the_model_it_evaluated(data, tmp_path, invocation, caplog):
    store = tmp_path / "mlruns"
    out = train(data, tmp_path / "job", {"backend": "mlflow", "uri": str(store)})
    figures = {name: tmp_path / f"{name}.svg" for name in ("roc", "pr")}
    for path in figures.values():
        path.write_text("<svg/>")
    other = tmp_path / "untracked.pt"
    other.write_bytes(b"a model no run produced")
    with caplog.at_level(logging.INFO):
        attached = log_evaluation({"backend": "mlflow", "uri": str(store)}, {"gat": out["model"], "dqn": other},
                                  figures)  # fmt: skip
    (run,) = children(MlflowClient(tracking_uri=store.as_uri()))
    assert attached == [run.info.run_id]
    listed = MlflowClient(tracking_uri=store.as_uri()).list_artifacts(run.info.run_id, "evaluation")
    assert {a.path for a in listed} == {"evaluation/roc.svg", "evaluation/pr.svg"}
    assert f"no training run of dqn ({other})" in caplog.text

    caplog.clear()
    closed = {"backend": "mlflow", "uri": f"http://127.0.0.1:{free_port()}"}
    assert log_evaluation(closed, {"gat": out["model"]}, figures) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "the outputs are written" in warnings[0].getMessage()
    assert log_evaluation(None, {"gat": out["model"]}, figures) == []  # tracking off: nothing is contacted


class Exploding:
    def fit_started(self, *args):
        raise RuntimeError("observer bug")


class Recording:
    def __init__(self):
        self.events = []

    def fit_started(self, name, first_epoch, epochs, history):
        self.events.append(("start", first_epoch, epochs))

    def batch_ended(self, done, total):
        self.events.append(("batch", done, total))

    def epoch_ended(self, row, epochs, stopped_early):
        self.events.append(("epoch", row["epoch"]))

    def fit_ended(self, result):
        self.events.append(("end", len(result["history"])))


def test_observers_see_every_batch_and_epoch_and_a_failing_one_never_stops_training(data, caplog):
    from kdgat.training.data import load_training_data
    from kdgat.training.vgae import VGAEStage

    train_graphs, val_graphs, num_ids = load_training_data(data["train"], data["val"], data["metadata"])
    settings = StageSettings.from_config(SECTION, "vgae", "teacher")

    def fitted(callbacks):
        torch.manual_seed(0)
        from kdgat.models import VGAE

        model = VGAE(num_ids=num_ids, **settings.model)
        stage = VGAEStage(model, train_graphs, val_graphs, settings, torch.device("cpu"))
        return fit(stage, LoopSettings(epochs=2, patience=5, callbacks=callbacks), "fp")

    recording = Recording()
    with caplog.at_level(logging.WARNING):
        observed = fitted([Exploding(), recording])
    plain = fitted([])
    assert [row["val_loss"] for row in observed["history"]] == [row["val_loss"] for row in plain["history"]]
    assert sum("Exploding.fit_started failed" in r.getMessage() for r in caplog.records) == 1
    normal = sum(int(g.y) == 0 for g in train_graphs)
    batches = -(-normal // 32)
    epoch = [("batch", done, batches) for done in range(1, batches + 1)]
    assert recording.events == [("start", 0, 2), *epoch, ("epoch", 1), *epoch, ("epoch", 2), ("end", 2)]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` (the mlflow-skinny of the tracking extra, with flask from the test extra) on a free
    loopback port, its runs in a file store."""
    try:
        import flask  # noqa: F401
        import flask_cors  # noqa: F401
    except ImportError:
        require(False, "flask and flask-cors (the test extra)", "make venv installs them with .[dev]")
    folder = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
               "1", "--backend-store-uri", (folder / "store").as_uri(), "--artifacts-destination",
               (folder / "artifacts").as_uri()]  # fmt: skip
    log = open(folder / "server.log", "wb")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, (folder / "server.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                assert time.monotonic() < deadline, "mlflow server did not answer /health"
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the workers it started, in its own session
        server.wait(timeout=30)
        log.close()


def test_a_job_tracked_on_a_server_and_jobs_starting_together_end_under_one_parent(
    data, tmp_path, invocation, tracking_server
):
    out = train(data, tmp_path / "job", {"backend": "mlflow", "uri": tracking_server, "experiment": "server"})
    client = MlflowClient(tracking_uri=tracking_server)
    (run,) = [r for r in runs(client, "server") if r.data.tags.get("kdgat.role") != "invocation"]
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == len(pd.read_csv(out["history"]))
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"history.csv", "metrics.json"}

    # Four jobs of a fresh invocation start at the same moment: each may create a parent; all end under one.
    os.environ[INVOCATION_ENV] = f"{invocation}-together"
    settings = TrackingSettings.from_config(
        {"backend": "mlflow", "uri": tracking_server, "experiment": "server"}
    )
    job = StageSettings.from_config(SECTION, "vgae", "teacher").as_dict()
    trackers = [MlflowTracker(settings, job, {"model": str(tmp_path / f"m{i}.pt")}) for i in range(4)]
    barrier = threading.Barrier(len(trackers))

    def start(tracker):
        barrier.wait()
        tracker.start()

    threads = [threading.Thread(target=start, args=(t,)) for t in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not any(t.disabled for t in trackers)
    for tracker in trackers:
        tracker.end("FINISHED")
    together = [
        r for r in runs(client, "server") if r.data.tags.get("kdgat.invocation") == os.environ[INVOCATION_ENV]
    ]
    parents = [r for r in together if r.data.tags.get("kdgat.role") == "invocation"]
    assert len(parents) == 1 and len(together) == 5
    assert {r.data.tags["mlflow.parentRunId"] for r in together if r not in parents} == {
        parents[0].info.run_id
    }


def test_a_job_that_created_a_second_parent_ends_under_the_first_and_deletes_its_own(tmp_path, invocation):
    # Against a server two jobs starting at once may each create a parent. Made deterministic here: another job's
    # parent with a smaller run id appears after this job started under its own; at its end the job moves under
    # the canonical one (the smallest id) and deletes the parent it created.
    settings = TrackingSettings.from_config({"backend": "mlflow", "uri": str(tmp_path / "mlruns")})
    job = StageSettings.from_config(SECTION, "vgae", "teacher").as_dict()
    tracker = MlflowTracker(settings, job, {"model": str(tmp_path / "model.pt")})
    tracker.start()
    own = tracker.parent_id
    assert own is not None and tracker.created_parent == own
    client = MlflowClient(tracking_uri=settings.tracking_uri())
    tags = {"kdgat.role": "invocation", "kdgat.invocation": invocation}
    for _ in range(200):  # run ids are random: make parents until one sorts before this job's own
        other = client.create_run(tracker.experiment_id, tags=tags).info.run_id
        if other < own:
            break
        client.delete_run(other)
    assert other < own
    tracker.end("FINISHED")
    assert not tracker.disabled
    run = client.get_run(tracker.run_id)
    assert run.data.tags["mlflow.parentRunId"] == other
    assert client.get_run(own).info.lifecycle_stage == "deleted"
    assert client.get_run(other).info.lifecycle_stage == "active"


def tracker_of(tmp_path, model: str = "model.pt") -> MlflowTracker:
    settings = TrackingSettings.from_config({"backend": "mlflow", "uri": str(tmp_path / "mlruns")})
    job = StageSettings.from_config(SECTION, "vgae", "teacher").as_dict()
    return MlflowTracker(settings, job, {"model": str(tmp_path / model)})


def test_a_job_starting_among_parents_made_at_once_starts_under_the_smallest_run_id(
    tmp_path, invocation, monkeypatch
):
    # Two parents of this invocation exist already (two jobs raced against a server): a starting job creates no
    # third and is tagged with the canonical one from its start, not only when it ends.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the store is made here before a tracker opts in
    tracker = tracker_of(tmp_path)
    client = MlflowClient(tracking_uri=tracker.settings.tracking_uri())
    experiment = client.create_experiment("kd_gat")
    tags = {"kdgat.role": "invocation", "kdgat.invocation": invocation}
    parents = {client.create_run(experiment, tags=tags).info.run_id for _ in range(2)}
    tracker.start()
    assert not tracker.disabled and tracker.created_parent is None
    assert tracker.parent_id == min(parents)
    assert client.get_run(tracker.run_id).data.tags["mlflow.parentRunId"] == min(parents)
    assert len([run for run in runs(client) if run.data.tags.get("kdgat.role") == "invocation"]) == 2


# Every character an exported key may hold, with a letter first.
WIDEST_KEY = "paper_2026/run-3.a:b+c@d"


def test_a_key_with_every_character_allowed_finds_its_parent_and_its_retrys_run(tmp_path, monkeypatch):
    """The searches quote the key as it is: a retry of a failed job continues its run and a second job joins the
    parent the first one made, for a key holding each punctuation mark an exported key may have."""
    monkeypatch.setenv(INVOCATION_ENV, WIDEST_KEY)
    first = tracker_of(tmp_path)
    first.start()
    first.end("FAILED")
    retry, other = tracker_of(tmp_path), tracker_of(tmp_path, "other.pt")
    retry.start()
    other.start()
    assert not (first.disabled or retry.disabled or other.disabled)
    assert retry.run_id == first.run_id
    assert first.parent_id == retry.parent_id == other.parent_id
    assert retry.created_parent is None and other.created_parent is None


@pytest.mark.parametrize("key", ["it's", "a\\b", "two words", "-leading-dash", "x" * 251])
def test_an_exported_invocation_key_the_searches_cannot_match_is_refused_naming_the_variable(
    tmp_path, monkeypatch, caplog, key
):
    """MLflow's search filters undo no escapes: with a quote or a backslash in the key a retry got a new run and
    every job its own parent, without a word. The workflow refuses such a key while it is parsed; a job given one
    anyway warns once and goes on untracked, as for any tracking failure."""
    with pytest.raises(ValueError, match=rf"^{INVOCATION_ENV}=.*an invocation key is 1-250 letters, digits"):
        ensure_invocation_environment(REPO, {INVOCATION_ENV: key})
    environ = {INVOCATION_ENV: WIDEST_KEY}
    ensure_invocation_environment(REPO, environ)
    assert environ[INVOCATION_ENV] == WIDEST_KEY
    monkeypatch.setenv(INVOCATION_ENV, key)
    tracker = tracker_of(tmp_path)
    with caplog.at_level(logging.WARNING, logger="kdgat.tracking"):
        tracker.start()
    assert tracker.disabled and tracker.run_id is None
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert INVOCATION_ENV in warning and "the job goes on without tracking" in warning


def test_the_parent_run_ends_finished_with_its_last_job(tmp_path, invocation):
    tracker = tracker_of(tmp_path)
    tracker.start()
    client = MlflowClient(tracking_uri=tracker.settings.tracking_uri())
    assert client.get_run(tracker.parent_id).info.status == "RUNNING"
    tracker.end("FAILED")
    parent, run = client.get_run(tracker.parent_id), client.get_run(tracker.run_id)
    assert (parent.info.status, run.info.status) == ("FINISHED", "FAILED")
    assert parent.info.end_time >= run.info.end_time


def test_a_job_stopped_by_ctrl_c_ends_its_run_killed_and_the_interrupt_propagates(tmp_path, invocation):
    tracking = {"backend": "mlflow", "uri": str(tmp_path / "mlruns")}
    job = StageSettings.from_config(SECTION, "vgae", "teacher").as_dict()
    with (
        pytest.raises(KeyboardInterrupt),
        tracked_job(tracking, job, {"model": str(tmp_path / "m.pt")}) as tracker,
    ):
        raise KeyboardInterrupt
    client = MlflowClient(tracking_uri=tracker.settings.tracking_uri())
    assert client.get_run(tracker.run_id).info.status == "KILLED"


def test_an_experiment_another_job_creates_first_is_used_not_a_failure(tmp_path, invocation, monkeypatch):
    # The experiment is missing when this job looks it up and exists when it creates it (another job was faster):
    # MLflow refuses the second create; the job looks the name up again and tracks into that experiment.
    import kdgat.tracking.runs as tracking_runs

    real = tracking_runs.mlflow_client

    class Raced:
        def __init__(self, client):
            self.client, self.lookups = client, 0

        def __getattr__(self, name):
            return getattr(self.client, name)

        def get_experiment_by_name(self, name):
            self.lookups += 1
            if self.lookups == 1:
                self.client.create_experiment(name)  # the other job, between this lookup and this create
                return None
            return self.client.get_experiment_by_name(name)

    monkeypatch.setattr(tracking_runs, "mlflow_client", lambda settings: Raced(real(settings)))
    tracker = tracker_of(tmp_path)
    tracker.start()
    assert not tracker.disabled and tracker.client.lookups == 2
    client = MlflowClient(tracking_uri=tracker.settings.tracking_uri())
    assert tracker.experiment_id == client.get_experiment_by_name("kd_gat").experiment_id
    assert client.get_run(tracker.run_id).info.experiment_id == tracker.experiment_id


def test_an_evaluation_joins_the_latest_run_of_a_model_trained_twice(tmp_path, invocation, monkeypatch):
    model = tmp_path / "model.pt"
    model.write_bytes(b"the same model, trained by two invocations")
    made = []
    for key in ("first", "second"):
        monkeypatch.setenv(INVOCATION_ENV, f"{invocation}-{key}")
        tracker = tracker_of(tmp_path)
        tracker.start()
        tracker.log_outputs({}, {"model": model})
        tracker.end("FINISHED")
        made.append(tracker.run_id)
    client = MlflowClient(tracking_uri=tracker.settings.tracking_uri())
    first, second = (client.get_run(run_id) for run_id in made)
    assert first.info.start_time < second.info.start_time
    assert first.data.tags["kdgat.model_sha256"] == second.data.tags["kdgat.model_sha256"]
    figure = tmp_path / "roc.svg"
    figure.write_text("<svg/>")
    tracking = {"backend": "mlflow", "uri": str(tmp_path / "mlruns")}
    assert log_evaluation(tracking, {"gat": model}, {"roc": figure}) == [second.info.run_id]
    assert client.list_artifacts(first.info.run_id, "evaluation") == []


def test_a_deleted_experiment_is_named_in_the_one_warning_and_the_job_goes_on(
    data, tmp_path, invocation, caplog
):
    store = tmp_path / "mlruns"
    tracking = {"backend": "mlflow", "uri": str(store), "experiment": "gone"}
    client = MlflowClient(tracking_uri=TrackingSettings.from_config(tracking).tracking_uri())
    client.delete_experiment(client.create_experiment("gone"))
    with caplog.at_level(logging.WARNING, logger="kdgat.tracking"):
        out = train(data, tmp_path / "job", tracking)
    assert out["model"].exists()
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "kdgat.tracking"]
    assert "experiment 'gone' is deleted (restore it or choose another name)" in warning


README_SIZE = "<!-- mlflow-size -->"


def test_the_readme_states_what_the_tracking_extra_installs():
    """README's figure: the packages and megabytes mlflow-skinny adds to the library's own dependencies."""
    import importlib.metadata as metadata

    from packaging.requirements import Requirement

    def closure(name: str, found: dict) -> dict:
        key = name.lower().replace("_", "-")
        if key not in found:
            try:
                found[key] = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                return found
            for text in found[key].requires or []:
                requirement = Requirement(text)
                if not requirement.marker or requirement.marker.evaluate({"extra": ""}):
                    closure(requirement.name, found)
        return found

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (pin,) = project["optional-dependencies"]["tracking"]
    library: dict = {}
    for text in project["dependencies"]:
        closure(Requirement(text).name, library)
    added = {k: d for k, d in closure(Requirement(pin).name, {}).items() if k not in library}
    size = sum(d.locate_file(f).stat().st_size for d in added.values() for f in d.files or []
               if d.locate_file(f).exists()) / 1e6  # fmt: skip
    line = next(line for line in (REPO / "README.md").read_text().splitlines() if README_SIZE in line)
    assert pin in line and f"{len(added)} packages" in line, line
    stated = float(line.split(" MB")[0].split()[-1])
    assert abs(size - stated) <= 0.15 * stated, f"measured {size:.0f} MB: {line}"
