"""Saving and loading trained models (a kd_gat training stage's ``model.pt``).

A file holds the format tag, the model kind (a stage of the chain: vgae, gat or dqn), the keyword arguments that
rebuild the module, its weights and any extra plain values the stage records (the variant; for a VGAE or GAT,
``trained_on``: the SHA-256 of its training graph file, which the DQN stage refuses to learn from; ``vocabulary``:
the CAN-ID vocabulary digest its graphs record, kdgat.graph_store.vocabulary_digest). Everything in
it is plain data and tensors, so it loads with ``weights_only=True``. Writes are atomic (kdgat.files).

Bump ``MODEL_FORMAT`` when the layout changes; a reader then names the file it cannot read instead of guessing.
History: 2 — the VGAE's decoder follows the original's layout, its anomaly threshold is on the weighted anomaly
error (buffer ``error_weights``), the GAT takes ``edge_features``; a version-1 file would load into the wrong
layout or with a threshold on a different error. (The DQN's ``fallback_action`` buffer came later without a bump: a
file without it holds a learnt policy, see QNetwork.)
"""

from __future__ import annotations

import os

import torch

from kdgat.files import FileContentError, json_safe, load_torch, save_torch
from kdgat.models import GAT, VGAE, QNetwork
from kdgat.runtime import select_device

MODEL_FORMAT = "kdgat-model/2"
# One class per stage of the chain (kdgat.chain.STAGES); `kind` in the file names the entry.
MODEL_CLASSES: dict[str, type[torch.nn.Module]] = {"vgae": VGAE, "gat": GAT, "dqn": QNetwork}


def save_model(model: torch.nn.Module, kind: str, config: dict, path: str | os.PathLike, **extra) -> None:
    """Write ``model`` (built as ``MODEL_CLASSES[kind](**config)``) with its weights on CPU."""
    if kind not in MODEL_CLASSES:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")
    payload = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": json_safe(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **json_safe(extra),
    }
    save_torch(payload, path)


def recorded(path: str | os.PathLike, key: str) -> str | None:
    """A plain string a model.pt records beside its weights (``trained_on``, ``vocabulary``); None when absent."""
    payload = load_torch(path, f"a kd_gat model file (expected format {MODEL_FORMAT!r})")
    value = payload.get(key) if isinstance(payload, dict) else None
    return value if isinstance(value, str) else None


def trained_on(path: str | os.PathLike) -> str | None:
    """The SHA-256 of the graph file a VGAE or GAT model.pt was trained on (``trained_on``, recorded by its
    training stage); None for a DQN or a file written before it was recorded."""
    return recorded(path, "trained_on")


def _payload(path: str | os.PathLike, kind: str | None = None) -> dict:
    """The checked contents of a model.pt: its format, a known kind and, when ``kind`` is given, that kind."""
    payload = load_torch(path, f"a kd_gat model file (expected format {MODEL_FORMAT!r})")
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        older = isinstance(found, str) and found.startswith("kdgat-model/")
        raise FileContentError(
            f"{path}: "
            + ("a kd_gat model file of another format version" if older else "not a kd_gat model file")
            + f" (expected format {MODEL_FORMAT!r}, found {found!r})"
            + ("; retrain it with this version of the catalog" if older else "")
        )
    found = payload.get("kind")
    if found not in MODEL_CLASSES:
        raise FileContentError(
            f"{path}: unknown model kind {found!r}; expected one of {sorted(MODEL_CLASSES)}"
        )
    if kind is not None and found != kind:
        # Two model files given in each other's place (--vgae and --gat swapped) would fail deep inside
        # training or evaluation, naming a method the other stage's model lacks.
        raise FileContentError(f"{path}: a kd_gat {found} model, given where the {kind} model is expected")
    return payload


def check_kind(path: str | os.PathLike, kind: str) -> None:
    """Raise ValueError naming ``path`` unless it is a kd_gat model.pt of ``kind`` (a stage of the chain)."""
    _payload(path, kind)


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None
) -> torch.nn.Module:
    """The module saved by :func:`save_model`, in eval mode on ``device`` (``auto`` picks CUDA when present);
    with ``kind``, a model of another stage is refused (ValueError naming the file and both kinds)."""
    payload = _payload(path, kind)
    kind = payload["kind"]
    try:
        model = MODEL_CLASSES[kind](**payload["config"])
        model.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # missing entries, arguments, weights
        why = " ".join(f"{type(error).__name__}: {error}".split())  # load_state_dict's message spans lines
        raise FileContentError(
            f"{path}: a kd_gat model file of format {MODEL_FORMAT!r} whose {kind} arguments or weights do not fit "
            f"this version's {MODEL_CLASSES[kind].__name__} ({why[:500]}); retrain it with this version"
        ) from error
    return model.to(select_device(device) if isinstance(device, str) else device).eval()
