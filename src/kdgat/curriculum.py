"""Curriculum for GAT training: the trained VGAE ranks normal graphs by difficulty and each epoch draws a new
sample that moves from easy to hard.

Epoch e of E (progress t = e / (E − 1)):
- hardness percentile p(t) goes linearly from `start_percentile` to `end_percentile`: the pool of the epoch is the
  normals whose difficulty is at or above the p-th percentile of the normals' difficulties (p = 25: all but the
  easiest quarter). It applies in every epoch, the first included;
- normal:attack ratio r(t) goes linearly from `start_ratio` to `end_ratio` (more normals = harder imbalance);
- every attack graph is used; min(⌊r·attacks⌉, pool) normals are drawn without replacement from the pool with a
  generator seeded by (seed, epoch), so the sample is redrawn each epoch yet reproducible after a resume. The
  ratio is thus capped by the normals the pool holds: a pool smaller than the ratio asks for is used whole, never
  topped up with easier normals (which would void the percentile).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CurriculumDraw:
    """One epoch's sample (indices into the training set, sorted) and how it was drawn (logged per epoch)."""

    indices: np.ndarray
    ratio: float  # the normal:attack ratio the schedule asked for
    percentile: float  # the hardness percentile that defined the pool
    pool: int  # normals at or above the percentile
    normals: int  # normals drawn: min(round(ratio · attacks), pool)

    def log_row(self) -> dict[str, float]:
        return {
            "curriculum_ratio": self.ratio,
            "curriculum_percentile": self.percentile,
            "curriculum_pool": self.pool,
            "curriculum_normals": self.normals,
        }


@dataclass(frozen=True)
class Curriculum:
    epochs: int
    start_ratio: float = 1.0
    end_ratio: float = 4.0
    start_percentile: float = 25.0
    end_percentile: float = 50.0
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.start_percentile <= 100 or not 0 <= self.end_percentile <= 100:
            raise ValueError("curriculum percentiles must lie in [0, 100] (config kd_gat.curriculum)")
        if not (0 < self.start_ratio < np.inf and 0 < self.end_ratio < np.inf):  # NaN too
            raise ValueError(
                f"curriculum ratios must be finite numbers > 0 (config kd_gat.curriculum), got start_ratio "
                f"{self.start_ratio}, end_ratio {self.end_ratio}"
            )

    def schedule(self, epoch: int) -> tuple[float, float]:
        """(normal:attack ratio, hardness percentile) at `epoch` (0-based)."""
        progress = epoch / (self.epochs - 1) if self.epochs > 1 else 1.0
        progress = min(max(progress, 0.0), 1.0)
        ratio = self.start_ratio + (self.end_ratio - self.start_ratio) * progress
        percentile = self.start_percentile + (self.end_percentile - self.start_percentile) * progress
        return ratio, percentile

    def draw(self, difficulty: np.ndarray, labels: np.ndarray, epoch: int) -> CurriculumDraw:
        """This epoch's sample: all attacks + the normals drawn from the pool (see the module docstring)."""
        labels = np.asarray(labels)
        difficulty = np.asarray(difficulty, dtype=float)
        if difficulty.shape != labels.shape:
            raise ValueError(
                f"curriculum: {difficulty.shape} difficulty scores for {labels.shape} training graph labels"
            )
        attacks = np.flatnonzero(labels == 1)
        normals = np.flatnonzero(labels == 0)
        ratio, percentile = self.schedule(epoch)
        if len(attacks) == 0 or len(normals) == 0:
            # One class only: nothing to balance; the whole set, logged as such.
            return CurriculumDraw(np.arange(len(labels)), ratio, percentile, len(normals), len(normals))
        normal_difficulty = difficulty[normals]
        if not np.isfinite(normal_difficulty).all():
            # A NaN cutoff would leave the pool empty: every epoch would train on the attacks alone.
            bad = int((~np.isfinite(normal_difficulty)).sum())
            raise ValueError(
                f"curriculum: the VGAE's difficulty (anomaly error) of {bad} of {len(normals)} normal training "
                "graphs is not finite; is the VGAE model.pt a diverged run? (kd_gat.curriculum)"
            )
        cutoff = np.percentile(normal_difficulty, percentile)
        pool = normals[normal_difficulty >= cutoff]
        # a ratio of 1e308 asks for inf normals (int() raised OverflowError): the whole pool
        asked = min(ratio * len(attacks), len(pool))
        wanted = min(len(pool), max(1, int(round(asked))))
        rng = np.random.default_rng([self.seed, epoch])
        drawn = rng.choice(pool, size=wanted, replace=False)
        indices = np.sort(np.concatenate([attacks, drawn]))
        return CurriculumDraw(indices, ratio, percentile, len(pool), wanted)

    def sample(self, difficulty: np.ndarray, labels: np.ndarray, epoch: int) -> np.ndarray:
        """Indices (into the training set) for this epoch, sorted: `draw(...).indices`."""
        return self.draw(difficulty, labels, epoch).indices
