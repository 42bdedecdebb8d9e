"""Summaries over seeds, the engineering floors and the trivial baselines (kdgat.evaluation.summary, .baselines)."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.stats import t
from testkit import REPO, count_header_reads

from kdgat.chain import MODELS
from kdgat.evaluation.baselines import (
    BASELINES,
    ID_COUNTS,
    ID_RATE,
    RATE_STD_FLOOR,
    UNKNOWN_ID,
    IdCountBaseline,
    IdRateBaseline,
    baselines_files,
    evaluate_baselines,
    messages_per_id,
    unknown_id_scores,
)
from kdgat.evaluation.markdown import markdown_table, summary_markdown
from kdgat.evaluation.metrics import binary_metrics
from kdgat.evaluation.run import summarize_files
from kdgat.evaluation.summary import (
    AUC_FLOOR,
    FUSION_TOLERANCE,
    SCENARIO_COLUMNS,
    alpha_summary,
    chance_f1,
    distillation_summary,
    floor_table,
    fusion_summary,
    interval,
    model_summary,
    pooled_table,
    scenario_summary,
    scenario_table,
    summary_table,
    variant_summary,
    verdict,
    with_margins,
)
from kdgat.evaluation.thresholds import FIXED_ALPHA_MODELS, youden_threshold
from kdgat.files import write_json
from kdgat.graphs import GraphArrays, build_graphs
from wrapper_rules import InputError


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
        ID_RATE: _metrics(LABELS, np.zeros(50)),
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
    assert len(table) == 3 * 3 * 1 * 6  # variants × seeds × scenarios × (three models + three baselines)
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


def test_alpha_section_shows_each_variants_distribution_over_every_seed():
    # seed 1: 40 windows at α = 1, 10 at α = 0 (mean 0.8); seed 2: all 50 at α = 0.62
    documents = [
        _document("teacher", 1, PERFECT, HALF, PERFECT, alphas=np.r_[np.ones(40), np.zeros(10)]),
        _document("teacher", 2, PERFECT, HALF, PERFECT, alphas=np.full(50, 0.62)),
    ]
    variants = variant_summary(documents, pooled_table(documents))
    markdown = summary_markdown(variants, alpha=alpha_summary(documents))
    section = markdown.split("## What the fusion's α does")[1]
    # 100 windows, mean α (0.8 + 0.62) / 2, medians per seed, 40 and 10 of 100 at the ends, summed histogram
    histogram = "[0.0,0.1):10 [0.6,0.7):50 [0.9,1.0]:40"
    assert f"| ds | teacher | 100 | 0.71 | 1.00, 0.62 | 0.400 | 0.100 | 1.000 | {histogram} |" in section


def test_the_mean_alpha_is_over_every_test_window_so_a_seed_with_more_windows_weighs_more():
    """alpha_summary: the fusion's α "on all test windows of every seed": 40 windows at α = 1 and 10 at α = 0 have
    a mean α of 0.8, not the 0.5 of the two seeds' means."""
    documents = [
        _document("teacher", 1, PERFECT, HALF, PERFECT, alphas=np.ones(40)),
        _document("teacher", 2, PERFECT, HALF, PERFECT, alphas=np.zeros(10)),
    ]
    alpha = alpha_summary(documents).iloc[0]
    assert alpha["windows"] == 50
    assert alpha["alpha_mean"] == pytest.approx(0.8)


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


def _capture(rng, n_windows, attack=True, oov=False, overlap=False):
    """Windows of 20 messages over IDs 0 and 1; every other window of an attack capture is a flood of ID 2
    (index 3 is the OOV index). ``overlap``: floods of random strength, and normal windows that carry ID 2 a few
    times too, so that no threshold separates the classes."""
    ids, labels = [], []
    for w in range(n_windows):
        hit = attack and w % 2 == 1
        window = rng.choice([0, 1], 20)
        if hit:  # a flood of ID 2, which normal windows never carry (unless overlap)
            window[:: int(rng.integers(2, 8)) if overlap else 2] = 2
        elif overlap:
            window[rng.choice(20, int(rng.integers(0, 4)), replace=False)] = 2
        if hit and oov:
            window[0] = 3
        ids += window.tolist()
        labels += [int(hit)] * 20
    return GraphArrays.concat([_graphs(ids + [0], labels + [0], num_ids=4, window=20)])


def test_unknown_id_rule_and_id_count_regression_on_separable_windows():
    rng = np.random.default_rng(3)
    train, val = _capture(rng, 40), _capture(rng, 20)
    tests = {"counts": _capture(rng, 20), "unknown": _capture(rng, 20, oov=True)}
    document, scores = evaluate_baselines(train, val, tests, num_ids=4)
    assert document["test"]["counts"][ID_COUNTS]["f1"] == pytest.approx(1.0)
    assert document["test"]["counts"][UNKNOWN_ID]["f1"] == 0.0  # no unknown ID: it never flags
    assert document["test"]["unknown"][UNKNOWN_ID]["f1"] == pytest.approx(1.0)
    assert document["thresholds"][ID_COUNTS]["reason"] == "Youden's J on validation"
    assert set(scores["scenario"]) == {"val", "counts", "unknown"}
    assert len(scores) == len(val) + 40
    with pytest.raises(ValueError, match="normal and attack windows"):
        IdCountBaseline(4).fit(_capture(rng, 5, attack=False), val)


def _rate_capture(rng, n_windows, attack_every=0, double=1, forge=False, flood=False, silent=False):
    """Windows of 20 messages: ID 1 four times at fixed positions, the rest IDs 0 and 2 at random. Every
    ``attack_every``-th window is an attack: ID 1 sent ``double`` times as often (replay or injection at its own
    payload), or, with ``forge``, at its own rate with other payload bytes (masquerade), or, with ``flood``, ID 2
    in every other slot (a DoS of another ID), or, with ``silent``, not at all: its slots go to IDs 0 and 2 (a
    suppressed ID)."""
    ids, payloads, labels = [], [], []
    for w in range(n_windows):
        hit = attack_every and w % attack_every == attack_every - 1
        window = rng.choice([0, 2], 20)
        if hit and flood:
            window[1::2] = 2
        window[:: 20 // (4 * (double if hit and not forge else 1))] = 1
        if hit and silent:
            window[window == 1] = [0, 2, 0, 2]
        payload = np.zeros((20, 8), np.uint8)
        if hit and forge:
            payload[window == 1] = 255
        ids += window.tolist()
        payloads.append(payload)
        labels += [int(hit)] * 20
    ids.append(0)
    payloads.append(np.zeros((1, 8), np.uint8))
    labels.append(0)
    return build_graphs(np.asarray(ids), np.concatenate(payloads), np.asarray(labels), 4, 20, 20)


def test_id_rate_rule_flags_an_ids_rate_it_never_saw_attacked_and_is_blind_to_forged_payloads():
    rng = np.random.default_rng(11)
    # Training holds attacks of another kind (floods of ID 2), which the rule must not learn from.
    train = _rate_capture(rng, 60, attack_every=3, flood=True)
    val = _rate_capture(rng, 30, attack_every=3, double=2)
    replay, masquerade = _rate_capture(rng, 30, 3, double=2), _rate_capture(rng, 30, 3, forge=True)
    document, _ = evaluate_baselines(train, val, {"replay": replay, "masquerade": masquerade}, num_ids=4)
    assert document["test"]["replay"][ID_RATE]["f1"] == pytest.approx(1.0)
    # Payload-only: every window's counts are normal ones, so attacks score like normal windows (chance).
    assert document["test"]["masquerade"][ID_RATE]["roc_auc"] <= 0.6
    # Fitted on normal training windows only: the floods do not move ID 2's rate, and the score is the largest
    # per-ID deviation in units of (std + half a message).
    rule = IdRateBaseline(4).fit(train, val)
    normal = messages_per_id(train, 4)[train.y == 0]
    assert rule.mean == pytest.approx(normal.mean(axis=0)) and rule.std == pytest.approx(normal.std(axis=0))
    counts = messages_per_id(replay, 4)
    expected = (np.abs(counts - normal.mean(axis=0)) / (normal.std(axis=0) + RATE_STD_FLOOR)).max(axis=1)
    assert rule.scores(replay) == pytest.approx(expected)
    with pytest.raises(ValueError, match="two normal windows"):
        IdRateBaseline(4).fit(_capture(rng, 2, attack=True), val)


def test_id_rate_rule_is_two_sided_and_ranks_an_id_gone_silent_above_every_normal_window():
    """The score is |count − mean| / (std + half a message), both directions: a frequency detector is the
    baseline for suppression as well as injection, so a window whose ID 1 (4 messages in every normal window)
    falls silent is 4 / 0.5 from its attack-free rate, as far as one with 4 extra messages of it."""
    rng = np.random.default_rng(5)
    train = _rate_capture(rng, 60, attack_every=3, flood=True)
    val = _rate_capture(rng, 30, attack_every=3, double=2)
    rule = IdRateBaseline(4).fit(train, val)
    assert rule.std[1] == 0.0  # ID 1 never varied in training
    silent = _rate_capture(rng, 10, 1, silent=True)
    assert (messages_per_id(silent, 4)[:, 1] == 0).all()
    assert rule.scores(silent) == pytest.approx(np.full(10, 4 / RATE_STD_FLOOR))
    # Ranked above every normal window (ROC-AUC 1), which a one-sided score, blind to the drop, is not.
    suppression = _rate_capture(rng, 30, attack_every=3, silent=True)
    document, _ = evaluate_baselines(train, val, {"suppression": suppression}, num_ids=4)
    assert document["test"]["suppression"][ID_RATE]["roc_auc"] == pytest.approx(1.0)


def test_id_count_threshold_is_chosen_on_validation_and_reused_on_test():
    rng = np.random.default_rng(8)
    train, val, test = (_capture(rng, n, overlap=True) for n in (60, 40, 40))
    document, scores = evaluate_baselines(train, val, {"mixed": test}, num_ids=4)
    fitted = IdCountBaseline(4).fit(train, val)
    chosen = youden_threshold(val.y, fitted.scores(val)).threshold
    assert document["thresholds"][ID_COUNTS]["threshold"] == pytest.approx(chosen)
    # The same threshold decides every test window; the test labels play no part in it.
    rows = scores[scores["scenario"] == "mixed"]
    assert rows[f"{ID_COUNTS}_score"].to_numpy() == pytest.approx(fitted.scores(test))
    assert (rows[f"{ID_COUNTS}_pred"] == (rows[f"{ID_COUNTS}_score"] >= chosen)).all()
    # The classes overlap here: the metrics are those of these decisions, not of a perfect split.
    expected = binary_metrics(
        test.y, rows[f"{ID_COUNTS}_score"].to_numpy(), rows[f"{ID_COUNTS}_pred"].to_numpy()
    )
    assert document["test"]["mixed"][ID_COUNTS]["f1"] == pytest.approx(expected["f1"])
    assert document["test"]["mixed"][ID_COUNTS]["f1"] < 1.0
    # Pooled test is every test window once; here one scenario, so the same numbers.
    assert document["test_pooled"][ID_COUNTS]["f1"] == pytest.approx(expected["f1"])


def test_the_id_count_regression_learns_from_training_windows_only():
    """Fitted on train, its threshold on validation: the validation windows move the threshold, never the model."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(8)
    train, val_a, val_b, test = (_capture(rng, n, overlap=True) for n in (60, 40, 20, 40))
    on_a, on_b = IdCountBaseline(4).fit(train, val_a), IdCountBaseline(4).fit(train, val_b)
    assert on_a.scores(test) == pytest.approx(on_b.scores(test), rel=1e-12, abs=1e-15)
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, random_state=0))
    reference.fit(messages_per_id(train, 4), train.y)
    assert on_a.scores(test) == pytest.approx(reference.predict_proba(messages_per_id(test, 4))[:, 1])
    assert on_a.threshold == youden_threshold(val_a.y, on_a.scores(val_a))


def test_baselines_report_the_fpr_targets_given_and_refuse_bad_ones_before_fitting():
    rng = np.random.default_rng(3)
    train, val = _capture(rng, 40), _capture(rng, 20)
    document, _ = evaluate_baselines(train, val, {"dos": _capture(rng, 20)}, num_ids=4, fpr_targets=(0.2,))
    for split in (document["val"], document["test"]["dos"], document["test_pooled"]):
        for metrics in split.values():
            assert [key for key in metrics if key.startswith("detection_rate")] == [
                "detection_rate_at_fpr_0.2"
            ]
    with pytest.raises(ValueError, match=r"strictly between 0 and 1; got \[-0.1\]"):
        evaluate_baselines(train, val, {"dos": val}, num_ids=4, fpr_targets=(-0.1,))


def test_baselines_refuse_what_they_cannot_measure(tmp_path):
    rng = np.random.default_rng(5)
    train, val = _capture(rng, 20), _capture(rng, 10)
    empty = GraphArrays.concat([])
    with pytest.raises(ValueError, match="validation split is empty"):
        evaluate_baselines(train, empty, {"dos": val}, num_ids=4)
    with pytest.raises(ValueError, match="test scenario 'dos' has no graphs"):
        evaluate_baselines(train, val, {"dos": empty}, num_ids=4)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        messages_per_id(train, 2)  # the floods carry index 2, not a column of a 2-ID table
    metadata = tmp_path / "metadata.json"
    metadata.write_text('{"vocab_size": 4}')
    for split in ("train", "val", "test"):  # present: the metadata is read before any graph
        (tmp_path / f"{split}.pt").touch()
    with pytest.raises(
        ValueError, match=f"{metadata}: expected preprocess metadata with an integer 'num_ids'"
    ):
        baselines_files(
            train=tmp_path / "train.pt", val=tmp_path / "val.pt", test=tmp_path / "test.pt", metadata=metadata,
            metrics=tmp_path / "baselines.json", scores=tmp_path / "scores.parquet", dataset="ds",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("train", [], "input 'train' of the baselines must be the path of one train.pt; got []"),
        (
            "val",
            ["a.pt", "b.pt"],
            "input 'val' of the baselines must be the path of one val.pt; got ['a.pt', 'b.pt']",
        ),
        (
            "metadata",
            None,
            "input 'metadata' of the baselines must be the path of one metadata.json; got None",
        ),
        ("test", "missing.pt", "input 'test' of the baselines does not exist: missing.pt"),
    ],
)
def test_a_baselines_input_that_is_no_files_path_or_no_file_is_refused_naming_it(
    tmp_path, monkeypatch, name, value, message
):
    """A Snakemake input given as a list (none, or several files) failed as pathlib's "expected str, bytes or
    os.PathLike object", a missing one as a bare FileNotFoundError: tracebacks naming no input."""
    monkeypatch.chdir(tmp_path)  # "missing.pt" is missing from here
    files = {split: tmp_path / f"{split}.pt" for split in ("train", "val", "test")}
    for path in files.values():
        path.touch()
    files["metadata"] = write_json({"num_ids": 4}, tmp_path / "metadata.json")
    with pytest.raises(InputError) as error:
        baselines_files(
            **{**files, name: value}, metrics=tmp_path / "baselines.json", scores=tmp_path / "scores.parquet"
        )
    assert str(error.value) == message
    assert not (tmp_path / "baselines.json").exists()


def test_baselines_files_writes_the_datasets_baselines_at_the_fpr_targets_given(tmp_path):
    import json

    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    train, val = _capture(rng, 40), _capture(rng, 20)
    tests = {"counts": _capture(rng, 20), "unknown": _capture(rng, 20, oov=True)}
    save_graphs(train, tmp_path / "train.pt")
    save_graphs(val, tmp_path / "val.pt")
    save_graph_sets(tests, tmp_path / "test.pt")
    write_json({"num_ids": 4}, tmp_path / "metadata.json")
    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}
    metrics, scores = tmp_path / "out" / "baselines.json", tmp_path / "out" / "baseline_scores.parquet"
    document = baselines_files(
        **files, metadata=tmp_path / "metadata.json", metrics=metrics, scores=scores, dataset="ds",
        fpr_targets=(0.2,),
    )  # fmt: skip
    expected, table = evaluate_baselines(train, val, tests, num_ids=4, fpr_targets=(0.2,))
    assert json.loads(metrics.read_text()) == document == {"dataset": "ds", **expected}
    assert {key for key in document["test_pooled"][ID_RATE] if key.startswith("detection_rate")} == {
        "detection_rate_at_fpr_0.2"
    }
    pd.testing.assert_frame_equal(pd.read_parquet(scores), table)


