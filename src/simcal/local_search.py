"""The refine step's local search: a quadratic model of the loss around the best parameter set, fitted to the
parameter sets simulated with the refine step's replicates, inside a trust region (coordinates: each parameter's
bounds mapped to the unit interval, so that parameters of different units weigh alike).

Why. The design and the sampler explore with few replicates per parameter set, whose loss has its own Monte Carlo
error: its minimum is not where the minimum of the many-replicate loss lies (on the SIR demo, a one-off
measurement in bench/RESULTS.md put 4 replicates' best gamma ~20% away from 32 replicates'). The refine step's losses all use the same many replicates (with
common random numbers the same seeds too), so there the loss is one nearly smooth function, and a local model of
it can walk along a long, flat valley (the SIR's gamma at a fixed growth rate) that a few best points of the
exploration do not reach.

Each round proposes 1 + 2d points (d parameters): the minimum of the fitted quadratic within the trust radius of
the best point, and probes half the radius either side of it along each principal axis of the fit (along the unit
axes before there are enough points for a fit). A round that finds a better point keeps the radius, one that does
not halves it (doubling it after a long successful stride, the textbook rule, measured worse on the SIR benchmark:
bench/RESULTS.md). Pure numpy; ``simcal.calibrate`` runs the rounds.

Two details make it hold on a narrow valley (measured on the SIR benchmark, bench/RESULTS.md):

- The fit weighs each point by how little its loss rises above the best (``floor_weights``). Across the valley
  the loss rises by thousands where it rises by tenths along it; unweighted least squares fits those walls, and
  the quadratic's idea of the floor's direction is then off by more than the floor is wide.
- A probe along one axis also takes the model's own step to the minimum along the others (``probes``): the best
  point so far is rarely on the floor's centre line, and a probe that keeps its offset lands on the wall.

At a bound (the best fit where the valley runs into a parameter's bound) the step and the probes that cross it
are moved back along their own lines (``into_box``), onto the floor where it meets the bound: clipping each
coordinate kept the other coordinate from beyond the bound and put them on the wall (the SIR benchmark's observed
seed 59, bench/RESULTS.md). The floor scan's points are still clipped: past the bound they then lie along it, a
scan of the other parameter there.

After the rounds, an optional scan (``floor_scan``) spends its points on the valley floor itself: evenly spaced
along the fit's flattest principal axis within 0.3 trust radii either side of the best point, each moved to the
model's minimum along the other axes. Why: the floor of a simulated loss is rippled (counts change in steps), a
quadratic averages the ripples away, and its probes at half the radius step over them; points packed along the
floor find the lowest ripple near the best. Measured on the SIR benchmark (4 rounds + 10 scan points against 6
rounds, the same simulations): on 45 runs not used to choose the span, the scan ended lower in 26 and higher in 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_RADIUS, MAX_RADIUS = 1e-3, 0.25
SCAN_SPAN = 0.3  # the floor scan reaches this many trust radii either side of the best point


def quadratic_terms(points: np.ndarray) -> np.ndarray:
    """Columns 1, x_i, and x_i x_j (i <= j) of every row of ``points`` (shape (n, d))."""
    n, d = points.shape
    columns = [np.ones(n), *(points[:, i] for i in range(d))]
    columns += [points[:, i] * points[:, j] for i in range(d) for j in range(i, d)]
    return np.column_stack(columns)


def term_count(d: int) -> int:
    return 1 + d + d * (d + 1) // 2


def floor_weights(losses: np.ndarray) -> np.ndarray:
    """Least-squares weights 1 / (1 + rise / s)^2, where rise is each loss above the lowest and s the median of
    the positive rises: points near the best weigh ~1, a wall point far above weighs ~(s / rise)^2."""
    rise = losses - np.min(losses)
    positive = rise[rise > 0]
    scale = float(np.median(positive)) if len(positive) else 1.0
    return 1.0 / (1.0 + rise / scale) ** 2


def fit_quadratic(
    points: np.ndarray, losses: np.ndarray, centre: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, Hessian) at ``centre`` of the (weighted) least-squares quadratic through (points, losses), with
    a tiny ridge so that points along a line still give a defined (if flat) fit across it."""
    shifted = points - centre
    design = quadratic_terms(shifted)
    scale = np.abs(design).max(axis=0)
    scale[scale == 0] = 1.0
    root = np.sqrt(np.ones(len(points)) if weights is None else weights)
    design = design / scale * root[:, None]
    ridge = 1e-9 * np.eye(design.shape[1])
    ridge[0, 0] = 0.0
    coefficients = np.linalg.solve(design.T @ design + ridge, design.T @ (losses * root)) / scale
    d = points.shape[1]
    gradient = coefficients[1 : 1 + d]
    hessian = np.zeros((d, d))
    k = 1 + d
    for i in range(d):
        for j in range(i, d):
            if i == j:
                hessian[i, i] = 2.0 * coefficients[k]
            else:
                hessian[i, j] = hessian[j, i] = coefficients[k]
            k += 1
    return gradient, hessian


