"""The refine step's local search (simcal.local_search): the quadratic fit, the trust region walking a long, narrow
valley that the starting points do not reach, and the settings that turn it on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from testkit import REPO

from simcal.calibrate import CalibrationSettings, local_search
from simcal.contract import ContractError, param_id
from simcal.design import parse_bounds
from simcal.local_search import (
    MAX_RADIUS,
    MIN_RADIUS,
    SCAN_SPAN,
    TrustRegion,
    fit_quadratic,
    floor_scan,
    floor_weights,
    into_box,
)


def test_the_fit_recovers_a_quadratics_gradient_and_hessian():
    rng = np.random.default_rng(0)
    hessian = np.array([[4.0, 1.5], [1.5, 2.0]])
    gradient, centre = np.array([0.3, -0.7]), np.array([0.4, 0.6])

    def loss(points):
        shifted = points - centre
        return 5.0 + shifted @ gradient + 0.5 * np.einsum("ni,ij,nj->n", shifted, hessian, shifted)

    points = rng.random((12, 2))
    fitted_gradient, fitted_hessian = fit_quadratic(points, loss(points), centre)
    np.testing.assert_allclose(fitted_gradient, gradient, atol=1e-6)
    np.testing.assert_allclose(fitted_hessian, hessian, atol=1e-6)


MINIMUM = np.array([0.62, 0.608])


def valley(points: np.ndarray) -> np.ndarray:
    """A long, narrow valley along u1 = 0.9 u0 + 0.05 (steep across it, shallow along it), minimum at MINIMUM."""
    points = np.atleast_2d(points)
    across = points[:, 1] - 0.9 * points[:, 0] - 0.05
    along = points[:, 0] - MINIMUM[0]
    return 500.0 * across**2 + along**2 + np.sin(40 * points[:, 0]) * 1e-4  # ripples far below the slope


def search(start: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    points, losses = start, valley(start)
    region = TrustRegion.around(points, losses)
    for _ in range(rounds):
        proposals = region.propose(points, losses)
        assert ((proposals >= 0) & (proposals <= 1)).all()
        points, losses = np.vstack([points, proposals]), np.concatenate([losses, valley(proposals)])
    return points, losses


def test_the_trust_region_walks_the_valley_to_its_minimum():
    rng = np.random.default_rng(1)
    along = rng.uniform(0.15, 0.3, 8)  # the start: a cluster on the valley floor, far from the minimum
    start = np.column_stack([along, 0.9 * along + 0.05 + rng.normal(0, 0.01, 8)])
    points, losses = search(start, rounds=10)
    best = points[np.argmin(losses)]
    assert np.linalg.norm(best - MINIMUM) < 0.01, best
    # as many points spread at random over the box (no model) do not come close
    spread = np.random.default_rng(2).random((len(points) - len(start), 2))
    assert np.linalg.norm(spread[np.argmin(valley(spread))] - MINIMUM) > 0.03


def test_the_radius_halves_after_a_round_without_progress():
    points = np.array([[0.5, 0.5], [0.6, 0.5], [0.5, 0.6]])
    losses = np.array([1.0, 2.0, 3.0])
    region = TrustRegion.around(points, losses)
    first = region.radius
    region.propose(points, losses)
    assert region.radius == first  # the first round has nothing to compare with
    region.propose(points, losses)  # no better point since: halve
    assert region.radius == pytest.approx(first / 2)


def test_the_trust_radius_starts_within_its_limits_and_never_shrinks_below_the_smallest():
    """The start spans the points from the best, capped at MAX_RADIUS (points spread over the whole box) and at
    least 4 MIN_RADIUS (points bunched together); rounds without progress halve it down to MIN_RADIUS, not 0."""
    wide = np.array([[0.5, 0.5], [0.0, 0.0], [1.0, 1.0]])
    assert TrustRegion.around(wide, np.array([1.0, 2.0, 3.0])).radius == MAX_RADIUS
    bunched = np.array([[0.5, 0.5], [0.5001, 0.5], [0.5, 0.5001]])
    region = TrustRegion.around(bunched, np.array([1.0, 2.0, 3.0]))
    assert region.radius == 4 * MIN_RADIUS
    for _ in range(5):
        region.propose(bunched, np.array([1.0, 2.0, 3.0]))
    assert region.radius == MIN_RADIUS


def test_the_start_radius_spans_only_the_points_with_a_finite_loss():
    """TrustRegion.around: the radius spans the points with a finite loss from the best of them; a failed set (NaN)
    or an infinite loss far away neither becomes the best nor widens the radius."""
    points = np.array([[0.5, 0.5], [0.52, 0.5], [0.5, 0.53], [0.0, 0.0], [1.0, 1.0]])
    region = TrustRegion.around(points, np.array([1.0, 2.0, 3.0, np.nan, np.inf]))
    assert region.radius == pytest.approx(0.03) and region.best_loss == 1.0


def bowl_points(centre: np.ndarray, count: int) -> np.ndarray:
    return centre + 0.02 * np.random.default_rng(3).standard_normal((count, 2))


def test_the_step_is_the_models_minimum_cut_to_the_trust_radius():
    """A bowl whose minimum lies far off along the diagonal: each axis's step is clipped to the radius, and the
    step as a whole is cut to it too (not radius times the square root of the number of parameters)."""
    points = bowl_points(np.array([0.3, 0.3]), 12)
    losses = (points - [0.9, 0.9]) ** 2 @ [1.0, 2.0]  # principal axes: the unit axes
    step = TrustRegion(radius=0.05).propose(points, losses)[0] - points[np.argmin(losses)]
    np.testing.assert_allclose(step, [0.05 / np.sqrt(2)] * 2, atol=1e-4)


@pytest.mark.parametrize("count, fitted", [(6, False), (7, True)])
def test_a_fit_needs_one_point_more_than_a_quadratic_has_terms(count, fitted):
    """Six terms in two parameters: with six points the round only probes along the unit axes (four points), with
    seven it takes the fitted step and probes the fit's axes (five points)."""
    points = bowl_points(np.array([0.5, 0.5]), count)
    losses = ((points - [0.52, 0.49]) ** 2).sum(axis=1)
    proposals = TrustRegion(radius=0.1).propose(points, losses)
    assert len(proposals) == (5 if fitted else 4)


