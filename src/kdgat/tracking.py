"""Experiment tracking of training jobs (optional, off by default): one MLflow run per job.

``kd_gat.tracking`` (``TrackingSettings``) names the backend (``none`` or ``mlflow``), the tracking URI (default: a
file store under ``results/mlruns``, no server needed) and the experiment. With ``mlflow`` a training job
(``kdgat.training.<stage>.run``) is one run: its stage settings as params, each epoch's history row as metrics while
it trains, the final metrics (``final/<name>``), ``history.csv`` and ``metrics.json`` as artifacts and ``model.pt``
by reference (its path and SHA-256 as tags) or as a copy; tags name the dataset, variant, stage, rule, sweep
instance and source commit.

Runs of one workflow invocation share a parent run. The kd_gat module gives every job of an invocation the same
key, ``KDGAT_TRACKING_INVOCATION``, made by the main Snakemake process while it parses the workflow and handed to
jobs as an environment variable (the ``envvars:`` mechanism: inherited locally, exported by the SLURM executor, a
Secret on Kubernetes). The first job finds no parent with that key and creates it; later ones find it. In a file
store, a lock file makes find-or-create atomic; against a server two jobs starting at once may both create one:
each job adopts the parent with the smallest run id when it starts and again when it ends, and a job deletes the
parent it created when it is not that one. A retried job (same invocation, same outputs) continues its own run.

Tracking never breaks a job: the first failure (mlflow missing, server unreachable, store unwritable) is logged
as one warning, and the job goes on untracked. Against an HTTP server, MLflow's retries are bounded
(``HTTP_DEFAULTS``) unless its own ``MLFLOW_HTTP_REQUEST_*`` variables are set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import getpass
import hashlib
import logging
import math
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger("kdgat.tracking")

BACKENDS = ("none", "mlflow")
MODEL_ARTIFACT = ("reference", "copy")
DEFAULT_URI = "results/mlruns"
DEFAULT_EXPERIMENT = "kd_gat"
INVOCATION_ENV = "KDGAT_TRACKING_INVOCATION"
COMMIT_ENV = "KDGAT_SOURCE_COMMIT"
# How MLflow's client authenticates to a tracking server (read by MLflow itself; never kept in the config).
CREDENTIAL_ENVS = (
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_INSECURE_TLS",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
)
# A job waits at most seconds, not minutes, for a tracking server that does not answer (MLflow's defaults retry
# 7 times with exponential backoff and a 120 s timeout). Values the user exported win.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
# MLflow 3.x refuses its file store unless told it is wanted: it is what a shared cluster filesystem handles with
# concurrent jobs (SQLite's locking is unreliable on NFS), so the catalog opts in for file stores only.
FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"
PARENT_ROLE = "invocation"
BATCH = 100  # params / metrics per log_batch call (MLflow accepts at most 100 params per call)


class TrackingError(ValueError):
    """A kd_gat.tracking setting that is unknown or out of range; the message names the config key."""


@dataclass(frozen=True)
class TrackingSettings:
    """``kd_gat.tracking`` plus what the workflow knows about the job (``tags``).

    A dataclass on purpose: Snakemake leaves params it cannot represent as plain values out of its params rerun
    trigger, so turning tracking on or pointing it elsewhere does not retrain anything.
    """

    backend: str = "none"
    uri: str = DEFAULT_URI
    experiment: str = DEFAULT_EXPERIMENT
    model: str = "reference"
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise TrackingError(f"kd_gat.tracking.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.model not in MODEL_ARTIFACT:
            raise TrackingError(f"kd_gat.tracking.model must be one of {MODEL_ARTIFACT}, got {self.model!r}")
        if self.backend != "none" and (not str(self.uri).strip() or not str(self.experiment).strip()):
            raise TrackingError("kd_gat.tracking: uri and experiment must not be empty")

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any] | None, tags: Mapping[str, Any] | None = None
    ) -> TrackingSettings:
        """From the ``kd_gat.tracking`` section (missing keys take the defaults; unknown keys fail)."""
        if isinstance(section, TrackingSettings):
            return dataclasses.replace(section, tags={**section.tags, **_strings(tags)})
        if section is not None and not isinstance(section, Mapping):
            raise TrackingError(f"kd_gat.tracking: expected a mapping, got {type(section).__name__}")
        options = dict(section or {})
        known = {name for name in cls.__dataclass_fields__ if name != "tags"}
        unknown = set(options) - known
        if unknown:
            raise TrackingError(f"kd_gat.tracking: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**options, tags=_strings(tags))

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def tracking_uri(self) -> str:
        """The URI for MLflow: a plain path becomes an absolute ``file:`` URI (jobs run in the workflow's
        working directory, so a relative path means the same store for all of them)."""
        uri = str(self.uri)
        if is_file_store(uri) and not uri.startswith("file:"):
            return Path(uri).resolve().as_uri()
        return uri


def _strings(values: Mapping[str, Any] | None) -> dict[str, str]:
    return {str(key): str(value) for key, value in (values or {}).items() if value is not None}


def is_file_store(uri: str) -> bool:
    scheme = urlparse(str(uri)).scheme
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive, still a path


def source_commit(path: str | os.PathLike) -> str | None:
    """The git commit of the checkout holding ``path`` (the catalog's code), None outside a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def ensure_invocation_environment(source: str | os.PathLike, environ=None) -> tuple[str, ...]:
    """Put the invocation key and the source commit in the environment unless they are there already, and return
    their names with those of MLflow's credential variables that are set (for Snakemake's ``envvars:``, which
    every executor hands to the jobs: Kubernetes in their Secret). The main Snakemake process makes the key once
    per invocation; its jobs inherit it or get it exported, so they keep it; a user may export a key to group
    invocations."""
    environ = os.environ if environ is None else environ
    if not environ.get(INVOCATION_ENV):
        started = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        environ[INVOCATION_ENV] = f"{started}-{uuid.uuid4().hex[:12]}"
    if COMMIT_ENV not in environ:
        environ[COMMIT_ENV] = source_commit(source) or ""
    credentials = tuple(name for name in CREDENTIAL_ENVS if environ.get(name))
    return (INVOCATION_ENV, COMMIT_ENV, *credentials)


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"training": {"lr": 0.1}}`` -> ``{"training.lr": 0.1}``; None values are left out."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{name}.")
        elif value is not None:
            flat[name] = value
    return flat


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers among flattened values (booleans as 0/1): what MLflow takes as metrics."""
    out = {}
    for key, value in flatten(values).items():
        if isinstance(value, bool | int | float) and math.isfinite(float(value)):
            out[key] = float(value)
    return out


def job_key(outputs: Mapping[str, Any]) -> str:
    """Identifies a training job within an invocation (its model output path), for finding a retry's run."""
    return hashlib.sha256(str(outputs.get("model", "")).encode()).hexdigest()[:20]