@dataclass
class TrustRegion:
    """The local search's state: the trust radius (unit coordinates) and the best loss it has seen."""

    radius: float
    best_loss: float = np.inf
    rounds: int = 0

    @classmethod
    def around(cls, points: np.ndarray, losses: np.ndarray) -> TrustRegion:
        """Start with the radius that spans the given points (those with a finite loss) from the best of them."""
        finite = np.isfinite(losses)
        points, losses = points[finite], losses[finite]
        best = points[int(np.argmin(losses))]
        spread = float(np.max(np.linalg.norm(points - best, axis=1))) if len(points) > 1 else MAX_RADIUS
        return cls(radius=float(np.clip(spread, 4 * MIN_RADIUS, MAX_RADIUS)), best_loss=float(np.min(losses)))

    def propose(self, points: np.ndarray, losses: np.ndarray) -> np.ndarray:
        """The next round's points (unit coordinates, inside [0, 1]) from every point so far and its loss; updates
        the radius from whether the last round improved on the best loss."""
        finite = np.isfinite(losses)
        points, losses = points[finite], losses[finite]
        best_index = int(np.argmin(losses))
        best, best_loss = points[best_index], float(losses[best_index])
        if self.rounds and best_loss >= self.best_loss:  # the last round found nothing better
            self.radius = max(self.radius / 2, MIN_RADIUS)
        self.best_loss, self.rounds = min(best_loss, self.best_loss), self.rounds + 1
        d = points.shape[1]
        if len(points) < term_count(d) + 1:  # too few points for a fit: probe along the unit axes
            return probes(best, np.eye(d), np.zeros(d), self.radius)
        _, axes, along, curved = principal_axes(points, losses, best, self.radius)
        step = axes @ along
        length = float(np.linalg.norm(step))
        if length > self.radius:
            step *= self.radius / length
        around = probes(best, axes, np.where(curved, along, 0.0), self.radius)
        return np.vstack([into_box(best, best + step), around])


def principal_axes(points: np.ndarray, losses: np.ndarray, best: np.ndarray, radius: float):
    """The floor-weighted quadratic fitted to the 2 x term_count points nearest ``best``, in its principal axes:
    (curvatures, axes as columns, the model's minimum along each axis from ``best`` clipped to +-radius, whether
    each axis is curved)."""
    d = points.shape[1]
    nearest = np.argsort(np.linalg.norm(points - best, axis=1), kind="stable")[: 2 * term_count(d)]
    near_losses = losses[nearest]
    gradient, hessian = fit_quadratic(points[nearest], near_losses, best, floor_weights(near_losses))
    eigenvalues, axes = np.linalg.eigh(hessian)
    # a direction of zero or negative curvature gets a small positive one: the step then stops at the trust
    # radius along the downhill slope instead of running off
    floor = 1e-6 * max(float(np.max(np.abs(eigenvalues))), 1e-12)
    along = np.clip(-(axes.T @ gradient) / np.maximum(eigenvalues, floor), -radius, radius)
    return eigenvalues, axes, along, eigenvalues > floor


def probes(best: np.ndarray, axes: np.ndarray, along: np.ndarray, radius: float) -> np.ndarray:
    """Two points per axis (the columns of ``axes``): half the radius either side of ``best`` along it, plus the
    step ``along`` the other axes (the model's minimum along each; 0 where the fit has no curvature). Inside the
    unit box: each stays on its line (``into_box``)."""
    points = []
    for i in range(axes.shape[1]):
        centre = into_box(best, best + across(axes, along, i))
        for sign in (1.0, -1.0):
            points.append(into_box(centre, centre + sign * radius / 2 * axes[:, i]))
    return np.array(points)


def into_box(origin: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each of ``points`` (one point, or one per row) moved towards ``origin`` (inside the unit box) along the line
    between them until it is inside the box. Why not clip each coordinate: a point proposed along a narrow valley
    that crosses a bound (the best fit at a parameter's bound) would keep the other coordinates and land on the
    valley's wall; moved along its own line it stays on the floor, where the valley meets the bound."""
    delta = points - origin
    with np.errstate(divide="ignore", invalid="ignore"):
        to_upper = np.where(delta > 0, (1.0 - origin) / delta, np.inf)
        to_lower = np.where(delta < 0, -origin / delta, np.inf)
    share = np.minimum(1.0, np.minimum(to_upper, to_lower).min(axis=-1, keepdims=True))
    return np.clip(origin + share * delta, 0.0, 1.0)


def across(axes: np.ndarray, along: np.ndarray, axis: int) -> np.ndarray:
    """The step ``along`` every principal axis (the columns of ``axes``) but ``axis``: from a point, onto the
    model's floor across that axis."""
    return axes @ np.where(np.arange(axes.shape[1]) == axis, 0.0, along)


def floor_scan(
    points: np.ndarray, losses: np.ndarray, radius: float, count: int, span: float = SCAN_SPAN
) -> np.ndarray:
    """``count`` points (unit coordinates, inside [0, 1]) along the flattest principal axis of the floor-weighted
    quadratic fitted around the best point, evenly spaced over ``span * radius`` either side of it (the best
    point itself left out), each shifted to the model's minimum along the other axes. Empty when there are too few
    points with a finite loss for a fit."""
    finite = np.isfinite(losses)
    points, losses = points[finite], losses[finite]
    d = points.shape[1]
    if count < 1 or len(points) < term_count(d) + 1:
        return np.zeros((0, d))
    best = points[int(np.argmin(losses))]
    eigenvalues, axes, along, curved = principal_axes(points, losses, best, radius)
    flattest = int(np.argmin(eigenvalues))
    onto_floor = across(axes, np.where(curved, along, 0.0), flattest)  # as the probes step onto it
    below, above = count // 2, count - count // 2  # an odd count has its extra point above the best
    steps = np.r_[np.arange(-below, 0), np.arange(1, above + 1)] / above  # the farther side ends at the span
    offsets = span * radius * steps
    return np.clip(best + onto_floor + offsets[:, None] * axes[:, flattest], 0.0, 1.0)