def test_the_fit_uses_the_points_nearest_the_best_not_the_far_ones():
    """principal_axes fits the quadratic to the 2 x term_count points nearest the best: points far away, on a
    plateau whose loss lies among the near points' own (so the floor weights do not quiet them), leave the step at
    the minimum of the bowl around the best."""
    rng = np.random.default_rng(5)
    minimum = np.array([0.53, 0.48])
    near = np.array([0.5, 0.5]) + 0.02 * rng.standard_normal((12, 2))  # 2 x term_count(2)
    near_losses = ((near - minimum) ** 2 * [1.0, 3.0]).sum(axis=1)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    far = np.array([0.5, 0.5]) + 0.35 * np.column_stack([np.cos(angles), np.sin(angles)])
    points = np.vstack([near, far])
    losses = np.concatenate([near_losses, np.full(len(far), np.median(near_losses))])
    stepped_to = TrustRegion(radius=0.1).propose(points, losses)[0]
    np.testing.assert_allclose(stepped_to, minimum, atol=1e-6)


def test_probes_step_onto_the_floor_only_along_curved_axes():
    """Across an axis without curvature (the loss a plain slope along u1) the model has no minimum: the probes
    along the curved axis keep the best point's u1, while the main step goes down the slope by the radius."""
    points = bowl_points(np.array([0.5, 0.5]), 12)
    losses = 100 * (points[:, 0] - 0.5) ** 2 + 5 * points[:, 1]
    best = points[np.argmin(losses)]
    proposals = TrustRegion(radius=0.1).propose(points, losses)
    probes = proposals[1:].reshape(2, 2, 2)  # (axis, side, coordinate)
    curved = np.argmax(np.abs(probes[:, 0, 0] - probes[:, 1, 0]))  # the pair half a radius apart along u0
    np.testing.assert_allclose(probes[curved, :, 1], best[1], atol=1e-6)
    step = proposals[0] - best  # down the slope (and onto the floor across u0), a radius long
    assert step[1] < -0.05 and np.linalg.norm(step) == pytest.approx(0.1)


def test_the_unit_coordinates_invert_the_bounds():
    bounds = parse_bounds(
        {"a": {"low": 0.1, "high": 0.6}, "b": {"low": 1e-3, "high": 10.0, "log": True},
         "c": {"low": 1, "high": 5, "integer": True}}
    )  # fmt: skip
    unit = np.array([0.0, 0.25, 0.5, 0.999])
    for bound in bounds:
        values = bound.scale(unit)
        np.testing.assert_array_equal(bound.scale(bound.unit(values)), values)


