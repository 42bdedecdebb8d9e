"""Atomic writers for the stage outputs (model.pt, metrics.json, history.csv) and the resume checkpoint."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

MODEL_FORMAT = "kdgat-model/1"


def _atomic(path: str | os.PathLike, write) -> None:
    """Write through a temporary file in the same directory and rename it: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_torch(obj, path) -> None:
    _atomic(path, lambda tmp: torch.save(obj, tmp))


def _json_safe(value):
    """Plain JSON: numpy/torch scalars become Python numbers, NaN/inf become null."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_json(obj: dict, path) -> None:
    def write(tmp):
        with open(tmp, "w") as handle:
            json.dump(_json_safe(obj), handle, indent=2, sort_keys=True)
            handle.write("\n")

    _atomic(path, write)


def save_history(rows: list[dict], path) -> None:
    _atomic(path, lambda tmp: pd.DataFrame(rows).to_csv(tmp, index=False))


def save_model(model: torch.nn.Module, kind: str, config: dict, path, **extra) -> None:
    """model.pt: the weights plus everything kdgat.inference.load_model needs to rebuild the module."""
    payload = {
        "format": MODEL_FORMAT,
        "kind": kind,
        "config": _json_safe(config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    save_torch(payload, path)
