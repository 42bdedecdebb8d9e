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
import pyarrow.dataset as pa_dataset
from matplotlib.collections import LineCollection

from simcal.contract import ContractError
from simcal.observed import read_observed
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


def _phases(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(design and search trials, refine trials): their losses come from different replicate counts."""
    if "phase" not in trials:
        return trials, trials.iloc[0:0]
    refine = trials["phase"] == "refine"
    return trials[~refine], trials[refine]


def loss_figure(trials: pd.DataFrame, parameter_names: Sequence[str], best: dict[str, Any]):
    figure, axes = plt.subplots(
        1, len(parameter_names), figsize=(4 * len(parameter_names), 3.6), squeeze=False
    )
    finite = trials[np.isfinite(trials["loss"].astype(float))]
    searched, refined = _phases(finite)
    for axis, name in zip(axes[0], parameter_names, strict=True):
        scatter = axis.scatter(
            searched[name], searched["loss"], c=searched.get("round", 0), s=12, cmap="viridis"
        )
        if len(refined):
            axis.scatter(refined[name], refined["loss"], marker="x", color="black", s=24, label="refine")
        axis.axvline(best["params"][name], color="red", lw=1, label="best")
        axis.set(xlabel=name, ylabel="loss", yscale="log" if (finite["loss"] > 0).all() else "linear")
        axis.legend(fontsize=8)
    figure.colorbar(scatter, ax=axes[0].tolist(), label="round")
    figure.suptitle("Loss against each parameter")
    return figure


def history_figure(trials: pd.DataFrame):
    figure, axis = plt.subplots(figsize=(7, 3.6))
    searched, refined = _phases(trials)
    losses = searched["loss"].astype(float).to_numpy()
    order = searched["trial"].to_numpy() if "trial" in searched else np.arange(len(searched))
    axis.scatter(order, losses, s=10, c=searched.get("round", 0), cmap="viridis", label="trial loss")
    running = np.fmin.accumulate(np.where(np.isfinite(losses), losses, np.inf))
    axis.step(
        order, np.where(np.isfinite(running), running, np.nan), where="post", color="red", label="best so far"
    )
    if len(refined):
        axis.scatter(
            refined["trial"],
            refined["loss"],
            marker="x",
            color="black",
            s=24,
            label="refine (more replicates)",
        )
    every = trials["loss"].astype(float)
    if (every[np.isfinite(every)] > 0).all():
        axis.set_yscale("log")
    axis.set(xlabel="trial", ylabel="loss", title="Optimization history")
    axis.legend(fontsize=8)
    return figure


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def render_page(title: str, intro: str, pictures: dict[str, bytes], summary: dict[str, Any]) -> str:
    """A self-contained page: ``intro`` (HTML), the pictures inlined as base64 PNGs, and the summary as JSON."""
    sections = "\n".join(
        f'<h2>{html.escape(name)}</h2>\n<img alt="{html.escape(name)}" '
        f'src="data:image/png;base64,{base64.b64encode(data).decode()}">'
        for name, data in pictures.items()
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse}}td{{border:1px solid #ccc;padding:2px 8px}}</style></head>
<body><h1>{html.escape(title)}</h1>
{intro}
{sections}
<h2>Summary</h2><pre>{html.escape(json.dumps(summary, indent=2))}</pre>
</body></html>
"""


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{v:.6g}</td></tr>"
        if isinstance(v, float) and math.isfinite(v)
        else f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
        for k, v in rows.items()
    )
    return f"<table><tr><td><b>{header[0]}</b></td><td><b>{header[1]}</b></td></tr>{cells}</table>"


def _require_plot_columns(
    path: str | Path, what: str, columns: list[str], wanted: Sequence[str], nothing_succeeded: bool = False
) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing and nothing_succeeded:  # failure rows carry no outputs: no setting would help
        raise ContractError(f"{path}: every simulation failed, so there are no outputs {missing} to plot")
    if missing:
        source = "the model's output" if what == "simulations" else f"the {what}"
        raise ContractError(
            f"{path}: the {what} have no column(s) {missing} to plot; set plot.column and plot.on to columns of "
            f"{source} ({columns})"
        )