def test_baselines_without_a_dataset_name_record_the_one_metadata_records(tmp_path):
    """The evaluate_baselines wrapper without params.dataset recorded "dataset", and summarize_evaluation then
    refused those baselines next to metrics of the dataset the graphs were built for."""
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(0)
    save_graphs(_capture(rng, 40), tmp_path / "train.pt")
    save_graphs(_capture(rng, 20), tmp_path / "val.pt")
    save_graph_sets({"counts": _capture(rng, 20)}, tmp_path / "test.pt")
    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}
    outputs = {"metrics": tmp_path / "out" / "baselines.json", "scores": tmp_path / "out" / "scores.parquet"}
    write_json({"num_ids": 4, "dataset": "can-ü"}, tmp_path / "metadata.json")
    assert baselines_files(**files, metadata=tmp_path / "metadata.json", **outputs)["dataset"] == "can-ü"
    assert json.loads(outputs["metrics"].read_text())["dataset"] == "can-ü"
    write_json({"num_ids": 4}, tmp_path / "metadata.json")  # metadata of an older release: no name
    assert baselines_files(**files, metadata=tmp_path / "metadata.json", **outputs)["dataset"] == "dataset"


@pytest.mark.parametrize("train", ["attack_free", "one_normal_window"])
def test_baselines_a_training_split_cannot_fit_are_not_applicable_and_the_others_computed(
    tmp_path, caplog, train
):
    """kd_gat trains on attack-free captures with a warning (a lab's own captures); the baselines rule then stopped,
    and with it the dataset's group job, although the unknown-ID rule needs no fitting and the rate rule only
    normal windows. What the training split cannot fit (the regression without attack windows, the rate rule with
    fewer than two normal ones) is now named not applicable with its reason (the log names train.pt); the others
    are computed as from any training split, and the summary reads the file, saying so."""
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    windows = _capture(rng, 40, attack=False) if train == "attack_free" else _capture(rng, 2)
    val, tests = _capture(rng, 20), {"dos": _capture(rng, 20)}
    save_graphs(windows, tmp_path / "train.pt")
    save_graphs(val, tmp_path / "val.pt")
    save_graph_sets(tests, tmp_path / "test.pt")
    write_json({"num_ids": 4, "dataset": "ds"}, tmp_path / "metadata.json")
    out = {"metrics": tmp_path / "out" / "baselines.json", "scores": tmp_path / "out" / "scores.parquet"}
    with caplog.at_level("WARNING"):
        document = baselines_files(
            **{name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")},
            metadata=tmp_path / "metadata.json", **out,
        )  # fmt: skip
    skipped, fitted = (ID_COUNTS, ID_RATE) if train == "attack_free" else (ID_RATE, ID_COUNTS)
    reason = (
        "every training window is normal: a logistic regression needs normal and attack windows"
        if train == "attack_free"
        else "1 normal training window: each ID's attack-free rate needs at least two"
    )
    assert json.loads(out["metrics"].read_text()) == document
    assert list(document["not_applicable"]) == [skipped]
    assert document["not_applicable"][skipped].startswith(reason)
    assert f"{tmp_path / 'train.pt'}: {skipped} not applicable: {reason}" in caplog.text
    for block in (document["val"], document["test"]["dos"], document["test_pooled"]):
        assert set(block) == {UNKNOWN_ID, fitted}
    assert skipped not in document["thresholds"] and fitted in document["thresholds"]
    # The others are what they are on their own: the unknown-ID rule's numbers need no training split at all.
    scores = pd.read_parquet(out["scores"])
    assert not [column for column in scores if column.startswith(skipped)]
    dos = tests["dos"]
    expected = binary_metrics(dos.y, *unknown_id_scores(dos, oov_index=3))
    assert document["test"]["dos"][UNKNOWN_ID] == expected
    # The summary reads it: no row of the baseline not applicable, the best baseline of the others, and the reason.
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    baselines = {
        **document,
        "test": {"dos": _baselines()["test"]["dos"]},
        "test_pooled": _baselines()["test_pooled"],
    }
    for block in (baselines["test"]["dos"], baselines["test_pooled"]):
        del block[skipped]
    written = _summarize(tmp_path, [metrics], [_written(tmp_path, "b.json", baselines)])
    table = pd.read_csv(written["scenarios.csv"])
    assert set(table["model"]) & set(BASELINES) == {UNKNOWN_ID, fitted}
    assert f"- ds: {skipped} ({document['not_applicable'][skipped]})" in written["summary.md"].read_text()


def test_a_baselines_json_lacking_a_baseline_it_does_not_say_is_not_applicable_is_refused(tmp_path):
    """Only a baseline named under not_applicable may be missing: another gap is a file edited by hand."""
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    baselines = _baselines()
    del baselines["test"]["dos"][ID_COUNTS]  # the same block as test_pooled's
    path = _written(tmp_path, "baselines.json", {**baselines, "not_applicable": {ID_RATE: "a reason"}})
    with pytest.raises(InputError, match=rf"{path}: baselines lack \['test_pooled.{ID_COUNTS}'\]"):
        _summarize(tmp_path, [metrics], [path])
    path = _written(tmp_path, "baselines.json", {**baselines, "not_applicable": {"baseline_x": "a reason"}})
    with pytest.raises(InputError, match=rf"{path}: not_applicable must map some of"):
        _summarize(tmp_path, [metrics], [path])


def test_baselines_json_is_written_last_so_a_job_that_fails_writing_leaves_none(tmp_path):
    """evaluate_baselines' meta.yaml: "Outputs are written atomically; baselines.json is written last": a job that
    cannot write its window scores (here a directory stands where the file goes) leaves no baselines.json, so
    nothing takes it for finished; with the path free, both are written."""
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(5)
    save_graphs(_capture(rng, 40), tmp_path / "train.pt")
    save_graphs(_capture(rng, 20), tmp_path / "val.pt")
    save_graph_sets({"counts": _capture(rng, 20)}, tmp_path / "test.pt")
    write_json({"num_ids": 4}, tmp_path / "metadata.json")
    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}
    metrics, scores = tmp_path / "out" / "baselines.json", tmp_path / "out" / "baseline_scores.parquet"
    scores.mkdir(parents=True)
    run = dict(**files, metadata=tmp_path / "metadata.json", metrics=metrics, scores=scores, dataset="ds")
    with pytest.raises(OSError):
        baselines_files(**run)
    assert not metrics.exists()
    scores.rmdir()
    baselines_files(**run)
    assert metrics.is_file() and scores.is_file()