@pytest.mark.parametrize(
    ("refine", "message"),
    [
        ({"top_k": 4, "replicates": 8, "rounds": -1}, r"refine.rounds must be an integer >= 0"),
        ({"top_k": 0, "rounds": 3}, r"refine.rounds must be 0 when refine.top_k is 0"),
        ({"top_k": 4, "replicates": 8, "round": 3}, r"refine.*round"),
        ({"top_k": 4, "replicates": 8, "scan": -2}, r"refine.scan must be an integer >= 0"),
        ({"top_k": 0, "scan": 10}, r"refine.scan must be 0 when refine.top_k is 0"),
    ],
)
def test_the_local_search_settings_name_the_key(refine, message):
    with pytest.raises(ContractError, match=message):
        CalibrationSettings.from_config({"refine": refine})


def test_the_weighted_fit_follows_the_floor_not_the_walls():
    """Points far above the best (a valley's walls, where the loss is far from quadratic) barely move the weighted
    fit: it recovers the floor's quadratic, where the unweighted fit does not."""
    rng = np.random.default_rng(3)
    centre = np.array([0.5, 0.5])
    hessian = np.diag([2.0, 40.0])

    def quadratic(points):
        shifted = points - centre
        return 0.5 * np.einsum("ni,ij,nj->n", shifted, hessian, shifted)

    near = centre + rng.normal(0, 0.05, (10, 2))
    walls = centre + np.array([[0.0, 0.4], [0.05, -0.4]])
    points = np.vstack([near, walls])
    losses = quadratic(points) + np.r_[np.zeros(10), 1e4, 1e4]  # the walls rise far faster than the quadratic
    weights = floor_weights(losses)
    assert weights[10:].max() < 1e-4 * weights[:10].min()
    _, weighted = fit_quadratic(points, losses, centre, weights)
    _, unweighted = fit_quadratic(points, losses, centre)
    np.testing.assert_allclose(weighted, hessian, rtol=0.05, atol=0.5)
    assert np.abs(unweighted - hessian).max() > 100


def test_probes_along_the_valley_stay_on_its_floor():
    """From a best point on the valley's wall (off the floor across it), the probes along the valley take the
    model's step across and land lower than the best point; without that step they keep its offset."""
    along = np.linspace(0.3, 0.4, 6)
    floor = np.column_stack([along, 0.9 * along + 0.05])
    # every point on a wall, none on the floor; the best is the one nearest the minimum, 0.01 up the wall
    points = np.vstack([floor + [0.0, 0.01], floor + [0.0, 0.02], floor - [0.0, 0.02]])
    losses = valley(points)
    best = points[np.argmin(losses)]
    np.testing.assert_allclose(best, [0.4, 0.9 * 0.4 + 0.05 + 0.01])
    region = TrustRegion.around(points, losses)
    proposals = region.propose(points, losses)
    valley_probes = proposals[1:3]  # the first axis of the fit: the smallest curvature, along the floor
    assert (valley(valley_probes) < valley(best)).all()
    across = valley_probes[:, 1] - 0.9 * valley_probes[:, 0] - 0.05
    assert np.abs(across).max() < 0.002, across


def test_points_beyond_a_bound_are_moved_back_along_their_line():
    origin = np.array([0.2, 0.5])
    # beyond u0's lower bound, beyond u1's upper bound, inside
    points = np.array([[-0.2, 0.9], [0.6, 1.3], [0.3, 0.4]])
    moved = into_box(origin, points)
    np.testing.assert_allclose(moved, [[0.0, 0.7], [0.45, 1.0], [0.3, 0.4]])


