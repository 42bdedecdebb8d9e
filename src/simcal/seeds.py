"""The seeds of replicates: independent of scheduling order and batching, from a BLAKE2b hash or from numpy's
SeedSequence (vectorised here over many parameter sets and replicates). Split from ``simcal.contract``,
from which every public name here is still importable."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from simcal.contract_error import ContractError


def replicate_seed(
    pid: str, replicate: int, master_seed: int | None = None, common_random_numbers: bool = False
) -> int:
    """Seed of one replicate (0 <= seed < 2**32), independent of scheduling order and batching.

    - No master seed, independent streams (the default): BLAKE2b of ``"<param_id>:<replicate>"``, the seeds every
      earlier version of simcal gave, so existing results stay reproducible.
    - With ``master_seed``: ``numpy.random.SeedSequence(entropy=(master_seed, param_id), spawn_key=(replicate,))``;
      another master seed draws a fresh, independent set of replicates.
    - ``common_random_numbers``: the seed depends on (master seed, replicate) only, so every parameter set sees
      the same random numbers and differences between sets are not drowned in sampling noise (calibration).
    """
    return replicate_seeds([pid], [replicate], master_seed, common_random_numbers)[0][0]


def replicate_seeds(
    pids: Sequence[str],
    replicates: Sequence[int],
    master_seed: int | None = None,
    common_random_numbers: bool = False,
) -> list[list[int]]:
    """``replicate_seed`` of every replicate of every parameter set, ``[[seed of (pid, r) for r] for pid]``: the
    same integers, computed for all of them at once."""
    replicates = [int(r) for r in replicates]
    if master_seed is None and not common_random_numbers:
        return [
            [
                int.from_bytes(hashlib.blake2b(f"{pid}:{r}".encode(), digest_size=8).digest(), "little")
                % 2**32
                for r in replicates
            ]
            for pid in pids
        ]
    master = 0 if master_seed is None else int(master_seed)
    entropies = [master] if common_random_numbers else [(master, int(pid, 16)) for pid in pids]
    if len(entropies) * len(replicates) < 64 or any(r < 0 or r > _MASK32 for r in replicates):
        seeds = [  # few seeds (or a replicate number of several words): numpy's own SeedSequence
            [int(np.random.SeedSequence(entropy, spawn_key=(r,)).generate_state(1, np.uint32)[0])
             for r in replicates]
            for entropy in entropies
        ]  # fmt: skip
    else:
        seeds = _seed_sequence_states(master, None if common_random_numbers else entropies, replicates)
    return seeds * len(pids) if common_random_numbers else seeds  # the same seeds for every parameter set


# numpy.random.SeedSequence (numpy/random/bit_generator.pyx: the mixing of O'Neill's seed_seq_fe128) vectorised
# over many entropies and replicates, so a sweep does not build a SeedSequence object per simulation. With a spawn
# key the entropy words are padded to the pool size and mixed first, then each replicate's word is mixed in, then
# one 32-bit word of state is drawn from the pool. The unit test compares every step's outcome with numpy's own
# SeedSequence on many (master seed, param_id, replicate) triples.
_POOL_SIZE = 4


_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED


_MIX_MULT_L, _MIX_MULT_R = 0xCA01F9DD, 0x4973F715


_MASK32 = 0xFFFFFFFF


def _uint32_words(value: int) -> list[int]:
    """How SeedSequence splits a non-negative integer into 32-bit words (least significant first; 0 is [0])."""
    if value < 0:
        raise ContractError(f"seed entropy {value} must be >= 0")
    words = [value & _MASK32]
    value >>= 32
    while value:
        words.append(value & _MASK32)
        value >>= 32
    return words


# The arithmetic is on uint64 arrays holding 32-bit words: a product of two words fits, and masking keeps the
# low 32 bits, which is what SeedSequence's uint32 arithmetic computes.
def _hashmix(value: np.ndarray, hash_const: int) -> tuple[np.ndarray, int]:
    value = value ^ np.uint64(hash_const)
    hash_const = (hash_const * _MULT_A) & _MASK32
    value = (value * np.uint64(hash_const)) & np.uint64(_MASK32)
    return value ^ (value >> np.uint64(16)), hash_const


def _mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = (np.uint64(_MIX_MULT_L) * x - np.uint64(_MIX_MULT_R) * y) & np.uint64(_MASK32)
    return result ^ (result >> np.uint64(16))


def _seed_sequence_states(
    master: int, entropies: list[tuple[int, int]] | None, replicates: list[int]
) -> list[list[int]]:
    """``SeedSequence(entropy, spawn_key=(r,)).generate_state(1, np.uint32)[0]`` for every replicate r (each a
    32-bit word), one list per entropy ``(master, param_id as an integer)``, or one list for ``master`` alone
    when ``entropies`` is None."""
    master_words = _uint32_words(master)
    if entropies is None:
        groups = [(np.array([master_words + [0] * (_POOL_SIZE - len(master_words))], dtype=np.uint64), None)]
        rows_total = 1
    else:
        # A param_id is 64 bits: two words, or one when its high half is zero (SeedSequence drops leading zeros).
        values = np.array([pid for _, pid in entropies], dtype=np.uint64)
        low, high = values & np.uint64(_MASK32), values >> np.uint64(32)
        groups = []
        for two_words in (True, False):
            rows = np.flatnonzero(high != 0 if two_words else high == 0)
            if not len(rows):
                continue
            columns = [np.full(len(rows), w, dtype=np.uint64) for w in master_words] + [low[rows]]
            if two_words:
                columns.append(high[rows])
            columns += [np.zeros(len(rows), dtype=np.uint64)] * (_POOL_SIZE - len(columns))
            groups.append((np.stack(columns, axis=1), rows))
        rows_total = len(entropies)
    states: list[list[int]] = [[] for _ in range(rows_total)]
    for table, rows in groups:
        hash_const = _INIT_A
        pool = []
        for column in range(_POOL_SIZE):
            mixed, hash_const = _hashmix(table[:, column], hash_const)
            pool.append(mixed)
        for source in range(_POOL_SIZE):
            for target in range(_POOL_SIZE):
                if source != target:
                    mixed, hash_const = _hashmix(pool[source], hash_const)
                    pool[target] = _mix(pool[target], mixed)
        for column in range(_POOL_SIZE, table.shape[1]):
            for target in range(_POOL_SIZE):
                mixed, hash_const = _hashmix(table[:, column], hash_const)
                pool[target] = _mix(pool[target], mixed)
        # The replicate's word is mixed into each of the 4 pool words; a one-word state reads only the first.
        mixed_replicates, _ = _hashmix(np.asarray(replicates, dtype=np.uint64), hash_const)
        state = _mix(pool[0][:, None], mixed_replicates[None, :]) ^ np.uint64(_INIT_B)
        state = (state * np.uint64((_INIT_B * _MULT_B) & _MASK32)) & np.uint64(_MASK32)
        state ^= state >> np.uint64(16)
        for row, seeds in zip(
            range(rows_total) if rows is None else rows.tolist(), state.tolist(), strict=True
        ):
            states[row] = seeds
    return states
