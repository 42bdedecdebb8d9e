"""Summaries of a calibration (best parameters, top-k, statistics) and of a plain sweep (one row per parameter
set), written as Parquet + JSON."""

from __future__ import annotations

import logging
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as pa_dataset

from simcal.contract import ContractError
from simcal.files import refuse_text_name
from simcal.tables import write_json, write_parquet

log = logging.getLogger(__name__)

KEY_COLUMNS = ["param_id", "replicate", "seed"]
STATUS_COLUMNS = ["status", "error", "duration_s"]
STATISTICS = ("mean", "sum", "max", "min", "last")


def _require_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ContractError(f"{what} has no column(s) {missing}; it has {list(frame.columns)}")


def analyze(
    trials: pd.DataFrame,
    parameter_names: Sequence[str],
    top_k: int = 10,
    true_params: dict[str, float] | None = None,
    source: str = "the trials table",
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Return (best, top-k table, summary).

    With a refine phase the best and the top-k come from the refine rows (more replicates, so comparable and
    less noisy losses); otherwise from every trial.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ContractError(f"analyze: top_k must be an integer >= 1, got {top_k!r}")
    _check_true_params(true_params)
    _require_columns(trials, ["loss", "param_id", *parameter_names], source)
    finite = trials[np.isfinite(trials["loss"].astype(float))]
    if finite.empty:
        raise ContractError("no trial has a finite loss: every simulation of every parameter set failed")
    refined = finite[finite["phase"] == "refine"] if "phase" in finite else finite.iloc[0:0]
    pool = refined if len(refined) else finite
    ranked = pool.sort_values(["loss", "trial"] if "trial" in pool else ["loss"], kind="stable")
    top = ranked.drop_duplicates("param_id").head(int(top_k)).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    best_row = top.iloc[0]
    best = {
        "param_id": str(best_row["param_id"]),
        "loss": float(best_row["loss"]),
        "params": {name: _plain(best_row[name]) for name in parameter_names},
        "round": int(best_row["round"]) if "round" in top else None,
        "trial": int(best_row["trial"]) if "trial" in top else None,
        "phase": str(best_row["phase"]) if "phase" in top else None,
        "replicates": int(best_row["replicates"]) if "replicates" in top else None,
    }
    design_and_search = trials[trials["phase"] != "refine"] if "phase" in trials else trials
    searched = design_and_search[np.isfinite(design_and_search["loss"].astype(float))]
    summary: dict[str, Any] = {
        "trials": int(len(trials)),
        "trials_with_finite_loss": int(len(finite)),
        "chosen_from": "refine" if len(refined) else "all trials",
        "rounds": int(trials["round"].nunique()) if "round" in trials else None,
        "loss": {q: float(pool["loss"].quantile(v)) for q, v in [("min", 0), ("median", 0.5), ("max", 1)]},
        "top_k": {
            name: {
                "mean": float(top[name].mean()),
                "std": float(top[name].std(ddof=0)),
                "min": float(top[name].min()),
                "max": float(top[name].max()),
            }
            for name in parameter_names
        },
    }
    if "replicates_failed" in trials:
        # Distinct failed simulations (param_id × replicate). A set simulated again (the refine step's first
        # replicates, a proposal repeated) reads them back from the parts, failed ones included (rerun_failed acts
        # only as a run starts): the set's row with the most replicates holds the failures of its other rows.
        most_per_set = trials.groupby("param_id", sort=False)["replicates_failed"].max()
        summary["replicates_failed"] = int(most_per_set.fillna(0).sum())
    if "round" in searched and len(searched):
        # Losses of the design and search rounds share a replicate count, so their running best is comparable. A
        # round whose every set failed carries the best so far (null before any finite loss), not a gap.
        rounds = sorted(design_and_search["round"].unique())
        per_round = searched.groupby("round")["loss"].min().reindex(rounds)
        summary["best_loss_by_round"] = {
            str(r): None if pd.isna(v) else float(v) for r, v in per_round.cummin().ffill().items()
        }
    if true_params:
        summary["relative_error"], summary["true_params_left_out"] = _relative_errors(
            best["params"], true_params
        )
    return best, top, summary


def _check_true_params(true_params: Any) -> None:
    """Refuse true_params that are no mapping, naming it, before the analysis: a list died as "'list' object has
    no attribute 'items'"."""
    if true_params is None:
        return
    if not isinstance(true_params, Mapping):
        raise ContractError(
            f"analyze: true_params must map each parameter to its true value, e.g. {{beta: 0.3}}; got "
            f"{type(true_params).__name__} {true_params!r}"
        )


def _relative_errors(
    best_params: dict[str, Any], true_params: dict[str, float]
) -> tuple[dict[str, float], dict[str, str]]:
    """(|best - true| / |true| per calibrated parameter, {name: why} for each true parameter that has none), the
    latter also logged: a true parameter without an error is otherwise indistinguishable from one never given."""
    errors, left_out = {}, {}
    for name, value in true_params.items():
        if name not in best_params:
            # a parameter held fixed may be a word or a flag (a categorical one of the generator's space)
            left_out[name] = f"not calibrated (the calibrated parameters are {sorted(best_params)})"
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            # a word died as "could not convert string to float", True counted as 1
            raise ContractError(
                f"analyze: true_params.{name} (a calibrated parameter) must be a number, got "
                f"{type(value).__name__} {value!r}"
            )
        elif float(value) == 0:
            left_out[name] = "true value 0: its relative error is undefined"
        else:
            errors[name] = abs(best_params[name] - float(value)) / abs(float(value))
    for name, why in left_out.items():
        log.warning("true parameter %r has no relative error: %s", name, why)
    return errors, left_out


def _names(value: Any, what: str) -> list[str]:
    """A wrapper param that lists names, one name given as a string being a list of one (a rule's
    ``parameter_names="beta"`` was read as the columns b, e, t, a); anything else (a number) is named."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and all(isinstance(name, str) for name in value):
        return list(value)
    raise ContractError(f"{what}: expected a name or a list of names, got {type(value).__name__} {value!r}")


def analyze_files(
    trials_path: str | Path,
    parameter_names: Sequence[str],
    best_path: str | Path,
    top_k_path: str | Path,
    summary_path: str | Path,
    top_k: int = 10,
    true_params: dict[str, float] | None = None,
) -> dict[str, Any]:
    refuse_text_name(top_k_path, "top-k parameter sets")
    best, top, summary = analyze(
        pd.read_parquet(trials_path),
        _names(parameter_names, "parameter_names"),
        top_k,
        true_params,
        f"{trials_path}",
    )
    write_parquet(top, top_k_path)
    write_json(best, best_path)
    write_json(summary, summary_path)
    log.info("best parameters: %s (loss %.6g, %s)", best["params"], best["loss"], summary["chosen_from"])
    return best


def coordinate_columns(ok: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    """The columns of ``candidates`` that index a simulation's rows rather than measure anything (the ``day`` of a
    daily series): over the successful simulations ``ok`` of at least two parameter sets, each takes more than one
    value along a simulation's rows and the same value at each row position (first, second, ... row of a
    simulation) in every simulation. Such a column is a function of the row position alone: its summary would be
    the same for every parameter set. None with one row per simulation or fewer than two parameter sets, where
    nothing tells a coordinate from an output."""
    candidates = list(candidates)
    if not candidates or ok["param_id"].nunique() < 2:
        return []
    position = ok.groupby(["param_id", "replicate"], sort=False).cumcount().to_numpy()
    if position.max() < 1:
        return []
    # Each row against the first row found at its position (one pass, not a group-by per position)
    first_at = pd.Series(np.arange(len(position))).groupby(position).first().to_numpy()[position]
    coordinates = []
    for column in candidates:
        series = ok[column]
        # a nullable column (Int64, Float64) as floats with NaN: pd.NA compares as neither equal nor unequal
        extension = pd.api.types.is_extension_array_dtype(series)
        values = series.to_numpy(dtype=float, na_value=np.nan) if extension else series.to_numpy()
        reference = values[first_at]
        same = (values == reference) | (pd.isna(values) & pd.isna(reference))
        if same.all() and pd.Series(values).nunique(dropna=False) > 1:
            coordinates.append(column)
    return coordinates


def output_columns(simulations: pd.DataFrame, parameter_names: Sequence[str]) -> list[str]:
    """Numeric model outputs: every numeric column that is neither a key, a status nor a parameter."""
    reserved = set(KEY_COLUMNS) | set(STATUS_COLUMNS) | set(parameter_names) | {"table"}
    return [
        c
        for c in simulations.columns
        if c not in reserved
        and pd.api.types.is_numeric_dtype(simulations[c])
        and not pd.api.types.is_bool_dtype(simulations[c])
    ]


def summarize_sweep(
    simulations: pd.DataFrame,
    parameter_names: Sequence[str],
    columns: Sequence[str] | None = None,
    statistics: Sequence[str] = ("mean", "max"),
    source: str = "the simulations file",
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per parameter set: its parameters, how many replicates succeeded, and for each output column (by
    default every numeric column but the keys, status, parameters and coordinates, see ``coordinate_columns``) and
    statistic (each replicate's rows reduced by it: ``mean``, ``sum``, ``max`` or ``min`` of its rows that are not
    NaN, NaN where every row is; or ``last``, the last row's value even where that is NaN) the mean and standard
    deviation over the successful replicates, skipping replicates whose statistic is NaN. Returns (table, overall
    summary)."""
    _require_columns(simulations, [*KEY_COLUMNS, "status", *parameter_names], source)
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown:
        raise ContractError(f"sweep statistics {unknown} are unknown; expected some of {list(STATISTICS)}")
    if not statistics:  # pandas: "No objects to concatenate"
        raise ContractError(f"sweep statistics: the list is empty; give some of {list(STATISTICS)}")
    # a name given twice failed inside pandas (SpecificationError, "Duplicate column names found")
    _refuse_repeated(statistics, "sweep statistics")
    _refuse_repeated(parameter_names, "parameter_names")
    if columns is not None:
        _refuse_repeated(columns, "sweep columns")
        if not columns:  # a summary of replicates_ok/failed only, and a page saying "no numeric output"
            raise ContractError(
                "sweep columns: the list is empty; name output columns, or give null (every output)"
            )
    ok = simulations[simulations["status"] == "ok"]
    coordinates: list[str] = []
    if columns is None:
        numeric = output_columns(simulations, parameter_names)
        coordinates = coordinate_columns(ok, numeric)
        columns = [c for c in numeric if c not in coordinates]
        if coordinates:
            log.info(
                "columns %s are coordinates (the same value at each row of every simulation), not outputs: they "
                "are not summarised (name them in columns to summarise them)",
                coordinates,
            )
    else:
        _require_columns(simulations, columns, source)
        _refuse_parameters_as_outputs(simulations, columns, parameter_names)
        wrong = [c for c in columns if not pd.api.types.is_numeric_dtype(simulations[c])]
        if wrong:
            raise ContractError(f"sweep columns {wrong} are not numeric; only numbers can be summarised")
    per_simulation = simulations.drop_duplicates(["param_id", "replicate"])
    sets = per_simulation.drop_duplicates("param_id")[["param_id", *parameter_names]].set_index("param_id")
    _refuse_sets_alike(simulations, sets, parameter_names, source)
    ok_flags = per_simulation["status"].eq("ok")
    counts = pd.DataFrame({"replicates_ok": ok_flags, "replicates_failed": ~ok_flags})
    table = sets.join(counts.groupby(per_simulation["param_id"]).sum().astype(int))
    if columns and len(ok):
        reduced = _per_replicate(ok, list(columns), list(statistics))
        reduced.columns = [f"{column}_{statistic}" for column, statistic in reduced.columns]
        across = reduced.groupby(level="param_id").agg(["mean", "std"])
        across.columns = [f"{name}_{'sd' if stat == 'std' else stat}" for name, stat in across.columns]
        table = table.join(across)
    table = table.reset_index()
    # a file without the error column (written by hand, or by another tool) still has its failures counted
    error_texts = per_simulation.get("error", pd.Series(None, per_simulation.index, object))
    errors = error_texts[per_simulation["status"] != "ok"].fillna("unknown error")
    summary = {
        "parameter_sets": int(len(table)),
        # sets with no successful replicate: a row of the table without outputs, and no point in the pictures
        "parameter_sets_failed": int((table["replicates_ok"] == 0).sum()),
        "simulations": int(len(per_simulation)),
        "status": {str(k): int(v) for k, v in per_simulation["status"].value_counts().items()},
        "most_common_errors": {str(k): int(v) for k, v in errors.value_counts().head(5).items()},
        "parameters": {
            name: {"min": _plain(table[name].min()), "max": _plain(table[name].max())}
            for name in parameter_names
        },
        "outputs": list(columns),
        "coordinates": coordinates,  # numeric columns left out as coordinates (columns: null only)
        "statistics": list(statistics),
    }
    return table, summary


