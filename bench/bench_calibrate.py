"""Recovery benchmark of the calibration (simcal.calibrate.calibrate, the path the calibrate wrapper runs) against a
grid search on the same observed data with the same likelihood and the same simulations.

The demo's problem: a stochastic SIR (simcal.models.sir:simulate, population 10,000, 10 initially infected, 100
days) fitted to daily case counts (one epidemic at beta 0.3, gamma 0.1 plus Poisson reporting noise) with the
Poisson likelihood of the demo (simcal.targets:poisson_nll, the replicate mean as expected count).

Seeds. Every simulation's seed derives from a master seed (``--simulation-seed``). With common random numbers
(the default here, ``simulation.common_random_numbers``) replicate r has the same seed in every parameter set, so
the 32-replicate loss is one deterministic function of (beta, gamma), and the same for the grid and for the
calibration's refine step: "the best fit" is its minimum. The model's counts are binomial quantiles of fixed
uniforms (simcal.models.sir), so that function is nearly smooth: it moves by small steps where a count changes,
instead of being reshuffled at every point (ripples of a few tenths in NLL remain, and on a flat valley floor they
decide where the minimum lies). ``--independent-seeds`` measures the same with seeds drawn per parameter set (the loss is then a rough
function: each point has its own Monte Carlo noise).

For every observed-data seed:

- The grid search: the model run on the cluster's workers with the seeds the runner gives each replicate, the
  loss computed there for a chunk of points at once, and checked against the library path (simcal.runner.simulate
  and simcal.calibrate.losses_for) at its three best points. The likelihood has a long, narrow valley (the data fix
  the growth rate r = beta - gamma far better than gamma), so a plain (beta, gamma) grid aliases; instead: a
  coarse 21 x 21 grid over the whole box (8 replicates) finds the valley, then for 31 gammas log-spaced over the
  whole gamma range the best r by zooming windows down to steps of 0.0006 (32 replicates: a profile likelihood),
  then the same around the best gamma at steps of 2% of it, then over +-10% of the new best at steps of 0.5% (r
  down to steps of 0.00004). Its best fit is the best 32-replicate point. The last stage is wide because the
  valley floor is flat and rippled: a narrower one (+-2%, the grid before 2026-12-02) missed lower points 3% away,
  which calibrations then found (NLL below the grid's). ``calibrate_runs_below_grid`` counts runs that end more
  than 0.05 NLL below the grid's best: a grid that is not the minimum of its own function is no baseline.
- The calibration, for every sampler seed: 32 Sobol points, ``--rounds`` TPE rounds of 16 (10),
  ``--replicates`` each, then the refine step: the top 8 again with 32 replicates, ``--refine-rounds`` rounds (4)
  of local search at 32 replicates (simcal.local_search; 5 parameter sets a round) and a floor scan of ``--scan``
  parameter sets (10) at 32 replicates. The few-replicate search only
  has to find the valley: its own minimum lies elsewhere (the Monte Carlo error of 4 replicates), so the budget
  goes to the 32-replicate loss that defines the best fit. At most 2,000 simulations (counted in its simulations
  file).
- The trivial baseline, measured beside it: the same budget with Sobol points only (sampler sobol), first sampler
  seed.
- A check of the optimiser alone: the same calibration of the deterministic mean-field SIR (no Monte Carlo noise,
  one replicate; the refine step's local search and scan too, with 2 replicates that change nothing) against a
  dense vectorised grid of the same Poisson likelihood.
- With ``--floor-seed S``, also the noise floor: the same grid search with master seed S (another set of 32
  replicates). How far its best fit lies from the first one says how precisely the data and 32 replicates define
  "the best fit" at all. Off by default (it doubles the run time).

The runs are spread over ``--drivers`` processes sharing one LocalCluster of ``--workers`` worker processes (the
calibration's own work, Optuna and the losses, runs in its driver process, so one driver alone leaves the workers
idle between rounds).

Prints per-run lines (#) and `BENCH <name> value=... baseline=... ratio=... goal=...` lines: the median and worst
relative error of the calibrated beta and gamma against the grid's best fit over observed-data and sampler seeds
(baseline column: the same for Sobol points alone), the mean-field check (info; baseline column: the stochastic
calibration's median error), the median half-width of each grid's 95% profile-likelihood interval of gamma (info:
how precisely the data pin gamma down at all; baseline column: the calibration's median gamma error), the noise
floor if asked for (info), the most NLL any calibration's best fit lies above the grid's (goal at most 1.92, the
95% likelihood-ratio rise of one parameter: no test at that level could tell the two fits apart; baseline column:
the same for Sobol points alone), how many calibrations ended below the grid's
best (goal 0; baseline column: all runs), and the most simulations any calibration used (baseline column: the
grids' median count).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from benchkit import cpu_seconds, load_average  # noqa: E402

from simcal.calibrate import calibrate, losses_for, parse_targets  # noqa: E402
from simcal.contract import param_id, replicate_seed  # noqa: E402
from simcal.models.sir import mean_field_curves, observe  # noqa: E402
from simcal.runner import simulate  # noqa: E402
from simcal.targets import poisson_log_likelihood  # noqa: E402

MODEL = "simcal.models.sir:simulate"
MEAN_FIELD = "simcal.models.sir:mean_field"
FIXED = {"population": 10_000, "initial_infected": 10, "days": 100}
TRUTH = {"beta": 0.3, "gamma": 0.1}
BOUNDS = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.03, "high": 0.3}}
NAMES = ("beta", "gamma")
TARGETS = [
    {"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence", "on": "day"}
]
MIN_MEAN = 1e-3  # poisson_nll's floor of the expected count
# plus "rounds" of local search and a floor "scan" (--refine-rounds, --scan)
REFINE = {"top_k": 8, "replicates": 32}
# the calibration's settings the benchmark runs (--rounds, --replicates, --refine-rounds, --scan)
CALIBRATION = {"rounds": 10, "replicates": 4, "refine_rounds": 4, "scan": 10}
# the grid search's sizes (--grid-points, --profile-points, --window-points, --floor-points)
GRID_POINTS = {"coarse": 21, "profile": 31, "window": 9, "floor": 41}
LOCAL_PROPOSALS = 1 + 2 * 2  # per local search round: the model's minimum and two points per parameter
COARSE_REPLICATES = 8
# After a window of step s in r, a gamma whose best is more than max(PRUNE_FLOOR, PRUNE_PER_STEP * s) above the best
# of all gets no narrower windows. A window misses the valley floor by at most s / 2 in r, which costs at most ~40
# in NLL at s = 0.01 (a quarter of the margin there) and falls with s squared.
PRUNE_PER_STEP, PRUNE_FLOOR = 1e4, 20.0
BUDGET = 2_000
# NLL: a calibration further below the grid's best than this means the grid missed the minimum
BELOW_GRID = 0.05
# NLL: half the 95% quantile of chi-squared with 1 degree of freedom (3.84 / 2), the likelihood-ratio interval of
# one parameter (for this likelihood of a 32-replicate mean an approximation)
PROFILE_RISE = 1.92

_client: Client | None = None  # each driver process's connection to the shared cluster


def connect(address: str) -> None:
    global _client
    logging.basicConfig(level=logging.WARNING)
    _client = Client(address)


@contextmanager
def cluster_and_drivers(workers: int, drivers: int, prefix: str):
    """(a temporary folder, a pool of ``drivers`` spawned processes each connected to one LocalCluster of
    ``workers`` worker processes); all three end with the block."""
    with (
        tempfile.TemporaryDirectory(prefix=prefix) as workdir,
        LocalCluster(
            n_workers=workers, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
        ) as cluster,
        ProcessPoolExecutor(
            drivers, multiprocessing.get_context("spawn"), connect, (cluster.scheduler_address,)
        ) as pool,
    ):
        yield workdir, pool


def observed_data(seed: int) -> pd.DataFrame:
    return observe({**FIXED, **TRUTH}, seed, noise="poisson")


def simulation_settings(replicates: int, master_seed: int, crn: bool) -> dict:
    return {"replicates": replicates, "seed": master_seed, "common_random_numbers": crn}


# -- the grid search (baseline) ---------------------------------------------------------------------------------


class Grid:
    """Losses at (beta, gamma) points from the calibration's simulations: the model with the seeds the runner gives
    each replicate (simcal.contract.replicate_seed with the same master seed and common-random-numbers setting),
    run on the cluster's workers, and the Poisson likelihood of the replicate mean computed there for a chunk of
    points at once (the formula of simcal.targets:poisson_nll). ``check`` confirms, for the best points, that the
    library path (simcal.runner.simulate, then simcal.calibrate.losses_for) gives the same losses to 1e-9. The
    32-replicate losses are remembered, and the best of them is the grid's best fit."""

    def __init__(self, observed: pd.DataFrame, master_seed: int, crn: bool, workdir: Path):
        self.observed, self.master_seed, self.crn, self.workdir = observed, master_seed, crn, workdir
        self.counts = observed.set_index("day")["incidence"]
        self.refined: dict[tuple[float, float], float] = {}
        self.simulations = 0

    def seeds(self, point: tuple[float, float], replicates: int) -> list[int]:
        return [replicate_seed(point_id(point), r, self.master_seed, self.crn) for r in range(replicates)]

    def losses(self, points: list[tuple[float, float]], replicates: int) -> list[float]:
        """The loss of every point, in order."""
        from bench_calibrate import chunk_losses  # by module name, so that the workers import it too

        items = [(point, self.seeds(point, replicates)) for point in points]
        size = max(
            1, min(-(-len(items) // 8), 8)
        )  # ~8 points x 32 replicates: a task of a few tenths of a second
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        futures = _client.map(chunk_losses, chunks, counts=self.counts, pure=False)
        self.simulations += len(points) * replicates
        return [loss for chunk in _client.gather(futures) for loss in chunk]

    def refine(self, points: list[tuple[float, float]]) -> None:
        new = list(dict.fromkeys(p for p in points if p not in self.refined))
        if new:
            self.refined.update(zip(new, self.losses(new, REFINE["replicates"]), strict=True))

    def best(self) -> tuple[tuple[float, float], float]:
        return min(self.refined.items(), key=lambda item: item[1])

    def check(self, points: list[tuple[float, float]]) -> None:
        """The grid's losses are the calibration's target, computed by the library path from the same seeds."""
        table = pd.DataFrame(points, columns=list(NAMES))
        output = self.workdir / f"grid-check-{os.getpid()}-{time.perf_counter_ns()}.parquet"
        settings = simulation_settings(REFINE["replicates"], self.master_seed, self.crn)
        simulate(MODEL, table, output, settings, fixed_params=FIXED, client=_client)
        sims = pd.read_parquet(output)
        output.unlink()
        assert (sims["status"] == "ok").all(), "a grid simulation failed"
        library = losses_for([sims], self.observed, parse_targets(TARGETS)).set_index("param_id")["loss"]
        for point in points:
            assert np.isclose(library[point_id(point)], self.refined[point], rtol=1e-9), (point, library)


def chunk_losses(items: list, counts: pd.Series) -> list[float]:
    """On a worker: for every (point, seeds), the Poisson NLL of ``counts`` with the mean incidence of the model's
    replicates as expected count."""
    from simcal.models.sir import simulate as sir

    observed = counts.to_numpy(dtype=float)
    days = counts.index.to_numpy()
    losses = []
    for (beta, gamma), seeds in items:
        params = {**FIXED, "beta": beta, "gamma": gamma}
        total = np.zeros(FIXED["days"])
        for seed in seeds:  # the model numbers its rows by day, 0 to days - 1
            total += sir(params, seed)["incidence"].to_numpy(dtype=float)
        mean = total[days] / len(seeds)
        losses.append(float(-poisson_log_likelihood(observed, np.maximum(mean, MIN_MEAN)).sum()))
    return losses


def point_id(point: tuple[float, float]) -> str:
    return param_id({**FIXED, **dict(zip(NAMES, point, strict=True))})


def points_of(axes: list[np.ndarray]) -> list[tuple[float, float]]:
    return [(float(b), float(g)) for b in axes[0] for g in axes[1]]


def inside(beta: float) -> bool:
    return BOUNDS["beta"]["low"] <= beta <= BOUNDS["beta"]["high"]


def profile(grid: Grid, gammas: np.ndarray, centre: float, spans: tuple, points: int) -> None:
    """For every gamma, the best growth rate r = beta - gamma by windows of ``points`` values, each ``spans[i]``
    either side of the best so far, starting at ``centre`` (a best on a window's edge moves the window, at most
    four times, before it shrinks). A gamma whose best is far above the best of all after a window (see
    PRUNE_PER_STEP) gets no narrower ones: it cannot hold the minimum."""
    gammas = [float(g) for g in gammas]
    best = dict.fromkeys(gammas, float(centre))
    for span in spans:
        step = 2 * span / (points - 1)
        for _ in range(5):
            windows = {
                g: [float(r) for r in np.linspace(best[g] - span, best[g] + span, points) if inside(g + r)]
                for g in gammas
            }
            grid.refine([(g + r, g) for g in gammas for r in windows[g]])
            moved = False
            for g in [g for g in gammas if windows[g]]:
                rates = windows[g]
                index = int(np.argmin([grid.refined[(g + r, g)] for r in rates]))
                beyond = rates[index] + (step if index else -step)
                moved |= index in (0, len(rates) - 1) and len(rates) == points and inside(g + beyond)
                best[g] = rates[index]
            if not moved:
                break
        _, lowest = grid.best()
        margin = max(PRUNE_FLOOR, PRUNE_PER_STEP * step)
        gammas = [g for g in gammas if grid.refined.get((g + best[g], g), np.inf) <= lowest + margin]


def grid_search(observed_seed: int, master_seed: int, crn: bool, workdir: str, points: dict) -> dict:
    """The best fit of the 32-replicate likelihood over the whole box.

    The likelihood has a long, narrow valley (the data fix the growth rate r = beta - gamma to within ~1%, gamma
    much less), so a plain (beta, gamma) grid aliases: which grid points happen to fall near the valley floor
    decides its best. So: a coarse (beta, gamma) grid over the whole box (8 replicates) finds the valley; then for
    every gamma of a log-spaced axis over the whole gamma range, the best r by three zooming windows (32
    replicates: the profile likelihood); then the same around the best gamma at 2% steps, and for ``floor``
    gammas around the new best at 0.5% steps (41: +-10%) with a finer last window.
    """
    began = time.perf_counter()
    grid = Grid(observed_data(observed_seed), master_seed, crn, Path(workdir))
    axes = [np.linspace(BOUNDS[p]["low"], BOUNDS[p]["high"], points["coarse"]) for p in NAMES]
    coarse = grid.losses(points_of(axes), COARSE_REPLICATES)
    coarse_best = int(np.argmin(coarse))
    b0, g0 = points_of(axes)[coarse_best]
    gammas = np.geomspace(BOUNDS["gamma"]["low"], BOUNDS["gamma"]["high"], points["profile"])
    profile(grid, gammas, b0 - g0, (0.04, 0.01, 0.0025), points["window"])
    stages = (
        (0.02, points["window"], (0.01, 0.0025, 0.000625)),
        (0.005, points["floor"], (0.0025, 0.000625, 0.00015625)),
    )
    for step, count, spans in stages:
        (beta, gamma), _ = grid.best()
        offsets = step * (np.arange(count) - count // 2)
        gammas = np.unique(np.clip(gamma * (1 + offsets), BOUNDS["gamma"]["low"], BOUNDS["gamma"]["high"]))
        profile(grid, gammas, beta - gamma, spans, points["window"])
    top = sorted(grid.refined, key=grid.refined.get)[:3]
    grid.check(top)
    (beta, gamma), loss = grid.best()
    return {
        "observed_seed": observed_seed, "master_seed": master_seed, "beta": beta, "gamma": gamma, "loss": loss,
        "simulations": grid.simulations, "points": len(grid.refined), "seconds": time.perf_counter() - began,
        "interval": profile_interval(grid.refined, gamma, loss),
    }  # fmt: skip


def profile_interval(losses: dict, best_gamma: float, best_loss: float) -> tuple[float, float]:
    """The gammas whose profile loss (the lowest loss the grid found at that gamma, over its r windows) is within
    PROFILE_RISE of the best: the likelihood-ratio 95% interval of gamma, relative to the best gamma (-0.08 = 8%
    below). It measures how precisely the data and 32 replicates pin gamma down at all. Beyond the last stage's
    +-10% the grid's gammas are ~8% apart (the log-spaced profile), so an interval that reaches past it is only
    that coarse."""
    profile: dict[float, float] = {}
    for (_, gamma), loss in losses.items():
        profile[gamma] = min(loss, profile.get(gamma, np.inf))
    inside = [gamma for gamma, loss in profile.items() if loss <= best_loss + PROFILE_RISE]
    return min(inside) / best_gamma - 1, max(inside) / best_gamma - 1


# -- the calibration --------------------------------------------------------------------------------------------


def calibration(
    observed_seed: int, sampler_seed: int, sampler: str, rounds: int, replicates: int, refine_rounds: int,
    master_seed: int, crn: bool, workdir: str, scan: int = 0,
) -> dict:  # fmt: skip
    out = Path(workdir) / f"calibration-{observed_seed}-{sampler}-{sampler_seed}-{time.perf_counter_ns()}"
    began = time.perf_counter()
    settings = {
        "initial_design": "sobol",
        "initial_points": 32,
        "sampler": sampler,
        "rounds": rounds,
        "proposals_per_round": 16,
        "seed": sampler_seed,
        "refine": {**REFINE, "rounds": refine_rounds, "scan": scan},
    }
    trials = calibrate(
        MODEL, observed_data(observed_seed), BOUNDS, TARGETS, out / "simulations.parquet", out / "trials.parquet",
        settings, simulation_settings(replicates, master_seed, crn), fixed_params=FIXED, client=_client,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    refined = trials[trials["phase"] == "refine"]
    best = refined.loc[refined["loss"].idxmin()]
    sims = pd.read_parquet(out / "simulations.parquet", columns=["param_id", "replicate"])
    return {
        "observed_seed": observed_seed, "sampler_seed": sampler_seed, "sampler": sampler,
        "beta": float(best["beta"]), "gamma": float(best["gamma"]), "loss": float(best["loss"]),
        "simulations": int(len(sims.drop_duplicates())), "seconds": seconds,
        "trials": str(out / "trials.parquet"),
    }  # fmt: skip


# -- the mean-field check of the optimiser alone ----------------------------------------------------------------


def mean_field_nll(observed: pd.DataFrame, beta, gamma) -> np.ndarray:
    """poisson_nll of the mean-field model at every (beta, gamma), in one vectorised pass."""
    incidence, _ = mean_field_curves(
        beta, gamma, FIXED["population"], FIXED["initial_infected"], FIXED["days"]
    )
    counts = observed["incidence"].to_numpy(dtype=float)
    return -poisson_log_likelihood(counts, np.maximum(incidence, MIN_MEAN)).sum(axis=-1)


def dense_minimum(observed: pd.DataFrame, beta: np.ndarray, gamma: np.ndarray) -> tuple[float, float, float]:
    nll = mean_field_nll(observed, beta[:, None], gamma[None, :])
    i, j = np.unravel_index(np.argmin(nll), nll.shape)
    return float(beta[i]), float(gamma[j]), float(nll[i, j])


def mean_field_check(
    observed_seed: int, sampler_seed: int, rounds: int, refine_rounds: int, workdir: str, scan: int = 0
) -> dict:
    observed = observed_data(observed_seed)
    beta = np.linspace(BOUNDS["beta"]["low"], BOUNDS["beta"]["high"], 251)  # steps of 0.002 and 0.001
    gamma = np.linspace(BOUNDS["gamma"]["low"], BOUNDS["gamma"]["high"], 271)
    best = dense_minimum(observed, beta, gamma)
    beta = np.linspace(best[0] * 0.98, best[0] * 1.02, 201)  # then +-2% around it at steps of 0.02%
    gamma = np.linspace(best[1] * 0.98, best[1] * 1.02, 201)
    best = dense_minimum(observed, beta, gamma)
    out = Path(workdir) / f"mean-field-{observed_seed}-{sampler_seed}-{time.perf_counter_ns()}"
    settings = {"initial_points": 32, "rounds": rounds, "proposals_per_round": 16, "seed": sampler_seed}
    # the same steps as the stochastic calibration; the refine step's second replicate changes nothing here (the
    # model is deterministic), its local search is the point
    refine = {"top_k": REFINE["top_k"], "replicates": 2, "rounds": refine_rounds, "scan": scan}
    trials = calibrate(
        MEAN_FIELD, observed, BOUNDS, TARGETS, out / "simulations.parquet", out / "trials.parquet",
        {**settings, "refine": refine}, {"replicates": 1}, fixed_params=FIXED, client=_client,
    )  # fmt: skip
    found = trials.loc[trials["loss"].idxmin()]
    same = mean_field_nll(observed, np.array([found["beta"]]), np.array([found["gamma"]]))[0]
    assert np.isclose(same, found["loss"], rtol=1e-9), "the vectorised grid's likelihood is not the target's"
    return {
        "observed_seed": observed_seed, "beta": float(found["beta"]), "gamma": float(found["gamma"]),
        "loss": float(found["loss"]), "grid": {"beta": best[0], "gamma": best[1], "loss": best[2]},
    }  # fmt: skip


# -- report -----------------------------------------------------------------------------------------------------


def errors(found: dict, reference: dict) -> dict:
    return {p: abs(found[p] - reference[p]) / reference[p] for p in NAMES}


def bench_line(name: str, value: float, baseline: float, unit: str, goal: str, digits: int = 1) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(
        f"BENCH {name} value={value:.{digits}f}{unit} baseline={baseline:.{digits}f}{unit} ratio={ratio:.2f} "
        f"goal={goal}",
        flush=True,
    )


QUICK = {  # --quick: tiny sizes for the CI test that the benchmark runs and reports
    "observed_seeds": [7], "sampler_seeds": [1], "rounds": 1, "refine_rounds": 1, "scan": 2, "grid_points": 5,
    "profile_points": 5,
    "window_points": 3,
    "floor_points": 3,
}  # fmt: skip


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of this benchmark and bench/replay_refine.py alike: which runs (seeds), on what cluster."""
    parser.add_argument("--observed-seeds", type=int, nargs="+", default=list(range(7, 17)))
    parser.add_argument("--sampler-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--simulation-seed", type=int, default=0, help="master seed of the simulations")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the LocalCluster")
    parser.add_argument("--drivers", type=int, default=2, help="processes running calibrations and grids")


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(parser)
    parser.add_argument(
        "--rounds", type=int, default=CALIBRATION["rounds"], help="TPE rounds of 16 proposals"
    )
    parser.add_argument(
        "--refine-rounds",
        type=int,
        default=CALIBRATION["refine_rounds"],
        help=f"local search rounds of {LOCAL_PROPOSALS} sets after refine",
    )
    parser.add_argument(
        "--scan", type=int, default=CALIBRATION["scan"], help="sets of the floor scan after the local search"
    )
    parser.add_argument(
        "--replicates",
        type=int,
        default=CALIBRATION["replicates"],
        help="replicates per proposal before refine",
    )
    parser.add_argument(
        "--floor-seed", type=int, default=None, help="also run every grid with this master seed (noise floor)"
    )
    parser.add_argument("--independent-seeds", action="store_true", help="no common random numbers")
    parser.add_argument(
        "--grid-points", type=int, default=GRID_POINTS["coarse"], help="coarse grid: points per axis"
    )
    parser.add_argument(
        "--profile-points", type=int, default=GRID_POINTS["profile"], help="gamma values of the profile"
    )
    parser.add_argument(
        "--window-points", type=int, default=GRID_POINTS["window"], help="points of each zooming window"
    )
    parser.add_argument(
        "--floor-points",
        type=int,
        default=GRID_POINTS["floor"],
        help="gammas of the grid's last stage, at 0.5%% steps",
    )
    parser.add_argument("--quick", action="store_true", help=f"tiny sizes for a smoke test: {QUICK}")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    budget = 32 * args.replicates + args.rounds * 16 * args.replicates
    budget += REFINE["top_k"] * (REFINE["replicates"] - args.replicates)
    budget += (args.refine_rounds * LOCAL_PROPOSALS + args.scan) * REFINE["replicates"]
    if budget > BUDGET:
        parser.error(
            f"--rounds {args.rounds}, --refine-rounds {args.refine_rounds} and --scan {args.scan} can use {budget} "
            f"simulations, more than the budget of {BUDGET}"
        )
    args.budget = budget
    return args


def main() -> None:
    args = parse_arguments()
    crn = not args.independent_seeds
    points = {
        "coarse": args.grid_points, "profile": args.profile_points, "window": args.window_points,
        "floor": args.floor_points,
    }  # fmt: skip
    print(
        f"# {len(args.observed_seeds)} observed-data seeds x {len(args.sampler_seeds)} sampler seeds; calibration "
        f"budget at most {args.budget} simulations ({args.replicates} replicates per proposal, {args.rounds} "
        f"rounds); {'common random numbers' if crn else 'independent seeds'}, master seed "
        f"{args.simulation_seed}; LocalCluster of {args.workers} worker processes, {args.drivers} driver "
        f"processes; load average {load_average()}",
        flush=True,
    )
    began = time.perf_counter()
    with cluster_and_drivers(args.workers, args.drivers, "bench_calibrate_") as (workdir, pool):
        grids, floors, runs, checks = {}, {}, [], []
        for seed in args.observed_seeds:  # the long grids first, the calibrations fill in around them
            grids[seed] = pool.submit(grid_search, seed, args.simulation_seed, crn, workdir, points)
            if args.floor_seed is not None:
                floors[seed] = pool.submit(grid_search, seed, args.floor_seed, crn, workdir, points)
        for seed in args.observed_seeds:
            jobs = [(s, "tpe") for s in args.sampler_seeds] + [(args.sampler_seeds[0], "sobol")]
            for sampler_seed, sampler in jobs:
                arguments = (
                    seed,
                    sampler_seed,
                    sampler,
                    args.rounds,
                    args.replicates,
                    args.refine_rounds,
                    args.simulation_seed,
                    crn,
                )
                runs.append(pool.submit(calibration, *arguments, workdir, args.scan))
            checks.append(
                pool.submit(
                    mean_field_check,
                    seed,
                    args.sampler_seeds[0],
                    args.rounds,
                    args.refine_rounds,
                    workdir,
                    args.scan,
                )
            )
        grids = {seed: future.result() for seed, future in grids.items()}
        floors = {seed: future.result() for seed, future in floors.items()}
        runs = [future.result() for future in runs]
        checks = [future.result() for future in checks]
    report(args, grids, floors, runs, checks)
    print(
        f"# {time.perf_counter() - began:.0f} s in all, {cpu_seconds():.0f} CPU seconds; load average {load_average()}",
        flush=True,
    )


def report(args: argparse.Namespace, grids: dict, floors: dict, runs: list, checks: list) -> None:
    tpe, sobol, floor_errors = [], [], []
    for seed in args.observed_seeds:
        grid = grids[seed]
        print(
            f"# observed seed {seed}: grid best beta={grid['beta']:.4f} gamma={grid['gamma']:.4f} (NLL "
            f"{grid['loss']:.1f}; {grid['points']} points, {grid['simulations']} simulations, "
            f"{grid['seconds']:.0f} s); gamma within {PROFILE_RISE} NLL of it (95% profile-likelihood interval): "
            f"{100 * grid['interval'][0]:+.1f}% to {100 * grid['interval'][1]:+.1f}%",
            flush=True,
        )
        if seed in floors:
            repeat = floors[seed]
            floor_errors.append(errors(repeat, grid))
            print(
                f"#   the same grid with master seed {args.floor_seed}: beta={repeat['beta']:.4f} "
                f"gamma={repeat['gamma']:.4f} ({100 * floor_errors[-1]['beta']:.1f}%, "
                f"{100 * floor_errors[-1]['gamma']:.1f}% away)",
                flush=True,
            )
        for run in [r for r in runs if r["observed_seed"] == seed]:
            run["error"] = errors(run, grid)
            (tpe if run["sampler"] == "tpe" else sobol).append(run)
            print(
                f"#   {run['sampler']} seed {run['sampler_seed']}: beta={run['beta']:.4f} gamma={run['gamma']:.4f} "
                f"error beta {100 * run['error']['beta']:.1f}% gamma {100 * run['error']['gamma']:.1f}%, NLL "
                f"{run['loss'] - grid['loss']:+.2f} vs the grid's; {run['simulations']} simulations, "
                f"{run['seconds']:.0f} s",
                flush=True,
            )
        check = next(c for c in checks if c["observed_seed"] == seed)
        check["error"] = errors(check, check["grid"])
        print(
            f"#   mean-field check: calibrated beta={check['beta']:.4f} gamma={check['gamma']:.4f}, dense grid "
            f"beta={check['grid']['beta']:.4f} gamma={check['grid']['gamma']:.4f} (error "
            f"{100 * check['error']['beta']:.1f}%, {100 * check['error']['gamma']:.1f}%; NLL "
            f"{check['loss'] - check['grid']['loss']:+.2f})",
            flush=True,
        )
    for parameter in NAMES:
        found = np.array([100 * r["error"][parameter] for r in tpe])
        trivial = np.array([100 * r["error"][parameter] for r in sobol])  # Sobol points only, same budget
        bench_line(f"calibrate_{parameter}_error_median", np.median(found), np.median(trivial), "%", "<=5%")
        bench_line(f"calibrate_{parameter}_error_worst", found.max(), trivial.max(), "%", "<=5%")
        mean_field = np.median([100 * c["error"][parameter] for c in checks])  # the optimiser's share
        bench_line(
            f"calibrate_{parameter}_error_median_mean_field", mean_field, np.median(found), "%", "info"
        )
        if floor_errors:
            floor = np.median([100 * f[parameter] for f in floor_errors])
            bench_line(f"calibrate_{parameter}_grid_repeat_median", floor, np.median(found), "%", "info")
    half_widths = [100 * (g["interval"][1] - g["interval"][0]) / 2 for g in grids.values()]
    gamma_errors = [100 * r["error"]["gamma"] for r in tpe]
    # what the data say about gamma, beside how far the calibration lands from the grid's best (baseline column)
    bench_line(
        "calibrate_gamma_interval_halfwidth_median",
        np.median(half_widths),
        np.median(gamma_errors),
        "%",
        "info",
    )
    # How far above the grid's best fit each calibration ends, in the data's own terms: a rise of at most PROFILE_RISE
    # means a likelihood-ratio test at 95% cannot tell the two fits apart (baseline column: Sobol points alone)
    rise = {
        sampler: max(r["loss"] - grids[r["observed_seed"]]["loss"] for r in runs)
        for sampler, runs in (("tpe", tpe), ("sobol", sobol))
    }
    bench_line("calibrate_nll_above_grid_worst", rise["tpe"], rise["sobol"], "NLL", f"<={PROFILE_RISE}NLL", 2)
    below = [r for r in tpe + sobol if r["loss"] < grids[r["observed_seed"]]["loss"] - BELOW_GRID]
    bench_line("calibrate_runs_below_grid", len(below), len(tpe + sobol), "runs", "<=0", digits=0)
    bench_line(
        "calibrate_simulations_worst",
        max(r["simulations"] for r in tpe + sobol),
        float(np.median([g["simulations"] for g in grids.values()])),
        "sims",
        f"<={BUDGET}sims",
        digits=0,
    )


if __name__ == "__main__":
    main()
