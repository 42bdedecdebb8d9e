"""Model size and inference speed: batched throughput and single-window latency of each model and of the whole
detector, as deployed, and what they were measured on (:func:`measured_on`)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdgat.evaluation.metrics import EvaluationSettingsError, setting_name

SPEED_SETTINGS = ("repeats", "latency_runs", "max_graphs")
# The shortest time perf_counter tells from 0 s; read at import (the speed tests replace the module's clock).
CLOCK_RESOLUTION_S = time.get_clock_info("perf_counter").resolution or 1e-9


def checked_speed(speed: Mapping[str, Any] | None) -> dict[str, int]:
    """``speed`` (``evaluation.speed``) as a dict of positive integers named in ``SPEED_SETTINGS``; a ValueError
    naming an unknown key or a bad value, so a typo stops the evaluation before minutes of scoring, not after."""
    speed = dict(speed or {})
    unknown = sorted(set(speed) - set(SPEED_SETTINGS))
    if unknown:
        raise EvaluationSettingsError(
            f"{setting_name('speed')}: {unknown} are unknown; expected some of {list(SPEED_SETTINGS)}"
        )
    bad = {
        key: value
        for key, value in speed.items()
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1
    }
    if bad:
        raise EvaluationSettingsError(f"{setting_name('speed')}: each must be a positive integer; got {bad}")
    return {key: int(value) for key, value in speed.items()}


def measured_on(device: Any, hardware: str | None = None) -> dict[str, str]:
    """What evaluate_detector's document records of where it ran: ``device`` (as torch names it), ``hardware``
    (what the speed figures were measured on: ``hardware`` when the caller names it, else
    :func:`kdgat.runtime.device_name` of ``device``) and ``torch`` (:func:`kdgat.runtime.torch_build`). An input
    error naming a ``hardware`` that is no non-empty string or a ``device`` torch does not know, before scoring."""
    if hardware is not None and not (isinstance(hardware, str) and hardware.strip()):
        # metrics.json would hold it as is, and the summary's column would show a dict's or a number's repr
        raise EvaluationSettingsError(
            f"evaluate_detector's hardware must be a string naming what the speed is measured on (e.g. 'NVIDIA H100 "
            f"80GB HBM3'), or None for kdgat.runtime.device_name of the device; got {hardware!r} "
            f"({type(hardware).__name__})"
        )
    import torch  # not imported for summaries

    from kdgat.runtime import device_name, torch_build

    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise EvaluationSettingsError(
            f"evaluate_detector's device must be a torch device (cpu, cuda, cuda:N); got {device!r} ({error})"
        ) from None
    return {
        "device": str(torch_device),
        "hardware": device_name(torch_device) if hardware is None else hardware,
        "torch": torch_build(),
    }


def _forward_on_batch(model: Any, batch: Any) -> Any:
    """Call ``model`` with the batch attributes its ``forward`` names (``x``, ``edge_index``, ``batch``, ...)."""
    names = [
        name
        for name, parameter in inspect.signature(model.forward).parameters.items()
        if parameter.default is inspect.Parameter.empty
        and parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    missing = [name for name in names if getattr(batch, name, None) is None]
    if missing:
        raise TypeError(f"{type(model).__name__}.forward needs {missing}, which a graph batch does not have")
    return model(**{name: getattr(batch, name) for name in names})


def measure_inference_speed(
    vgae: Any,
    gat: Any,
    dqn: Any,
    graphs: Sequence[Any],
    score_fn: Callable[..., pd.DataFrame],
    *,
    batch_size: int = 256,
    device: Any = "cpu",
    repeats: int = 5,
    latency_runs: int = 20,
    max_graphs: int = 1024,
) -> dict[str, Any]:
    """Batched throughput (graphs/s) and single-window latency (ms), medians over several runs (numpy's: with an
    even count, the mean of the two middle ones).

    ``vgae`` and ``gat`` time each model's own forward pass on batched graphs (batching included);
    ``fusion`` times the whole detector as deployed (VGAE + GAT + DQN through ``score_fn``).
    """
    import torch
    from torch_geometric.loader import DataLoader

    if not graphs:
        raise EvaluationSettingsError(
            "measure_inference_speed's graphs is empty: no graphs to measure inference speed on; give at least one"
        )
    sample = list(graphs[:max_graphs])
    repeats, latency_runs = max(1, repeats), max(1, latency_runs)

    def sync() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def run_model(model: Any) -> Callable[[list], None]:
        def run(batch_graphs: list) -> None:
            for batch in DataLoader(batch_graphs, batch_size=batch_size, shuffle=False):
                _forward_on_batch(model, batch.to(device))

        return run

    def run_detector(batch_graphs: list) -> None:
        score_fn(vgae, gat, dqn, batch_graphs, batch_size=batch_size, device=device)

    def seconds(run: Callable[[list], None], batch_graphs: list) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            run(batch_graphs)
        sync()
        return time.perf_counter() - start

    result: dict[str, Any] = {
        "device": str(device),
        "graphs": len(sample),
        "batch_size": batch_size,
        "repeats": repeats,
        "latency_runs": latency_runs,
    }
    for name, run in (("vgae", run_model(vgae)), ("gat", run_model(gat)), ("fusion", run_detector)):
        seconds(run, sample[:batch_size])  # warm-up: allocator, lazy initialisation, caches
        # The median of the runs' throughputs: with an even count numpy averages the two middle ones (the sample
        # over the two middle times' mean would be their harmonic mean). A run the clock measures as 0 s counts
        # as one tick of it: graphs_per_s stays a number (then a lower bound), which the summaries require
        # (inputs.checked_metrics); null here made every summary of the run refuse its metrics.json.
        batched = [max(seconds(run, sample), CLOCK_RESOLUTION_S) for _ in range(repeats)]
        single = [seconds(run, [sample[i % len(sample)]]) for i in range(latency_runs)]
        result[name] = {
            "graphs_per_s": float(np.median([len(sample) / elapsed for elapsed in batched])),
            "latency_ms": float(np.median(single)) * 1e3,
        }
    return result
