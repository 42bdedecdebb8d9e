"""Summaries over seeds: the per-scenario table, the teacher-vs-students table, and the Markdown report of both.

Every variant is trained once per seed (``kd_gat.seeds``) and evaluated per seed; nothing here ever falls back to
validation numbers. A figure over seeds is the mean and a two-sided 95% Student-t interval,
``mean ± t(0.975, n − 1) · sd / √n`` (sd with n − 1); with one seed there is no interval ("n/a").

* :func:`scenario_table`: one row per dataset × variant × seed × test scenario × model (``SCENARIO_COLUMNS``),
  models being the chain's (vgae, gat, fusion), the fixed-α fusions and the trivial baselines (the baselines do
  not depend on the variant or the seed: the same numbers are repeated on each row, so every row compares like
  with like);
* :func:`variant_summary`: one row per dataset × variant: size, pooled-test F1 over seeds, latency;
* :func:`scenario_summary`: one row per dataset × variant × test scenario × model: F1, ROC-AUC and the
  margin over the best trivial baseline over seeds (on a scenario without attack windows the false-alarm rate
  instead of F1 and margin);
* :func:`model_summary`: one row per dataset × variant × model: pooled F1 and ROC-AUC over seeds, the worst
  scenario, and the margin over the best trivial baseline (pooled, and on the scenario where it is smallest),
  each with its interval;
* :func:`distillation_summary`: student_kd − student per seed (paired), with its interval and a verdict;
* :func:`fusion_summary`: the fusion against the better of its two inputs, per scenario, both per seed and
  against the inputs' means over seeds (the fusion floor's comparison);
* :func:`alpha_summary`: the distribution of the fusion's α on test;
* :func:`floor_table`: the engineering floors (above chance, fusion not below its inputs) and which are missed;
* :func:`kdgat.evaluation.markdown.summary_markdown`: all of it as GitHub-flavoured Markdown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kdgat.chain import MODELS, STUDENT, STUDENT_KD, TEACHER, VARIANTS
from kdgat.evaluation.baselines import BASELINES
from kdgat.evaluation.thresholds import FIXED_ALPHA_MODELS

REPORTED_MODELS = (*MODELS, *FIXED_ALPHA_MODELS, *BASELINES)
# The metrics each row reads from a model's metrics (metrics.json, baselines.json), then what a row derives from
# them: ``attack_free`` (the scenario has no attack window) and ``false_alarm_rate`` (the share of its normal
# windows flagged, metrics' ``fpr``). On an attack-free row ``f1`` is left empty: with no attack window F1 is 0
# after one false alarm and undefined without one (a count of false alarms, not of detection), so each seed's row
# said 0 or nothing and a mean over them misled; its false_alarm_rate says how the model does there.
METRIC_COLUMNS = [
    "f1", "roc_auc", "pr_auc", "precision", "recall", "specificity", "n", "n_attack",
]  # fmt: skip
DERIVED_COLUMNS = ["attack_free", "false_alarm_rate"]
SCENARIO_COLUMNS = ["dataset", "variant", "seed", "scenario", "model", *METRIC_COLUMNS, *DERIVED_COLUMNS]
CONFIDENCE = 0.95
INTERVAL = "95% t interval over seeds (mean ± t(0.975, n−1)·sd/√n)"

SUMMARY_COLUMNS = [
    "dataset", "variant", "seeds", "params_vgae", "params_gat", "params_dqn", "params_total", "size_vs_teacher",
    "f1_vgae", "f1_vgae_ci", "f1_gat", "f1_gat_ci", "f1_fusion", "f1_fusion_ci", "roc_auc_fusion",
    "f1_best_baseline", "latency_ms_fusion", "graphs_per_s_fusion", "hardware",
]  # fmt: skip


def interval(values: Iterable[float]) -> dict[str, float]:
    """Mean, 95% t interval (low, high, half-width) and count of the finite values."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(array)
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "half": math.nan, "n": 0}
    mean = float(array.mean())
    if n == 1:
        return {"mean": mean, "low": math.nan, "high": math.nan, "half": math.nan, "n": 1}
    from scipy.stats import t

    half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1) * array.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "low": mean - half, "high": mean + half, "half": half, "n": n}


