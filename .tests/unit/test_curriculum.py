"""Curriculum sampler: ratio and hardness move easy → hard, the sample is redrawn every epoch, and the GAT's
curriculum draws from the normals its VGAE finds hardest."""

import dataclasses
import math

import numpy as np
import pytest
import yaml
from test_training import CURRICULUM, NUM_IDS, TRAINING, graphs, settings, trained_vgae  # noqa: F401 (fixtures)
from testkit import REPO

from kdgat.curriculum import Curriculum
from kdgat.training import gat as gat_training
from kdgat.training.settings import CurriculumSettings
from kdgat.training.vgae import graph_errors


def dataset(normals=400, attacks=40):
    labels = np.array([0] * normals + [1] * attacks)
    difficulty = np.concatenate([np.linspace(0, 1, normals), np.zeros(attacks)])
    return labels, difficulty


def test_schedule_interpolates_linearly():
    curriculum = Curriculum(epochs=5, start_ratio=1, end_ratio=5, start_percentile=0, end_percentile=80)
    assert curriculum.schedule(0) == (1, 0)
    assert curriculum.schedule(2) == (3, 40)
    assert curriculum.schedule(4) == (5, 80)


def test_sample_ratio_per_epoch_and_hardness():
    labels, difficulty = dataset()
    # Ratio 1 → 2 (40 → 80 normals), percentile 0 → 80 (pool of 400 → 80 normals): the pool always suffices.
    curriculum = Curriculum(
        epochs=5, start_ratio=1, end_ratio=2, start_percentile=0, end_percentile=80, seed=3
    )
    for epoch in range(5):
        ratio, percentile = curriculum.schedule(epoch)
        picked = curriculum.sample(difficulty, labels, epoch)
        chosen_normals = picked[labels[picked] == 0]
        assert (labels[picked] == 1).sum() == 40  # every attack, every epoch
        assert len(chosen_normals) == round(ratio * 40)
        assert difficulty[chosen_normals].min() >= np.percentile(difficulty[:400], percentile) - 1e-12
    # The last epoch only draws from the hardest fifth.
    last = curriculum.sample(difficulty, labels, 4)
    assert difficulty[last[labels[last] == 0]].min() >= 0.8 - 1e-9


def test_sample_changes_between_epochs_and_is_reproducible():
    labels, difficulty = dataset()
    curriculum = Curriculum(
        epochs=10, start_ratio=2, end_ratio=2, start_percentile=0, end_percentile=0, seed=1
    )
    first, second = curriculum.sample(difficulty, labels, 0), curriculum.sample(difficulty, labels, 1)
    assert len(first) == len(second) and not np.array_equal(first, second)
    assert np.array_equal(first, curriculum.sample(difficulty, labels, 0))


def test_the_seed_sets_the_draw_and_each_sample_is_sorted_without_repeats():
    labels, difficulty = dataset()
    draws = [Curriculum(epochs=3, seed=seed).sample(difficulty, labels, 0) for seed in (0, 1)]
    assert not np.array_equal(*draws)  # another seed, another sample of the same epoch
    for indices in draws:
        assert (np.diff(indices) > 0).all()  # sorted, no graph twice


def test_a_training_set_of_one_class_is_used_whole():
    curriculum = Curriculum(epochs=3)
    for label in (0, 1):
        labels = np.full(50, label)
        draw = curriculum.draw(np.linspace(0, 1, 50), labels, 1)
        assert draw.indices.tolist() == list(range(50)), label


def test_pool_smaller_than_the_ratio_asks_is_used_whole_and_never_topped_up():
    labels, difficulty = dataset(normals=100, attacks=40)
    curriculum = Curriculum(epochs=1, start_ratio=2, end_ratio=2, start_percentile=90, end_percentile=90)
    draw = curriculum.draw(difficulty, labels, 0)
    normals = draw.indices[labels[draw.indices] == 0]
    assert sorted(normals.tolist()) == list(range(90, 100))  # the 10 hardest, not the 80 the ratio asks for
    assert (labels[draw.indices] == 1).sum() == 40
    assert draw.log_row() == {
        "curriculum_ratio": 2.0,
        "curriculum_percentile": 90.0,
        "curriculum_pool": 10,
        "curriculum_normals": 10,
    }


@pytest.mark.parametrize(("start_ratio", "end_ratio"), [(1e308, 1e308), (1.0, 1e308), (1e308, 1e-300)])
def test_a_ratio_asking_for_more_normals_than_a_float_holds_uses_the_whole_pool(start_ratio, end_ratio):
    """kd_gat.curriculum ratios have no schema maximum: 1e308 x 40 attacks is inf, and int(round(inf)) raised
    OverflowError at the first epoch. The pool is used whole, as for any ratio above it."""
    labels, difficulty = dataset(normals=100, attacks=40)
    curriculum = Curriculum(epochs=3, start_ratio=start_ratio, end_ratio=end_ratio, start_percentile=50)
    for epoch in range(3):
        draw = curriculum.draw(difficulty, labels, epoch)
        ratio, _ = curriculum.schedule(epoch)
        expected = draw.pool if ratio * 40 >= draw.pool else max(1, round(ratio * 40))
        assert draw.normals == expected == (labels[draw.indices] == 0).sum(), epoch
        assert (labels[draw.indices] == 1).sum() == 40


