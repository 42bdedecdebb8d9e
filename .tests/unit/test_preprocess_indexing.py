"""Vocabulary and ID indices through lookup tables agree with the sort/search definition, for small and
29-bit (extended) CAN IDs alike."""

from __future__ import annotations

import numpy as np
import pytest

from kdgat.can.messages import CanMessages
from kdgat.preprocess import build_vocabulary, to_index


def messages(can_ids):
    n = len(can_ids)
    zeros = np.zeros(n, np.uint8)
    return CanMessages(np.zeros(n), can_ids, zeros, np.zeros((n, 8), np.uint8), zeros)


@pytest.mark.parametrize("largest_id", [4, 0x7FF, 1 << 29])
@pytest.mark.parametrize("seed", range(3))
def test_tables_match_sorted_search(largest_id, seed):
    rng = np.random.default_rng(seed)
    train = [rng.integers(0, largest_id, int(rng.integers(1, 300))).astype(np.int32) for _ in range(2)]
    vocabulary = build_vocabulary([messages(ids) for ids in train])
    expected_vocabulary = np.unique(np.concatenate(train))
    assert vocabulary.dtype == expected_vocabulary.dtype
    np.testing.assert_array_equal(vocabulary, expected_vocabulary)

    test_ids = rng.integers(0, largest_id + 5, 400).astype(np.int32)
    test_ids[:50] = rng.choice(vocabulary, 50)
    slot = np.minimum(np.searchsorted(vocabulary, test_ids), len(vocabulary) - 1)
    expected = np.where(vocabulary[slot] == test_ids, slot, len(vocabulary))
    index = to_index(test_ids, vocabulary)
    assert index.dtype == np.int64
    np.testing.assert_array_equal(index, expected)
    assert (index[:50] < len(vocabulary)).all() and (
        index[test_ids > vocabulary[-1]] == len(vocabulary)
    ).all()
