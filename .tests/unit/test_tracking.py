"""Experiment tracking of training jobs (kdgat.tracking) against real MLflow stores: a local file store and an
`mlflow server` on 127.0.0.1; an unreachable server; the epoch loop's observers never stopping training."""

from __future__ import annotations

import hashlib
import json
import logging
import os
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
    log_evaluation,
    source_commit,
)
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
