"""The teacher-vs-students summary: one row per evaluated variant (size, pooled-test F1, latency) as a table and
as GitHub-flavoured Markdown."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from kdgat.chain import VARIANTS

SUMMARY_COLUMNS = [
    "dataset",
    "variant",
    "params_vgae",
    "params_gat",
    "params_dqn",
    "params_total",
    "size_vs_teacher",
    "f1_vgae",
    "f1_gat",
    "f1_fusion",
    "roc_auc_fusion",
    "latency_ms_fusion",
    "graphs_per_s_fusion",
]


def summary_row(dataset: str, variant: str, document: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the summary: size, pooled-test F1 per model and end-to-end latency of one variant."""
    try:
        params = document["parameters"]
        speed = document["speed"]["fusion"]
        test = document.get("test_pooled") or document["val"]
    except KeyError as error:
        raise ValueError(f"metrics of {dataset}/{variant} lack the key {error}") from None
    return {
        "dataset": dataset,
        "variant": variant,
        "params_vgae": params["vgae"],
        "params_gat": params["gat"],
        "params_dqn": params["dqn"],
        "params_total": params["total"],
        "size_vs_teacher": None,
        "f1_vgae": test["vgae"]["f1"],
        "f1_gat": test["gat"]["f1"],
        "f1_fusion": test["fusion"]["f1"],
        "roc_auc_fusion": test["fusion"]["roc_auc"],
        "latency_ms_fusion": speed["latency_ms"],
        "graphs_per_s_fusion": speed["graphs_per_s"],
    }


def summary_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows from ``summary_row`` as a table, with each student's size relative to its dataset's teacher."""
    table = pd.DataFrame(list(rows), columns=SUMMARY_COLUMNS)
    order = {v: i for i, v in enumerate(VARIANTS)}
    table = table.sort_values(
        ["dataset", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    ).reset_index(drop=True)
    teacher = table[table["variant"] == "teacher"].set_index("dataset")["params_total"]
    table["size_vs_teacher"] = table.apply(
        lambda r: (r["params_total"] / teacher[r["dataset"]]) if r["dataset"] in teacher.index else None,
        axis=1,
    ).astype(float)
    return table


def _markdown_cell(value: Any, column: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if column.startswith("params"):
        return f"{int(value):,}"
    if column == "size_vs_teacher":
        return f"{100 * value:.1f}%"
    if column == "graphs_per_s_fusion":
        return f"{value:,.0f}"
    if column == "latency_ms_fusion":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency such as ``tabulate``)."""
    headers = {
        "dataset": "dataset",
        "variant": "variant",
        "params_vgae": "VGAE params",
        "params_gat": "GAT params",
        "params_dqn": "DQN params",
        "params_total": "total params",
        "size_vs_teacher": "size vs teacher",
        "f1_vgae": "F1 VGAE",
        "f1_gat": "F1 GAT",
        "f1_fusion": "F1 fusion",
        "roc_auc_fusion": "ROC-AUC fusion",
        "latency_ms_fusion": "latency (ms/window)",
        "graphs_per_s_fusion": "graphs/s (batched)",
    }
    columns = [c for c in SUMMARY_COLUMNS if c in table.columns]
    lines = [
        "| " + " | ".join(headers[c] for c in columns) + " |",
        "|" + "|".join("---" if c in ("dataset", "variant") else "---:" for c in columns) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_markdown_cell(row[c], c) for c in columns) + " |")
    return (
        "F1 on all test scenarios pooled; latency is one window through VGAE + GAT + DQN fusion (median).\n\n"
        + "\n".join(lines)
        + "\n"
    )