def _per_replicate(ok: pd.DataFrame, columns: list[str], statistics: list[str]) -> pd.DataFrame:
    """Each replicate's rows reduced by each statistic, columns (column, statistic). ``mean``, ``sum``, ``max``
    and ``min`` skip NaN rows, and are NaN where every row is NaN: pandas' own ``sum`` of those is 0, which would
    count as a value in the mean over replicates. ``last`` is the replicate's last row's value, NaN where that is
    NaN: pandas' own ``last`` skips NaN, giving an earlier row's value."""
    keys = ["param_id", "replicate"]
    others = [s for s in statistics if s not in ("last", "sum")]
    grouped = ok.groupby(keys, sort=False)[columns]
    reduced = grouped.agg(others) if others else pd.DataFrame(index=grouped.size().index)
    if "sum" in statistics:
        sums = grouped.sum(min_count=1)
        for column in columns:
            reduced[(column, "sum")] = sums[column]
    if "last" in statistics:
        last = ok.drop_duplicates(keys, keep="last").set_index(keys)[columns]
        for column in columns:
            reduced[(column, "last")] = last[column]  # aligned on (param_id, replicate)
    return reduced[[(column, statistic) for column in columns for statistic in statistics]]


def _refuse_parameters_as_outputs(
    simulations: pd.DataFrame, columns: Sequence[str], parameter_names: Sequence[str]
) -> None:
    """A column that is a parameter would be summarised as an output (its own value, sd 0); a model output of that
    name is stored as ``output_<name>`` (docs/simulation.md), which the message names when the sweep has it."""
    parameters = [c for c in columns if c in parameter_names]
    if parameters:
        renamed = [
            f"'{c}' is stored as 'output_{c}'" for c in parameters if f"output_{c}" in simulations.columns
        ]
        hint = f"; the model's output {', '.join(renamed)}" if renamed else ""
        raise ContractError(f"sweep columns {parameters} are parameters (parameter_names), not outputs{hint}")