def test_near_a_bound_the_search_stays_on_the_valley_floor():
    """The valley's floor runs into u0's lower bound (its minimum lies beyond it, the best fit at a parameter's
    bound, as on the SIR benchmark's observed seed 59): the step and the probes that cross the bound are moved back
    along their own lines, onto the floor where it meets the bound, not clipped coordinate by coordinate onto the
    wall (a clipped step keeps u1 from beyond the bound: 0.05 across the floor)."""

    def valley_at_bound(points):
        points = np.atleast_2d(points)
        across = points[:, 1] - 0.9 * points[:, 0] - 0.05
        return 500.0 * across**2 + (points[:, 0] + 0.1) ** 2

    along = np.linspace(0.02, 0.12, 6)
    floor = np.column_stack([along, 0.9 * along + 0.05])
    points = np.vstack([floor + [0.0, 0.01], floor + [0.0, 0.02], floor - [0.0, 0.02]])
    losses = valley_at_bound(points)
    best = points[np.argmin(losses)]
    proposals = TrustRegion.around(points, losses).propose(points, losses)
    assert ((proposals >= 0.0) & (proposals <= 1.0)).all()
    step, valley_probes = proposals[0], proposals[1:3]  # the first axis of the fit: along the floor
    assert np.isclose(step[0], 0.0) and np.isclose(valley_probes[:, 0], 0.0).any()  # both reach the bound
    assert valley_at_bound(step)[0] < valley_at_bound(best)[0]
    across = valley_probes[:, 1] - 0.9 * valley_probes[:, 0] - 0.05
    assert np.abs(across).max() < 0.002, across


def test_the_search_steps_to_the_floors_minimum_past_far_wall_points():
    """The trust region's step uses the weighted fit: with two wall points far above a quadratic floor among the
    points nearest the best, it still steps to the floor's minimum."""
    rng = np.random.default_rng(4)
    minimum, hessian = np.array([0.55, 0.5]), np.diag([2.0, 40.0])

    def loss(points):
        shifted = points - minimum
        return 0.5 * np.einsum("ni,ij,nj->n", shifted, hessian, shifted)

    near = np.array([0.5, 0.5]) + rng.normal(0, 0.02, (10, 2))
    walls = np.array([[0.5, 0.62], [0.52, 0.38]])
    points = np.vstack([near, walls])
    losses = loss(points) + np.r_[np.zeros(10), 1e4, 1e4]
    proposals = TrustRegion.around(points, losses).propose(points, losses)
    np.testing.assert_allclose(proposals[0], minimum, atol=1e-3)


def test_the_floor_scan_spreads_its_points_along_the_floor():
    """From a best point up the wall, the scan's points lie along the valley's floor (across it within the fit's
    error), evenly spaced within SCAN_SPAN trust radii either side of the best, the best itself left out."""
    along = np.linspace(0.5, 0.7, 7)
    floor = np.column_stack([along, 0.9 * along + 0.05])
    points = np.vstack([floor + [0.0, 0.004], floor - [0.0, 0.006], floor + [0.0, 0.015]])
    losses = valley(points)
    best = points[np.argmin(losses)]
    radius = 0.05
    scan = floor_scan(points, losses, radius, 10)
    assert scan.shape == (10, 2)
    across = scan[:, 1] - 0.9 * scan[:, 0] - 0.05
    # the best is 0.004 up the wall: the scan steps down onto the floor
    assert np.abs(across).max() < 1e-3, across
    assert (valley(scan) < valley(best)).sum() >= 5
    # positions along the scan's line from its centre (the best point's place), in steps of SCAN_SPAN radius / 5:
    # five either side, evenly spaced, the best point's own place left out
    direction = (scan[-1] - scan[0]) / np.linalg.norm(scan[-1] - scan[0])
    steps = (scan - scan.mean(axis=0)) @ direction / (SCAN_SPAN * radius / 5)
    np.testing.assert_allclose(np.sort(steps), [-5, -4, -3, -2, -1, 1, 2, 3, 4, 5], atol=1e-6)
    assert abs(direction @ np.array([1.0, 0.9]) / np.hypot(1.0, 0.9)) > 0.999  # along the floor's direction


@pytest.mark.parametrize("count, expected", [(1, [1]), (3, [-1, 1, 2]), (5, [-2, -1, 1, 2, 3])])
def test_an_odd_floor_scan_stays_within_its_span_too(count, expected):
    """An odd count puts its extra point on one side, at the same spacing: its farthest point reaches SCAN_SPAN
    radii, not past it (dividing by the smaller side's count put a scan of 3 at twice the span)."""
    along = np.linspace(0.5, 0.7, 7)
    floor = np.column_stack([along, 0.9 * along + 0.05])
    points = np.vstack([floor + [0.0, 0.004], floor - [0.0, 0.006], floor + [0.0, 0.015]])
    losses = valley(points)
    best, radius = points[np.argmin(losses)], 0.05
    scan = floor_scan(points, losses, radius, count)
    # the flattest axis, signed as the scan runs (its step onto the floor is across it, so it adds nothing here)
    axis = floor_scan(points, losses, radius, 2)[1] - floor_scan(points, losses, radius, 2)[0]
    steps = (scan - best) @ (axis / np.linalg.norm(axis)) / (SCAN_SPAN * radius)
    np.testing.assert_allclose(steps, np.array(expected) / max(expected), atol=1e-9)


