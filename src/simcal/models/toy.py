"""A very cheap model (microseconds per call) for measuring the runner's own overhead."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any


def noisy_linear(params: Mapping[str, Any], seed: int) -> dict[str, float]:
    """``y = slope * x + intercept + noise``: scalars only, so the cost is the runner's, not the model's."""
    noise = random.Random(seed).gauss(0.0, 1.0)
    return {
        "y": float(params["slope"]) * float(params.get("x", 1.0))
        + float(params.get("intercept", 0.0))
        + noise
    }
