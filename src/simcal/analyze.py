"""Summaries of a calibration: best parameters, top-k and statistics (Parquet + JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from simcal.contract import ContractError
from simcal.tables import write_json, write_parquet


def analyze(
    trials: pd.DataFrame,
    parameter_names: Sequence[str],
    top_k: int = 10,
    true_params: dict[str, float] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame, dict[str, Any]]:
    """Return (best, top-k table, summary)."""
    missing = [c for c in ["loss", "param_id", *parameter_names] if c not in trials.columns]
    if missing:
        raise ContractError(f"trials table has no column(s) {missing}; it has {list(trials.columns)}")
    finite = trials[np.isfinite(trials["loss"].astype(float))]
    if finite.empty:
        raise ContractError("no trial has a finite loss: every simulation of every parameter set failed")
    ranked = finite.sort_values(["loss", "trial"] if "trial" in finite else ["loss"], kind="stable")
    top = ranked.drop_duplicates("param_id").head(int(top_k)).reset_index(drop=True)
    top.insert(0, "rank", np.arange(1, len(top) + 1))
    best_row = top.iloc[0]
    best = {
        "param_id": str(best_row["param_id"]),
        "loss": float(best_row["loss"]),
        "params": {name: float(best_row[name]) for name in parameter_names},
        "round": int(best_row["round"]) if "round" in top else None,
        "trial": int(best_row["trial"]) if "trial" in top else None,
    }
    summary: dict[str, Any] = {
        "trials": int(len(trials)),
        "trials_with_finite_loss": int(len(finite)),
        "rounds": int(trials["round"].nunique()) if "round" in trials else None,
        "loss": {q: float(finite["loss"].quantile(v)) for q, v in [("min", 0), ("median", 0.5), ("max", 1)]},
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
        summary["replicates_failed"] = int(trials["replicates_failed"].fillna(0).sum())
    if "round" in finite:
        summary["best_loss_by_round"] = {
            str(r): float(v) for r, v in finite.groupby("round")["loss"].min().cummin().items()
        }
    if true_params:
        summary["relative_error"] = {
            name: abs(best["params"][name] - float(value)) / abs(float(value))
            for name, value in true_params.items()
            if name in best["params"] and float(value) != 0
        }
    return best, top, summary


def analyze_files(
    trials_path: str | Path,
    parameter_names: Sequence[str],
    best_path: str | Path,
    top_k_path: str | Path,
    summary_path: str | Path,
    top_k: int = 10,
    true_params: dict[str, float] | None = None,
) -> dict[str, Any]:
    best, top, summary = analyze(pd.read_parquet(trials_path), parameter_names, top_k, true_params)
    write_parquet(top, top_k_path)
    write_json(best, best_path)
    write_json(summary, summary_path)
    return best
