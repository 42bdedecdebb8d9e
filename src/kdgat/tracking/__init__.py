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
parent it created when it is not that one. A retried job (same invocation, same outputs by absolute path) continues
its own run, where each epoch is logged once (one the retry trains again, having no checkpoint of it, is not logged again: MLflow
keeps every value logged at a step); a job resumed by a later invocation is a new run (it logs the epochs restored
from its checkpoint again). A user may
export the key to group invocations: 1-250 letters, digits and ``. _ : + @ / -`` (``check_invocation_key``; MLflow's
search filters undo no escapes, so a quote or a backslash would never match), refused while the workflow is parsed.

Tracking never breaks a job: the first failure (mlflow missing, server unreachable, store unwritable) is logged
as one warning, and the job goes on untracked. Against an HTTP server, MLflow's retries are bounded
(``HTTP_DEFAULTS``) unless its own ``MLFLOW_HTTP_REQUEST_*`` variables are set.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kdgat.files import file_sha256
from kdgat.tracking.runs import MlflowTracker, NullTracker
from kdgat.tracking.settings import (
    BACKENDS,
    COMMIT_ENV,
    CREDENTIAL_ENVS,
    DEFAULT_EXPERIMENT,
    DEFAULT_URI,
    FILE_STORE_OPT_IN,
    HTTP_DEFAULTS,
    INVOCATION_ENV,
    MODEL_ARTIFACT,
    TrackingError,
    TrackingSettings,
    check_invocation_key,
    ensure_invocation_environment,
    flatten,
    is_file_store,
    job_key,
    mlflow_client,
    numeric,
    source_commit,
)

__all__ = [
    "BACKENDS",
    "COMMIT_ENV",
    "CREDENTIAL_ENVS",
    "DEFAULT_EXPERIMENT",
    "DEFAULT_URI",
    "EVALUATION_ARTIFACTS",
    "FILE_STORE_OPT_IN",
    "HTTP_DEFAULTS",
    "INVOCATION_ENV",
    "MODEL_ARTIFACT",
    "MlflowTracker",
    "NullTracker",
    "TrackingError",
    "TrackingSettings",
    "check_invocation_key",
    "ensure_invocation_environment",
    "flatten",
    "is_file_store",
    "job_key",
    "log_evaluation",
    "mlflow_client",
    "numeric",
    "source_commit",
    "tracked_job",
]

log = logging.getLogger("kdgat.tracking")


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
                filter_string=f"tags.`kdgat.model_sha256` = '{file_sha256(Path(model))}'",
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
            settings.shown_uri(),
            type(error).__name__,
            settings.masked(str(error).splitlines()[0] if str(error) else ""),
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
