"""Summaries over seeds, the engineering floors and the trivial baselines (kdgat.evaluation.summary, .baselines)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import t

from kdgat.evaluation.baselines import (
    ID_COUNTS,
    UNKNOWN_ID,
    IdCountBaseline,
    evaluate_baselines,
    messages_per_id,
    unknown_id_scores,
)
from kdgat.evaluation.metrics import binary_metrics
from kdgat.evaluation.summary import (
    AUC_FLOOR,
    SCENARIO_COLUMNS,
    alpha_summary,
    chance_f1,
    distillation_summary,
    floor_table,
    interval,
    model_summary,
    pooled_table,
    scenario_table,
    summary_markdown,
    variant_summary,
    verdict,
)
from kdgat.graphs import GraphArrays, build_graphs


def test_interval_is_the_student_t_interval_over_seeds():
    stats = interval([1.0, 2.0, 3.0])
    half = t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # sd (n − 1) of 1, 2, 3 is 1
    assert stats["mean"] == 2.0 and stats["half"] == pytest.approx(half)
    assert (stats["low"], stats["high"]) == pytest.approx((2.0 - half, 2.0 + half))
    one = interval([0.7])
    assert one["mean"] == 0.7 and math.isnan(one["half"]) and one["n"] == 1
    assert interval([0.5, None, float("nan")])["n"] == 1
    assert verdict(interval([0.1, 0.12, 0.11])).startswith("better")
    assert verdict(interval([-0.1, -0.12, -0.11])).startswith("worse")
    assert verdict(interval([-0.1, 0.1, 0.0])).startswith("no measurable difference")
    assert verdict(one) == "one seed: no interval, no claim"


def _metrics(labels, scores):
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    return binary_metrics(labels, scores, (scores > 0.5).astype(int))


LABELS = np.array([0] * 30 + [1] * 20)


def _document(variant, seed, gat_scores, vgae_scores, fusion_scores, alphas=None):
    models = {"gat": gat_scores, "vgae": vgae_scores, "fusion": fusion_scores}
    block = {name: _metrics(LABELS, scores) for name, scores in models.items()}
    alphas = np.ones(len(LABELS)) if alphas is None else np.asarray(alphas)
    counts, _ = np.histogram(alphas, bins=np.linspace(0, 1, 11))
    return {
        "dataset": "ds",
        "variant": variant,
        "seed": seed,
        "parameters": {"vgae": 1, "gat": 2, "dqn": 3, "total": 6 if variant != "teacher" else 60},
        "speed": {"fusion": {"latency_ms": 1.0, "graphs_per_s": 100.0}},
        "val": block,
        "test": {"dos": block},
        "test_pooled": block,
        "fusion_alpha": {
            "test_pooled": {
                "n": len(alphas),
                "bins": np.linspace(0, 1, 11).round(2).tolist(),
                "counts": counts.tolist(),
                "mean": float(alphas.mean()),
                "quantiles": {"0.5": float(np.median(alphas))},
                "agrees_with_gat": 1.0,
            }
        },
    }


def _baselines():
    block = {
        UNKNOWN_ID: _metrics(LABELS, np.r_[np.zeros(30), np.ones(20)]),
        ID_COUNTS: _metrics(LABELS, np.r_[np.full(30, 0.4), np.full(10, 0.6), np.full(10, 0.4)]),
    }
    return {"dataset": "ds", "test": {"dos": block}, "test_pooled": block}


PERFECT = np.r_[np.full(30, 0.1), np.full(20, 0.9)]
HALF = np.r_[np.full(30, 0.1), np.full(10, 0.9), np.full(10, 0.1)]  # finds half of the attacks


@pytest.fixture
def documents():
    rng = np.random.default_rng(0)
    docs = []
    for seed in (1, 2, 3):
        noisy = np.clip(PERFECT + rng.normal(0, 0.05, len(LABELS)), 0, 1)
        docs.append(_document("teacher", seed, noisy, HALF, noisy))
        docs.append(_document("student_kd", seed, HALF, HALF, HALF))
        docs.append(_document("student", seed, PERFECT if seed != 2 else HALF, HALF, HALF))
    return docs


def test_scenario_table_has_one_row_per_dataset_variant_seed_scenario_model(documents):
    table = scenario_table(documents, [_baselines()])
    assert list(table.columns) == SCENARIO_COLUMNS
    assert len(table) == 3 * 3 * 1 * 5  # variants × seeds × scenarios × (three models + two baselines)
    assert not table.duplicated(["dataset", "variant", "seed", "scenario", "model"]).any()
    # The baselines do not depend on the variant or the seed: the same numbers on every row.
    assert table.loc[table["model"] == UNKNOWN_ID, "f1"].nunique() == 1
    assert table.loc[table["model"] == UNKNOWN_ID, "f1"].iloc[0] == pytest.approx(1.0)
    teacher_gat = table[(table["variant"] == "teacher") & (table["model"] == "gat")]
    assert sorted(teacher_gat["seed"]) == [1, 2, 3]


def test_no_fallback_to_validation(documents):
    del documents[0]["test_pooled"]
    with pytest.raises(ValueError, match="no fallback to validation"):
        pooled_table(documents)


def test_summaries_report_intervals_margins_and_the_distillation_verdict(documents):
    per_scenario = scenario_table(documents, [_baselines()])
    pooled = pooled_table(documents, [_baselines()])
    variants = variant_summary(documents, pooled)
    assert variants["variant"].tolist() == ["teacher", "student_kd", "student"]
    assert variants["size_vs_teacher"].tolist() == pytest.approx([1.0, 0.1, 0.1])
    assert variants.loc[1, "f1_gat"] == pytest.approx(2 / 3)  # recall 1/2, precision 1
    assert variants.loc[1, "f1_gat_ci"] == pytest.approx(0.0)
    assert variants.loc[0, "f1_best_baseline"] == pytest.approx(1.0)
    models = model_summary(per_scenario, pooled).set_index(["variant", "model"])
    assert models.loc[("student_kd", "gat"), "margin_mean"] == pytest.approx(2 / 3 - 1.0)
    assert models.loc[("student_kd", "gat"), "worst_scenario"] == "dos"
    kd = distillation_summary(pooled).set_index(["model", "compared"])
    # student had F1 1, 2/3, 1 over the seeds; student_kd 2/3 every time: paired differences −1/3, 0, −1/3.
    gat = kd.loc[("gat", "student_kd − student")]
    assert gat["mean"] == pytest.approx(-2 / 9) and gat["n"] == 3
    assert gat["verdict"] == verdict(interval([-1 / 3, 0.0, -1 / 3]))
    markdown = summary_markdown(
        variants, models=model_summary(per_scenario, pooled), distillation=kd.reset_index()
    )
    assert "Did distillation help?" in markdown and "95% t interval" in markdown
    assert "| ds | student_kd | gat |" in markdown


def test_alpha_summary_sums_the_histograms_of_every_seed():
    documents = [
        _document("teacher", seed, PERFECT, HALF, PERFECT, alphas=np.r_[np.ones(40), np.zeros(10)])
        for seed in (1, 2)
    ]
    alpha = alpha_summary(documents).iloc[0]
    assert alpha["windows"] == 100
    assert alpha["share_alpha_ge_0.9"] == pytest.approx(0.8) and alpha["share_alpha_lt_0.1"] == pytest.approx(
        0.2
    )
    assert alpha["histogram"] == "[0.0,0.1):20 [0.9,1.0]:80"


def _floor_documents(gat, vgae, fusion):
    return [_document("teacher", seed, gat, vgae, fusion) for seed in (1, 2, 3)]


def _failed(documents):
    floors = floor_table(scenario_table(documents))
    return set(map(tuple, floors.loc[~floors["passed"], ["model", "check"]].to_numpy()))


def test_floors_fail_a_constant_and_a_random_detector():
    rng = np.random.default_rng(1)
    random_scores = [rng.random(len(LABELS)) for _ in range(3)]
    documents = [
        _document("teacher", seed, np.ones(len(LABELS)), np.full(len(LABELS), 0.7), random_scores[seed - 1])
        for seed in (1, 2, 3)
    ]
    failed = _failed(documents)
    # A constant "attack" for the GAT and the VGAE: ROC-AUC 0.5 and exactly the chance F1; random fusion scores.
    for model in ("gat", "vgae", "fusion"):
        assert (model, "roc_auc") in failed and (model, "f1_above_chance") in failed
    assert chance_f1(0.4) == pytest.approx(0.8 / 1.4)
    assert AUC_FLOOR > 0.5


def test_floors_pass_a_good_detector_and_catch_a_fusion_that_drops_its_better_input():
    assert not _failed(_floor_documents(PERFECT, HALF, PERFECT))
    # The VGAE is the better input here; a fusion that copies the GAT falls below it.
    failed = _failed(_floor_documents(HALF, PERFECT, HALF))
    assert ("fusion", "fusion_vs_inputs") in failed
    assert (
        "gat",
        "f1_above_chance",
    ) not in failed  # finding half the attacks with no false alarm is above chance


# -- baselines ----------------------------------------------------------------------------------------------------
def _graphs(ids, labels, num_ids, window=5):
    ids = np.asarray(ids)
    return build_graphs(ids, np.zeros((len(ids), 8), np.uint8), np.asarray(labels), num_ids, window, window)


def test_messages_per_id_counts_each_windows_messages_from_the_edges():
    ids = [0, 1, 0, 2, 2, 1, 1, 1, 0, 3, 0]  # 10 rows (the last message is only a target)
    graphs = _graphs(ids, np.zeros(len(ids), int), num_ids=4)
    counts = messages_per_id(graphs, 4)
    assert counts.tolist() == [[2, 1, 2, 0], [1, 3, 0, 1]]
    score, decision = unknown_id_scores(graphs, oov_index=3)
    assert decision.tolist() == [0, 1] and score[1] == pytest.approx(1.2)  # present, 1 of 5 messages


def test_unknown_id_rule_and_id_count_regression_on_separable_windows():
    rng = np.random.default_rng(3)

    def capture(n_windows, attack, oov):
        ids, labels = [], []
        for w in range(n_windows):
            hit = attack and w % 2 == 1
            window = rng.choice([0, 1], 20)
            if hit:  # a flood of ID 2, which normal windows never carry
                window[::2] = 2
            if hit and oov:
                window[0] = 3
            ids += window.tolist()
            labels += [int(hit)] * 20
        return GraphArrays.concat([_graphs(ids + [0], labels + [0], num_ids=4, window=20)])

    train, val = capture(40, True, False), capture(20, True, False)
    tests = {"counts": capture(20, True, False), "unknown": capture(20, True, True)}
    document, scores = evaluate_baselines(train, val, tests, num_ids=4)
    assert document["test"]["counts"][ID_COUNTS]["f1"] == pytest.approx(1.0)
    assert document["test"]["counts"][UNKNOWN_ID]["f1"] == 0.0  # no unknown ID: it never flags
    assert document["test"]["unknown"][UNKNOWN_ID]["f1"] == pytest.approx(1.0)
    assert document["thresholds"][ID_COUNTS]["reason"] == "Youden's J on validation"
    assert set(scores["scenario"]) == {"val", "counts", "unknown"}
    assert len(scores) == len(val) + 40
    with pytest.raises(ValueError, match="normal and attack windows"):
        IdCountBaseline(4).fit(capture(5, False, False), val)