def _refuse_sets_alike(
    simulations: pd.DataFrame, sets: pd.DataFrame, parameter_names: Sequence[str], source: str
) -> None:
    """Two parameter sets with the same values of ``parameter_names`` (a swept parameter left out of them) would be
    two rows of the summary that look alike. The file cannot tell a parameter left out from an output (a
    deterministic output too is constant within a set), so the message names the candidates: the columns constant
    within each set that differ between the two, in the file's order (its parameters come before its outputs)."""
    # no parameter_names at all tell no two sets apart (pandas finds no duplicates among rows of no columns)
    alike = sets[sets.duplicated(keep=False)] if len(sets.columns) else sets.iloc[: 0 if len(sets) < 2 else 2]
    if not len(alike):
        return
    first = alike.index[0]
    second = alike.index[(alike == alike.loc[first]).all(axis=1).to_numpy()][1]
    reserved = set(KEY_COLUMNS) | set(STATUS_COLUMNS) | set(parameter_names) | {"table"}
    rows = simulations[simulations["param_id"].isin([first, second])]
    others = [c for c in simulations.columns if c not in reserved]
    constant = rows.groupby("param_id")[others].nunique(dropna=False).le(1).all()
    firsts = rows.drop_duplicates("param_id").set_index("param_id")
    apart = [c for c in others if constant[c] and not _same(firsts.at[first, c], firsts.at[second, c])]
    values = {name: _plain(value) for name, value in alike.loc[first].items()}
    raise ContractError(
        f"{source}: parameter sets param_id={first} and param_id={second} have the same parameter_names values "
        f"{values}, so their rows of the summary would look alike: "
        + (
            f"parameter_names {list(parameter_names)} leave out a swept parameter that tells them apart, one of "
            f"the columns {apart}; give every parameter of the sweep (the design's columns and the fixed ones)"
            if apart
            else "no other column of the file tells them apart either (one parameter set under two param_ids?)"
        )
    )