def mlflow_client(settings: TrackingSettings):
    """An MLflow client of the settings' store (a file store opted into; a server's retries bounded)."""
    try:
        from mlflow import MlflowClient
    except ImportError as error:
        raise ImportError(
            "mlflow is not installed (pip install 'snakemake-gpu-catalog[tracking]')"
        ) from error
    uri = settings.tracking_uri()
    if is_file_store(uri):
        os.environ.setdefault(FILE_STORE_OPT_IN, "true")
    else:
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        # urllib3 logs each of MLflow's retries as a warning; the job's log gets one, from the tracker.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    return MlflowClient(tracking_uri=uri)


class NullTracker:
    """Tracking off: every hook is a no-op."""

    def log_outputs(self, metrics: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        pass

    def end(self, status: str) -> None:
        pass


class MlflowTracker:
    """One training job as one MLflow run (see the module docstring). Every MLflow call goes through ``_guard``:
    the first failure disables the tracker with one warning."""

    def __init__(self, settings: TrackingSettings, job: Mapping[str, Any], outputs: Mapping[str, Any]):
        self.settings = settings
        self.job = dict(job)  # the stage settings (StageSettings.as_dict())
        self.outputs = dict(outputs)
        self.disabled = False
        self.client = None
        self.run_id: str | None = None
        self.parent_id: str | None = None
        self.created_parent: str | None = None
        self.experiment_id: str | None = None
        self.logged_until = 0  # the last epoch (step) the run holds

    # -- failure handling -------------------------------------------------------------------------------------
    def _guard(self, what: str, function, *args):
        if self.disabled:
            return None
        try:
            return function(*args)
        except Exception as error:  # tracking never breaks the job
            self.disabled = True
            log.warning(
                "experiment tracking (%s, %s) failed while %s: %s: %s; the job goes on without tracking",
                self.settings.backend,
                self.settings.tracking_uri(),
                what,
                type(error).__name__,
                str(error).splitlines()[0] if str(error) else "",
            )
            return None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._guard("starting the run", self._start)

    def _start(self) -> None:
        uri = self.settings.tracking_uri()
        self.client = mlflow_client(self.settings)
        invocation = os.environ.get(INVOCATION_ENV, "").strip()
        with self._store_lock(uri):
            self.experiment_id = self._experiment()
            if invocation:
                self.parent_id = self._find_or_create_parent(invocation)
        run = self._previous_attempt(invocation) if invocation else None
        if run is None:
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=self._run_name(), tags=self._tags(invocation)
            ).info.run_id
        else:
            self.run_id = run.info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            history = self.client.get_metric_history(self.run_id, "val_loss")
            self.logged_until = max((int(m.step) for m in history), default=0)
            log.info("tracking: continuing run %s of an earlier attempt of this job", self.run_id)
        self._log_params(flatten(self.job))
        log.info(
            "tracking: MLflow run %s in experiment %r at %s%s",
            self.run_id,
            self.settings.experiment,
            uri,
            f" (parent {self.parent_id})" if self.parent_id else "",
        )

    def end(self, status: str) -> None:
        self._guard("ending the run", self._end, status)

    def _end(self, status: str) -> None:
        if self.run_id is None:
            return
        self.client.set_terminated(self.run_id, status)
        if self.parent_id is not None:
            # The parent ends with the last job to end (its end time spans the invocation's training).
            with self._store_lock(self.settings.tracking_uri()):
                self._adopt_canonical_parent(os.environ.get(INVOCATION_ENV, "").strip())
                self.client.set_terminated(self.parent_id, "FINISHED")

    # -- epoch loop hooks (kdgat.training.loop.EpochCallback) -------------------------------------------------
    def fit_started(self, name: str, first_epoch: int, epochs: int, history: list[dict]) -> None:
        rows = [row for row in history if int(row["epoch"]) > self.logged_until]
        if rows:
            self._guard("logging the restored epochs", self._log_rows, rows)

    def epoch_ended(self, row: dict, epochs: int, stopped_early: bool) -> None:
        self._guard("logging an epoch", self._log_rows, [row])

    def log_outputs(self, metrics: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        self._guard("logging the outputs", self._log_outputs, metrics, outputs)

    # -- MLflow calls -----------------------------------------------------------------------------------------
    def _log_rows(self, rows: list[dict]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(key, value, now, int(row["epoch"]))
            for row in rows
            for key, value in numeric(row).items()
            if key != "epoch"
        ]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])
        self.logged_until = max(self.logged_until, *(int(row["epoch"]) for row in rows))

    def _log_params(self, values: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, str(value)[:6000]) for key, value in values.items()]
        for start in range(0, len(params), BATCH):
            self.client.log_batch(self.run_id, params=params[start : start + BATCH])

    def _log_outputs(self, metrics: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        final = [Metric(f"final/{key}", value, now, 0) for key, value in numeric(metrics).items()]
        for start in range(0, len(final), BATCH):
            self.client.log_batch(self.run_id, metrics=final[start : start + BATCH])
        for name in ("history", "metrics"):
            if outputs.get(name):
                self.client.log_artifact(self.run_id, str(outputs[name]))
        model = Path(outputs["model"]) if outputs.get("model") else None
        if model is not None:
            if self.settings.model == "copy":
                self.client.log_artifact(self.run_id, str(model))
            self.client.set_tag(self.run_id, "kdgat.model_path", str(model.resolve()))
            self.client.set_tag(self.run_id, "kdgat.model_sha256", _sha256(model))

    def _experiment(self) -> str:
        from mlflow.exceptions import MlflowException

        name = self.settings.experiment
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name)
            except MlflowException:  # another job created it first (a server enforces unique names)
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise RuntimeError(f"experiment {name!r} is deleted (restore it or choose another name)")
        return experiment.experiment_id

    def _parents(self, invocation: str) -> list:
        return _retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`kdgat.invocation` = '{_quoted(invocation)}' "
                f"and tags.`kdgat.role` = '{PARENT_ROLE}'",
            )
        )

    def _find_or_create_parent(self, invocation: str) -> str:
        parents = self._parents(invocation)
        if not parents:
            tags = {
                "kdgat.role": PARENT_ROLE,
                "kdgat.invocation": invocation,
                "kdgat.workdir": os.getcwd(),
            }
            if os.environ.get(COMMIT_ENV):
                tags["mlflow.source.git.commit"] = os.environ[COMMIT_ENV]
            self.created_parent = self.client.create_run(
                self.experiment_id, run_name=f"workflow {invocation}", tags=tags
            ).info.run_id
            parents = self._parents(invocation) or [self.client.get_run(self.created_parent)]
        return min(run.info.run_id for run in parents)

    def _adopt_canonical_parent(self, invocation: str) -> None:
        parents = self._parents(invocation)
        canonical = min((run.info.run_id for run in parents), default=self.parent_id)
        if canonical != self.parent_id:
            self.client.set_tag(self.run_id, "mlflow.parentRunId", canonical)
        if self.created_parent and self.created_parent != canonical:
            self.client.delete_run(self.created_parent)
        self.parent_id = canonical

    def _previous_attempt(self, invocation: str):
        runs = _retry(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`kdgat.invocation` = '{_quoted(invocation)}' "
                f"and tags.`kdgat.job` = '{job_key(self.outputs)}'",
            )
        )
        return min(runs, key=lambda run: run.info.run_id) if runs else None

    def _run_name(self) -> str:
        tags = self.settings.tags
        where = (
            f"sweep/{tags['kdgat.sweep_instance']}"
            if tags.get("kdgat.sweep_instance")
            else self.job["variant"]
        )
        return "/".join(part for part in (tags.get("kdgat.dataset"), where, self.job["stage"]) if part)

    def _tags(self, invocation: str) -> dict[str, str]:
        tags = {
            "kdgat.stage": self.job["stage"],
            "kdgat.variant": self.job["variant"],
            "kdgat.preset": self.job["preset"],
            "kdgat.seed": str(self.job["seed"]),
            "kdgat.job": job_key(self.outputs),
            "kdgat.model_output": str(self.outputs.get("model", "")),
            **self.settings.tags,
        }
        if invocation:
            tags["kdgat.invocation"] = invocation
        if self.parent_id:
            tags["mlflow.parentRunId"] = self.parent_id
        commit = self.settings.tags.get("mlflow.source.git.commit") or os.environ.get(COMMIT_ENV)
        if commit:
            tags["mlflow.source.git.commit"] = commit
        with contextlib.suppress(Exception):
            tags.setdefault("mlflow.user", getpass.getuser())
        return tags

    @contextlib.contextmanager
    def _store_lock(self, uri: str) -> Iterator[None]:
        """Exclusive across processes for a file store (find-or-create of the experiment and the parent)."""
        if not is_file_store(uri):
            yield
            return
        root = Path(urlparse(uri).path if uri.startswith("file:") else uri)
        root.mkdir(parents=True, exist_ok=True)
        with open(root / ".kdgat.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _retry(function, attempts: int = 3, pause: float = 0.2):
    """A search may read a run's meta.yaml while another job rewrites it (the file store writes in place):
    such a read fails once; it is tried again before the failure counts."""
    for attempt in range(attempts):
        try:
            return function()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(pause * (attempt + 1))
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


EVALUATION_ARTIFACTS = "evaluation"  # the artifact folder of a training run that holds its evaluation


def log_evaluation(
    tracking: TrackingSettings | Mapping[str, Any] | None,
    models: Mapping[str, str | os.PathLike],
    outputs: Mapping[str, str | os.PathLike],
) -> list[str]:
    """Attach an evaluation's outputs (metrics.json, scores, figures) to the training runs of the models it
    evaluated, in their ``evaluation/`` artifact folder. A model's run is the latest one whose ``model.pt`` had the
    same SHA-256 (the ``kdgat.model_sha256`` tag), so an evaluation finds its runs in a later invocation too.
    Returns the run ids; like training, a tracking failure is one warning, never a failed evaluation."""
    settings = TrackingSettings.from_config(tracking) if tracking is not None else TrackingSettings()
    if not settings.enabled:
        return []
    try:
        client = mlflow_client(settings)
        experiment = client.get_experiment_by_name(settings.experiment)
        found = []
        for name, model in models.items():
            runs = experiment and client.search_runs(
                [experiment.experiment_id],
                filter_string=f"tags.`kdgat.model_sha256` = '{_sha256(Path(model))}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if not runs:
                log.info("tracking: no training run of %s (%s) to attach the evaluation to", name, model)
                continue
            for path in outputs.values():
                client.log_artifact(runs[0].info.run_id, str(path), artifact_path=EVALUATION_ARTIFACTS)
            found.append(runs[0].info.run_id)
        log.info("tracking: evaluation attached to the training runs %s", ", ".join(found) or "(none)")
        return found
    except Exception as error:  # tracking never breaks the evaluation
        log.warning(
            "experiment tracking (%s, %s) failed while attaching the evaluation: %s: %s; the outputs are written",
            settings.backend,
            settings.tracking_uri(),
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
        )
        return []


@contextlib.contextmanager
def tracked_job(
    tracking: TrackingSettings | Mapping[str, Any] | None,
    job: Mapping[str, Any],
    outputs: Mapping[str, Any],
) -> Iterator[NullTracker | MlflowTracker]:
    """The tracker of one training job (a no-op without tracking): started on entry, its run ended FINISHED on a
    normal exit, FAILED (KILLED on Ctrl-C) when the job raises; the job's exception propagates unchanged."""
    settings = TrackingSettings.from_config(tracking) if tracking is not None else TrackingSettings()
    if not settings.enabled:
        yield NullTracker()
        return
    tracker = MlflowTracker(settings, job, outputs)
    tracker.start()
    try:
        yield tracker
    except KeyboardInterrupt:
        tracker.end("KILLED")
        raise
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end("FINISHED")
