"""What experiment tracking is configured with (``kd_gat.tracking``), what a workflow hands its jobs through the
environment, and the helpers the trackers share (kdgat.tracking describes the whole)."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import logging
import math
import os
import re
import subprocess
import time
import uuid
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

from wrapper_rules import InputError

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
EXPERIMENT_NAME_LIMIT = 500  # MLflow's longest experiment name
BATCH = 100  # params / metrics per log_batch call (MLflow accepts at most 100 params per call)


# What a message calls the tracking settings: the config key kd_gat.tracking (the workflow, the kdgat command), or
# params.tracking where a training wrapper's user gave them (kdgat.training.settings.settings_named sets it).
TRACKING_KEY: ContextVar[str] = ContextVar("tracking_given_as", default="kd_gat.tracking")


class TrackingError(ValueError, InputError):
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
        # YAML `experiment: 2024` is a number, which MLflow would refuse only inside the job
        for key, value, kinds in (("uri", self.uri, str | os.PathLike), ("experiment", self.experiment, str)):
            if not isinstance(value, kinds):
                raise TrackingError(
                    f"{TRACKING_KEY.get()}.{key} must be a string, got {value!r}: quote it in the YAML"
                )
        if self.backend not in BACKENDS:
            raise TrackingError(
                f"{TRACKING_KEY.get()}.backend must be one of {BACKENDS}, got {self.backend!r}"
            )
        if self.model not in MODEL_ARTIFACT:
            raise TrackingError(
                f"{TRACKING_KEY.get()}.model must be one of {MODEL_ARTIFACT}, got {self.model!r}"
            )
        if self.backend != "none" and (not str(self.uri).strip() or not str(self.experiment).strip()):
            raise TrackingError(f"{TRACKING_KEY.get()}: uri and experiment must not be empty")
        if self.backend != "none":
            self.tracking_uri()  # a path whose ~ names no home is refused here, not inside the job
            self._check_experiment()

    def _check_experiment(self) -> None:
        """What MLflow would refuse only inside the job (where tracking failures are a warning): the name's
        length, and a quote in a file store's name (its lookup by name splices the name into a filter string)."""
        name = str(self.experiment)
        if len(name) > EXPERIMENT_NAME_LIMIT:
            raise TrackingError(
                f"{TRACKING_KEY.get()}.experiment is {len(name)} characters long; MLflow takes at most "
                f"{EXPERIMENT_NAME_LIMIT}"
            )
        if "'" in name and is_file_store(self.tracking_uri()):
            raise TrackingError(
                f"{TRACKING_KEY.get()}.experiment {name!r} has a single quote, which MLflow's file store cannot look "
                f"up ({TRACKING_KEY.get()}.uri {self.uri!r}): remove it or use a tracking server"
            )

    @classmethod
    def from_config(
        cls, section: Mapping[str, Any] | None, tags: Mapping[str, Any] | None = None
    ) -> TrackingSettings:
        """From the ``kd_gat.tracking`` section (missing keys take the defaults; unknown keys fail)."""
        if isinstance(section, TrackingSettings):
            return dataclasses.replace(section, tags={**section.tags, **_strings(tags)})
        if section is not None and not isinstance(section, Mapping):
            raise TrackingError(f"{TRACKING_KEY.get()}: expected a mapping, got {type(section).__name__}")
        options = {key: value for key, value in (section or {}).items() if value is not None}  # null: default
        known = {name for name in cls.__dataclass_fields__ if name != "tags"}
        unknown = set(options) - known
        if unknown:
            raise TrackingError(
                f"{TRACKING_KEY.get()}: unknown keys {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**options, tags=_strings(tags))

    @property
    def enabled(self) -> bool:
        return self.backend != "none"

    def tracking_uri(self) -> str:
        """The URI for MLflow: a plain path (``~`` expanded) becomes an absolute ``file:`` URI (jobs run in the
        workflow's working directory, so a relative path means the same store for all of them)."""
        uri = str(self.uri).strip()
        if is_file_store(uri) and not uri.startswith("file:"):
            try:
                path = Path(uri).expanduser()
            except RuntimeError:  # ~name of no user, or ~ with no home directory
                user = uri[1:].replace("\\", "/").split("/", 1)[0]
                whose = (
                    f"no user {user!r} (~{user} is that user's home; yours is ~/)"
                    if user
                    else "no home directory"
                )
                raise TrackingError(f"{TRACKING_KEY.get()}.uri {self.uri!r}: {whose}") from None
            return path.resolve().as_uri()
        return uri

    def shown_uri(self) -> str:
        """The URI for a message: ``tracking_uri()``, or the setting as written where that fails, its password
        (``https://user:token@host``, ``postgresql://user:password@db/mlflow``) shown as ``***``."""
        try:
            return self.masked(self.tracking_uri())
        except TrackingError:
            return self.masked(str(self.uri))

    def masked(self, text: str) -> str:
        """``text`` (a message, MLflow's included: it names the URL it called) without the URI's password: a job's
        log is read by the project group, and the warning of a failed tracking call named the URI whole."""
        try:
            password = urlparse(str(self.uri).strip()).password
        except ValueError:  # a port that is no number: no URI with a password either
            password = None
        return text.replace(password, "***") if password else text


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


# What an exported invocation key may hold: MLflow's search filters compare a tag with a quoted literal and undo no
# escapes, so a key with a quote or a backslash would never find its parent run or a retry's run.
INVOCATION_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+@/-]{0,249}")


