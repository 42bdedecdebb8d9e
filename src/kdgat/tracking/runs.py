"""The trackers of one training job: ``NullTracker`` (tracking off) and ``MlflowTracker`` (one MLflow run; the
parent run of the invocation, retries and failures as kdgat.tracking describes)."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kdgat import files
from kdgat.files import file_sha256
from kdgat.tracking.settings import (
    BATCH,
    COMMIT_ENV,
    INVOCATION_ENV,
    PARENT_ROLE,
    TrackingSettings,
    check_invocation_key,
    flatten,
    is_file_store,
    job_key,
    mlflow_client,
    numeric,
    retried,
    store_path,
)

log = logging.getLogger("kdgat.tracking")


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
                self.settings.shown_uri(),
                what,
                type(error).__name__,
                self.settings.masked(str(error).splitlines()[0] if str(error) else ""),
            )
            return None

    # -- lifecycle --------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._guard("starting the run", self._start)

    def _start(self) -> None:
        uri = self.settings.tracking_uri()
        self.client = mlflow_client(self.settings)
        invocation = os.environ.get(INVOCATION_ENV, "").strip()
        if invocation:
            check_invocation_key(invocation)  # the filters below quote it as it is
        with self._store_lock(uri):
            self.experiment_id = self._experiment()
            if invocation:
                self.parent_id = self._find_or_create_parent(invocation)
        params = {key: str(value)[:6000] for key, value in flatten(self.job).items()}
        run = self._previous_attempt(invocation, params) if invocation else None
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
        self._log_params(params)
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
        if history:
            self._guard("logging the restored epochs", self._log_rows, history)
        if first_epoch < self.logged_until:
            log.info(
                "tracking: %s trains epochs %d-%d again (no checkpoint of them to resume); run %s holds them "
                "already, from the earlier attempt, and they are not logged again",
                name,
                first_epoch + 1,
                self.logged_until,
                self.run_id,
            )

    def epoch_ended(self, row: dict, epochs: int, stopped_early: bool) -> None:
        self._guard("logging an epoch", self._log_rows, [row])

    def log_outputs(self, metrics: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
        self._guard("logging the outputs", self._log_outputs, metrics, outputs)

    # -- MLflow calls -----------------------------------------------------------------------------------------
    def _log_rows(self, rows: list[dict]) -> None:
        """Log each row's metrics at its epoch (the step), an epoch the run holds already excepted: MLflow keeps
        every value logged at a step, so a retry that trains an epoch again (it restored no checkpoint of it) would
        log it twice."""
        from mlflow.entities import Metric

        rows = [row for row in rows if int(row["epoch"]) > self.logged_until]
        if not rows:
            return
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

    def _log_params(self, values: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        params = [Param(key, value) for key, value in values.items()]
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
            self.client.set_tag(self.run_id, "kdgat.model_sha256", file_sha256(model))

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
        return retried(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`kdgat.invocation` = '{invocation}' "
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

    def _previous_attempt(self, invocation: str, params: Mapping[str, str]):
        """The run of an earlier attempt of this job: one that did not finish, with the same settings. A FINISHED
        run (the job run again by a later invocation under an exported key) or one of other settings stays as it
        is: this attempt is a new run."""
        runs = retried(
            lambda: self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`kdgat.invocation` = '{invocation}' "
                f"and tags.`kdgat.job` = '{job_key(self.outputs)}'",
            )
        )
        attempts = [
            run
            for run in runs
            if run.info.status != "FINISHED"
            and all(run.data.params.get(key, value) == value for key, value in params.items())
        ]
        return min(attempts, key=lambda run: run.info.run_id) if attempts else None

    def _run_name(self) -> str:
        tags = self.settings.tags
        where = (
            f"sweep/{tags['kdgat.sweep_instance']}"
            if tags.get("kdgat.sweep_instance")
            else self.job["variant"]
        )
        parts = (tags.get("kdgat.module"), tags.get("kdgat.dataset"), where, self.job["stage"])
        # the seed too: the runs of kd_gat.seeds were told apart by a tag alone, under one name
        seed = self.job.get("seed")
        return "/".join(part for part in parts if part) + ("" if seed is None else f" seed {seed}")

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
        root = store_path(uri)
        root.mkdir(parents=True, exist_ok=True)
        with files.exclusive_lock(root / ".kdgat.lock"):
            yield
