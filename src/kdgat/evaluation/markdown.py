"""The evaluation summary as GitHub-flavoured Markdown (the tables of :mod:`kdgat.evaluation.summary`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from kdgat.chain import MODELS, VARIANTS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.summary import AUC_FLOOR, FUSION_TOLERANCE, INTERVAL, at_least

# The per-scenario ROC-AUC table leaves out the fixed-α fusions: α = 0 and α = 1 rank windows as the VGAE
# and the GAT do (scenario_metrics.csv has all of them).
ROC_AUC_MODELS = (*MODELS, *BASELINES)


def _number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _scenario(name: Any) -> str:
    """A scenario's name; "n/a" where there is none (no scenario with attack windows has a worst F1)."""
    return "n/a" if name is None or (isinstance(name, float) and math.isnan(name)) else str(name)


def _plus_minus(mean: float, half: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if half is None or (isinstance(half, float) and math.isnan(half)):
        return f"{mean:.{digits}f} ± n/a"  # one seed: no interval
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def _signed(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}"


def _interval_text(mean: float, low: float, high: float, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if isinstance(low, float) and math.isnan(low):
        return f"{mean:+.{digits}f} [n/a]"  # one seed: no interval
    return f"{mean:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def _scenario_cell(row: pd.Series, metric: str) -> str:
    """``metric``'s mean ± half-width; for F1 on a scenario without attack windows (``attack_free``), where
    scenario_summary leaves F1 out, the false-alarm rate marked "FPR"."""
    attack_free = row.get("attack_free")  # a table built by hand may lack it
    if metric == "f1" and pd.notna(attack_free) and bool(attack_free):
        return f"FPR {_plus_minus(row['false_alarm_rate_mean'], row['false_alarm_rate_half'])}"
    return _plus_minus(row[f"{metric}_mean"], row[f"{metric}_half"])


def _per_scenario(scenarios: pd.DataFrame, metric: str, models: Sequence[str] | None = None) -> str:
    """One row per dataset × scenario × model, one column per variant: ``metric``'s mean ± half-width over
    seeds."""
    if models is not None:
        scenarios = scenarios[scenarios["model"].isin(models)]
    wide = scenarios.assign(
        cell=[_scenario_cell(row, metric) for _, row in scenarios.iterrows()]
    ).pivot_table(
        index=["dataset", "scenario", "model"], columns="variant", values="cell", aggfunc="first", sort=False
    )
    columns = [v for v in VARIANTS if v in wide.columns]
    return markdown_table(
        ["dataset", "scenario", "model", *columns],
        ([*index, *(wide.loc[index, c] for c in columns)] for index in wide.index),
    )


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency such as ``tabulate``); columns whose every cell is
    a number (or n/a) are right-aligned."""
    # A "|" in a cell (a scenario named "dos|fuzzy") would end the cell: GitHub-flavoured Markdown escapes it.
    rows = [[str(cell).replace("|", "\\|") for cell in row] for row in rows]
    # "FPR 0.010 ± 0.005": the F1 table's cell of a scenario without attack windows, a number all the same
    number = re.compile(r"^(FPR )?(n/a|[-+−]?[\d.,]+(%| ±.*| \[.*\])?)$")
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
    not_applicable: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """The whole summary as Markdown: teacher vs students, models and baselines, per scenario, distillation,
    fusion, α, floors, and F1 and ROC-AUC per test scenario. ``not_applicable``: per dataset, the baselines its
    training split could not fit and why (baselines.json's ``not_applicable``), said where the baselines are."""
    seeds = sorted(set(variants["seeds"])) if not variants.empty else []
    parts = [
        f"Test metrics over {', '.join(map(str, seeds)) or 'no'} seed(s) per variant: mean ± half-width of the "
        f"{INTERVAL}; n/a where one seed gives no interval. Nothing here comes from validation.",
        "## Teacher vs students\n\nF1 on all test scenarios pooled; latency is the time to score one window "
        "through VGAE + GAT + DQN fusion on the batched path the evaluation scores with (kdgat.inference."
        "score_graphs on a one-window list: median over evaluation.speed.latency_runs windows, mean over "
        "seeds), not the single-window WindowDetector that bench/bench_latency.py times; measured on the GPU, or the "
        "CPU and torch's thread count, that metrics.json records (several, ';'-separated, where the seeds' differ; "
        "not recorded by an evaluation older than that record).\n\n"
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
                "latency, batched path (ms/window)",
                "latency measured on",
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
                    r.get("hardware", "not recorded"),
                ]
                for _, r in variants.iterrows()
            ),
        ),
    ]
    skipped = [
        f"- {dataset}: {name} ({reason})"
        for dataset, reasons in (not_applicable or {}).items()
        for name, reason in reasons.items()
    ]
    if skipped:
        parts.append(
            "## Trivial baselines not applicable\n\nThe training split could not fit these baselines, so they "
            "have no results and the best baseline is the best of the others:\n\n" + "\n".join(skipped)
        )
    if models is not None and not models.empty:
        parts.append(
            "## Every model against the trivial baselines\n\nPooled-test F1 and ROC-AUC, the scenario "
            "where the model's mean F1 over seeds is lowest, and its margin over the best trivial baseline "
            "(F1 − the best of baseline_unknown_id, baseline_id_counts and baseline_id_rate, seed by seed): "
            "pooled, and on the scenario where the mean margin is smallest (both among the scenarios with "
            "attack windows: without attacks F1 only counts false alarms). Every figure is a mean over "
            "seeds ± the half-width of its 95% t interval.\n\n"
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
                        f"{_scenario(r['worst_scenario'])} "
                        f"({_plus_minus(r['worst_f1_mean'], r['worst_f1_half'])})",
                        _plus_minus(r["margin_mean"], r["margin_half"]),
                        f"{_plus_minus(r['smallest_margin_mean'], r['smallest_margin_half'])} "
                        f"({_scenario(r['smallest_margin_scenario'])})",
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
        not_worse = int(at_least(fusion["gain"], -FUSION_TOLERANCE).sum())
        holds_floor = int(
            at_least(fusion["fusion_f1"], fusion["better_of_means_f1"] - FUSION_TOLERANCE).sum()
        )
        parts.append(
            "## Does the fusion earn its place?\n\nFusion F1 against the better of its two inputs (GAT, "
            "VGAE) per test scenario, compared two ways, which give two different counts:\n\n"
            "- **Per seed** (gain): each seed's fusion − that seed's better input, mean over seeds [95% "
            f"interval]. The fusion is above both inputs (interval above 0) in {beaten} of {len(fusion)} "
            f"dataset × variant × scenario cells, and within {FUSION_TOLERANCE} of the better input or above "
            f"it in {not_worse}.\n"
            "- **Against the means** (the fusion_vs_inputs floor of the engineering floors): the fusion's "
            "mean F1 over seeds − the larger of the GAT's and the VGAE's means. The fusion is within "
            f"{FUSION_TOLERANCE} of it or above it in {holds_floor} of {len(fusion)} cells.\n\n"
            "The counts differ where the better input is not the same model on every seed: the mean of each "
            "seed's better input is then above the better of the two means, so the per-seed gain is never "
            "above the margin against the means. A cell can hold the floor and still fall behind its better "
            "input seed by seed; never the reverse.\n\n"
            + markdown_table(
                [
                    "dataset",
                    "variant",
                    "scenario",
                    "F1 fusion",
                    "F1 better input per seed",
                    "gain per seed [95% interval]",
                    "F1 better of the means",
                    "fusion − better of the means",
                ],
                (
                    [
                        r["dataset"],
                        r["variant"],
                        r["scenario"],
                        _number(r["fusion_f1"]),
                        _number(r["best_input_f1"]),
                        _interval_text(r["gain"], r["gain_low"], r["gain_high"]),
                        _number(r["better_of_means_f1"]),
                        _signed(r["margin_of_means"]),
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
            f"seeds; ROC-AUC ≥ {AUC_FLOOR}, F1 above flagging every window, fusion ≥ the better of its "
            f"inputs' means − {FUSION_TOLERANCE}: the fusion section's count against the means). Every miss "
            "is a finding:\n\n"
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
        parts.append(
            "## F1 per test scenario\n\nMean ± half-width of the 95% t interval over seeds. A scenario without "
            "attack windows has no F1 to show (0 after one false alarm, undefined without one): its cells give the "
            "false-alarm rate instead (FPR, the share of its windows flagged), over every seed.\n\n"
            + _per_scenario(scenarios, "f1")
        )
        parts.append(
            "## ROC-AUC per test scenario\n\nHow well each score ranks attack windows above normal ones, "
            f"whatever the threshold (0.5: chance; the VGAE's, GAT's and fusion's floor: {AUC_FLOOR}): mean "
            "± half-width of the 95% t interval over seeds, n/a where a scenario has one class only. The "
            "chain's models and the trivial baselines; the fixed-α fusions are in scenario_metrics.csv.\n\n"
            + _per_scenario(scenarios, "roc_auc", ROC_AUC_MODELS)
        )
    return "\n\n".join(parts) + "\n"