def default_curriculum(seed=42) -> Curriculum:
    """The curriculum of the shipped config (config/config.yaml; its keys override the schema defaults)."""
    kd_gat = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["kd_gat"]
    options = CurriculumSettings(**kd_gat["curriculum"])
    assert options.enabled
    return Curriculum(epochs=int(kd_gat["training"]["gat"]["epochs"]), seed=seed, **options.schedule())


@pytest.mark.parametrize("normals_per_attack", [0.5, 1.5, 2.0, 4.0, 10.0])
def test_default_config_percentile_shapes_every_epoch_sample(normals_per_attack):
    """Review M1: at the demo data's 1.5-2 normals per attack the old sampler used every normal from epoch 6 on,
    so the percentile never applied. Now, in every epoch of the shipped schedule, the sample holds no normal below
    the epoch's percentile and differs from the sample the same schedule draws without a percentile."""
    attacks = 60
    labels, _ = dataset(normals=int(attacks * normals_per_attack), attacks=attacks)
    difficulty = np.random.default_rng(0).random(len(labels))
    curriculum = default_curriculum()
    no_percentile = dataclasses.replace(curriculum, start_percentile=0.0, end_percentile=0.0)
    normal_difficulty = difficulty[labels == 0]
    assert curriculum.start_percentile > 0
    for epoch in range(curriculum.epochs):
        draw = curriculum.draw(difficulty, labels, epoch)
        chosen = draw.indices[labels[draw.indices] == 0]
        cutoff = np.percentile(normal_difficulty, draw.percentile)
        assert draw.percentile >= curriculum.start_percentile
        assert difficulty[chosen].min() >= cutoff
        assert draw.pool == (normal_difficulty >= cutoff).sum() < len(normal_difficulty)
        assert draw.normals == len(chosen) == min(draw.pool, round(draw.ratio * attacks))
        assert not np.array_equal(draw.indices, no_percentile.sample(difficulty, labels, epoch))


@pytest.mark.usefixtures("one_torch_thread")
def test_gat_curriculum_draws_from_the_normals_its_vgae_finds_hardest(graphs, trained_vgae, monkeypatch):  # noqa: F811
    """The wiring from the VGAE to the sampler (review M1 again): the difficulty is the trained VGAE's anomaly error,
    recomputed here. Each epoch's logged pool is the normals at or above the epoch's percentile of it, a real subset
    once the percentile is above 0, and every normal drawn lies in it. A constant difficulty (pool = every normal),
    a NaN one (empty pool) or one unrelated to the VGAE (normals drawn below the cutoff) fails."""
    train, val = graphs
    drawn = []
    train_epoch = gat_training.GATStage.train_epoch

    def recording(stage, epoch):
        metrics = train_epoch(stage, epoch)
        drawn.append(stage.last_sample.copy())
        return metrics

    monkeypatch.setattr(gat_training.GATStage, "train_epoch", recording)
    _, result, *_ = gat_training.train(
        train, val, NUM_IDS, settings("gat", curriculum=CURRICULUM), vgae=trained_vgae
    )
    labels = np.array([int(g.y) for g in train])
    difficulty = graph_errors(trained_vgae, train, TRAINING["batch_size"], "cpu")["anomaly_error"]
    normal_difficulty = difficulty[labels == 0]
    assert np.isfinite(normal_difficulty).all() and np.ptp(normal_difficulty) > 0
    assert len(drawn) == len(result["history"]) == TRAINING["epochs"]
    for row, indices in zip(result["history"], drawn, strict=True):
        cutoff = np.percentile(normal_difficulty, row["curriculum_percentile"])
        pool = int((normal_difficulty >= cutoff).sum())
        assert row["curriculum_pool"] == pool
        if row["curriculum_percentile"] > 0:
            assert 0 < pool < len(normal_difficulty)
        chosen = indices[labels[indices] == 0]
        assert len(chosen) == row["curriculum_normals"] > 0
        assert difficulty[chosen].min() >= cutoff


def test_difficulties_that_are_not_finite_or_do_not_match_the_graphs_fail_naming_the_curriculum():
    # One NaN score made the percentile NaN, the pool empty and every epoch's sample the attacks alone, silently.
    labels, difficulty = dataset(normals=100, attacks=40)
    curriculum = Curriculum(epochs=3)
    assert curriculum.draw(difficulty, labels, 0).normals == 40
    for bad in (np.nan, np.inf):
        scores = difficulty.copy()
        scores[7] = bad
        with pytest.raises(
            ValueError, match=r"curriculum: .* of 1 of 100 normal training graphs is not finite"
        ):
            curriculum.draw(scores, labels, 0)
    with pytest.raises(
        ValueError, match=r"curriculum: \(138,\) difficulty scores for \(140,\) training graph"
    ):
        curriculum.draw(difficulty[:-2], labels, 0)


def test_bad_settings_name_the_config_section():
    with pytest.raises(ValueError, match="kd_gat.curriculum"):
        Curriculum(epochs=3, end_percentile=120)
    for ratios in ({"start_ratio": 0}, {"end_ratio": 0}, {"end_ratio": math.inf}, {"start_ratio": math.nan}):
        with pytest.raises(
            ValueError, match=r"ratios must be finite numbers > 0 \(config kd_gat.curriculum\)"
        ):
            Curriculum(epochs=3, **ratios)