def check_invocation_key(key: str) -> None:
    """Refuse an invocation key the tracking searches could not match, naming the variable."""
    if not INVOCATION_KEY.fullmatch(key):
        raise ValueError(
            f"{INVOCATION_ENV}={key!r}: an invocation key is 1-250 letters, digits and . _ : + @ / - (starting "
            "with a letter or digit); MLflow's search filters cannot match quotes, backslashes or blanks"
        )


def ensure_invocation_environment(source: str | os.PathLike, environ=None) -> tuple[str, ...]:
    """Put the invocation key and the source commit in the environment unless they are there already, and return
    their names with those of MLflow's credential variables that are set (for Snakemake's ``envvars:``, which
    every executor hands to the jobs: Kubernetes in their Secret). The main Snakemake process makes the key once
    per invocation; its jobs inherit it or get it exported, so they keep it; a user may export a key to group
    invocations (refused here, while the workflow is parsed, unless ``check_invocation_key`` takes it)."""
    environ = os.environ if environ is None else environ
    if environ.get(INVOCATION_ENV):
        check_invocation_key(environ[INVOCATION_ENV])
    else:
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
    """Identifies a training job within an invocation (its model output's absolute path), for finding a retry's
    run: the same relative path in another working directory (another run under an exported invocation key,
    sharing the store) is another job."""
    model = str(outputs.get("model", ""))
    return hashlib.sha256((os.path.abspath(model) if model else "").encode()).hexdigest()[:20]


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
    try:
        return MlflowClient(tracking_uri=uri)
    except Exception as error:
        if "unsupported URI" not in str(error):
            raise
        # MLflow's own message blames its model registry: name the setting and the scheme it does not know.
        raise ValueError(
            f"{TRACKING_KEY.get()}.uri {settings.shown_uri()!r}: MLflow has no store for the scheme "
            f"{urlparse(uri).scheme!r} (a path, file:, http:, https: or a database URI such as sqlite:)"
        ) from error


def store_path(uri: str) -> Path:
    """The directory of a file store's URI (percent-escapes decoded: a space is ``%20`` in the URI)."""
    return Path(url2pathname(urlparse(uri).path) if uri.startswith("file:") else uri)


def retried(function, attempts: int = 3, pause: float = 0.2):
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