def _require_numbers(path: str | Path, what: str, frame: pd.DataFrame, column: str) -> None:
    """The plotted column must hold numbers: text failed inside pandas (no 'mean' for str), naming neither."""
    if not pd.api.types.is_numeric_dtype(frame[column]):
        # text is pandas 3's `str` dtype but `object` under pandas 2.2 (pyproject's floor): named `str` on both
        kind = "str" if pd.api.types.is_string_dtype(frame[column]) else frame[column].dtype
        raise ContractError(
            f"{path}: plot.column {column!r} of the {what} holds {kind} values, not numbers; set "
            f"plot.column to a numeric output"
        )


def _require_parameter_names(path: str | Path, what: str, columns: Sequence[str], names: Any) -> list[str]:
    """``parameter_names`` as a list of columns of the ``what`` at ``path`` (callers make one name given as a
    string a list of one): a number, an empty list or a misspelt name failed inside pandas or matplotlib, naming
    neither."""
    if (
        isinstance(names, str)
        or not isinstance(names, Sequence)
        or not all(isinstance(n, str) for n in names)
    ):
        raise ContractError(
            f"parameter_names: expected a list of parameter names, got {type(names).__name__} {names!r}"
        )
    if not names:
        raise ContractError("parameter_names: the list is empty; name at least one parameter to plot against")
    repeated = sorted({name for name in names if list(names).count(name) > 1})
    if repeated:  # each was drawn twice, side by side
        raise ContractError(f"parameter_names: {repeated} given more than once; name each parameter once")
    missing = [name for name in names if name not in columns]
    if missing:
        raise ContractError(
            f"{path}: parameter_names {missing} are not columns of the {what}; it has {list(columns)}"
        )
    return list(names)


def _check_page_params(title: Any, column: Any, on: Any) -> None:
    """``title`` a string and ``column`` other than ``on``, or fail naming them: a title of null or a number was
    "AttributeError: 'NoneType' object has no attribute 'replace'" and column == on a DataFrame's AttributeError
    on the calibration page (a line y = x on the sweep's)."""
    if not isinstance(title, str):
        raise ContractError(
            f"title: expected the page's title as a string, got {type(title).__name__} {title!r}"
        )
    if column is not None and column == on:
        raise ContractError(
            f"plot.column and plot.on are both {column!r}: a column plotted along itself says nothing; set "
            "plot.column to an output and plot.on to the column it runs along (e.g. incidence and day)"
        )


def _refuse_other_than_png(png_paths: dict[str, str | Path] | None) -> None:
    """Refuse, before anything is drawn, a picture output whose name is not *.png: it would hold PNG bytes under
    another suffix (.svg, as evaluate_detector's pictures are), which a report or a viewer shows broken."""
    for name, path in (png_paths or {}).items():
        if Path(path).suffix.lower() != ".png":
            raise ContractError(f"{path}: the {name} picture is written as PNG: name the output *.png")


