"""Curriculum for GAT training: the trained VGAE ranks normal graphs by difficulty and each epoch draws a new
sample that moves from easy to hard.

Epoch e of E (progress t = e / (E − 1)):
- normal:attack ratio r(t) goes linearly from `start_ratio` to `end_ratio` (more normals = harder imbalance);
- hardness percentile p(t) goes from `start_percentile` to `end_percentile`: only normals whose difficulty is at or
  above the p-th percentile are eligible (p = 0: all normals, the easy mix; p = 75: the hardest quarter);
- every attack graph is used; ⌊r·attacks⌉ normals are drawn without replacement from the eligible pool with a
  generator seeded by (seed, epoch), so the sample is redrawn each epoch yet reproducible after a resume. When the
  pool is smaller than the draw, the hardest normals below the percentile fill it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curriculum:
    epochs: int
    start_ratio: float = 1.0
    end_ratio: float = 4.0
    start_percentile: float = 0.0
    end_percentile: float = 50.0
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.start_percentile <= 100 or not 0 <= self.end_percentile <= 100:
            raise ValueError("curriculum percentiles must lie in [0, 100] (config kd_gat.curriculum)")
        if self.start_ratio <= 0 or self.end_ratio <= 0:
            raise ValueError("curriculum ratios must be > 0 (config kd_gat.curriculum)")

    def schedule(self, epoch: int) -> tuple[float, float]:
        """(normal:attack ratio, hardness percentile) at `epoch` (0-based)."""
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 1.0
        progress = min(max(progress, 0.0), 1.0)
        ratio = self.start_ratio + (self.end_ratio - self.start_ratio) * progress
        percentile = self.start_percentile + (self.end_percentile - self.start_percentile) * progress
        return ratio, percentile

    def sample(self, difficulty: np.ndarray, labels: np.ndarray, epoch: int) -> np.ndarray:
        """Indices (into the training set) for this epoch: all attacks + the drawn normals, sorted."""
        labels = np.asarray(labels)
        attacks = np.flatnonzero(labels == 1)
        normals = np.flatnonzero(labels == 0)
        if len(attacks) == 0 or len(normals) == 0:
            return np.arange(len(labels))
        ratio, percentile = self.schedule(epoch)
        wanted = min(len(normals), max(1, int(round(ratio * len(attacks)))))
        normal_difficulty = np.asarray(difficulty, dtype=float)[normals]
        cutoff = np.percentile(normal_difficulty, percentile)
        pool = normals[normal_difficulty >= cutoff]
        if len(pool) < wanted:
            hardest_first = normals[np.argsort(-normal_difficulty, kind="stable")]
            pool = hardest_first[:wanted]
        rng = np.random.default_rng([self.seed, epoch])
        drawn = rng.choice(pool, size=wanted, replace=False)
        return np.sort(np.concatenate([attacks, drawn]))
