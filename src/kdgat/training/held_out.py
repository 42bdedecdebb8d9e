"""Which graphs are held out of what in the fusion stage: the early-stopping blocks of a graph file, and the folds
on which copies of a learner are trained and judged out of fold. Contiguous runs of graphs in file order, never
single graphs: neighbouring windows of a capture are near-duplicates, so a graph's neighbour in the training rows
would leak it. Pure torch; kdgat.training.dqn uses it."""

from __future__ import annotations

from collections.abc import Callable

import torch

from kdgat.files import FileContentError
from kdgat.training.settings import SettingsError, setting_key

# The fit file is cut into this many contiguous blocks of graphs; early_stop_share of them (evenly spaced) are
# held out for early stopping.
HOLDOUT_BLOCKS = 20


def early_stop_rows(count: int, share: float) -> torch.Tensor:
    """Boolean mask over `count` graphs in file order: True for the graphs of the early-stopping blocks."""
    if not 0 < share < 1:
        raise SettingsError(f"kd_gat.dqn.early_stop_share must lie in (0, 1), got {share}")
    if count < 2:
        raise FileContentError(
            f"the DQN's fit graphs must hold at least 2 graphs to hold some out, got {count}"
        )
    blocks = min(HOLDOUT_BLOCKS, count)
    block_of = torch.arange(count) * blocks // count
    # Block b is held out when the running count floor((b + 1)·share) steps up at it: evenly spaced blocks.
    held = torch.tensor([int((b + 1) * share) > int(b * share) for b in range(blocks)])
    if not held.any():
        held[-1] = True
    return held[block_of]


def split_inputs(inputs: dict, stop: torch.Tensor) -> tuple[dict, dict]:
    return take(inputs, ~stop), take(inputs, stop)


def joined(fit: dict, stop: dict) -> dict:
    """Every tensor of ``fit`` followed by the same key's of ``stop``: the row order of the fit + stop graphs in
    which cross-fitted rewards are given (:func:`cross_fitted_rewards`, fusion_policy.fall_back_unless_better)."""
    return {key: torch.cat([fit[key], stop[key]]) for key in fit}


def take(inputs: dict, rows: torch.Tensor) -> dict:
    """The given rows (indices or a mask) of every tensor of ``inputs``."""
    return {key: value[rows] for key, value in inputs.items()}


def contiguous_folds(count: int, folds: int) -> torch.Tensor:
    """Fold index of each of ``count`` graphs in file order: ``folds`` contiguous runs of (nearly) equal length."""
    if count < 2 * folds:
        raise SettingsError(
            f"{setting_key('kd_gat.dqn.keep_folds', 'dqn.keep_folds')}: {folds} folds need at least {2 * folds} "
            f"graphs, got {count}"
        )
    return torch.arange(count) * folds // count


Judge = Callable[[torch.Tensor], torch.Tensor]


def cross_fitted_rewards(
    count: int, folds: int, early_stop_share: float, train_copy: Callable[[torch.Tensor, torch.Tensor], Judge]
) -> torch.Tensor:
    """The reward of a learnt policy on each of ``count`` graphs, each from a copy that never saw it: the graphs
    are cut into ``folds`` contiguous folds; for each fold, ``train_copy(learn_rows, stop_rows)`` trains a copy on
    the other folds (``early_stop_share`` of their blocks held out for its early stopping) and returns a function
    that gives the copy's reward on given rows; it is called with the fold's rows."""
    fold_of = contiguous_folds(count, folds)
    rewards = torch.empty(count)
    for fold in range(folds):
        held = torch.nonzero(fold_of == fold).view(-1)
        rest = torch.nonzero(fold_of != fold).view(-1)
        stop = early_stop_rows(len(rest), early_stop_share)
        rewards[held] = train_copy(rest[~stop], rest[stop])(held).cpu().float()
    return rewards
