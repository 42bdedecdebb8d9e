"""The evaluation summary as GitHub-flavoured Markdown (the tables of :mod:`kdgat.evaluation.summary`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from kdgat.chain import VARIANTS
from kdgat.evaluation.summary import AUC_FLOOR, FUSION_TOLERANCE, INTERVAL


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _plus_minus(mean: float, half: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if half is None or (isinstance(half, float) and math.isnan(half)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _interval_text(mean: float, low: float, high: float, digits: int = 3) -> str:
    if isinstance(low, float) and math.isnan(low):
        return _number(mean, digits)
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency such as ``tabulate``); columns whose every cell is
    a number (or n/a) are right-aligned."""
    rows = [[str(cell) for cell in row] for row in rows]
    number = re.compile(r"^(n/a|[-+−]?[\d.,]+(%| ±.*| \[.*\])?)$")
    numeric = [bool(rows) and all(number.match(row[i]) for row in rows) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if right else "---" for right in numeric) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def summary_markdown(
    variants: pd.DataFrame,
    models: pd.DataFrame | None = None,
    scenarios: pd.DataFrame | None = None,
    distillation: pd.DataFrame | None = None,
    fusion: pd.DataFrame | None = None,
    alpha: pd.DataFrame | None = None,
    floors: pd.DataFrame | None = None,
) -> str:
    """The whole summary as Markdown: teacher vs students, models and baselines, per scenario, distillation,
    fusion, α."""
    seeds = sorted(set(variants["seeds"])) if not variants.empty else []
    parts = [
        f"Test metrics over {', '.join(map(str, seeds)) or 'no'} seed(s) per variant: mean ± half-width of the "
        f"{INTERVAL}; n/a where one seed gives no interval. Nothing here comes from validation.",
        "## Teacher vs students\n\nF1 on all test scenarios pooled; latency is one window through VGAE + GAT + DQN "
        "fusion (median, mean over seeds).\n\n"
        + markdown_table(
            [
                "dataset",
                "variant",
                "seeds",
                "total params",
                "size vs teacher",
                "F1 VGAE",
                "F1 GAT",
                "F1 fusion",
                "F1 best baseline",
                "latency (ms/window)",
            ],
            (
                [
                    r["dataset"],
                    r["variant"],
                    r["seeds"],
                    f"{int(r['params_total']):,}",
                    "n/a" if pd.isna(r["size_vs_teacher"]) else f"{100 * r['size_vs_teacher']:.1f}%",
                    _plus_minus(r["f1_vgae"], r["f1_vgae_ci"]),
                    _plus_minus(r["f1_gat"], r["f1_gat_ci"]),
                    _plus_minus(r["f1_fusion"], r["f1_fusion_ci"]),
                    _number(r["f1_best_baseline"]),
                    _number(r["latency_ms_fusion"], 2),
                ]
                for _, r in variants.iterrows()
            ),
        ),
    ]
    if models is not None and not models.empty:
        parts.append(
            "## Every model against the trivial baselines\n\nPooled-test F1 and ROC-AUC, the scenario where "
            "the model's mean F1 is lowest, and its margin over the best trivial baseline (F1 − the best of "
            "baseline_unknown_id, baseline_id_counts and baseline_id_rate): pooled, and on the scenario where the "
            "margin is smallest.\n\n"
            + markdown_table(
                [
                    "dataset",
                    "variant",
                    "model",
                    "F1",
                    "ROC-AUC",
                    "worst scenario (F1)",
                    "margin (pooled)",
                    "smallest margin (scenario)",
                ],
                (
                    [
                        r["dataset"],
                        r["variant"],
                        r["model"],
                        _plus_minus(r["f1_mean"], r["f1_half"]),
                        _plus_minus(r["roc_auc_mean"], r["roc_auc_half"]),
                        f"{r['worst_scenario']} ({_number(r['worst_f1_mean'])})",
                        _plus_minus(r["margin_mean"], r["margin_half"]),
                        f"{_number(r['smallest_margin_mean'])} ({r['smallest_margin_scenario']})",
                    ]
                    for _, r in models.iterrows()
                ),
            )
        )
    if distillation is not None and not distillation.empty:
        parts.append(
            "## Did distillation help?\n\nPooled-test F1 differences paired by seed (student_kd − student: the "
            "distillation's effect; teacher − student_kd: what the small model still loses), mean and "
            f"{INTERVAL}.\n\n"
            + markdown_table(
                ["dataset", "model", "difference", "mean [95% interval]", "seeds", "verdict"],
                (
                    [
                        r["dataset"],
                        r["model"],
                        r["compared"],
                        _interval_text(r["mean"], r["low"], r["high"]),
                        r["n"],
                        r["verdict"],
                    ]
                    for _, r in distillation.iterrows()
                ),
            )
        )
    if fusion is not None and not fusion.empty:
        beaten = int((fusion["gain_low"] > 0).sum())
        not_worse = int((fusion["gain"] >= -0.005).sum())
        parts.append(
            "## Does the fusion earn its place?\n\nFusion F1 − the better of its two inputs (GAT, VGAE) per test "
            f"scenario, mean over seeds [95% interval]. The fusion is above both inputs (interval above 0) in "
            f"{beaten} of {len(fusion)} dataset × variant × scenario cells, and within 0.005 of the better input "
            f"or above it in {not_worse}.\n\n"
            + markdown_table(
                ["dataset", "variant", "scenario", "F1 fusion", "F1 better input", "gain [95% interval]"],
                (
                    [
                        r["dataset"],
                        r["variant"],
                        r["scenario"],
                        _number(r["fusion_f1"]),
                        _number(r["best_input_f1"]),
                        _interval_text(r["gain"], r["gain_low"], r["gain_high"]),
                    ]
                    for _, r in fusion.iterrows()
                ),
            )
        )
    if alpha is not None and not alpha.empty:
        parts.append(
            "## What the fusion's α does\n\nα weighs the GAT against the VGAE (0 = VGAE only, 1 = GAT only), on "
            "all test windows of every seed: histogram over ten bins, share at the ends, and how often the fused "
            "decision equals the GAT's.\n\n"
            + markdown_table(
                [
                    "dataset",
                    "variant",
                    "windows",
                    "mean α",
                    "median α per seed",
                    "α ≥ 0.9",
                    "α < 0.1",
                    "same decision as GAT",
                    "histogram",
                ],
                (
                    [
                        r["dataset"],
                        r["variant"],
                        r["windows"],
                        _number(r["alpha_mean"], 2),
                        r["alpha_median_per_seed"],
                        _number(r["share_alpha_ge_0.9"], 3),
                        _number(r["share_alpha_lt_0.1"], 3),
                        _number(r["agrees_with_gat"], 3),
                        r["histogram"],
                    ]
                    for _, r in alpha.iterrows()
                ),
            )
        )
    if floors is not None and not floors.empty:
        missed = floors[~floors["passed"]]
        parts.append(
            f"## Engineering floors\n\n{len(floors) - len(missed)} of {len(floors)} checks pass (means over "
            f"seeds; ROC-AUC ≥ {AUC_FLOOR}, F1 above flagging every window, fusion ≥ the better input − "
            f"{FUSION_TOLERANCE}). Every miss is a finding:\n\n"
            + (
                markdown_table(
                    ["dataset", "variant", "scenario", "model", "check", "value", "floor"],
                    (
                        [
                            r["dataset"],
                            r["variant"],
                            r["scenario"],
                            r["model"],
                            r["check"],
                            _number(r["value"]),
                            _number(r["floor"]),
                        ]
                        for _, r in missed.iterrows()
                    ),
                )  # fmt: skip
                if len(missed)
                else "none."
            )
        )
    if scenarios is not None and not scenarios.empty:
        wide = scenarios.assign(
            cell=[_plus_minus(m, h) for m, h in zip(scenarios["f1_mean"], scenarios["f1_half"], strict=True)]
        ).pivot_table(
            index=["dataset", "scenario", "model"],
            columns="variant",
            values="cell",
            aggfunc="first",
            sort=False,
        )
        columns = [v for v in VARIANTS if v in wide.columns]
        parts.append(
            "## F1 per test scenario\n\nMean ± half-width of the 95% t interval over seeds.\n\n"
            + markdown_table(
                ["dataset", "scenario", "model", *columns],
                ([*index, *(wide.loc[index, c] for c in columns)] for index in wide.index),
            )
        )
    return "\n\n".join(parts) + "\n"