def test_the_floor_scan_needs_enough_points_for_a_fit():
    points = np.array([[0.5, 0.5], [0.6, 0.5], [0.5, 0.6]])
    assert floor_scan(points, np.array([1.0, 2.0, 3.0]), 0.1, 10).shape == (0, 2)
    assert floor_scan(np.random.default_rng(0).random((9, 2)), np.arange(9.0), 0.1, 0).shape == (0, 2)


@pytest.mark.parametrize(
    "count, failed, scanned", [(6, 0, 0), (7, 1, 0), (7, 0, 10)], ids=["six", "seven-one-failed", "seven"]
)
def test_the_floor_scan_needs_one_finite_point_more_than_a_quadratic_has_terms(count, failed, scanned):
    """As the rounds' fit (test_a_fit_needs_one_point_more_than_a_quadratic_has_terms): six terms in two
    parameters, so seven points with a finite loss; a failed set (NaN) does not count."""
    points = bowl_points(np.array([0.5, 0.5]), count)
    losses = ((points - [0.52, 0.49]) ** 2).sum(axis=1)
    losses[:failed] = np.nan
    assert floor_scan(points, losses, 0.1, 10).shape == (scanned, 2)


def test_the_floor_scan_reaches_the_three_tenths_of_a_trust_radius_the_docs_state():
    """config/README.md (refine.scan): "within 0.3 trust radii either side of the best set". The tests above
    measure in SCAN_SPAN, whatever it is; this one holds the scan to the documented reach."""
    readme = (REPO / "config" / "README.md").read_text()
    assert "within 0.3 trust radii either side of the best set" in readme
    along = np.linspace(0.5, 0.7, 7)
    floor = np.column_stack([along, 0.9 * along + 0.05])
    points = np.vstack([floor + [0.0, 0.004], floor - [0.0, 0.006], floor + [0.0, 0.015]])
    radius = 0.05
    low, high = floor_scan(points, valley(points), radius, 2)  # one point either side, each at the full reach
    assert np.linalg.norm(high - low) / 2 == pytest.approx(0.3 * radius)


class RecordedRounds:
    """Stands in for the calibration's rounds (simcal.calibration_rounds.Rounds): scores each parameter set on the spot,
    with the trial rows _Rounds gives, and records every batch it was asked to simulate."""

    fixed: dict = {}

    def __init__(self):
        self.asked: list[list[dict]] = []

    def run(self, proposals, replicates, labels, fail_fast=False):
        self.asked.append(proposals)
        return pd.DataFrame(
            [{**labels, "param_id": param_id(p), "replicates": replicates, **p, "loss": float((p["n"] - 2) ** 2),
              "replicates_ok": replicates, "replicates_failed": 0} for p in proposals]
        )  # fmt: skip


def test_the_local_rounds_stop_when_nothing_new_lies_within_the_radius(caplog):
    """A whole-number parameter of three values, all refined: every point within the trust radius rounds to one
    of them, so the search stops at once, saying so, instead of running its rounds on nothing."""
    caplog.set_level("INFO", logger="simcal.calibrate")
    settings = CalibrationSettings.from_config(
        {"rounds": 0, "refine": {"top_k": 3, "replicates": 8, "rounds": 4}}
    )
    rounds = RecordedRounds()
    trials = [
        rounds.run([{"n": 1}, {"n": 2}, {"n": 3}], 8, {"round": 1, "phase": "refine", "method": "refine"})
    ]
    rounds.asked.clear()
    local_search(rounds, parse_bounds({"n": {"low": 1, "high": 3, "integer": True}}), trials, settings, 0.0)
    assert rounds.asked == [] and len(trials) == 1
    assert "local search: converged after 0 rounds (nothing new within the trust radius)" in caplog.text
