"""What the three training stages share around the epoch loop: the optimiser holder (``StageBase``), the
optimisation step, the per-epoch validation scores, the device and thread set-up, the job's GPU memory peak and
writing a stage's outputs."""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score, roc_auc_score

from kdgat.distillation import freeze
from kdgat.files import FileContentError, file_sha256, output_lock, write_json, write_table
from kdgat.graph_store import graph_header
from kdgat.inference import scoring_device
from kdgat.model_store import load_model, save_model
from kdgat.models import count_parameters
from kdgat.rule_items import RuleItemError
from kdgat.runtime import TRAINING_DEVICE, grad_scaler, select_device
from kdgat.tracking import TrackingSettings, tracked_job
from kdgat.training.data import check_one_preprocess_run, load_training_data
from kdgat.training.loop import Observers, discard_checkpoint, refuse_checkpoint_over_files
from kdgat.training.settings import SettingsError, StageSettings, TrainingSettings

log = logging.getLogger("kdgat.training")

OUTPUTS = ("model", "metrics", "history")


def make_optimizer(parameters, training: TrainingSettings) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=float(training.lr), weight_decay=float(training.weight_decay))


def optimisation_step(optimizer, scaler, loss, parameters, grad_clip: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    scaler.step(optimizer)
    scaler.update()


def validation_metrics(labels, predictions, scores=None, prefix: str = "val_") -> dict:
    """The few scores logged per epoch (accuracy, F1, AUC); the full set is kdgat.evaluation.metrics. F1 is NaN
    (null in metrics.json) where it is 0/0, no attack window and none predicted, as the evaluation leaves it
    undefined: a 0 there read as a model that missed every attack, of a split that holds none."""
    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    metrics = {
        f"{prefix}acc": float((labels == predictions).mean()) if len(labels) else float("nan"),
        f"{prefix}f1": float(f1_score(labels, predictions, zero_division=np.nan)),
    }
    if scores is not None:
        metrics[f"{prefix}auc"] = auc_or_nan(labels, scores)
    return metrics


def auc_or_nan(labels, scores) -> float:
    """ROC AUC, or NaN (null in metrics.json) when the split has a single class or a score is not finite (a
    diverged model, which the epoch loop then stops on: kdgat.training.loop.fit)."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(np.unique(labels)) != 2 or not np.isfinite(scores).all():
        return float("nan")
    return float(roc_auc_score(labels, scores))


class StageBase:
    """Model + optimiser + AMP scaler + the loader's generator: what a checkpoint must carry for a stage."""

    def __init__(self, model, settings: StageSettings, device: torch.device, extra_parameters=()):
        self.device = device
        self.model = model.to(device)
        self.training = settings.training
        self.trainable = [p for p in self.model.parameters() if p.requires_grad] + list(extra_parameters)
        self.optimizer = make_optimizer(self.trainable, self.training)
        self.scaler = grad_scaler(device)
        self.loader_generator = torch.Generator().manual_seed(int(settings.seed))
        self.observers = Observers()  # fit() replaces it with the loop's callbacks

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            **self.extra_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # A disabled scaler (CPU) saves {}, which an enabled one (CUDA) refuses: resuming a CPU checkpoint where
        # `device: auto` picks CUDA starts the new device's scaler afresh.
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        self.load_extra_state(state)

    def step(self, loss) -> None:
        optimisation_step(self.optimizer, self.scaler, loss, self.trainable, float(self.training.grad_clip))


def prepare_job(
    settings: StageSettings | Mapping, stage: str, outputs: Mapping, threads: int | None
) -> StageSettings:
    """Typed settings of a file-level ``run`` (checked against its stage), torch's thread count, and the GPU check."""
    settings = StageSettings.from_dict(settings)
    if settings.stage != stage:
        raise SettingsError(f"settings for the {settings.stage} stage were given to the {stage} stage")
    missing = [name for name in OUTPUTS if not outputs.get(name)]
    if missing:
        raise RuleItemError(
            f"the {stage} stage needs the outputs {list(OUTPUTS)}, a path each (the train_{stage} wrapper's "
            f"output.<name>, kdgat.training.{stage}.run's outputs[<name>]); missing {missing}"
        )
    if threads:
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        # torch crashed (SIGSEGV) on --threads 10000; more threads than CPUs would only slow the job down
        if int(threads) > available:
            log.warning(
                "threads=%s is more than the %d CPUs this job may use; using them", threads, available
            )
            threads = available
        torch.set_num_threads(int(threads))
    # A job given a GPU it cannot use stops here, within seconds, before any data is read.
    reset_gpu_peak(select_device(settings.device, TRAINING_DEVICE))
    return settings


def check_teachers(settings: StageSettings, teachers: Mapping[str, str | os.PathLike | None]) -> None:
    """Refuse teacher models where the variant distils from none, and their absence where it does, before anything
    is read: ``teachers`` maps each input name (the train wrapper's input, the ``run`` argument) to its path or None.
    A teacher given to the teacher variant died at the first batch on the settings' missing ``distillation``; a
    student_kd stage without one trained a plain student whose metrics said ``knowledge_distillation: true``. The DQN's
    three teacher models come together or not at all."""
    given = [name for name, path in teachers.items() if path]
    if settings.distillation is None and given:
        raise SettingsError(
            f"the {settings.stage} stage of variant {settings.variant!r} distils from no teacher, but {given} "
            f"{'is' if len(given) == 1 else 'are'} given: only student_kd takes the teacher's models; leave "
            f"{'it' if len(given) == 1 else 'them'} out, or give the settings of variant student_kd"
        )
    if given and len(given) < len(teachers):  # the DQN's three: its state is built from all of them
        missing = [name for name in teachers if name not in given]
        raise SettingsError(f"DQN distillation needs all three teacher models; missing {missing}")
    if settings.distillation is not None and not given:
        raise SettingsError(
            f"the {settings.stage} stage of variant {settings.variant!r} distils from the teacher: give the "
            f"teacher's models as {list(teachers)}"
        )


@contextlib.contextmanager
def job_lock(outputs: Mapping, checkpoint: str | os.PathLike | None) -> Iterator[None]:
    """Hold the locks of the job's model output and resume checkpoint (kdgat.files.output_lock) for the block: a
    second job writing either at the same time (another workflow sharing the output through an absolute path, the
    ``kdgat`` command run by hand) stops at once with a message naming the file and the holder, before it reads
    or writes anything; the locks go with the job, however it ends. Holding them, it removes the temporary files of
    model.pt and the checkpoint that a job killed while writing them left (SIGKILL: no clean-up ran)."""
    with contextlib.ExitStack() as locks:
        locks.enter_context(output_lock(outputs["model"], "training output", stale_temporaries=True))
        if checkpoint:
            locks.enter_context(output_lock(checkpoint, "training checkpoint", stale_temporaries=True))
        yield


@contextlib.contextmanager
def locked_tracked_job(
    outputs: Mapping, checkpoint: str | os.PathLike | None, tracking, job: Mapping
) -> Iterator:
    """The job's locks (``job_lock``) around its tracked run (``tracked_job``, the tracker yielded); once the block
    has written the outputs and the run has ended, and only then, drop the resume checkpoint. Dropped before the
    tracker logged the outputs and ended its run (seconds with a remote MLflow server), a SIGTERM then failed the
    job, Snakemake deleted its outputs and the rerun trained from the first epoch, although the job's last line
    said it resumes from the checkpoint."""
    with job_lock(outputs, checkpoint):
        with tracked_job(tracking, job, outputs) as tracker:
            yield tracker
        discard_checkpoint(checkpoint)


def reset_gpu_peak(device: torch.device) -> None:
    """Start measuring the job's GPU memory peak now (the file-level ``run`` of every stage, before any data is
    read); off CUDA there is nothing to measure."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def gpu_peak_mb(device: torch.device) -> float | None:
    """The most GPU memory, in MB, torch's CUDA caching allocator reserved since the last reset (the learned
    resources' GPU record, metrics.json ``gpu_peak_mem_mb``); None on any other device, where nothing is measured.
    """
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_reserved(device) / 2**20


def frozen(teacher: torch.nn.Module, device) -> torch.nn.Module:
    """``teacher`` as a stage uses it, for its targets: on ``device``, in eval mode, without gradients
    (kdgat.distillation.freeze). The model itself when it is so already (the training jobs load their models so),
    else a copy made so: a caller's model keeps its device, its modules' modes and its gradients."""
    device = scoring_device(device)
    ready = (
        not any(module.training for module in teacher.modules())
        and not any(parameter.requires_grad for parameter in teacher.parameters())
        and all(t.device == device for t in itertools.chain(teacher.parameters(), teacher.buffers()))
    )
    return teacher if ready else freeze(copy.deepcopy(teacher).to(device))


def resolve_device(settings: StageSettings) -> torch.device:
    device = select_device(settings.device, TRAINING_DEVICE)
    log.info("device: %s", device)
    return device


def write_outputs(
    outputs: Mapping,
    settings: StageSettings,
    model,
    model_config: dict,
    result: dict,
    metrics: dict,
    **recorded,
) -> None:
    """model.pt (with the ``recorded`` plain values), metrics.json and history.csv, each atomically (the resume
    checkpoint is dropped by ``locked_tracked_job`` once the job's run has ended)."""
    save_model(model, settings.stage, model_config, outputs["model"], variant=settings.variant, **recorded)
    write_json(metrics, outputs["metrics"], sort_keys=True)
    write_table(pd.DataFrame(result["history"]), outputs["history"])


def base_metrics(settings: StageSettings, model, result: dict, started: float, device) -> dict:
    return {
        "stage": settings.stage,
        "variant": settings.variant,
        "preset": settings.preset,
        "num_parameters": count_parameters(model),
        "epochs_run": len(result["history"]),
        "best_epoch": result["best_epoch"],
        "best_val_loss": result["best_val_loss"],
        "resumed_from_epoch": None if result["resumed_from"] is None else result["resumed_from"] + 1,
        "train_seconds": time.perf_counter() - started,
        "device": str(device),
        "gpu_peak_mem_mb": gpu_peak_mb(device),
        "knowledge_distillation": settings.distillation is not None,
    }


def run_graph_stage(
    stage: str,
    train_stage: Callable,
    *,
    train: str | os.PathLike,
    val: str | os.PathLike,
    metadata: str | os.PathLike,
    settings: StageSettings | Mapping,
    outputs: Mapping[str, str | os.PathLike],
    checkpoint: str | os.PathLike | None,
    models: Sequence[tuple[str | os.PathLike | None, str]],
    threads: int | None,
    tracking: TrackingSettings | Mapping | None,
    callbacks: Sequence,
) -> dict:
    """The file-level job of a stage trained on the preprocess graph files (vgae, gat), in one tracked run: set the
    job up, load the train/val graphs and the ``models`` (``(file, kind)`` pairs; file None where not given, a
    model of another kind refused), call ``train_stage(train, val, num_ids, settings, checkpoint, *models,
    callbacks=...)``, write the outputs; returns the metrics."""
    settings = prepare_job(settings, stage, outputs, threads)
    check_teachers(settings, {"teacher": next((path for path, kind in models if kind == stage), None)})
    given = {f"{kind} model" if kind != stage else f"teacher {kind} model": path for path, kind in models}
    refuse_checkpoint_over_files(
        checkpoint, {"train": train, "val": val, "metadata": metadata, **given, **outputs}
    )
    with locked_tracked_job(outputs, checkpoint, tracking, settings.as_dict()) as tracker:
        # A VGAE or teacher of another preprocess run: its ID indices would mean other IDs, and nothing would fail.
        # train.pt's header is read once, for this check and for the vocabulary model.pt records (a missing file
        # is named by load_training_data).
        headers = {"train": graph_header(train)} if Path(train).is_file() else {}
        check_one_preprocess_run({"train": train, "val": val}, given, metadata, train=train, headers=headers)
        train_graphs, val_graphs, num_ids = load_training_data(train, val, metadata)
        # loaded there and frozen: the stage uses them as they are
        device = select_device(settings.device, TRAINING_DEVICE)
        loaded = [freeze(load_model(path, device, kind=kind)) if path else None for path, kind in models]
        if Path(val).is_file() and Path(train).is_file() and file_sha256(val) == file_sha256(train):
            # early stopping (and the VGAE's anomaly threshold) on the training graphs: a wrong model, exit 0
            raise FileContentError(
                f"{val}: the validation graphs are the training graphs {train}; give val.pt"
            )
        model, result, metrics, model_config = train_stage(
            train_graphs, val_graphs, num_ids, settings, checkpoint, *loaded, callbacks=(*callbacks, tracker)
        )
        # What the model learnt from, so that the DQN stage can refuse to fuse its outputs on those same graphs.
        write_outputs(
            outputs,
            settings,
            model,
            model_config,
            result,
            metrics,
            trained_on=file_sha256(train),
            vocabulary=headers["train"]["vocabulary"],
        )
        tracker.log_outputs(metrics, outputs)
    return metrics
