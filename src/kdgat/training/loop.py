"""The epoch loop every stage uses: early stopping, per-epoch atomic checkpoints with resume, progress lines.

A stage object supplies the science (`train_epoch`, `validate`) and names what must survive a restart
(`state_dict` / `load_state_dict`, its model, the DataLoader generator). The loop owns everything else.

Observers (``LoopSettings.callbacks``, :class:`EpochCallback`: a progress bar, experiment tracking) see the loop
start, each batch, each epoch's history row and the end. They only observe: an observer that raises is logged once
and dropped, and training goes on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch_geometric.data import Data

from kdgat.files import FileContentError, first_difference, part_digest, save_torch
from kdgat.layout import training_code_digests
from kdgat.model_store import MODEL_FORMAT
from kdgat.runtime import restore_rng_state, rng_state

log = logging.getLogger("kdgat.training")

# What fit() writes into a resume checkpoint; bump it when that changes. It, MODEL_FORMAT and the training code's
# digest are part of every fingerprint, so a checkpoint of an older layout or code is set aside instead of loaded.
CHECKPOINT_FORMAT = "kdgat-checkpoint/2"

# A run whose best validation loss is more than DIVERGENCE_FACTOR times the untrained model's (the loss of the
# weights it started from, taken before the first epoch) has diverged though its loss is finite: no epoch came within
# that factor of doing nothing. Healthy runs end at or below the untrained loss (docs/models.md, "Diverged training").
DIVERGENCE_FACTOR = 10.0

# Test hook: SIGKILL this process right after the checkpoint of epoch N is written (a node failure stand-in).
KILL_AFTER_EPOCH_ENV = "KDGAT_KILL_AFTER_EPOCH"


class Stage(Protocol):
    model: torch.nn.Module
    loader_generator: torch.Generator | None
    observers: Observers  # set by fit(); a stage reports its batches through observers.batches(...)

    def train_epoch(self, epoch: int) -> dict: ...  # must contain "graphs": samples processed

    def validate(self) -> dict: ...  # must contain "val_loss"

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    # Optional: why the model's (best) weights are diverged though finite, or None; fit() asks after the last epoch
    # (the DQN, whose validation loss is a bounded reward: kdgat.training.fusion_policy.q_value_divergence).
    # def divergence(self) -> str | None: ...


class EpochCallback:
    """What an observer of the epoch loop may implement; every method is optional (these are no-ops)."""

    def fit_started(self, name: str, first_epoch: int, epochs: int, history: list[dict]) -> None:
        """Before the first epoch; ``first_epoch`` > 0 and ``history`` holds the rows restored from a checkpoint
        when the loop resumes."""

    def batch_ended(self, done: int, total: int) -> None:
        """After each of the ``total`` batches (or updates) of an epoch."""

    def epoch_ended(self, row: dict, epochs: int, stopped_early: bool) -> None:
        """After an epoch's checkpoint is written; ``row`` is its history.csv row (``row["epoch"]`` counts from 1)."""

    def fit_ended(self, result: dict) -> None:
        """After the last epoch, with what fit() returns."""


class Observers:
    """The loop's callbacks, each called through :meth:`notify`: one that raises is logged once and dropped."""

    def __init__(self, callbacks: Iterable[EpochCallback] = ()):
        self.callbacks = list(callbacks)

    def notify(self, method: str, *args) -> None:
        for callback in list(self.callbacks):
            try:
                getattr(callback, method, lambda *_: None)(*args)
            except Exception as error:  # an observer never stops training
                log.warning(
                    "%s.%s failed (%s: %s); training goes on without it",
                    type(callback).__name__,
                    method,
                    type(error).__name__,
                    error,
                )
                self.callbacks.remove(callback)

    def batches(self, items: Iterable, total: int | None = None) -> Iterator:
        """Yield ``items`` and report each one done (``total``: their number, default ``len(items)``)."""
        total = len(items) if total is None else total
        for done, item in enumerate(items, start=1):
            yield item
            if self.callbacks:
                self.notify("batch_ended", done, total)


@dataclass
class LoopSettings:
    epochs: int
    patience: int
    checkpoint: str | os.PathLike | None = None
    name: str = "train"
    min_delta: float = 0.0
    callbacks: Sequence[EpochCallback] = field(default_factory=tuple)
    # What the error of a diverged run (a validation loss that is not finite, or finite but more than
    # DIVERGENCE_FACTOR times the untrained model's) tells the user to change.
    divergence_fix: str = "lower the learning rate"
    # False for a validation loss that cannot grow without bound (the DQN's: minus a reward of at most 1 per graph),
    # which no factor of the untrained loss tells diverged; the stage's divergence() check applies alone.
    loss_diverges: bool = True


