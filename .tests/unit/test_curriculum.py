"""Curriculum sampler: ratio and hardness move easy → hard, and the sample is redrawn every epoch."""

import numpy as np
import pytest

from kdgat.curriculum import Curriculum


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


def test_small_pool_is_filled_with_the_hardest_normals():
    labels, difficulty = dataset(normals=100, attacks=40)
    curriculum = Curriculum(epochs=1, start_ratio=2, end_ratio=2, start_percentile=90, end_percentile=90)
    picked = curriculum.sample(difficulty, labels, 0)
    normals = picked[labels[picked] == 0]
    assert sorted(normals.tolist()) == list(range(20, 100))  # the 80 hardest


def test_bad_settings_name_the_config_section():
    with pytest.raises(ValueError, match="kd_gat.curriculum"):
        Curriculum(epochs=3, end_percentile=120)