def _write_pictures(pictures: dict[str, bytes], png_paths: dict[str, str | Path] | None) -> None:
    for name, path in (png_paths or {}).items():
        if name not in pictures:
            raise ContractError(f"no picture named {name!r}; the pictures are {sorted(pictures)}")
        atomic_write(path, lambda handle, data=pictures[name]: handle.write(data))


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
    _refuse_other_than_png(png_paths)
    _check_page_params(title, column, on)
    # one name given as a string is one name (a rule's parameter_names="beta" was read as b, e, t, a)
    parameter_names = [parameter_names] if isinstance(parameter_names, str) else parameter_names
    trials = pd.read_parquet(trials_path)
    best = json.loads(Path(best_path).read_text())
    parameter_names = _require_parameter_names(trials_path, "trials", list(trials.columns), parameter_names)
    _require_parameter_names(best_path, "best parameters", list(best["params"]), parameter_names)
    summary = json.loads(Path(summary_path).read_text())
    observed = read_observed(observed_path)
    _require_plot_columns(observed_path, "observed data", list(observed.columns), [on, column])
    # Read for the best set's rows only; a plot column the model does not output would fail there as an Arrow
    # error listing the file's schema, naming neither the file nor the setting.
    names = pa_dataset.dataset(simulations_path, format="parquet").schema.names
    _require_plot_columns(simulations_path, "simulations", names, ["param_id", "status", on, column])
    simulations = pd.read_parquet(
        simulations_path,
        filters=[("param_id", "==", best["param_id"])],
        columns=["param_id", "status", on, column],
    )
    _require_numbers(observed_path, "observed data", observed, column)
    _require_numbers(simulations_path, "simulations", simulations, column)
    pictures = {
        "fit": png_bytes(fit_figure(simulations, observed, best, column, on)),
        "loss": png_bytes(loss_figure(trials, parameter_names, best)),
        "history": png_bytes(history_figure(trials)),
    }
    _write_pictures(pictures, png_paths)
    titles = {
        "Observed vs simulated at the best parameters": pictures["fit"],
        "Loss against each parameter": pictures["loss"],
        "Optimization history": pictures["history"],
    }
    chosen = "the refine step" if best.get("phase") == "refine" else "all trials"
    intro = (
        f"<p>Best loss {best['loss']:.6g} (parameter set {html.escape(best['param_id'])}, chosen from "
        f"{chosen}).</p>\n" + _table(best["params"], ("parameter", "best value"))
    )
    return write_text(render_page(title, intro, titles, summary), html_path)


MAX_SUMMARY_ROWS = 6  # statistics drawn in the sweep's outputs picture (the table keeps them all)


def sweep_outputs_figure(table: pd.DataFrame, parameter_names: Sequence[str]):
    """Each summarised output (mean over replicates, ± one standard deviation) against each parameter."""
    summarised = [c for c in table.columns if c.endswith("_mean") and c not in parameter_names]
    means = summarised[:MAX_SUMMARY_ROWS]
    rows, cols = max(1, len(means)), len(parameter_names)
    figure, axes = plt.subplots(rows, cols, figsize=(3.8 * cols, 2.8 * rows), squeeze=False)
    for row, statistic in enumerate(means):
        spread = table.get(statistic[: -len("_mean")] + "_sd")
        for col, name in enumerate(parameter_names):
            axis = axes[row][col]
            axis.errorbar(
                table[name], table[statistic], yerr=spread, fmt="o", ms=3, alpha=0.8, elinewidth=0.8
            )
            axis.set(xlabel=name, ylabel=statistic[: -len("_mean")])
    if not means:
        axes[0][0].text(0.5, 0.5, "no numeric output to summarise", ha="center", va="center")
    title = "Outputs against each parameter (mean over replicates, ± 1 sd)"
    failed = int((table["replicates_ok"] == 0).sum()) if "replicates_ok" in table else 0
    if failed:  # their means are NaN: say so rather than leave them out silently
        title += f"\n{failed} of {len(table)} parameter sets not drawn: every simulation of them failed"
    if len(summarised) > len(means):  # the rest would make the picture unreadable: say where they are
        title += (
            f"\nthe first {len(means)} of {len(summarised)} summarised outputs drawn; the table holds all "
            "(choose them with columns and statistics)"
        )
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def sweep_series_figure(simulations: pd.DataFrame, parameter_names: Sequence[str], column: str, on: str):
    """The replicate mean of ``column`` against ``on`` for every parameter set, coloured by the first parameter
    (one colour per value, named on the colour bar, when it is text: a region, a scenario)."""
    ok = simulations[simulations["status"] == "ok"]
    figure, axis = plt.subplots(figsize=(7, 4))
    colour_by = parameter_names[0]
    curves = ok.groupby(["param_id", on], sort=True)[column].mean().unstack(level=0)
    values = ok.drop_duplicates("param_id").set_index("param_id")[colour_by]
    labels = None
    if not pd.api.types.is_numeric_dtype(values):  # a region or a scenario name: one colour per value
        codes, labels = pd.factorize(values, sort=True)
        values = pd.Series(codes, index=values.index)
    norm = matplotlib.colors.Normalize(values.min(), values.max())
    colours = matplotlib.colormaps["viridis"]
    # Every set's curve in one LineCollection: a plot() call per set (a Line2D each, found by its column) cost
    # about 2 ms a set, minutes for a sweep of 100,000 sets. NaN (a point a set lacks) breaks its line, as in plot.
    axis.xaxis.update_units(curves.index)  # dates or text along ``on`` are placed as plot() places them
    x = np.asarray(axis.convert_xunits(curves.index), dtype=float)
    y = curves.to_numpy(dtype=float).T  # one row per parameter set
    points = np.stack([np.broadcast_to(x, y.shape), y], axis=-1)
    axis.add_collection(
        LineCollection(
            points, colors=colours(norm(values.reindex(curves.columns).to_numpy())), lw=1, alpha=0.8
        ),
        autolim=False,
    )
    finite = points[np.isfinite(points).all(axis=-1)]
    if len(finite):
        axis.update_datalim(finite)
    axis.autoscale_view()
    bar = figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=colours), ax=axis, label=colour_by)
    if labels is not None:
        bar.set_ticks(range(len(labels)), labels=[str(label) for label in labels])
    axis.set(xlabel=on, ylabel=f"{column} (replicate mean)", title=f"{column} for every parameter set")
    return figure