class Fingerprint(str):
    """A training configuration's fingerprint, with ``parts``: ``{part: digest}`` of its formats, each setting
    (``settings.<key>``) and each input (``inputs.<name>``), which a checkpoint keeps so that one set aside names
    the part that changed (``kdgat.files.first_difference``)."""

    parts: dict[str, str]


def fingerprint(settings: dict, **inputs) -> Fingerprint:
    """Identifies a training configuration: the settings, what it trains on (``inputs``: graphs, tensors, teacher
    models; see :func:`content_digest`), the model and checkpoint formats and the code that trains
    (:func:`kdgat.layout.training_code_digests`). A checkpoint from a different one is not resumed."""
    identity = {
        "formats": [MODEL_FORMAT, CHECKPOINT_FORMAT],
        "code": training_code_digests(),
        "settings": settings,
        "inputs": {name: content_digest(value) for name, value in inputs.items()},
    }
    value = Fingerprint(
        hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    )
    value.parts = {
        "formats": " ".join(identity["formats"]),
        **{f"settings.{key}": part_digest(setting) for key, setting in _flat(settings).items()},
        **{f"inputs.{name}": digest for name, digest in identity["inputs"].items()},
    }
    return value


def _flat(settings: Mapping, prefix: str = "") -> dict:
    """``settings`` with each nested mapping's keys joined by dots (``training.lr``): the setting a part names."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def content_digest(value) -> str:
    """SHA-256 of the exact content of ``value``: a tensor (dtype, shape, bytes), a graph, a module's state, or
    a mapping or sequence of them; anything else by its repr. Reads only: no RNG draw, no change to ``value``."""
    digest = hashlib.sha256()

    def update(item) -> None:
        if isinstance(item, torch.Tensor):
            flat = item.detach().cpu().contiguous().view(-1)
            digest.update(f"tensor {flat.dtype} {tuple(item.shape)}:".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
        elif isinstance(item, torch.nn.Module):
            digest.update(f"module {type(item).__name__}:".encode())
            update(item.state_dict())
        elif isinstance(item, Data):
            update(item.to_dict())
        elif isinstance(item, Mapping):
            digest.update(f"mapping {len(item)}:".encode())
            for key in sorted(item, key=str):
                digest.update(f"{key!s}=".encode())
                update(item[key])
        elif isinstance(item, list | tuple):
            digest.update(f"sequence {len(item)}:".encode())
            for element in item:
                update(element)
        else:
            digest.update(f"{item!r};".encode())

    update(value)
    return digest.hexdigest()


def fit(stage: Stage, loop: LoopSettings, config_fingerprint: str) -> dict:
    """Train until `loop.epochs` or early stopping; leaves the best-validation weights in `stage.model`.

    Returns {"history": [...rows...], "best_epoch": int, "best_val_loss": float, "resumed_from": int|None}.
    """
    history: list[dict] = []
    best_val = float("inf")
    best_epoch = -1
    best_weights = copy.deepcopy(stage.model.state_dict())
    untrained_val = None
    bad_epochs = 0
    start_epoch = 0
    resumed_from = None
    checkpoint = Path(loop.checkpoint) if loop.checkpoint else None
    # kept beside the fingerprint to say why a checkpoint is set aside, naming the file or part that changed
    code = {f"kdgat/{name}": digest for name, digest in training_code_digests().items()}
    parts = getattr(config_fingerprint, "parts", {})

    saved = read_checkpoint(checkpoint, loop.name) if checkpoint is not None and checkpoint.exists() else None
    if saved is not None and saved.get("code") != code:
        changed = first_difference(saved.get("code"), code)
        set_aside(
            loop.name,
            checkpoint,
            "checkpoint",
            f"it was written by other kdgat training or model code{changed}",
        )
    elif saved is not None and saved.get("fingerprint") != config_fingerprint:
        changed = first_difference(saved.get("parts"), parts)
        set_aside(
            loop.name, checkpoint, "checkpoint", f"it belongs to other settings, inputs or formats{changed}"
        )
    elif saved is not None and restore(stage, saved, checkpoint, loop.name):
        best_weights = saved["best_weights"]
        best_val, best_epoch, bad_epochs = saved["best_val"], saved["best_epoch"], saved["bad_epochs"]
        untrained_val = saved["untrained_val"]
        history = saved["history"]
        start_epoch = saved["epoch"] + 1
        resumed_from = saved["epoch"]
        log.info("%s: resumed from %s after epoch %d", loop.name, checkpoint, saved["epoch"] + 1)

    if resumed_from is None and loop.loss_diverges:
        untrained_val = untrained_loss(stage)
    stopped_early = bool(history) and bad_epochs >= loop.patience
    epoch_seconds: list[float] = [row["seconds"] for row in history]
    observers = Observers(loop.callbacks)
    stage.observers = observers
    observers.notify("fit_started", loop.name, start_epoch, loop.epochs, list(history))
    for epoch in range(start_epoch, loop.epochs):
        if stopped_early:
            break
        started = time.perf_counter()
        train = stage.train_epoch(epoch)
        train_seconds = time.perf_counter() - started
        val = stage.validate()
        if not math.isfinite(val["val_loss"]):  # NaN weights never recover: stop before they are checkpointed
            raise ValueError(
                f"{loop.name} epoch {epoch + 1}: the validation loss is {val['val_loss']}: training diverged; "
                f"{loop.divergence_fix}"
            )
        seconds = time.perf_counter() - started
        epoch_seconds.append(seconds)

        row = {"epoch": epoch + 1, **train, **val}
        row["graphs_per_s"] = train["graphs"] / max(train_seconds, 1e-9)
        row["seconds"] = seconds
        history.append(row)

        if val["val_loss"] < best_val - loop.min_delta:
            best_val, best_epoch, bad_epochs = val["val_loss"], epoch + 1, 0
            best_weights = copy.deepcopy(stage.model.state_dict())
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= loop.patience

        remaining = loop.epochs - epoch - 1
        eta = sum(epoch_seconds) / len(epoch_seconds) * remaining
        metrics = " ".join(
            f"{k}={v:.4f}" for k, v in row.items() if k not in {"epoch", "graphs", "seconds", "graphs_per_s"}
        )
        log.info(
            "%s epoch %d/%d %s graphs/s=%.0f time=%.1fs eta=%.0fs%s",
            loop.name,
            epoch + 1,
            loop.epochs,
            metrics,
            row["graphs_per_s"],
            seconds,
            eta,
            " (early stop)" if stopped_early else "",
        )

        if checkpoint is not None:
            save_torch(
                {
                    "fingerprint": str(config_fingerprint),
                    "parts": parts,
                    "code": code,
                    "epoch": epoch,
                    "stage": stage.state_dict(),
                    "best_weights": best_weights,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "untrained_val": untrained_val,
                    "history": history,
                    "rng": rng_state(stage.loader_generator),
                },
                checkpoint,
            )
        observers.notify("epoch_ended", dict(row), loop.epochs, stopped_early)
        if os.environ.get(KILL_AFTER_EPOCH_ENV) == str(epoch + 1):
            os.kill(os.getpid(), signal.SIGKILL)

    stage.model.load_state_dict(best_weights)
    refuse_diverged(stage, loop, best_epoch, best_val, untrained_val)
    result = {
        "history": history,
        "best_epoch": best_epoch,
        "best_val_loss": best_val,
        "untrained_val_loss": untrained_val,
        "resumed_from": resumed_from,
    }
    observers.notify("fit_ended", result)
    return result


def untrained_loss(stage: Stage) -> float:
    """The validation loss of the weights training starts from. The RNG states are put back as they were, so the
    training draws what it would have drawn without it (validation runs in eval mode and changes no weight)."""
    state = rng_state(stage.loader_generator)
    try:
        return float(stage.validate()["val_loss"])
    finally:
        restore_rng_state(state, stage.loader_generator)


def refuse_diverged(
    stage: Stage, loop: LoopSettings, best_epoch: int, best_val: float, untrained_val: float | None
) -> None:
    """Stop a run that diverged though its losses stayed finite, before its model is saved: its best validation
    loss is more than DIVERGENCE_FACTOR times the untrained model's (a loss of 0 or below gives no scale), or the
    stage's own check (``stage.divergence()``) finds its best weights diverged."""
    if best_epoch < 1:  # no epoch trained: nothing to judge
        return
    why = None
    if (
        untrained_val is not None
        and 0 < untrained_val < math.inf
        and best_val > DIVERGENCE_FACTOR * untrained_val
    ):
        why = (
            f"the best validation loss is {best_val:.4g}, more than {DIVERGENCE_FACTOR:g} times the untrained "
            f"model's ({untrained_val:.4g})"
        )
    elif hasattr(stage, "divergence"):
        why = stage.divergence()
    if why:
        raise ValueError(
            f"{loop.name} epoch {best_epoch} (the best): {why}: training diverged; {loop.divergence_fix}"
        )