@pytest.mark.parametrize("mistake", ["smaller_vocabulary", "no_scenario"])
def test_baselines_files_name_the_file_of_another_vocabulary_or_without_test_scenarios(tmp_path, mistake):
    """Metadata of another preprocess run failed with 'a graph holds a CAN-ID index outside [0, 2)', naming no file;
    a test.pt without scenarios wrote a baselines.json without test results, refused only later by the summary."""
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    save_graphs(_capture(rng, 40), tmp_path / "train.pt")
    save_graphs(_capture(rng, 20), tmp_path / "val.pt")
    save_graph_sets({} if mistake == "no_scenario" else {"dos": _capture(rng, 20)}, tmp_path / "test.pt")
    write_json({"num_ids": 2 if mistake == "smaller_vocabulary" else 4}, tmp_path / "metadata.json")
    message = (
        rf"{tmp_path / 'train.pt'}: a graph holds CAN-ID index 2, outside the 2 of {tmp_path / 'metadata.json'}"
        if mistake == "smaller_vocabulary"
        else rf"{tmp_path / 'test.pt'}: holds no test scenario"
    )
    with pytest.raises(ValueError, match=message):
        baselines_files(
            **{name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}, metadata=tmp_path / "metadata.json",
            metrics=tmp_path / "out" / "baselines.json", scores=tmp_path / "out" / "scores.parquet", dataset="ds",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_baselines_refuse_a_test_file_of_another_preprocess_run_of_as_many_ids_naming_it(tmp_path):
    """The baselines rule compared test.pt with metadata.json's num_ids only: the test graphs of another preprocess
    run of as many CAN IDs (the same index meaning another ID) were scored, although each file records its run's
    vocabulary digest and `kdgat baselines --data` refuses them (README)."""
    from kdgat.graph_store import save_graph_sets, save_graphs

    ours, theirs = "a" * 64, "b" * 64
    rng = np.random.default_rng(3)
    save_graphs(_capture(rng, 40), tmp_path / "train.pt", vocabulary=ours)
    save_graphs(_capture(rng, 20), tmp_path / "val.pt", vocabulary=ours)
    save_graph_sets({"dos": _capture(rng, 20)}, tmp_path / "test.pt", vocabulary=theirs)
    write_json({"num_ids": 4, "vocabulary": {"digest": ours}}, tmp_path / "metadata.json")
    run = dict(
        **{name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}, metadata=tmp_path / "metadata.json",
        metrics=tmp_path / "out" / "baselines.json", scores=tmp_path / "out" / "scores.parquet", dataset="ds",
    )  # fmt: skip
    with pytest.raises(
        ValueError,
        match=rf"{re.escape(str(tmp_path / 'test.pt'))} \(test\) and .* are of different preprocess runs",
    ):
        baselines_files(**run)
    assert not (tmp_path / "out").exists()
    save_graph_sets({"dos": _capture(rng, 20)}, tmp_path / "test.pt", vocabulary=ours)
    assert baselines_files(**run)["test"]["dos"][ID_RATE]["n"] == 20


@pytest.mark.parametrize("mistake", ["swapped", "val_as_train", "train_as_val", "older_files"])
def test_baselines_refuse_train_and_val_files_given_in_each_others_place_naming_both(tmp_path, mistake):
    """evaluate_baselines with train.pt and val.pt swapped ran: the regression was fitted on the validation windows
    and its threshold chosen on the training ones, unsaid, since graph files did not record their split. Preprocess
    now records it; a swap is refused naming both files, a file given as another split naming it. Files that record
    no split (written before) are read as before."""
    from kdgat.graph_store import graph_split, save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    older = mistake == "older_files"
    splits = {"train": _capture(rng, 40), "val": _capture(rng, 20)}
    for name, graphs in splits.items():
        save_graphs(graphs, tmp_path / f"{name}.pt", split=None if older else name)
    save_graph_sets({"dos": _capture(rng, 20)}, tmp_path / "test.pt", split=None if older else "test")
    assert graph_split(tmp_path / "val.pt") == (None if older else "val")
    write_json({"num_ids": 4}, tmp_path / "metadata.json")
    train, val = tmp_path / "train.pt", tmp_path / "val.pt"
    given = {
        "swapped": {"train": val, "val": train},
        "val_as_train": {"train": val, "val": val},
        "train_as_val": {"train": train, "val": train},
        "older_files": {"train": val, "val": train},
    }[mistake]
    run = dict(
        **given, test=tmp_path / "test.pt", metadata=tmp_path / "metadata.json",
        metrics=tmp_path / "out" / "baselines.json", scores=tmp_path / "out" / "scores.parquet",
    )  # fmt: skip
    if older:  # nothing to check: scored as before
        assert baselines_files(**run)["test"]["dos"][ID_RATE]["n"] == 20
        return
    message = {
        "swapped": f"{val} and {train} are swapped: {val} holds the val split and is given as train, {train} holds "
        "the train split and is given as val",
        "val_as_train": f"{val}: given as the train split, but it holds the val split",
        "train_as_val": f"{train}: given as the val split, but it holds the train split",
    }[mistake]
    with pytest.raises(InputError, match=re.escape(message)):
        baselines_files(**run)
    assert not (tmp_path / "out").exists()


def test_scenario_table_refuses_baselines_without_the_scenario(documents):
    baselines = _baselines()
    baselines["test"] = {"fuzzy": baselines["test"]["dos"]}
    with pytest.raises(ValueError, match="baselines of ds lack test scenario 'dos'"):
        scenario_table(documents, [baselines])


# -- intervals per scenario, margins, the fusion against its inputs -------------------------------------------------
def _t_half(values):
    values = np.asarray(values, dtype=float)
    return t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))


def test_a_scenario_table_without_rows_summarises_to_no_rows_with_every_column(documents):
    """A scenario_metrics.csv holding only its header (no evaluation finished yet) crashed the notebook's
    scenario_summary with KeyError 'dataset' (a merge of two frames without columns); it gives no rows, with the
    columns of a full summary."""
    full = scenario_summary(scenario_table(documents, [_baselines()]))
    empty = scenario_summary(scenario_table(documents, [_baselines()]).iloc[0:0])
    assert empty.empty and list(empty.columns) == list(full.columns)


def test_scenario_summary_gives_each_cell_its_interval_over_seeds(documents):
    table = scenario_table(documents, [_baselines()])
    summary = scenario_summary(table).set_index(["variant", "scenario", "model"])
    for variant in ("teacher", "student"):
        per_seed = table[(table["variant"] == variant) & (table["model"] == "gat")].sort_values("seed")
        row = summary.loc[(variant, "dos", "gat")]
        assert row["f1_n"] == 3
        assert row["f1_mean"] == pytest.approx(per_seed["f1"].mean())
        assert row["roc_auc_mean"] == pytest.approx(per_seed["roc_auc"].mean())
        if per_seed["f1"].nunique() > 1:
            assert row["f1_half"] == pytest.approx(_t_half(per_seed["f1"]))
            assert (row["f1_low"], row["f1_high"]) == pytest.approx(
                (row["f1_mean"] - row["f1_half"], row["f1_mean"] + row["f1_half"])
            )
        # The margin is against the best baseline of the same seed and scenario (unknown-ID: F1 1 here).
        best = table[(table["seed"].isin(per_seed["seed"])) & table["model"].isin(BASELINES)]
        best = best.groupby("seed")["f1"].max().loc[per_seed["seed"]].to_numpy()
        assert row["margin_mean"] == pytest.approx((per_seed["f1"].to_numpy() - best).mean())
    # student's GAT: F1 1, 2/3, 1 over the seeds, so its interval is not degenerate.
    assert summary.loc[("student", "dos", "gat"), "f1_half"] > 0
    # Without baselines there is no margin (NaN), never a margin over 0.
    margins = with_margins(table[~table["model"].isin(BASELINES)])
    assert margins["margin"].isna().all() and margins["best_baseline_f1"].isna().all()


# Attack windows are 30..49: one input finds the first half of them, the other the second half.
FIRST_HALF = HALF
SECOND_HALF = np.r_[np.full(30, 0.1), np.full(10, 0.1), np.full(10, 0.9)]


def test_fusion_summary_measures_the_gain_over_the_better_input_per_seed():
    documents = [
        # each input finds a different half of the attacks; the fusion finds all but on seed 3
        _document("teacher", seed, FIRST_HALF, SECOND_HALF, PERFECT if seed != 3 else FIRST_HALF)
        for seed in (1, 2, 3)
    ] + [_document("student", seed, PERFECT, FIRST_HALF, PERFECT) for seed in (1, 2, 3)]
    table = scenario_table(documents)
    fusion = fusion_summary(table).set_index("variant")
    half_f1 = _metrics(LABELS, FIRST_HALF)["f1"]
    gains = [1.0 - half_f1, 1.0 - half_f1, 0.0]
    teacher = fusion.loc["teacher"]
    assert teacher["best_input_f1"] == pytest.approx(half_f1)
    assert teacher["gain"] == pytest.approx(np.mean(gains))
    assert (teacher["gain_low"], teacher["gain_high"]) == pytest.approx(
        (np.mean(gains) - _t_half(gains), np.mean(gains) + _t_half(gains))
    )
    # The student's fusion copies its better input: no gain, and a zero-width interval.
    assert fusion.loc["student", "gain"] == pytest.approx(0.0)
    assert fusion.loc["student", "gain_low"] == pytest.approx(0.0)
    markdown = summary_markdown(
        variant_summary(documents, pooled_table(documents)), fusion=fusion.reset_index()
    )
    beaten = int((fusion["gain_low"] > 0).sum())
    assert f"above both inputs (interval above 0) in {beaten} of 2" in markdown
    assert "within 0.005 of the better input or above it in 2" in markdown


def _floor_rows(f1_by_model, n=50, n_attack=20, scenario="dos", auc=0.9):
    """A scenario table with given per-seed F1 of each model."""
    rows = []
    for model, values in f1_by_model.items():
        for seed, f1 in enumerate(values, start=1):
            rows.append(
                {"dataset": "ds", "variant": "teacher", "seed": seed, "scenario": scenario, "model": model,
                 "f1": f1, "roc_auc": auc, "n": n, "n_attack": n_attack}
            )  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("deficit, passes", [(0.0, True), (0.5, True), (2.0, False)])
def test_fusion_floor_is_the_better_input_of_the_means_minus_the_tolerance(deficit, passes):
    # The VGAE is the better input on average; the floor uses means over seeds, not single seeds.
    gat, vgae = [0.80, 0.85, 0.90], [0.95, 0.90, 0.91]
    best = max(np.mean(gat), np.mean(vgae))
    fusion_mean = best - deficit * FUSION_TOLERANCE
    fusion = [fusion_mean + 0.02, fusion_mean - 0.02, fusion_mean]
    floors = floor_table(_floor_rows({"gat": gat, "vgae": vgae, "fusion": fusion}))
    row = floors[floors["check"] == "fusion_vs_inputs"].iloc[0]
    assert row["floor"] == pytest.approx(best - FUSION_TOLERANCE)
    assert row["value"] == pytest.approx(np.mean(fusion))
    assert row["passed"] == passes and row["seeds"] == 3


def test_a_fusion_that_picks_the_better_input_of_each_seed_holds_the_floor():
    gat, vgae = [0.9, 0.7, 0.9], [0.7, 0.9, 0.7]
    floors = floor_table(_floor_rows({"gat": gat, "vgae": vgae, "fusion": np.maximum(gat, vgae)}))
    assert floors.set_index(["model", "check"]).loc[("fusion", "fusion_vs_inputs"), "passed"]
    # The GAT is the better input on average (0.83 vs 0.77): a fusion that always copies the VGAE misses the floor.
    floors = floor_table(_floor_rows({"gat": gat, "vgae": vgae, "fusion": vgae}))
    assert not floors.set_index(["model", "check"]).loc[("fusion", "fusion_vs_inputs"), "passed"]


def test_an_f1_equal_to_flagging_every_window_is_not_above_chance():
    # Flagging every window scores exactly chance_f1(share); the floor demands more, not as much (an F1 computed
    # by a metric one ulp above chance_f1:
    # test_a_detector_that_flags_every_window_is_not_above_chance_whatever_the_rounding).
    chance = chance_f1(20 / 50)
    floors = floor_table(_floor_rows({"gat": [chance] * 3, "vgae": [chance + 0.01] * 3, "fusion": [0.9] * 3}))
    passed = floors[floors["check"] == "f1_above_chance"].set_index("model")["passed"]
    assert not passed["gat"] and passed["vgae"] and passed["fusion"]


@pytest.mark.parametrize("n, n_attack, seeds", [(10, 3, 1), (200, 6, 3), (50, 20, 3), (213, 50, 3)])
def test_a_detector_that_flags_every_window_is_not_above_chance_whatever_the_rounding(n, n_attack, seeds):
    # Its F1, 2·tp / (2·tp + fp) from binary_metrics, equals chance_f1(n_attack / n) but is computed another way,
    # and its mean over seeds another again: on 3 attacks in 10 windows (one seed), and on 6 in 200 (the mean of
    # 3 seeds), it came out one ulp above chance_f1, and a score-blind detector passed the floor.
    labels = np.r_[np.zeros(n - n_attack, dtype=int), np.ones(n_attack, dtype=int)]
    flag_all = binary_metrics(labels, np.ones(n), np.ones(n, dtype=int))["f1"]
    rows = _floor_rows(
        {"gat": [flag_all] * seeds, "vgae": [0.99] * seeds, "fusion": [0.99] * seeds}, n=n, n_attack=n_attack
    )
    passed = floor_table(rows).query("check == 'f1_above_chance'").set_index("model")["passed"]
    assert flag_all == pytest.approx(chance_f1(n_attack / n))
    assert not passed["gat"] and passed["vgae"] and passed["fusion"]