def _same(one: Any, other: Any) -> bool:
    """Equal values, or both missing (a set whose every simulation failed has NaN outputs, which == says differ)."""
    return bool(pd.isna(one) and pd.isna(other)) or bool(one == other)


def _refuse_repeated(names: Sequence[str], what: str) -> None:
    repeated = next((name for index, name in enumerate(names) if name in names[:index]), None)
    if repeated is not None:
        raise ContractError(f"{what} name {repeated!r} twice; give each once")


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def summarize_sweep_files(
    simulations_path: str | Path,
    parameter_names: Sequence[str],
    table_path: str | Path,
    summary_path: str | Path,
    columns: Sequence[str] | None = None,
    statistics: Sequence[str] = ("mean", "max"),
) -> pd.DataFrame:
    """``summarize_sweep`` of a simulations file, written as Parquet (table) and JSON (summary)."""
    refuse_text_name(table_path, "parameter sets' summaries")
    names = _names(parameter_names, "parameter_names")
    outputs = None if columns is None else _names(columns, "columns")
    statistics = _names(statistics, "statistics")
    if outputs is None:  # every numeric output: the whole file
        table, summary = summarize_sweep(
            pd.read_parquet(simulations_path), names, None, statistics, f"{simulations_path}"
        )
    else:
        table, summary = _summarize_sweep_columns(simulations_path, names, outputs, statistics)
    write_parquet(table, table_path)
    write_json(summary, summary_path)
    log.info(
        "summarised %d parameter sets (%d simulations, status %s)",
        summary["parameter_sets"], summary["simulations"], summary["status"],
    )  # fmt: skip
    return table


def _summarize_sweep_columns(
    simulations_path: str | Path, parameter_names: list[str], columns: list[str], statistics: list[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``summarize_sweep`` of the named output columns, reading only them, the keys, status and parameters (in the
    file's order): a sweep of many parameters or outputs read whole held every column in memory. A refusal names
    the file's other columns (those it has, those that could tell two sets apart), so one reads the whole file
    for the message of the whole file."""
    wanted = {*KEY_COLUMNS, *STATUS_COLUMNS, *parameter_names, *columns}
    names = pa_dataset.dataset(simulations_path, format="parquet").schema.names
    simulations = pd.read_parquet(simulations_path, columns=[c for c in names if c in wanted])
    try:
        return summarize_sweep(simulations, parameter_names, columns, statistics, f"{simulations_path}")
    except ContractError:
        whole = pd.read_parquet(simulations_path)
        return summarize_sweep(whole, parameter_names, columns, statistics, f"{simulations_path}")