def visualize_sweep(
    simulations_path: str | Path,
    table_path: str | Path,
    summary_path: str | Path,
    parameter_names: Sequence[str],
    html_path: str | Path,
    png_paths: dict[str, str | Path] | None = None,
    column: str | None = "incidence",
    on: str | None = "day",
    title: str = "Simulation sweep",
) -> Path:
    """The page of a plain sweep: outputs against each parameter and, when ``column`` and ``on`` are in the
    simulations, every parameter set's series. ``png_paths`` may ask for ``outputs`` and ``series``."""
    _refuse_other_than_png(png_paths)
    _check_page_params(title, column, on)
    # one name given as a string is one name (a rule's parameter_names="beta" was read as b, e, t, a)
    parameter_names = [parameter_names] if isinstance(parameter_names, str) else parameter_names
    if "series" in (png_paths or {}) and not (column and on):
        raise ContractError(
            f"the series picture ({png_paths['series']}) was asked for, but column={column!r} and on={on!r} "
            f"name no series to draw; set both, or drop the series output"
        )
    table = pd.read_parquet(table_path)
    parameter_names = _require_parameter_names(
        table_path, "sweep table", list(table.columns), parameter_names
    )
    summary = json.loads(Path(summary_path).read_text())
    pictures = {"outputs": png_bytes(sweep_outputs_figure(table, parameter_names))}
    if column and on:
        wanted = [column, on, "param_id", "status", *parameter_names]
        # Only the columns the picture draws: a sweep of many parameters, or a model of many outputs or rows per
        # simulation, read whole held every column in memory (1.7 GB for 8,000 sets of 200 parameters x 50 rows)
        names = pa_dataset.dataset(simulations_path, format="parquet").schema.names
        simulations = pd.read_parquet(
            simulations_path, columns=[c for c in dict.fromkeys(wanted) if c in names]
        )
        failed = "status" in simulations and not simulations["status"].eq("ok").any()
        _require_plot_columns(simulations_path, "simulations", names, wanted, failed)
        _require_numbers(simulations_path, "simulations", simulations, column)
        pictures["series"] = png_bytes(sweep_series_figure(simulations, parameter_names, column, on))
    _write_pictures(pictures, png_paths)
    titles = {"Outputs against each parameter": pictures["outputs"]}
    if "series" in pictures:
        titles[f"{column} against {on} for every parameter set"] = pictures["series"]
    counts = {
        "parameter sets": summary.get("parameter_sets"),
        "parameter sets with every simulation failed": summary.get("parameter_sets_failed"),
        "simulations": summary.get("simulations"),
    }
    counts = {k: v for k, v in counts.items() if v is not None}  # a summary written by an older simcal
    counts.update({f"status {k}": v for k, v in summary.get("status", {}).items()})
    return write_text(render_page(title, _table(counts, ("", "")), titles, summary), html_path)