def test_the_floors_are_a_roc_auc_of_at_least_0_65_and_a_fusion_tolerance_of_0_005():
    """docs/science.md: ROC-AUC ≥ 0.65 (a mean of exactly 0.65 passes, one just below misses) and fusion F1 ≥ the
    better input's − 0.005."""
    assert (AUC_FLOOR, FUSION_TOLERANCE) == (0.65, 0.005)
    for auc, passes in ((0.65, True), (np.nextafter(0.65, 0.0), False)):
        floors = floor_table(_floor_rows({"gat": [0.9], "vgae": [0.9], "fusion": [0.9]}, auc=auc))
        passed = floors[floors["check"] == "roc_auc"].set_index("model")["passed"]
        assert passed.tolist() == [passes] * 3, (auc, passed)


@pytest.mark.parametrize("n_attack", [0, 50])
def test_scenarios_with_one_class_have_no_floor(n_attack):
    table = _floor_rows({"gat": [0.0] * 3, "vgae": [0.0] * 3, "fusion": [0.0] * 3}, n_attack=n_attack)
    assert floor_table(table).empty
    assert math.isnan(chance_f1(0.0))


def test_markdown_lists_every_missed_floor():
    table = pd.concat(
        [
            _floor_rows({"gat": [0.9] * 3, "vgae": [0.8] * 3, "fusion": [0.7] * 3}, scenario="dos"),
            _floor_rows({"gat": [0.9] * 3, "vgae": [0.8] * 3, "fusion": [0.9] * 3}, scenario="rpm", auc=0.55),
        ]
    )
    floors = floor_table(table)
    missed = floors[~floors["passed"]]
    assert set(map(tuple, missed[["scenario", "model", "check"]].to_numpy())) == {
        ("dos", "fusion", "fusion_vs_inputs"),
        *(("rpm", model, "roc_auc") for model in ("vgae", "gat", "fusion")),
    }
    variants = pd.DataFrame(columns=["seeds"])
    markdown = summary_markdown(variants, floors=floors)
    assert f"{len(floors) - len(missed)} of {len(floors)} checks pass" in markdown
    for _, r in missed.iterrows():
        assert f"| ds | teacher | {r['scenario']} | {r['model']} | {r['check']} |" in markdown
    # Each miss shows what was measured and the floor it fell below: the fusion's 0.7 against the GAT's 0.9
    # less the tolerance; rpm's ROC-AUC 0.55 against AUC_FLOOR.
    assert f"| dos | fusion | fusion_vs_inputs | 0.700 | {0.9 - FUSION_TOLERANCE:.3f} |" in markdown
    for model in ("vgae", "gat", "fusion"):
        assert f"| rpm | {model} | roc_auc | 0.550 | {AUC_FLOOR:.3f} |" in markdown
    passed = summary_markdown(variants, floors=floors[floors["passed"]])
    kept = len(floors) - len(missed)
    assert f"{kept} of {kept} checks pass" in passed
    assert "Every miss is a finding:\n\nnone.\n" in passed and "| check |" not in passed


# -- the report's tables, checked cell by cell on two scenarios ----------------------------------------------
# Finds a quarter of the attacks: F1 0.4, ROC-AUC 0.625 (a quarter above every normal, the rest tied).
QUARTER = np.r_[np.full(30, 0.1), np.full(5, 0.9), np.full(15, 0.1)]
ZERO = np.zeros(len(LABELS))  # never flags: F1 0


def _scenarios_document(seed, scores):
    """A teacher's metrics.json over the scenarios of ``scores`` ({scenario: {model: scores}}), and all of
    them pooled."""
    test = {name: {m: _metrics(LABELS, s) for m, s in models.items()} for name, models in scores.items()}
    pooled_labels = np.concatenate([LABELS] * len(scores))
    models = next(iter(scores.values()))
    pooled = {m: _metrics(pooled_labels, np.concatenate([s[m] for s in scores.values()])) for m in models}
    return _document("teacher", seed, PERFECT, PERFECT, PERFECT) | {"test": test, "test_pooled": pooled}


# Per seed 1, 2, 3. The GAT's F1: dos 1, 2/3, 1; rpm 2/3, 0.4, 2/3 (its worst, mean 0.578). The best
# baseline: dos 1 (the unknown-ID rule), rpm 0.4 (the count regression), so the GAT's smallest margin is on
# dos (0, −1/3, 0), not on rpm.
GAT_BY_SEED = {
    1: {"dos": PERFECT, "rpm": HALF},
    2: {"dos": HALF, "rpm": QUARTER},
    3: {"dos": PERFECT, "rpm": HALF},
}
BASELINE_SCORES = {
    "dos": {UNKNOWN_ID: PERFECT, ID_COUNTS: HALF, ID_RATE: ZERO},
    "rpm": {UNKNOWN_ID: ZERO, ID_COUNTS: QUARTER, ID_RATE: ZERO},
}


@pytest.fixture
def two_scenarios():
    documents = [
        _scenarios_document(
            seed, {s: {"gat": gat[s], "vgae": HALF, "fusion": PERFECT if s == "dos" else HALF} for s in gat}
        )
        for seed, gat in GAT_BY_SEED.items()
    ]
    baselines = _scenarios_document(1, BASELINE_SCORES)
    baselines = {"dataset": "ds", "test": baselines["test"], "test_pooled": baselines["test_pooled"]}
    return documents, baselines


def test_every_model_table_shows_worst_scenario_and_smallest_margin_with_intervals(two_scenarios):
    documents, baselines = two_scenarios
    scenarios, pooled = scenario_table(documents, [baselines]), pooled_table(documents, [baselines])
    models = model_summary(scenarios, pooled)
    gat = models.set_index(["variant", "model"]).loc[("teacher", "gat")]
    assert gat["worst_scenario"] == "rpm" and gat["smallest_margin_scenario"] == "dos"
    rpm_f1, dos_margins = [2 / 3, 0.4, 2 / 3], [0.0, -1 / 3, 0.0]
    assert (gat["worst_f1_mean"], gat["worst_f1_half"]) == pytest.approx((np.mean(rpm_f1), _t_half(rpm_f1)))
    expected = (np.mean(dos_margins), _t_half(dos_margins))
    assert (gat["smallest_margin_mean"], gat["smallest_margin_half"]) == pytest.approx(expected)
    markdown = summary_markdown(variant_summary(documents, pooled), models=models)
    section = markdown.split("## Every model against the trivial baselines")[1]
    # The pooled columns, recomputed from the scores of the two scenarios one after the other.
    pooled_labels = np.r_[LABELS, LABELS]
    gat_pooled = [_metrics(pooled_labels, np.r_[g["dos"], g["rpm"]]) for g in GAT_BY_SEED.values()]
    best_baseline = max(
        _metrics(pooled_labels, np.r_[BASELINE_SCORES["dos"][m], BASELINE_SCORES["rpm"][m]])["f1"]
        for m in BASELINES
    )
    f1, auc = (interval([m[key] for m in gat_pooled]) for key in ("f1", "roc_auc"))
    margin = interval([m["f1"] - best_baseline for m in gat_pooled])
    row = (
        f"| ds | teacher | gat | {f1['mean']:.3f} ± {f1['half']:.3f} | {auc['mean']:.3f} ± {auc['half']:.3f} "
        f"| rpm (0.578 ± 0.382) | {margin['mean']:.3f} ± {margin['half']:.3f} | -0.111 ± 0.478 (dos) |"
    )
    assert row in section
    # The baselines have no seed: their worst scenario carries a zero-width interval.
    assert f"| ds | teacher | {ID_COUNTS} |" in section and "rpm (0.400 ± 0.000)" in section


def test_report_gives_each_scenarios_roc_auc_over_seeds(two_scenarios):
    documents, baselines = two_scenarios
    scenarios = scenario_summary(scenario_table(documents, [baselines]))
    variants = variant_summary(documents, pooled_table(documents, [baselines]))
    section = summary_markdown(variants, scenarios=scenarios).split("## ROC-AUC per test scenario")[1]
    # The GAT ranks rpm with ROC-AUC 0.75, 0.625, 0.75 (half, a quarter, half of the attacks above normals).
    half = _t_half([0.75, 0.625, 0.75])
    assert f"| ds | rpm | gat | {np.mean([0.75, 0.625, 0.75]):.3f} ± {half:.3f} |" in section
    assert "| ds | rpm | gat | 0.708 ± 0.179 |" in section
    assert "| ds | dos | gat | 0.917 ± 0.359 |" in section  # 1, 0.75, 1
    assert "| ds | rpm | vgae | 0.750 ± 0.000 |" in section
    assert "| ds | dos | fusion | 1.000 ± 0.000 |" in section
    assert f"| ds | rpm | {ID_COUNTS} | 0.625 ± 0.000 |" in section
    assert f"| ds | dos | {UNKNOWN_ID} | 1.000 ± 0.000 |" in section


def test_the_roc_auc_table_leaves_out_the_fixed_alpha_fusions_and_the_f1_table_keeps_them(two_scenarios):
    documents, baselines = two_scenarios
    scenarios = scenario_summary(scenario_table(documents, [baselines]))
    gat = scenarios[scenarios["model"] == "gat"]
    scenarios = pd.concat([scenarios, *(gat.assign(model=model) for model in FIXED_ALPHA_MODELS)])
    markdown = summary_markdown(
        variant_summary(documents, pooled_table(documents, [baselines])), scenarios=scenarios
    )
    f1, roc_auc = markdown.split("## F1 per test scenario")[1].split("## ROC-AUC per test scenario")
    for model in FIXED_ALPHA_MODELS:
        assert f"| ds | dos | {model} |" in f1 and f"| {model} |" not in roc_auc
    assert "| ds | dos | gat |" in roc_auc and f"| ds | dos | {UNKNOWN_ID} |" in roc_auc


def test_the_teacher_vs_students_table_shows_each_models_f1_its_size_and_latency():
    def row(variant, seeds, total, f1s, halves, latency):
        models = ("vgae", "gat", "fusion")
        return {"dataset": "ds", "variant": variant, "seeds": seeds, "params_total": total,
                "latency_ms_fusion": latency, "f1_best_baseline": 0.5,
                **{f"f1_{m}": f for m, f in zip(models, f1s, strict=True)},
                **{f"f1_{m}_ci": h for m, h in zip(models, halves, strict=True)}}  # fmt: skip

    variants = summary_table(
        [
            row("teacher", 3, 12_000, (0.61, 0.72, 0.83), (0.01, 0.02, 0.03), 1.5),
            row("student", 2, 3_000, (0.64, 0.75, 0.86), (0.04, 0.05, 0.06), 0.25),
        ]
    )
    markdown = summary_markdown(variants)
    assert markdown.startswith("Test metrics over 2, 3 seed(s) per variant")
    section = markdown.split("## Teacher vs students")[1]
    assert (
        "| ds | teacher | 3 | 12,000 | 100.0% | 0.610 ± 0.010 | 0.720 ± 0.020 | 0.830 ± 0.030 | 0.500 | 1.50 |"
        in section
    )
    # the student has a quarter of the teacher's parameters
    assert (
        "| ds | student | 2 | 3,000 | 25.0% | 0.640 ± 0.040 | 0.750 ± 0.050 | 0.860 ± 0.060 | 0.500 | 0.25 |"
        in section
    )


def test_the_fusion_section_compares_the_cells_the_fusion_floor_checks_not_an_attack_free_scenario():
    """An attack-free scenario (F1 0 after one false alarm, null without one) used to be a fusion cell
    "within the tolerance of its better input" when every model raised an alarm, and no cell at all when none
    did, so the section's count "against the means" differed from the fusion_vs_inputs floor it names."""
    normal = np.zeros(20)
    documents = []
    for seed, scores in ((1, np.r_[0.9, np.zeros(19)]), (2, normal), (3, normal)):
        document = _document("teacher", seed, PERFECT, HALF, HALF)
        document["test"]["clean"] = {m: _metrics(normal, scores) for m in ("gat", "vgae", "fusion")}
        documents.append(document)
    table = scenario_table(documents)
    fusion, floors = fusion_summary(table), floor_table(table)
    checked = floors[floors["check"] == "fusion_vs_inputs"]
    assert fusion["scenario"].tolist() == checked["scenario"].tolist() == ["dos"]
    text = summary_markdown(variant_summary(documents, pooled_table(documents)), fusion=fusion, floors=floors)
    assert "The fusion is within 0.005 of it or above it in 0 of 1 cells." in text
    assert "above it in 0.\n" in text and "| ds | teacher | clean |" not in text


