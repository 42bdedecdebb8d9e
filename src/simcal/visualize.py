"""A self-contained HTML page (inline base64 PNGs) showing a calibration's fit, losses and history."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from simcal.tables import atomic_write, write_text


def fit_figure(simulations: pd.DataFrame, observed: pd.DataFrame, best: dict[str, Any], column: str, on: str):
    sims = simulations[(simulations["param_id"] == best["param_id"]) & (simulations["status"] == "ok")]
    figure, axis = plt.subplots(figsize=(7, 4))
    if not sims.empty:
        band = sims.groupby(on)[column].agg(
            ["min", "max", "mean", lambda s: s.quantile(0.1), lambda s: s.quantile(0.9)]
        )
        band.columns = ["min", "max", "mean", "q10", "q90"]
        axis.fill_between(
            band.index, band["min"], band["max"], alpha=0.2, color="tab:blue", label="replicate range"
        )
        axis.fill_between(
            band.index, band["q10"], band["q90"], alpha=0.35, color="tab:blue", label="replicates 10-90%"
        )
        axis.plot(band.index, band["mean"], color="tab:blue", label="replicate mean")
    axis.plot(observed[on], observed[column], "o", ms=3, color="black", label="observed")
    params = ", ".join(f"{k}={v:.4g}" for k, v in best["params"].items())
    axis.set(xlabel=on, ylabel=column, title=f"Observed vs simulated at the best parameters ({params})")
    axis.legend(fontsize=8)
    return figure


def loss_figure(trials: pd.DataFrame, parameter_names: Sequence[str], best: dict[str, Any]):
    figure, axes = plt.subplots(
        1, len(parameter_names), figsize=(4 * len(parameter_names), 3.6), squeeze=False
    )
    finite = trials[np.isfinite(trials["loss"].astype(float))]
    for axis, name in zip(axes[0], parameter_names, strict=True):
        scatter = axis.scatter(finite[name], finite["loss"], c=finite.get("round", 0), s=12, cmap="viridis")
        axis.axvline(best["params"][name], color="red", lw=1, label="best")
        axis.set(xlabel=name, ylabel="loss", yscale="log" if (finite["loss"] > 0).all() else "linear")
        axis.legend(fontsize=8)
    figure.colorbar(scatter, ax=axes[0].tolist(), label="round")
    figure.suptitle("Loss against each parameter")
    return figure


def history_figure(trials: pd.DataFrame):
    figure, axis = plt.subplots(figsize=(7, 3.6))
    losses = trials["loss"].astype(float).to_numpy()
    order = trials["trial"].to_numpy() if "trial" in trials else np.arange(len(trials))
    axis.scatter(order, losses, s=10, c=trials.get("round", 0), cmap="viridis", label="trial loss")
    running = np.fmin.accumulate(np.where(np.isfinite(losses), losses, np.inf))
    axis.step(
        order, np.where(np.isfinite(running), running, np.nan), where="post", color="red", label="best so far"
    )
    if (losses[np.isfinite(losses)] > 0).all():
        axis.set_yscale("log")
    axis.set(xlabel="trial", ylabel="loss", title="Optimization history")
    axis.legend(fontsize=8)
    return figure


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def render_page(title: str, pictures: dict[str, bytes], best: dict[str, Any], summary: dict[str, Any]) -> str:
    sections = "\n".join(
        f'<h2>{html.escape(name)}</h2>\n<img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, data in pictures.items()
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v:.6g}</td></tr>"
        for k, v in best["params"].items()
        if math.isfinite(v)
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:2px 8px}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>Best loss {best["loss"]:.6g} (parameter set {html.escape(best["param_id"])}).</p>
<table><tr><td><b>parameter</b></td><td><b>best value</b></td></tr>{rows}</table>
{sections}
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
</body></html>
"""


def visualize(
    trials_path: str | Path,
    simulations_path: str | Path,
    observed_path: str | Path,
    best_path: str | Path,
    summary_path: str | Path,
    parameter_names: Sequence[str],
    html_path: str | Path,
    png_paths: dict[str, str | Path] | None = None,
    column: str = "incidence",
    on: str = "day",
    title: str = "Calibration",
) -> Path:
    """Write the HTML page (and, if asked, each picture as its own PNG for ``snakemake --report``)."""
    trials = pd.read_parquet(trials_path)
    best = json.loads(Path(best_path).read_text())
    summary = json.loads(Path(summary_path).read_text())
    observed = (
        pd.read_csv(observed_path) if str(observed_path).endswith(".csv") else pd.read_parquet(observed_path)
    )
    simulations = pd.read_parquet(
        simulations_path,
        filters=[("param_id", "==", best["param_id"])],
        columns=["param_id", "status", on, column],
    )
    pictures = {
        "fit": png_bytes(fit_figure(simulations, observed, best, column, on)),
        "loss": png_bytes(loss_figure(trials, parameter_names, best)),
        "history": png_bytes(history_figure(trials)),
    }
    for name, path in (png_paths or {}).items():
        atomic_write(path, lambda tmp, data=pictures[name]: tmp.write_bytes(data))
    titles = {
        "Observed vs simulated at the best parameters": pictures["fit"],
        "Loss against each parameter": pictures["loss"],
        "Optimization history": pictures["history"],
    }
    return write_text(render_page(title, titles, best, summary), html_path)