UNREADABLE = "a file torch cannot read"


def load_checkpoint(path: str | os.PathLike) -> object:
    """The object in the file at ``path``, read as a checkpoint is: tensors, numbers, strings, containers and the
    numpy RNG state's array alone (``weights_only``). A checkpoint path is a file anyone who may write the results
    folder may have put there (or a researcher copied from elsewhere); read as a plain pickle, a file holding any
    other object ran its code as the user who trains. Such a file raises here, as a corrupted one does."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct

    with torch.serialization.safe_globals([_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]):
        return torch.load(path, map_location="cpu", weights_only=True)


def not_a_checkpoint(path: str | os.PathLike) -> str | None:
    """What the file at ``path`` is when it is not a resume checkpoint (``fit`` writes a dict with ``fingerprint``
    and ``epoch``); None for a checkpoint, of these settings or others."""
    try:
        saved = load_checkpoint(path)  # as read_checkpoint reads it
    except Exception as error:
        return f"{UNREADABLE} ({type(error).__name__})"
    if isinstance(saved, dict) and "fingerprint" in saved and "epoch" in saved:
        return None
    found = saved.get("format") if isinstance(saved, dict) else None
    if isinstance(found, str) and found.startswith("kdgat-model/"):
        return f"a kd_gat {saved.get('kind')} model file"
    return f"a {found!r} file" if isinstance(found, str) else f"a file holding {type(saved).__name__}"


def refuse_checkpoint_over_files(
    checkpoint: str | os.PathLike | None, files: Mapping[str, str | os.PathLike | None]
) -> None:
    """A job's checkpoint is overwritten after every epoch and deleted after success (``fit`` sets a file that is
    no checkpoint aside with a warning): it may not be one of the job's ``files`` (input or output name -> path),
    nor a file torch reads that is no checkpoint (another stage's model.pt), or that file is lost. A file torch
    cannot read is most likely a checkpoint cut short: ``fit`` sets it aside, rather than failing every rerun."""
    if checkpoint is None:
        return
    mine = Path(checkpoint).resolve()
    for name, path in files.items():
        if path is not None and Path(path).resolve() == mine:
            raise FileContentError(
                f"checkpoint {checkpoint} is also the job's {name} file; the checkpoint is overwritten after every "
                "epoch and deleted after success: give another path"
            )
    what = not_a_checkpoint(mine) if mine.is_file() else None
    if what is not None and not what.startswith(UNREADABLE):
        raise FileContentError(
            f"checkpoint {checkpoint} is {what}, not a training checkpoint: the job would overwrite it after its "
            "first epoch and delete it after success; give another path (or remove the file)"
        )


def set_aside(name: str, path: Path, what: str, why: str) -> None:
    """Warn that the checkpoint at ``path`` is not resumed: the job starts afresh and overwrites it after its
    first epoch, instead of failing on it at every rerun."""
    log.warning("%s: ignoring %s %s (%s); training starts afresh", name, what, path, why)


def read_checkpoint(path: Path, name: str) -> dict | None:
    """The resume checkpoint at ``path``, or None (set aside) when it cannot be read."""
    try:
        saved = load_checkpoint(path)
    except Exception as error:  # truncated, corrupted or unsafe (OSError, RuntimeError, UnpicklingError)
        # torch's refusal of an object other than tensors and numbers is a page of advice, to allow-list it "if you
        # trust" the file: the reason alone is kept (the object it names)
        _, marker, reason = str(error).partition("WeightsUnpickler error:")
        why = next((line for line in reason.splitlines() if line.strip()), "") if marker else str(error)
        why = why.split(" Please use ")[0].rstrip(".")
        set_aside(name, path, "unreadable checkpoint", f"{type(error).__name__}: {' '.join(why.split())}")
        return None
    if not isinstance(saved, dict):
        set_aside(name, path, "checkpoint", "not a training checkpoint")
        return None
    return saved


RESUMED_KEYS = (
    "epoch",
    "best_weights",
    "best_val",
    "best_epoch",
    "bad_epochs",
    "untrained_val",
    "history",
    "rng",
)


def restore(stage: Stage, saved: dict, path: Path, name: str) -> bool:
    """Load the checkpoint's stage state and RNG states; False (set aside, the stage and RNGs as they were) when
    it does not fit the stage, e.g. a model whose layout changed since it was written."""
    fresh_stage, fresh_rng = copy.deepcopy(stage.state_dict()), rng_state(stage.loader_generator)
    try:
        missing = [key for key in ("stage", *RESUMED_KEYS) if key not in saved]
        if missing:
            raise ValueError(f"it lacks {missing}")
        stage.load_state_dict(saved["stage"])
        restore_rng_state(saved["rng"], stage.loader_generator)
    except Exception as error:  # a layout mismatch: RuntimeError (state_dict), ValueError, KeyError
        stage.load_state_dict(fresh_stage)
        restore_rng_state(fresh_rng, stage.loader_generator)
        why = " ".join(f"{type(error).__name__}: {error}".split())  # load_state_dict's message spans lines
        set_aside(name, path, "checkpoint", f"it does not fit the model: {why[:500]}")
        return False
    return True


def discard_checkpoint(path) -> None:
    """After the outputs are written the checkpoint has served its purpose; a rerun must start afresh."""
    if path:
        Path(path).unlink(missing_ok=True)