def test_fusion_section_counts_both_comparisons_and_says_why_they_differ():
    # The better input changes with the seed: per seed the fusion (a copy of the GAT) loses 0.2 on seed 2, but
    # its mean equals the better of the two means (the GAT's 0.833), so it holds the floor.
    gat, vgae = [0.9, 0.7, 0.9], [0.7, 0.9, 0.7]
    table = _floor_rows({"gat": gat, "vgae": vgae, "fusion": gat})
    fusion = fusion_summary(table)
    row = fusion.iloc[0]
    assert (row["best_input_f1"], row["gain"]) == pytest.approx((0.9, -0.2 / 3))
    assert (row["better_of_means_f1"], row["margin_of_means"]) == pytest.approx((2.5 / 3, 0.0))
    floors = floor_table(table)
    assert floors.set_index("check").loc["fusion_vs_inputs", "passed"]
    markdown = summary_markdown(pd.DataFrame(columns=["seeds"]), fusion=fusion, floors=floors)
    section = markdown.split("## Does the fusion earn its place?")[1].split("## Engineering floors")[0]
    assert "within 0.005 of the better input or above it in 0." in section
    assert "The fusion is within 0.005 of it or above it in 1 of 1 cells." in section
    assert "the mean of each seed's better input is then above the better of the two means" in section
    gains = [0.0, -0.2, 0.0]
    low, high = np.mean(gains) - _t_half(gains), np.mean(gains) + _t_half(gains)
    interval_text = f"-0.067 [{low:+.3f}, {high:+.3f}]"
    assert f"| ds | teacher | dos | 0.833 | 0.900 | {interval_text} | 0.833 | +0.000 |" in section


def test_the_fusion_section_counts_a_small_loss_within_the_tolerance_as_not_worse():
    better = [0.9] * 3
    table = pd.concat(
        [
            _floor_rows({"gat": better, "vgae": [0.7] * 3, "fusion": [0.9 - FUSION_TOLERANCE / 2] * 3}),
            _floor_rows(
                {"gat": better, "vgae": [0.7] * 3, "fusion": [0.9 - 2 * FUSION_TOLERANCE] * 3}, scenario="rpm"
            ),
        ]
    )
    section = summary_markdown(pd.DataFrame(columns=["seeds"]), fusion=fusion_summary(table))
    assert "above both inputs (interval above 0) in 0 of 2" in section
    assert f"within {FUSION_TOLERANCE} of the better input or above it in 1.\n" in section
    assert f"The fusion is within {FUSION_TOLERANCE} of it or above it in 1 of 2 cells." in section


def test_a_fusion_exactly_the_tolerance_below_its_better_input_holds_the_floor_in_both_sections():
    """The fusion section's count against the means is the floor's: fusion F1 ≥ the better of the inputs' means
    − FUSION_TOLERANCE, so a fusion exactly the tolerance below it holds the floor and is counted in both, the
    per-seed count too (its gain, 0.895 - 0.9 in floats, is -0.0050000000000000044)."""
    table = _floor_rows({"gat": [0.9], "vgae": [0.7], "fusion": [0.9 - FUSION_TOLERANCE]})
    floors = floor_table(table)
    assert floors.set_index("check").loc["fusion_vs_inputs", "passed"]
    fusion = fusion_summary(table)
    assert fusion["gain"].iloc[0] < -FUSION_TOLERANCE  # the rounding the counts must not see
    markdown = summary_markdown(pd.DataFrame(columns=["seeds"]), fusion=fusion, floors=floors)
    assert f"The fusion is within {FUSION_TOLERANCE} of it or above it in 1 of 1 cells." in markdown
    assert f"within {FUSION_TOLERANCE} of the better input or above it in 1.\n" in markdown


def test_a_fusion_exactly_the_tolerance_below_its_better_input_on_every_seed_is_counted_as_not_worse():
    """The per-seed count is of cells with gain ≥ −FUSION_TOLERANCE: a fusion that loses exactly the tolerance
    (F1 0 against 0.005, exact in binary subtraction) is within it."""
    table = _floor_rows({"gat": [FUSION_TOLERANCE] * 2, "vgae": [0.0] * 2, "fusion": [0.0] * 2})
    fusion = fusion_summary(table)
    assert fusion["gain"].tolist() == [-FUSION_TOLERANCE]
    section = summary_markdown(pd.DataFrame(columns=["seeds"]), fusion=fusion)
    assert f"within {FUSION_TOLERANCE} of the better input or above it in 1.\n" in section


def test_the_per_scenario_tables_put_the_variants_in_the_chains_order_whatever_order_the_rows_come_in():
    """One column per variant, teacher, student_kd, student (kdgat.chain.VARIANTS), even when the metrics files,
    and so the rows, come student first."""
    scenarios = pd.DataFrame(
        [
            {"dataset": "ds", "scenario": "dos", "model": "gat", "variant": variant, "f1_mean": f1, "f1_half": 0.01,
             "roc_auc_mean": f1, "roc_auc_half": 0.01}
            for variant, f1 in (("student", 0.7), ("student_kd", 0.8), ("teacher", 0.9))
        ]
    )  # fmt: skip
    markdown = summary_markdown(pd.DataFrame(columns=["seeds"]), scenarios=scenarios)
    f1 = markdown.split("## F1 per test scenario")[1].split("## ROC-AUC per test scenario")[0]
    assert "| dataset | scenario | model | teacher | student_kd | student |" in f1
    assert "| ds | dos | gat | 0.900 ± 0.010 | 0.800 ± 0.010 | 0.700 ± 0.010 |" in f1


def test_markdown_tables_right_align_the_columns_of_numbers_only():
    """markdown_table: a column whose every cell is a number, an interval or n/a is right-aligned ("---:"); a
    column with any text stays left-aligned."""
    table = markdown_table(
        ["scenario", "F1", "share", "margin", "seeds", "verdict"],
        [
            ["dos", "0.900 ± 0.010", "25.0%", "+0.050 [+0.010, +0.090]", "3", "better"],
            ["rpm", "n/a", "n/a", "-0.020 [n/a]", "1", "0.5"],
        ],
    )
    assert table.splitlines()[1] == "|---|---:|---:|---:|---:|---|"


@pytest.mark.parametrize("seeds, named", [((1, 2, 3), "seeds 1, 2, 3"), ((2,), "seed 2")])
def test_the_summary_names_the_seeds_its_tables_are_over(tmp_path, seeds, named):
    metrics = []
    for seed in seeds:
        for variant in ("teacher", "student"):
            path = tmp_path / f"{seed}_{variant}.json"
            write_json(_document(variant, seed, PERFECT, HALF, PERFECT), path)
            metrics.append(path)
    outputs = _summarize(tmp_path, metrics)
    assert outputs["summary.md"].read_text().startswith(f"# ds evaluation summary over {named}\n")
    assert f"ds teacher vs students, {named}" in outputs["size.svg"].read_text()


def _with_attack_free_scenario(document, alarms=1):
    """``document`` with a test scenario ``clean`` of normal windows only, where every model raises ``alarms``
    false alarms: F1 0 (scikit-learn's) after one, a count of false alarms rather than of detection, and null
    without one."""
    labels = np.zeros(50, dtype=int)
    scores = np.r_[np.full(alarms, 0.9), np.full(50 - alarms, 0.1)]
    block = {
        name: binary_metrics(labels, scores, (scores > 0.5).astype(int)) for name in document["test"]["dos"]
    }
    return {**document, "test": {**document["test"], "clean": block}}


def test_a_scenario_without_attack_windows_is_no_models_worst_scenario(documents):
    documents = [_with_attack_free_scenario(d) for d in documents]
    baselines = _with_attack_free_scenario(_baselines())
    per_scenario = scenario_table(documents, [baselines])
    clean = per_scenario[per_scenario["scenario"] == "clean"]
    # metrics.json's F1 there is 0 (one false alarm); the table leaves it out and says why
    assert clean["attack_free"].all() and clean["f1"].isna().all()
    models = model_summary(per_scenario, pooled_table(documents, [baselines]))
    assert set(models["worst_scenario"]) == {"dos"}
    assert set(models["smallest_margin_scenario"]) == {"dos"}
    # Without any scenario with attacks there is no worst one (and no error).
    only_clean = per_scenario[per_scenario["scenario"] == "clean"]
    models = model_summary(only_clean, pooled_table(documents, [baselines]))
    assert models["worst_scenario"].isna().all() and len(models) == 3 * 6


def test_without_baselines_no_scenario_is_named_as_the_one_with_the_smallest_margin(documents):
    """Without baselines no scenario has a margin, but model_summary named the first one as the scenario with the
    smallest margin ("n/a (dos)" in summary.md, as if dos had one); with baselines it names the smallest."""
    two = [{**d, "test": {**d["test"], "fuzzy": d["test"]["dos"]}} for d in documents]
    alone = model_summary(scenario_table(two), pooled_table(two))
    assert alone["smallest_margin_scenario"].isna().all() and alone["smallest_margin_mean"].isna().all()
    assert set(alone["worst_scenario"]) == {"dos"}  # F1 has a lowest: the first of equal ones
    markdown = summary_markdown(variant_summary(two, pooled_table(two)), models=alone)
    assert "| n/a (n/a) |" in markdown and "n/a (dos)" not in markdown
    baselines = _baselines()
    baselines["test"] = {"dos": baselines["test"]["dos"], "fuzzy": baselines["test"]["dos"]}
    compared = model_summary(scenario_table(two, [baselines]), pooled_table(two, [baselines]))
    assert (
        set(compared["smallest_margin_scenario"]) == {"dos"}
        and compared["smallest_margin_mean"].notna().all()
    )


def test_an_attack_free_scenario_shows_its_false_alarm_rate_over_every_seed_not_an_f1_over_some(documents):
    """F1 on a scenario without attack windows is 0 after one false alarm and undefined without one, so its mean
    over seeds was 0 over the seeds that raised an alarm ("0.000 ± n/a" from one of three seeds here). The
    summary leaves that F1 (and its margin) out and gives the false-alarm rate (1 − specificity) over every seed;
    the scenarios with attacks keep every figure."""
    alarms = {1: 2, 2: 0, 3: 0}
    with_clean = [_with_attack_free_scenario(d, alarms[d["seed"]]) for d in documents]
    baselines = _with_attack_free_scenario(_baselines())
    table = scenario_table(with_clean, [baselines])
    clean_rows = table[table["scenario"] == "clean"]
    chain_rows = clean_rows[~clean_rows["model"].isin(BASELINES)]
    # metrics.json's F1 was 0 on seed 1 and null on the others (the trap); scenario_metrics.csv leaves it out
    assert all(d["test"]["clean"]["gat"]["f1"] == 0 for d in with_clean if d["seed"] == 1)
    assert chain_rows["f1"].isna().all() and chain_rows["attack_free"].all()
    summary = scenario_summary(table).set_index(["variant", "scenario", "model"])

    clean = summary.xs("clean", level="scenario")
    assert clean["attack_free"].all() and (clean["f1_n"] == 0).all()
    assert clean["f1_mean"].isna().all() and clean["margin_mean"].isna().all()
    for (variant, model), group in clean_rows.groupby(["variant", "model"]):
        expected = interval(1 - group["specificity"])
        assert expected["n"] == 3
        assert clean.loc[(variant, model), "false_alarm_rate_n"] == 3
        assert clean.loc[(variant, model), "false_alarm_rate_mean"] == pytest.approx(expected["mean"])
        assert clean.loc[(variant, model), "false_alarm_rate_half"] == pytest.approx(
            expected["half"], nan_ok=True
        )

    alone = scenario_summary(scenario_table(documents, [_baselines()])).set_index(
        ["variant", "scenario", "model"]
    )
    dos = summary.xs("dos", level="scenario", drop_level=False)
    assert not dos["attack_free"].any()
    pd.testing.assert_frame_equal(dos[alone.columns], alone)

    markdown = summary_markdown(
        variant_summary(with_clean, pooled_table(with_clean)), scenarios=summary.reset_index()
    )
    f1 = markdown.split("## F1 per test scenario")[1].split("## ROC-AUC per test scenario")[0]
    teacher_gat = clean.loc[("teacher", "gat")]
    shown = f"FPR {teacher_gat['false_alarm_rate_mean']:.3f} ± {teacher_gat['false_alarm_rate_half']:.3f}"
    assert f"| ds | clean | gat | {shown} |" in f1
    assert "0.000 ± n/a" not in f1 and "false-alarm rate" in f1