def _metric_row(dataset, variant, seed, scenario, model, metrics: Mapping[str, Any]) -> dict[str, Any]:
    # no seed recorded: NaN (as the CSV reads back), which the summaries group and pair on like a seed
    seed = math.nan if seed is None else seed
    row = {"dataset": dataset, "variant": variant, "seed": seed, "scenario": scenario, "model": model}
    for column in METRIC_COLUMNS:
        value = metrics.get(column)
        row[column] = math.nan if value is None else value
    row["attack_free"] = row["n_attack"] == 0
    if row["attack_free"]:
        row["f1"] = math.nan  # undefined without an attack window: false_alarm_rate measures this row
    specificity = row["specificity"]
    row["false_alarm_rate"] = math.nan if math.isnan(specificity) else 1 - specificity
    return row


def _require(document: Mapping[str, Any], key: str, where: str):
    if key not in document:
        raise ValueError(
            f"{where}: the metrics lack {key!r} (test results are required: no fallback to validation)"
        )
    return document[key]


def _where(document: Mapping[str, Any]) -> str:
    return f"{document.get('dataset')}/{document.get('variant')}/seed {document.get('seed')}"


def scenario_table(
    documents: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]] = ()
) -> pd.DataFrame:
    """One row per dataset × variant × seed × test scenario × model, from metrics.json and baselines.json."""
    baseline_of = {document["dataset"]: document for document in baselines}
    rows = []
    for document in documents:
        where = _where(document)
        dataset, variant, seed = document["dataset"], document["variant"], document.get("seed")
        for scenario, models in _require(document, "test", where).items():
            for model, metrics in models.items():
                rows.append(_metric_row(dataset, variant, seed, scenario, model, metrics))
            if dataset in baseline_of:
                try:
                    baseline = baseline_of[dataset]["test"][scenario]
                except KeyError:
                    raise ValueError(
                        f"baselines of {dataset} lack test scenario {scenario!r} (evaluated for {where})"
                    ) from None
                for model in BASELINES:
                    if model in baseline:  # a baseline the training split could not fit has no results
                        rows.append(_metric_row(dataset, variant, seed, scenario, model, baseline[model]))
    table = pd.DataFrame(rows, columns=SCENARIO_COLUMNS)
    return _sorted(table)


def pooled_table(
    documents: Sequence[Mapping[str, Any]], baselines: Sequence[Mapping[str, Any]] = ()
) -> pd.DataFrame:
    """The same columns for all test scenarios pooled (``scenario`` = "pooled")."""
    baseline_of = {document["dataset"]: document for document in baselines}
    rows = []
    for document in documents:
        pooled = _require(document, "test_pooled", _where(document))
        dataset, variant, seed = document["dataset"], document["variant"], document.get("seed")
        models = dict(pooled)
        if dataset in baseline_of:
            baseline = baseline_of[dataset]["test_pooled"]
            models |= {m: baseline[m] for m in BASELINES if m in baseline}
        rows += [_metric_row(dataset, variant, seed, "pooled", m, metrics) for m, metrics in models.items()]
    return _sorted(pd.DataFrame(rows, columns=SCENARIO_COLUMNS))


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    rank = {
        "variant": {v: i for i, v in enumerate(VARIANTS)},
        "model": {m: i for i, m in enumerate(REPORTED_MODELS)},
    }
    scenario_order = {s: i for i, s in enumerate(dict.fromkeys(table["scenario"]))}
    return table.sort_values(
        ["dataset", "variant", "seed", "scenario", "model"],
        key=lambda s: (
            s.map(rank.get(s.name, scenario_order if s.name == "scenario" else {})).fillna(99)
            if s.name in ("variant", "model", "scenario")
            else s
        ),
    ).reset_index(drop=True)


def _over_seeds(table: pd.DataFrame, keys: list[str], column: str) -> pd.DataFrame:
    rows = []
    for key, group in table.groupby(keys, sort=False):
        stats = interval(group[column])
        rows.append({**dict(zip(keys, key, strict=True)), **{f"{column}_{k}": v for k, v in stats.items()}})
    # the columns named even without rows, so that merging the summaries of an empty table gives no rows, not an error
    statistics = [f"{column}_{k}" for k in interval(pd.Series([], dtype=float))]
    return pd.DataFrame(rows, columns=[*keys, *statistics])