def test_scenario_metrics_csv_rows_of_an_attack_free_scenario_give_the_false_alarm_rate_not_an_f1(tmp_path):
    """scenario_metrics.csv kept each seed's raw F1 on a scenario without attack windows: 0 after one false alarm,
    empty without one, so a mean over its rows (a reader's own summary, a spreadsheet) said 0 where F1 is
    undefined. Such a row now says what it measures: ``attack_free``, F1 empty and ``false_alarm_rate`` (the
    share of its windows flagged), the same as the summary's; rows with attack windows keep their F1."""
    alarms = {1: 2, 2: 0, 3: 5}
    metrics = [
        _written(
            tmp_path,
            f"m{seed}.json",
            _with_attack_free_scenario(_document("teacher", seed, PERFECT, HALF, HALF), n),
        )
        for seed, n in alarms.items()
    ]
    baselines = _written(tmp_path, "b.json", _with_attack_free_scenario(_baselines(), 3))
    written = pd.read_csv(_summarize(tmp_path, metrics, [baselines])["scenarios.csv"])
    assert list(written.columns[:7]) == ["dataset", "variant", "seed", "scenario", "model", "f1", "roc_auc"]
    clean, dos = written[written["scenario"] == "clean"], written[written["scenario"] == "dos"]
    assert len(clean) == 3 * 6 and clean["attack_free"].all() and clean["f1"].isna().all()
    chain = clean[~clean["model"].isin(BASELINES)]
    assert chain["false_alarm_rate"].tolist() == pytest.approx([alarms[seed] / 50 for seed in chain["seed"]])
    assert clean.loc[clean["model"].isin(BASELINES), "false_alarm_rate"].tolist() == pytest.approx(
        [3 / 50] * 9
    )
    assert not dos["attack_free"].any() and dos["f1"].notna().all()
    expected = binary_metrics(LABELS, HALF, (HALF > 0.5).astype(int))
    assert dos.loc[dos["model"] == "fusion", "f1"].tolist() == pytest.approx([expected["f1"]] * 3)
    assert dos["false_alarm_rate"].tolist() == pytest.approx((1 - dos["specificity"]).tolist())
    # The summary of the table as written reads the same figures.
    summary = scenario_summary(written).set_index(["scenario", "model"]).loc[("clean", "gat")]
    assert summary["f1_n"] == 0 and summary["false_alarm_rate_mean"] == pytest.approx(7 / 150)


@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        ([0.05, -0.01, 0.03], "no measurable difference"),  # mean > 0, interval contains 0
        ([-0.05, 0.01, -0.03], "no measurable difference"),  # mean < 0, interval contains 0
        ([0.05, 0.04, 0.06], "better"),
        ([-0.05, -0.04, -0.06], "worse"),
        ([float("nan"), 0.02], "one seed"),
        ([float("nan")], "no seed with a finite difference"),
    ],
)
def test_the_verdict_follows_the_interval_not_the_mean(differences, expected):
    assert verdict(interval(differences)).startswith(expected)


def _pooled(f1_by_variant):
    """A pooled table of the GAT only, rows in the order given (seed order differs between variants)."""
    rows = [
        {"dataset": "ds", "variant": variant, "seed": seed, "scenario": "pooled", "model": "gat", "f1": f1}
        for variant, per_seed in f1_by_variant.items()
        for seed, f1 in per_seed
    ]
    return pd.DataFrame(rows)


def test_distillation_pairs_the_variants_by_seed_and_compares_the_teacher_too():
    pooled = _pooled(
        {
            "teacher": [(2, 0.95), (1, 0.99), (3, 0.90)],
            "student_kd": [(1, 0.9), (2, 0.5), (3, 0.7), (4, 0.2)],  # seed 4 has no student: left out
            "student": [(3, 0.1), (1, 0.8), (2, 0.6)],
        }
    )
    kd = distillation_summary(pooled).set_index("compared")
    paired = interval([0.9 - 0.8, 0.5 - 0.6, 0.7 - 0.1])
    row = kd.loc["student_kd − student"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(paired["mean"])
    assert (row["low"], row["high"]) == pytest.approx((paired["low"], paired["high"]))
    teacher = interval([0.99 - 0.9, 0.95 - 0.5, 0.90 - 0.7])
    row = kd.loc["teacher − student_kd"]
    assert row["n"] == 3 and row["mean"] == pytest.approx(teacher["mean"])
    assert row["low"] == pytest.approx(teacher["low"]) and row["verdict"] == verdict(teacher)


def test_the_distillation_section_shows_each_interval_from_low_to_high_and_what_it_says():
    """An interval that contains 0 is no gain, whatever the sign of the mean; one above 0 is."""
    per_seed = {
        "teacher": [(1, 0.99), (2, 0.97), (3, 0.98)],
        "student_kd": [(1, 0.9), (2, 0.8), (3, 0.85)],
        "student": [(1, 0.85), (2, 0.6), (3, 0.9)],
    }
    kd = distillation_summary(_pooled(per_seed))
    markdown = summary_markdown(pd.DataFrame(columns=["seeds"]), distillation=kd)
    section = markdown.split("## Did distillation help?")[1]
    f1 = {variant: dict(values) for variant, values in per_seed.items()}
    for compared, first, second, claim in (
        ("student_kd − student", "student_kd", "student", "no measurable difference"),  # +0.05, +0.2, −0.05
        ("teacher − student_kd", "teacher", "student_kd", "better"),  # +0.09, +0.17, +0.13
    ):
        stats = interval([f1[first][seed] - f1[second][seed] for seed in (1, 2, 3)])
        assert stats["low"] < stats["high"]
        text = f"{stats['mean']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}]"
        assert f"| ds | gat | {compared} | {text} | 3 | {claim} (the interval" in section


def _summarize(folder, metrics, baselines=(), **histories):
    """summarize_files writing its four tables and charts into ``folder``; ``histories``: its training-curve
    arguments (histories, history_keys, curves). The outputs' paths by name."""
    outputs = {name: folder / name for name in ("summary.csv", "summary.md", "size.svg", "scenarios.csv")}
    summarize_files(
        metrics=metrics, baselines=baselines, csv=outputs["summary.csv"], markdown=outputs["summary.md"],
        chart=outputs["size.svg"], scenarios=outputs["scenarios.csv"], title="ds", **histories,
    )  # fmt: skip
    return outputs


def _written(tmp_path, name, document):
    write_json(document, tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("key", ["test_pooled", "speed", "parameters"])
def test_metrics_without_what_the_summary_reads_are_named_with_their_path(tmp_path, key):
    document = _document("teacher", 1, PERFECT, HALF, PERFECT)
    del document[key]
    path = _written(tmp_path, "metrics.json", document)
    with pytest.raises(ValueError, match=rf"{path}: metrics lack \[.*'{key}"):
        _summarize(tmp_path, [path])


@pytest.mark.parametrize("key", ["test_pooled", "dataset", ID_RATE])
def test_baselines_without_what_the_summary_reads_are_named_with_their_path(tmp_path, key):
    baselines = _baselines()
    if key == ID_RATE:
        del baselines["test_pooled"][key]  # a baselines.json of before that baseline existed
    else:
        del baselines[key]
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    path = _written(tmp_path, "baselines.json", baselines)
    with pytest.raises(ValueError, match=rf"{path}: baselines lack \[.*{key}"):
        _summarize(tmp_path, [metrics], [path])


def _edited(document, edit):
    """``document`` after one hand edit: ``(dotted key, value)``, the value ``...`` deleting the key."""
    document = json.loads(json.dumps(document))  # _document's blocks are one object: edit one of them only
    *parents, last = edit[0].split(".")
    block = document
    for part in parents:
        block = block[part]
    if edit[1] is ...:
        del block[last]
    else:
        block[last] = edit[1]
    return document


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("test.dos.gat.f1", ...), r"test\.dos\.gat lacks \['f1'\] \(a metrics file edited by hand\?\)"),
        (("test_pooled.fusion.n_attack", ...), r"test_pooled\.fusion lacks \['n_attack'\]"),
        (("test.dos.gat", None), r"test\.dos\.gat must be the model's metrics; found None"),
        (("test.dos.gat.f1", "0.9"), r"test\.dos\.gat holds \{'f1': '0\.9'\}; expected finite numbers"),
        (("test.dos.gat.f1", True), r"test\.dos\.gat holds \{'f1': True\}; expected finite numbers"),
        (("parameters.total", True), r"\{'parameters\.total': True\} must be numbers"),
        (("test", {}), r"the metrics' 'test' holds no test scenario"),
        (("parameters.total", ...), r"metrics lack \['parameters\.total'\]"),
        (("speed.fusion.latency_ms", "fast"), r"\{'speed\.fusion\.latency_ms': 'fast'\} must be numbers"),
        (("seed", "1"), r"seed '1' must be an integer \(the training seed\) or absent"),
        (("seed", True), r"seed True must be an integer \(the training seed\) or absent"),
        (
            ("variant", "teacher_big"),
            r"variant 'teacher_big' is not one of \['teacher', 'student_kd', 'student'\]",
        ),
    ],
)
def test_a_metrics_json_edited_by_hand_is_refused_naming_the_file_and_the_block(tmp_path, edit, message):
    """A dropped metric used to become NaN silently (one seed fewer in every interval); a null block, a quoted
    number, an empty test, a missing parameter count or a string seed a traceback naming no file; an unknown
    variant was left out of the chart."""
    path = _written(tmp_path, "metrics.json", _edited(_document("teacher", 1, PERFECT, HALF, PERFECT), edit))
    with pytest.raises(ValueError, match=rf"{path}: .*{message}"):
        _summarize(tmp_path, [path])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("test.dos.gat.f1", None),
            r"test\.dos\.gat has \['f1'\] null, but its 50 windows hold 20 attack windows",
        ),
        (
            ("test_pooled.fusion.roc_auc", None),
            r"test_pooled\.fusion has \['roc_auc'\] null, but its 50 windows",
        ),
        (("test.dos.vgae.specificity", None), r"\['specificity'\] null, .*specificity needs normal windows"),
        (("test.dos.gat.f1", math.nan), r"test\.dos\.gat holds \{'f1': nan\}; expected finite numbers"),
        (
            ("test.dos.gat.roc_auc", math.inf),
            r"test\.dos\.gat holds \{'roc_auc': inf\}; expected finite numbers",
        ),
        (
            ("test.dos.gat.n_attack", None),
            r"test\.dos\.gat has n 50 and n_attack None; expected window counts",
        ),
    ],
)
def test_a_seed_whose_defined_metric_is_null_or_nan_is_refused_not_dropped_from_its_interval(
    tmp_path, edit, message
):
    """F1, recall, specificity and ROC-AUC are always defined where their windows are (kdgat.evaluation.metrics):
    a seed holding null or NaN there anyway (a file edited by hand, or of another tool) dropped out of that
    interval silently, its figure over two seeds under the table's "3 seeds"."""
    paths = []
    for seed in (1, 2, 3):
        document = _document("teacher", seed, PERFECT, HALF, PERFECT)
        path = tmp_path / f"metrics_{seed}.json"
        path.write_text(
            json.dumps(_edited(document, edit) if seed == 2 else document)
        )  # NaN as json writes it
        paths.append(path)
    with pytest.raises(ValueError, match=rf"{paths[1]}: .*{message}"):
        _summarize(tmp_path, paths)


def test_a_null_metric_where_its_windows_are_absent_is_accepted(tmp_path):
    """A scenario without attack windows leaves F1 (when nothing is flagged), recall and ROC-AUC null: a fact the
    summary reports ("FPR", n/a), not a file to refuse."""
    labels = np.zeros(40)
    document = _document("teacher", 1, PERFECT, HALF, PERFECT)
    document["test"]["quiet"] = {m: binary_metrics(labels, np.full(40, 0.1), np.zeros(40)) for m in MODELS}
    assert document["test"]["quiet"]["gat"]["f1"] is None
    outputs = _summarize(tmp_path, [_written(tmp_path, "metrics.json", document)])
    assert "| ds | quiet | gat | FPR 0.000 ± n/a |" in outputs["summary.md"].read_text()


def test_a_baselines_json_edited_by_hand_is_refused_naming_the_file_and_the_block(tmp_path):
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    path = _written(tmp_path, "baselines.json", _edited(_baselines(), (f"test.dos.{ID_RATE}.f1", ...)))
    with pytest.raises(ValueError, match=rf"{path}: test\.dos\.{ID_RATE} lacks \['f1'\]"):
        _summarize(tmp_path, [metrics], [path])


@pytest.mark.parametrize("block", ["test_pooled", "test.dos"])
@pytest.mark.parametrize("model", ["vgae", "gat", "fusion"])
def test_a_metrics_json_without_a_chain_models_results_is_refused_naming_the_file_the_block_and_the_model(
    tmp_path, block, model
):
    """A seed whose metrics.json lacks one of the chain's models used to be left out of that model's figures
    silently: its F1 interval was over two seeds under a "3 seeds" heading, its fusion cell dropped."""
    paths = [
        _written(tmp_path, f"metrics_{seed}.json", _document("teacher", seed, PERFECT, HALF, PERFECT))
        for seed in (1, 2, 3)
    ]
    path = _written(
        tmp_path,
        "metrics_2.json",
        _edited(_document("teacher", 2, PERFECT, HALF, PERFECT), (f"{block}.{model}", ...)),
    )
    with pytest.raises(ValueError, match=rf"{path}: {re.escape(block)} lacks the results of \['{model}'\]"):
        _summarize(tmp_path, paths)


@pytest.mark.parametrize("block", ["test_pooled", "test.dos"])
def test_seeds_of_one_variant_holding_different_models_are_refused_naming_both_files_and_the_block(
    tmp_path, block
):
    """A fixed-alpha model (or any other beyond the chain's three) missing from one seed's metrics.json: its
    interval was silently over the other seeds, under the variant's count of seeds."""
    fixed = FIXED_ALPHA_MODELS[0]
    documents = [_document("teacher", seed, PERFECT, HALF, PERFECT) for seed in (1, 2, 3)]
    for document in documents:
        for where in (document["test_pooled"], document["test"]["dos"]):
            where[fixed] = where["gat"]
    paths = [
        _written(tmp_path, f"metrics_{seed}.json", d) for seed, d in zip((1, 2, 3), documents, strict=True)
    ]
    _summarize(tmp_path, paths)  # every seed holds it: summarised
    lacking = _written(tmp_path, "metrics_3.json", _edited(documents[2], (f"{block}.{fixed}", ...)))
    with pytest.raises(
        ValueError,
        match=rf"^{lacking} and {paths[0]} hold different models in {re.escape(block)} of ds/teacher ",
    ):
        _summarize(tmp_path, paths)
    other = _document("student", 1, PERFECT, HALF, PERFECT)  # another variant need not hold the same models
    _summarize(tmp_path, [*paths[:2], _written(tmp_path, "student.json", other)])


def test_a_baselines_json_without_a_baselines_results_in_a_scenario_is_refused_naming_the_file(tmp_path):
    """It used to stop the summary with a bare KeyError naming neither the file nor the block."""
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    path = _written(tmp_path, "baselines.json", _edited(_baselines(), (f"test.dos.{ID_RATE}", ...)))
    with pytest.raises(ValueError, match=rf"{path}: test\.dos lacks the results of \['{ID_RATE}'\]"):
        _summarize(tmp_path, [metrics], [path])


def test_evaluations_without_a_seed_are_summarised_as_one_seed_each_with_every_section(tmp_path):
    """evaluate_detector's seed is optional (its metrics.json then records none): the summary of such files used
    to stop with a pandas traceback in the distillation section, and the fusion section and the margins over the
    baselines were dropped where no seed could be grouped on."""
    paths = []
    for variant in ("teacher", "student_kd", "student"):
        document = _document(variant, 1, PERFECT, HALF, HALF)
        del document["seed"]
        paths.append(_written(tmp_path, f"{variant}.json", document))
    outputs = _summarize(tmp_path, paths, [_written(tmp_path, "baselines.json", _baselines())])
    text = outputs["summary.md"].read_text()
    assert "| ds | gat | student_kd − student | +0.000 [n/a] | 1 | one seed: no interval, no claim |" in text
    assert "| ds | teacher | dos | 0.667 | 1.000 | -0.333 [n/a] | 1.000 | -0.333 |" in text
    best = _metrics(LABELS, np.r_[np.full(30, 0.4), np.full(10, 0.6), np.full(10, 0.4)])["f1"]
    margin = 1.0 - max(1.0, best)  # the teacher's GAT against the best baseline (unknown ID: F1 1)
    assert (
        f"| ds | teacher | gat | 1.000 ± n/a | 1.000 ± n/a | dos (1.000 ± n/a) | {margin:.3f} ± n/a |" in text
    )
    floors = floor_table(pd.read_csv(outputs["scenarios.csv"]))
    assert set(floors["seeds"]) == {1}


def test_a_summary_of_no_metrics_is_refused_with_a_message(tmp_path):
    with pytest.raises(ValueError, match=r"no metrics\.json given"):
        _summarize(tmp_path, [])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("test.dos.fusion.n", 77), r"{b} and {a} are evaluations of dataset 'ds' on different test sets"),
        (("test.fuzzy", None), r"{b} and {a} are evaluations of dataset 'ds' on different test sets"),
    ],
)
def test_evaluations_of_one_dataset_on_different_test_sets_are_refused_naming_both(tmp_path, edit, message):
    """A test.pt rebuilt between two evaluations (another window count, another scenario) used to be summarised
    as seeds of one experiment: every interval mixed windows, and a scenario's interval had fewer seeds."""
    first = _written(tmp_path, "a.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    second = _document("teacher", 2, PERFECT, HALF, PERFECT)
    if edit[0] == "test.fuzzy":
        second["test"]["fuzzy"] = second["test"]["dos"]
    else:
        second = _edited(second, edit)
        for model in second["test"]["dos"].values():
            model["n"] = 77
    second = _written(tmp_path, "b.json", second)
    with pytest.raises(ValueError, match=message.format(a=first, b=second)):
        _summarize(tmp_path, [first, second])


def _stale(baselines):
    for model in baselines["test"]["dos"].values():
        model["n"] = 999
    return baselines


def _with_fuzzy(document):
    """``document`` with a second test scenario, fuzzy, of the same windows as dos."""
    document["test"]["fuzzy"] = copy.deepcopy(document["test"]["dos"])
    return document


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (lambda: [_baselines(), _baselines()], r"{1} and {0} are both baselines of dataset 'ds': give one"),
        (lambda: [{**_baselines(), "dataset": "other"}], r"{0}: baselines of dataset 'other', of which no metrics"),
        (lambda: [_stale(_baselines())], r"{0}: the baselines of dataset "
         r"'ds' were computed on another test set than .*a\.json .*'dos': \(999, 20\)"),
        (lambda: [_with_fuzzy(_baselines())], r"{0}: the baselines of dataset "
         r"'ds' were computed on another test set than .*a\.json .*'fuzzy': \(50, 20\)"),
    ],
)  # fmt: skip
def test_baselines_of_another_test_set_or_dataset_or_given_twice_are_refused_naming_the_file(
    tmp_path, given, message
):
    """A baselines.json of a rebuilt test.pt gave margins over other windows (or of another scenario the
    evaluations do not have); two of one dataset let the last one win; one of another dataset only was ignored,
    every margin n/a."""
    metrics = _written(tmp_path, "a.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    paths = [_written(tmp_path, f"baselines{i}.json", document) for i, document in enumerate(given())]
    with pytest.raises(ValueError, match=message.format(*paths)):
        _summarize(tmp_path, [metrics], paths)


def test_baselines_lacking_a_scenario_the_evaluations_have_are_refused_naming_the_file(tmp_path):
    """Baselines of a test.pt that lacked a scenario left that scenario's margins n/a without a word."""
    metrics = _written(tmp_path, "a.json", _with_fuzzy(_document("teacher", 1, PERFECT, HALF, PERFECT)))
    baselines = _written(tmp_path, "baselines.json", _baselines())
    with pytest.raises(
        ValueError, match=rf"{baselines}: the baselines of dataset 'ds' were computed on another"
    ):
        _summarize(tmp_path, [metrics], [baselines])


def test_baselines_given_for_some_evaluated_datasets_only_are_refused(tmp_path):
    documents = [
        _document("teacher", 1, PERFECT, HALF, PERFECT),
        _document("teacher", 1, PERFECT, HALF, PERFECT),
    ]
    documents[1]["dataset"] = "other"
    metrics = [_written(tmp_path, f"{i}.json", document) for i, document in enumerate(documents)]
    with pytest.raises(ValueError, match=r"no baselines\.json given for the evaluated datasets \['other'\]"):
        _summarize(tmp_path, metrics, [_written(tmp_path, "baselines.json", _baselines())])


def test_two_datasets_with_equal_scenario_names_keep_their_own_rows_and_baselines(tmp_path):
    documents, baselines = [], []
    for dataset, scores in (("a", PERFECT), ("b", HALF)):
        documents.append(
            _written(
                tmp_path,
                f"{dataset}.json",
                {**_document("teacher", 1, scores, scores, scores), "dataset": dataset},
            )
        )
        baselines.append(
            _written(tmp_path, f"baselines_{dataset}.json", {**_baselines(), "dataset": dataset})
        )
    table = pd.read_csv(_summarize(tmp_path, documents, baselines)["scenarios.csv"])
    fusion = table[table["model"] == "fusion"].set_index("dataset")["f1"]
    assert fusion.to_dict() == {"a": 1.0, "b": pytest.approx(2 / 3)}
    assert table.groupby(["dataset", "scenario"]).size().to_dict() == {("a", "dos"): 6, ("b", "dos"): 6}


def test_a_scenario_name_with_a_pipe_keeps_every_markdown_table_row_its_columns(tmp_path):
    """A "|" in a scenario name ended its cell and shifted the rest of the row (GitHub-flavoured Markdown)."""
    document = _document("teacher", 1, PERFECT, HALF, PERFECT)
    document["test"] = {"dos|fuzzy": document["test"]["dos"]}
    text = _summarize(tmp_path, [_written(tmp_path, "metrics.json", document)])["summary.md"].read_text()
    assert "dos\\|fuzzy" in text
    for table in re.findall(r"(?:^\|.*\|$\n?)+", text, flags=re.MULTILINE):
        columns = {len(re.findall(r"(?<!\\)\|", line)) for line in table.splitlines()}
        assert len(columns) == 1, table


def test_a_model_without_any_scenario_with_attacks_has_no_worst_scenario_written_as_n_a(documents):
    """Every scenario attack-free: the worst-scenario cells read 'n/a', not pandas' 'nan'."""
    clean = json.loads(json.dumps(documents))
    for document in clean:
        for metrics in document["test"]["dos"].values():
            metrics["n_attack"] = 0
    per_scenario, pooled = scenario_table(clean), pooled_table(clean)
    text = summary_markdown(variant_summary(clean, pooled), models=model_summary(per_scenario, pooled))
    assert "nan" not in text
    assert re.search(
        r"\| ds \| teacher \| gat \| [^|]+ \| [^|]+ \| n/a \(n/a\) \| [^|]+ \| n/a \(n/a\) \|", text
    )


def test_two_history_files_under_one_key_are_refused_before_anything_is_written(tmp_path):
    """history_keys repeating 'teacher/vgae' drew the second file's curves in the panel and dropped the first."""
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    first.write_text("epoch,loss\n1,0.5\n2,0.4\n")
    second.write_text("epoch,loss\n1,9.0\n2,8.0\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"history key 'teacher/vgae' names both {first} and {second}"):
        _summarize(
            out, [metrics], histories=[first, second], history_keys=["teacher/vgae", "teacher/vgae"],
            curves=out / "curves.svg",
        )  # fmt: skip
    assert not out.exists()


@pytest.mark.parametrize("key", ["teacher/fusion", "teachers/vgae", "teacher"])
def test_a_history_key_that_is_not_a_variant_and_a_stage_is_refused_before_anything_is_written(tmp_path, key):
    """summarize_files: each history key is '<variant>/<stage>' of the chain; a key of another stage had no panel,
    so its curves were dropped without a word."""
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    history = tmp_path / "history.csv"
    history.write_text("epoch,loss\n1,0.5\n2,0.4\n")
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"history key '{key}' must be '<variant>/<stage>'"):
        _summarize(out, [metrics], histories=[history], history_keys=[key], curves=out / "curves.svg")
    assert not out.exists()


@pytest.mark.parametrize("history", ["metrics.json", "broken.csv"])
def test_a_history_that_is_no_training_history_is_refused_before_anything_is_written(tmp_path, history):
    """A metrics.json given as a history (or a CSV that does not parse) was refused only after summary.csv,
    summary.md, the scenario table and the size chart were written: `kdgat summarize` left four of its five
    outputs, beside an older run's training_curves.svg, as if the summary had finished."""
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    (tmp_path / "broken.csv").write_text('epoch,note\n1,"unterminated\n')
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=rf"{tmp_path / history}: not a (readable )?training history"):
        _summarize(
            out,
            [metrics],
            histories=[tmp_path / history],
            history_keys=["teacher/vgae"],
            curves=out / "curves.svg",
        )
    assert not out.exists()