def _best_baseline(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × variant × seed × scenario: the best of the trivial baselines' F1 (a metrics.json may record
    no seed: its rows are grouped, not dropped)."""
    baselines = table[table["model"].isin(BASELINES)]
    return (
        baselines.groupby(["dataset", "variant", "seed", "scenario"], sort=False, dropna=False)["f1"]
        .max()
        .rename("best_baseline_f1")
        .reset_index()
    )


def with_margins(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` plus ``best_baseline_f1`` and ``margin`` = F1 − the best trivial baseline's F1 (NaN without
    baselines)."""
    best = _best_baseline(table)
    if best.empty:
        return table.assign(best_baseline_f1=math.nan, margin=math.nan)
    merged = table.merge(best, on=["dataset", "variant", "seed", "scenario"], how="left")
    return merged.assign(margin=merged["f1"] - merged["best_baseline_f1"])


def scenario_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × variant × scenario × model: F1, ROC-AUC, margin and false-alarm rate (1 − specificity) over
    seeds (mean and interval), and ``attack_free``: the scenario has no attack windows. There F1 is 0 after one
    false alarm and undefined without one, so its mean would be 0 over the seeds that raised an alarm: F1 and
    margin are left out (NaN, n 0) and the false-alarm rate, over every seed, says how the model does."""
    keys = ["dataset", "variant", "scenario", "model"]
    table = with_margins(table)
    table = table.assign(false_alarm_rate=1 - table["specificity"], attack_free=table["n_attack"].eq(0))
    table.loc[table["attack_free"], ["f1", "margin"]] = math.nan
    out = _over_seeds(table, keys, "f1")
    for column in ("roc_auc", "margin", "false_alarm_rate"):
        out = out.merge(_over_seeds(table, keys, column), on=keys)
    attack_free = table.groupby(keys, sort=False)["attack_free"].all().reset_index()
    return out.merge(attack_free, on=keys, how="left")


def _lowest(group: pd.DataFrame, metric: str) -> Mapping[str, Any]:
    """The row of ``group`` with the lowest ``<metric>_mean``; none (no scenario, NaN figures) where no row has one
    (without baselines no scenario has a margin: naming the first one would say it has the smallest)."""
    means = group[f"{metric}_mean"]
    if means.isna().all():
        return {"scenario": None, f"{metric}_mean": math.nan, f"{metric}_half": math.nan}
    return group.loc[means.idxmin()]


def model_summary(scenarios: pd.DataFrame, pooled: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × variant × model: pooled F1/ROC-AUC over seeds, margins over baselines, and two
    scenarios: the worst (lowest mean F1 over seeds) and the one with the smallest mean margin, each with the
    half-width of its interval over seeds, both among the scenarios with attack windows."""
    keys = ["dataset", "variant", "model"]
    pooled = with_margins(pooled)
    out = _over_seeds(pooled, keys, "f1")
    for column in ("roc_auc", "margin"):
        out = out.merge(_over_seeds(pooled, keys, column), on=keys)
    # A scenario without attack windows is no one's worst scenario: its F1 is 0 after one false alarm and
    # undefined without one (as scikit-learn's), a count of false alarms rather than of detection.
    with_attacks = scenarios[scenarios["n_attack"] > 0]
    per_scenario = scenario_summary(with_attacks) if not with_attacks.empty else pd.DataFrame(columns=keys)
    worst_rows = []
    for key, group in per_scenario.groupby(keys, sort=False):
        worst, smallest = _lowest(group, "f1"), _lowest(group, "margin")
        worst_rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "worst_scenario": worst["scenario"],
                "worst_f1_mean": worst["f1_mean"],
                "worst_f1_half": worst["f1_half"],
                "smallest_margin_scenario": smallest["scenario"],
                "smallest_margin_mean": smallest["margin_mean"],
                "smallest_margin_half": smallest["margin_half"],
            }
        )
    scenario_columns = [
        "worst_scenario", "worst_f1_mean", "worst_f1_half",
        "smallest_margin_scenario", "smallest_margin_mean", "smallest_margin_half",
    ]  # fmt: skip
    return out.merge(pd.DataFrame(worst_rows, columns=[*keys, *scenario_columns]), on=keys, how="left")