def test_training_curves_asked_for_without_a_history_are_refused_before_anything_is_written(tmp_path):
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    out = tmp_path / "out"
    with pytest.raises(
        ValueError,
        match=r"training curves were asked for \(output\.curves\) but no history\.csv was given \(input\.history\)",
    ):
        _summarize(out, [metrics], curves=out / "curves.svg")
    assert not out.exists()


def test_summarize_evaluation_with_input_history_and_no_output_curves_is_refused_naming_both(
    tmp_path, capsys
):
    """The summary reads the histories for the curves alone: a summarize_evaluation rule that gave input.history and
    no output.curves wrote its tables, and the histories were ignored without a word."""
    from testkit import wrapper_refusal

    history = tmp_path / "history.csv"
    history.write_text("epoch,train_loss\n1,0.5\n")
    outputs = {
        "csv": "summary.csv",
        "markdown": "summary.md",
        "scenarios": "scenarios.csv",
        "chart": "chart.svg",
    }
    metrics = _written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    inputs = {"metrics": metrics, "history": history}  # a summary the wrapper could write
    message = wrapper_refusal(
        "summarize_evaluation", tmp_path, capsys, inputs, {"history_keys": "teacher/vgae"}, outputs=outputs
    )
    assert message == (
        "1 history.csv file is given (input.history) but no file for the training curves they are drawn in "
        "(output.curves): declare output.curves, or leave input.history out"
    )


def test_seeds_of_one_variant_with_models_of_different_sizes_are_refused_naming_both(tmp_path):
    """A preset changed between seeds (a partial rerun): the summary reported the first seed's size and averaged
    the F1 of different models over 'seeds'."""
    first = _written(tmp_path, "a.json", _document("student", 1, PERFECT, HALF, PERFECT))
    bigger = _document("student", 2, PERFECT, HALF, PERFECT)
    bigger["parameters"] = {"vgae": 10, "gat": 20, "dqn": 3, "total": 33}
    second = _written(tmp_path, "b.json", bigger)
    with pytest.raises(ValueError, match=rf"{second} and {first} are ds/student models of different sizes"):
        _summarize(tmp_path, [first, second])


def test_one_seed_evaluated_twice_is_refused_naming_both_files(tmp_path):
    first = _written(tmp_path, "a.json", _document("teacher", 1, PERFECT, HALF, PERFECT))
    second = _written(tmp_path, "b.json", _document("teacher", 1, HALF, HALF, HALF))
    with pytest.raises(ValueError, match=rf"{second} and {first} are both ds/teacher seed 1"):
        _summarize(tmp_path, [first, second])


def test_one_seed_is_reported_without_an_interval_as_n_a(tmp_path):
    metrics = [
        _written(tmp_path, f"{v}.json", _document(v, 1, PERFECT, HALF, HALF))
        for v in ("student_kd", "student")
    ]
    text = _summarize(tmp_path, metrics)["summary.md"].read_text()
    assert "| ds | student_kd | 1 | 6 | n/a | 0.667 ± n/a | 1.000 ± n/a | 0.667 ± n/a | n/a |" in text
    assert "+0.000 [n/a]" in text and "one seed: no interval, no claim" in text


def test_an_id_that_never_varied_in_training_scores_a_one_message_change_as_two():
    """docs/evaluation.md: the id-rate score is the largest ``|count − mean| / (std + 0.5)`` over the window's IDs;
    half a message keeps an ID whose count never varied in training from scoring a one-message change as
    infinite: it scores 2."""
    normal, shifted = [0, 0, 1, 1, 2], [0, 0, 0, 1, 2]  # one message of ID 1 turned into ID 0
    train = _graphs(normal * 4 + [0], [0] * 21, num_ids=4)
    val = _graphs(normal + shifted + normal + shifted + [0], [0] * 5 + [1] * 5 + [0] * 5 + [1] * 5 + [0], 4)
    rule = IdRateBaseline(4).fit(train, val)
    assert rule.std.tolist() == [0.0] * 4 and rule.mean.tolist() == [2.0, 2.0, 1.0, 0.0]
    assert rule.scores(val).tolist() == pytest.approx([0.0, 2.0, 0.0, 2.0])


def test_scenario_metrics_csv_has_the_columns_docs_evaluation_md_lists(tmp_path):
    text = " ".join((REPO / "docs/evaluation.md").read_text().split())
    listed = re.search(
        r"`results/evaluation/scenario_metrics.csv` \| one row per [^|]*?model: `([^`]+)`", text
    )
    metrics = [_written(tmp_path, "metrics.json", _document("teacher", 1, PERFECT, HALF, PERFECT))]
    written = pd.read_csv(_summarize(tmp_path, metrics)["scenarios.csv"])
    assert len(written) > 0 and list(written.columns) == listed.group(1).split(", ")


@pytest.mark.parametrize(("empty", "argument"), [("train", "train"), ("val", "val"), ("dos", "tests['dos']")])
def test_evaluate_baselines_refuses_an_empty_split_as_an_input_error_naming_the_argument(empty, argument):
    """An empty training, validation or test split was a plain ValueError naming no argument (a direct caller's
    mistake read as a bug); an empty scenario was refused only after validation was assessed."""
    from kdgat.evaluation.metrics import EvaluationSettingsError

    rng = np.random.default_rng(5)
    splits = {"train": _capture(rng, 20), "val": _capture(rng, 10), "dos": _capture(rng, 10)}
    splits[empty] = GraphArrays.concat([])
    with pytest.raises(EvaluationSettingsError, match=re.escape(f"evaluate_baselines's {argument}")) as error:
        evaluate_baselines(splits["train"], splits["val"], {"dos": splits["dos"]}, num_ids=4)
    assert isinstance(error.value, InputError)


@pytest.mark.parametrize("empty", ["val", "dos"])
def test_baselines_files_refuses_an_empty_validation_split_or_scenario_naming_the_file(tmp_path, empty):
    """An empty val.pt (preprocess.val_fraction 0) or test scenario reached evaluate_baselines, whose refusal named
    neither the file nor the setting: the wrapper's one line said what was empty but not where."""
    from kdgat.files import FileContentError
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    splits = {"train": _capture(rng, 40), "val": _capture(rng, 20), "dos": _capture(rng, 20)}
    splits[empty] = GraphArrays.concat([])
    save_graphs(splits["train"], tmp_path / "train.pt")
    save_graphs(splits["val"], tmp_path / "val.pt")
    save_graph_sets({"dos": splits["dos"], "more": _capture(rng, 20)}, tmp_path / "test.pt")
    write_json({"num_ids": 4}, tmp_path / "metadata.json")
    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}
    message = (
        f"{files['val']}: holds no validation window; the baselines' thresholds are chosen on it, so "
        "preprocess.val_fraction must be > 0"
        if empty == "val"
        else f"{files['test']}: test scenario 'dos' holds no graph"
    )
    with pytest.raises(FileContentError, match=re.escape(message)):
        baselines_files(
            **files, metadata=tmp_path / "metadata.json", metrics=tmp_path / "out" / "baselines.json",
            scores=tmp_path / "out" / "scores.parquet", dataset="ds",
        )  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_the_summary_shows_the_hardware_the_latency_was_measured_on_and_reads_older_metrics(
    tmp_path, monkeypatch
):
    """The summary's latency said nothing of the machine that measured it: a teacher timed on an H100 and a student
    on a laptop CPU read as one comparison. A metrics.json older than its `hardware` record is still read."""
    import kdgat.evaluation.plots as plots

    metrics = []
    for variant, seed, hardware in (
        ("teacher", 1, "NVIDIA H100 80GB HBM3"),
        ("teacher", 2, "NVIDIA A100-SXM4-40GB"),
        ("student", 1, None),  # written before metrics.json recorded the hardware
    ):
        document = _document(variant, seed, PERFECT, HALF, PERFECT)
        if hardware:
            document |= {"hardware": hardware, "torch": "torch 2.13.0+cu126 CUDA 12.6"}
        metrics.append(_written(tmp_path, f"{variant}_{seed}.json", document))
    outputs = _summarize(tmp_path, metrics)
    table = pd.read_csv(outputs["summary.csv"]).set_index("variant")
    assert table.loc["teacher", "hardware"] == "NVIDIA A100-SXM4-40GB; NVIDIA H100 80GB HBM3"
    assert table.loc["student", "hardware"] == "not recorded"
    section = outputs["summary.md"].read_text().split("## Teacher vs students")[1].split("\n## ")[0]
    assert "| latency, batched path (ms/window) | latency measured on |" in section
    assert "| 1.00 | NVIDIA A100-SXM4-40GB; NVIDIA H100 80GB HBM3 |" in section
    assert "| 1.00 | not recorded |" in section
    titles = []
    monkeypatch.setattr(plots, "save_figure", lambda figure, path: titles.append(figure.axes[2].get_title()))
    one = pd.read_csv(outputs["summary.csv"]).assign(hardware="NVIDIA H100 80GB HBM3")
    plots.plot_size_f1(one, tmp_path / "one.svg")
    plots.plot_size_f1(pd.read_csv(outputs["summary.csv"]), tmp_path / "several.svg")
    assert titles == [
        "measured on NVIDIA H100 80GB HBM3",
        "measured on several machines (see the summary's table)",
    ]


@pytest.mark.parametrize("hardware", [{"gpu": "NVIDIA H100"}, 9000, ["NVIDIA H100"]])
def test_a_metrics_json_whose_hardware_is_no_string_is_refused_naming_the_file(tmp_path, hardware):
    """A hand-edited metrics.json's `hardware` that is no string passed checked_metrics, and summary.csv's
    `hardware` column and summary.md showed its repr; it is refused naming the file and what is expected."""
    document = _document("teacher", 1, PERFECT, HALF, PERFECT) | {"hardware": hardware}
    path = _written(tmp_path, "teacher_1.json", document)
    expected = f"{path}: hardware {hardware!r} must be a string naming what the speed was measured on"
    with pytest.raises(InputError, match=re.escape(expected)):
        _summarize(tmp_path, [path])
    assert not (tmp_path / "summary.csv").exists()


def test_the_baselines_read_each_graph_files_header_once_and_still_name_a_json_given_as_graphs(
    tmp_path, monkeypatch
):
    """The vocabulary check and the split check each read train.pt's, val.pt's and test.pt's header (memory-mapped):
    two reads of each file for two keys of one header. Both keys come from one read; a JSON given as the graphs is
    still refused with the unpickler's reason, naming the file."""
    from kdgat.files import FileContentError
    from kdgat.graph_store import save_graph_sets, save_graphs

    rng = np.random.default_rng(3)
    for name, graphs in {"train": _capture(rng, 40), "val": _capture(rng, 20)}.items():
        save_graphs(graphs, tmp_path / f"{name}.pt", vocabulary="v", split=name)
    save_graph_sets({"dos": _capture(rng, 20)}, tmp_path / "test.pt", vocabulary="v", split="test")
    write_json({"num_ids": 4}, tmp_path / "metadata.json")
    files = {name: tmp_path / f"{name}.pt" for name in ("train", "val", "test")}
    run = {
        "metadata": tmp_path / "metadata.json",
        "metrics": tmp_path / "b.json",
        "scores": tmp_path / "s.parquet",
    }
    reads = count_header_reads(monkeypatch)
    assert baselines_files(**files, **run)["test"]["dos"][ID_RATE]["n"] == 20
    assert reads == {"train.pt": 1, "val.pt": 1, "test.pt": 1}
    with pytest.raises(FileContentError) as error:
        baselines_files(**(files | {"val": run["metadata"]}), **run)
    message = str(error.value)
    assert message.startswith(f"{run['metadata']}: not a readable kdgat graph file")
    assert "Unsupported operand 123" in message