def paired_difference(pooled: pd.DataFrame, better: str, worse: str, model: str) -> pd.DataFrame:
    """Per dataset: F1(better) − F1(worse) of ``model`` on pooled test, paired by seed, over seeds."""
    rows = []
    frame = pooled[pooled["model"] == model]
    for dataset, group in frame.groupby("dataset", sort=False):
        # merged on the seed, which pairs two evaluations that record none (NaN) as one seed
        paired = group[group["variant"] == better].merge(group[group["variant"] == worse], on="seed")
        if paired.empty:
            continue
        stats = interval((paired["f1_x"] - paired["f1_y"]).tolist())
        rows.append(
            {
                "dataset": dataset,
                "model": model,
                "compared": f"{better} − {worse}",
                **stats,
                "verdict": verdict(stats),
            }
        )
    return pd.DataFrame(rows)


def verdict(stats: Mapping[str, float]) -> str:
    """What an interval of a difference says: better, worse, or no measurable difference."""
    if stats["n"] == 0:
        return "no seed with a finite difference: no claim"
    if stats["n"] < 2:
        return "one seed: no interval, no claim"
    if stats["low"] > 0:
        return "better (the interval is above 0)"
    if stats["high"] < 0:
        return "worse (the interval is below 0)"
    return "no measurable difference (the interval contains 0)"


def distillation_summary(pooled: pd.DataFrame) -> pd.DataFrame:
    """Did distillation help? student_kd − student (and teacher − student_kd) per model, paired by seed."""
    parts = []
    for model in ("gat", "vgae", "fusion"):
        parts.append(paired_difference(pooled, STUDENT_KD, STUDENT, model))
        parts.append(paired_difference(pooled, TEACHER, STUDENT_KD, model))
    parts = [p for p in parts if not p.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def fusion_summary(scenarios: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × variant × scenario, the fusion's F1 against the better of the GAT's and the VGAE's,
    two ways:

    * per seed (``best_input_f1``, ``gain`` and its interval): each seed's fusion − that seed's better input,
      then over seeds;
    * against the means (``better_of_means_f1``, ``margin_of_means``): the fusion's mean over seeds − the
      larger of the two inputs' means, as the ``fusion_vs_inputs`` floor of :func:`floor_table` compares them.

    Where the better input changes between seeds, the mean of the per-seed better inputs exceeds the better of
    the means, so ``gain`` ≤ ``margin_of_means``: a cell can hold the floor and still lose to its better input
    seed by seed, never the reverse. Scenarios with one class only have no row, as they have no floor.
    """
    chain = scenarios[scenarios["model"].isin(["fusion", "gat", "vgae"])]
    rows = []
    for key, group in chain.groupby(["dataset", "variant", "scenario"], sort=False):
        if not 0 < attack_share(group) < 1:
            continue  # one class only: no floor (floor_table), and F1 there counts false alarms
        per_seed = group.pivot_table(index="seed", columns="model", values="f1", dropna=False)
        if not {"fusion", "gat", "vgae"} <= set(per_seed.columns):
            continue
        best_input = per_seed[["gat", "vgae"]].max(axis=1)
        stats = interval(per_seed["fusion"] - best_input)
        better_of_means = max(per_seed["gat"].mean(), per_seed["vgae"].mean())
        rows.append(
            {
                "dataset": key[0],
                "variant": key[1],
                "scenario": key[2],
                "fusion_f1": per_seed["fusion"].mean(),
                "best_input_f1": best_input.mean(),
                "gain": stats["mean"],
                "gain_low": stats["low"],
                "gain_high": stats["high"],
                "better_of_means_f1": better_of_means,
                "margin_of_means": per_seed["fusion"].mean() - better_of_means,
            }
        )
    return pd.DataFrame(rows)


def alpha_summary(documents: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per dataset × variant: the fusion's α on all test windows of every seed (histogram summed over seeds)."""
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for document in documents:
        stats = document.get("fusion_alpha", {}).get("test_pooled")
        if stats:
            grouped.setdefault((document["dataset"], document["variant"]), []).append(stats)
    rows = []
    for (dataset, variant), items in grouped.items():
        counts = np.sum([item["counts"] for item in items], axis=0)
        n = int(counts.sum())
        bins = items[0]["bins"]
        rows.append(
            {
                "dataset": dataset,
                "variant": variant,
                "windows": n,
                "alpha_mean": float(np.average([i["mean"] for i in items], weights=[i["n"] for i in items])),
                "alpha_median_per_seed": ", ".join(f"{i['quantiles']['0.5']:.2f}" for i in items),
                "share_alpha_ge_0.9": float(counts[-1] / n) if n else math.nan,
                "share_alpha_lt_0.1": float(counts[0] / n) if n else math.nan,
                "agrees_with_gat": float(np.mean([i["agrees_with_gat"] for i in items])),
                "histogram": " ".join(
                    f"[{low:.1f},{high:.1f}{']' if k == len(counts) - 1 else ')'}:{c}"
                    for k, (low, high, c) in enumerate(zip(bins[:-1], bins[1:], counts, strict=True))
                    if c
                ),
            }
        )
    return pd.DataFrame(rows)


def variant_summary(documents: Sequence[Mapping[str, Any]], pooled: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset × variant: size, pooled-test F1 over seeds (mean and half-width), latency and the
    hardware it was measured on (metrics.json's, "; "-joined where seeds differ; "not recorded" before it was)."""
    rows = []
    grouped: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for document in documents:
        grouped.setdefault((document["dataset"], document["variant"]), []).append(document)
    for (dataset, variant), items in grouped.items():
        where = _where(items[0])
        params = _require(items[0], "parameters", where)
        latency = [_require(d, "speed", _where(d))["fusion"]["latency_ms"] for d in items]
        throughput = [d["speed"]["fusion"]["graphs_per_s"] for d in items]
        frame = pooled[(pooled["dataset"] == dataset) & (pooled["variant"] == variant)]
        row = {
            "dataset": dataset,
            "variant": variant,
            "seeds": len(items),
            "params_vgae": params["vgae"],
            "params_gat": params["gat"],
            "params_dqn": params["dqn"],
            "params_total": params["total"],
            "size_vs_teacher": None,
            "latency_ms_fusion": float(np.mean(latency)),
            "graphs_per_s_fusion": float(np.mean(throughput)),
            "hardware": "; ".join(sorted({str(d.get("hardware") or "not recorded") for d in items})),
        }
        for model in ("vgae", "gat", "fusion"):
            stats = interval(frame.loc[frame["model"] == model, "f1"])
            row[f"f1_{model}"], row[f"f1_{model}_ci"] = stats["mean"], stats["half"]
        row["roc_auc_fusion"] = interval(frame.loc[frame["model"] == "fusion", "roc_auc"])["mean"]
        baselines = frame[frame["model"].isin(BASELINES)]
        row["f1_best_baseline"] = (
            baselines.groupby("model")["f1"].mean().max() if not baselines.empty else math.nan
        )
        rows.append(row)
    return summary_table(rows)


def summary_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows of :func:`variant_summary` as a table, with each student's size relative to its dataset's teacher."""
    table = pd.DataFrame(list(rows), columns=SUMMARY_COLUMNS)
    order = {v: i for i, v in enumerate(VARIANTS)}
    table = table.sort_values(
        ["dataset", "variant"], key=lambda s: s.map(order) if s.name == "variant" else s
    ).reset_index(drop=True)
    teacher = table[table["variant"] == TEACHER].set_index("dataset")["params_total"]
    table["size_vs_teacher"] = table.apply(
        lambda r: (r["params_total"] / teacher[r["dataset"]]) if r["dataset"] in teacher.index else None,
        axis=1,
    ).astype(float)
    return table


# -- engineering floors ----------------------------------------------------------------------------------------------
# A random score's ROC-AUC has sd sqrt((P + N + 1) / (12·P·N)) for P attack and N normal windows: ≈ 0.04 on a
# balanced test scenario of 213-327 windows, ≈ 0.055 with 30-40 attacks in 213; a 3-seed mean's is ≈ 0.02-0.03.
AUC_FLOOR = 0.65
FUSION_TOLERANCE = 0.005
FLOOR_MODELS = ("vgae", "gat", "fusion")


def at_least(value, floor):
    """``value >= floor`` up to float rounding: an F1 exactly the tolerance below its better input (0.9 - 0.005
    against 0.9) gives a difference of -0.0050000000000000044, which must count as at the tolerance, the same in
    the floors and in both of the fusion section's counts (F1s that truly differ do so by far more than 1e-9)."""
    return value >= floor - 1e-9


def above(value, floor):
    """``value > floor`` beyond float rounding: flagging every window scores chance_f1 exactly, but its F1 (from
    the counts, then a mean over seeds) can land one ulp above chance_f1 (3 attacks in 10 windows), which must not
    count as above it."""
    return value > floor + 1e-9


def attack_share(scenario_rows: pd.DataFrame) -> float:
    """The share of attack windows of one test scenario (its rows all hold the scenario's own counts)."""
    return float((scenario_rows["n_attack"] / scenario_rows["n"]).iloc[0])


def chance_f1(attack_share: float) -> float:
    """The best F1 a score-blind detector reaches: flag every window (recall 1, precision = the attack share);
    any random flagging rate does worse."""
    return 2 * attack_share / (1 + attack_share) if attack_share > 0 else math.nan


FLOOR_COLUMNS = ["dataset", "variant", "scenario", "model", "check", "value", "floor", "passed", "seeds"]


def _floor_row(where: Mapping[str, Any], check: str, model: str, value, floor, passed) -> dict[str, Any]:
    return {**where, "model": model, "check": check, "value": value, "floor": floor, "passed": bool(passed)}


def floor_table(table: pd.DataFrame) -> pd.DataFrame:
    """The engineering floors per dataset × variant × test scenario (means over seeds), one row per check:

    * ``roc_auc`` of the VGAE, the GAT and the fusion ≥ ``AUC_FLOOR`` (random scores: 0.5; constant: 0.5);
    * ``f1_above_chance``: their F1 > the F1 of flagging every window, ``chance_f1`` of the scenario's attack share;
    * ``fusion_vs_inputs``: fusion F1 ≥ the better of the GAT's and the VGAE's F1 − ``FUSION_TOLERANCE``.

    Scenarios with one class only have no floor. A constant or random score fails the first two; a fusion with a
    constant α passes the third only on scenarios where the input it always picks is the better one.
    """
    rows = []
    chain = table[table["model"].isin(FLOOR_MODELS)]
    for (dataset, variant, scenario), group in chain.groupby(["dataset", "variant", "scenario"], sort=False):
        share = attack_share(group)
        if not 0 < share < 1:
            continue
        means = group.groupby("model")[["f1", "roc_auc"]].mean()
        seeds = int(group["seed"].nunique(dropna=False))

        where = {"dataset": dataset, "variant": variant, "scenario": scenario, "seeds": seeds}
        for model in FLOOR_MODELS:
            if model not in means.index:
                continue
            auc, f1 = means.loc[model, "roc_auc"], means.loc[model, "f1"]
            rows.append(_floor_row(where, "roc_auc", model, auc, AUC_FLOOR, auc >= AUC_FLOOR))
            rows.append(
                _floor_row(where, "f1_above_chance", model, f1, chance_f1(share), above(f1, chance_f1(share)))
            )
        if set(FLOOR_MODELS) <= set(means.index):
            best = max(means.loc["gat", "f1"], means.loc["vgae", "f1"])
            fused = means.loc["fusion", "f1"]
            floor = best - FUSION_TOLERANCE
            rows.append(_floor_row(where, "fusion_vs_inputs", "fusion", fused, floor, at_least(fused, floor)))
    return pd.DataFrame(rows, columns=FLOOR_COLUMNS)


# -- Markdown --------------------------------------------------------------------------------------------------------
