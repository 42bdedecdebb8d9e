"""Recovery benchmark of the calibration (simcal.calibrate.calibrate, the path the calibrate wrapper runs) against a
dense grid search on the same observed data with the same likelihood.

The demo's problem: a stochastic SIR (simcal.models.sir:simulate, population 10,000, 10 initially infected, 100
days) fitted to daily case counts (one epidemic at beta 0.3, gamma 0.1 plus Poisson reporting noise) with the
Poisson likelihood of the demo (simcal.targets:poisson_nll, the replicate mean as expected count).

For every observed-data seed:

- Baseline, a grid search through the same library path (simcal.runner.simulate on the same cluster, losses from
  simcal.calibrate.losses_for with the same target): a coarse grid over the whole box (26 x 28 points, 8
  replicates), then 25 x 25 points over +-30% around its best, then 17 x 17 points over +-6% around that (both
  with the refine step's 32 replicates, so the same likelihood estimate the calibration chooses its best by). The
  grid's best fit is the best point of the last stage.
- The same grid search repeated on grids shifted by half a step (other parameter sets, hence other seeds): how far
  its best fit lies from the first one is the noise floor, how precisely "the best fit" is defined at all. Also
  printed: the Monte Carlo standard deviation of the 32-replicate loss at the best fit (8 independent estimates),
  and the range of gamma over the +-30% stage's points whose loss is within two of those of its best.
- The calibration, for every sampler seed: 32 Sobol points, ``--rounds`` TPE rounds of 16, 4 replicates each, then
  the refine step (top 8 again with 32 replicates); at most 2,000 simulations (counted in its simulations file).
- A trivial baseline beside it: the same budget with Sobol points only (sampler sobol), first sampler seed.

Prints per-run lines (#) and `BENCH <name> value=... baseline=... ratio=... goal=...` lines: the median and worst
relative error of the calibrated beta and gamma against the grid's best fit (baseline column: the grid's own noise
floor, median or worst), and the most simulations any calibration used (baseline column: the grid's count).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from distributed import Client, LocalCluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from simcal.calibrate import calibrate, losses_for, parse_targets  # noqa: E402
from simcal.models.sir import observe  # noqa: E402
from simcal.runner import simulate  # noqa: E402

MODEL = "simcal.models.sir:simulate"
FIXED = {"population": 10_000, "initial_infected": 10, "days": 100}
TRUTH = {"beta": 0.3, "gamma": 0.1}
BOUNDS = {"beta": {"low": 0.1, "high": 0.6}, "gamma": {"low": 0.03, "high": 0.3}}
TARGETS = [
    {"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence", "on": "day"}
]
SEARCH_REPLICATES, REFINE = 4, {"top_k": 8, "replicates": 32}
NOISE_REPEATS = 8  # independent 32-replicate estimates of the loss at the grid's best fit
BUDGET = 2_000


def grid_stage(
    client: Client,
    observed: pd.DataFrame,
    beta: np.ndarray,
    gamma: np.ndarray,
    replicates: int,
    workdir: Path,
) -> tuple[pd.DataFrame, int]:
    """Loss of every (beta, gamma) of the grid, through the library path; returns (table, simulations run)."""
    table = pd.DataFrame([(b, g) for b in beta for g in gamma], columns=["beta", "gamma"])
    output = workdir / f"grid-{time.perf_counter_ns()}.parquet"
    simulate(MODEL, table, output, {"replicates": replicates}, fixed_params=FIXED, client=client)
    sims = pd.read_parquet(
        output, columns=["param_id", "replicate", "status", "beta", "gamma", "day", "incidence"]
    )
    losses = losses_for([sims], observed, parse_targets(TARGETS)).set_index("param_id")["loss"]
    params = sims.drop_duplicates("param_id").set_index("param_id")[["beta", "gamma"]]
    output.unlink()
    return params.join(losses).reset_index(), len(table) * replicates


def axis(low: float, high: float, points: int, shift: float, bound: dict) -> np.ndarray:
    """``points`` evenly spaced values from low to high, moved by ``shift`` steps, kept inside the bounds."""
    step = (high - low) / (points - 1)
    return np.unique(np.clip(np.linspace(low, high, points) + shift * step, bound["low"], bound["high"]))


def grid_search(client: Client, observed: pd.DataFrame, workdir: Path, shift: float = 0.0) -> dict:
    """Coarse grid over the whole box, then two zooms around the best point so far; ``shift`` moves every grid
    by that fraction of its step (other parameter sets, hence other seeds: an independent repeat)."""
    began = time.perf_counter()
    beta, gamma = BOUNDS["beta"], BOUNDS["gamma"]
    stage, count = grid_stage(
        client, observed, axis(0.1, 0.6, 26, shift, beta), axis(0.03, 0.3, 28, shift, gamma), 8, workdir
    )
    best = stage.loc[stage["loss"].idxmin()]
    wide = None
    for span, points in ((0.30, 25), (0.06, 17)):
        axes = [
            axis(best[p] * (1 - span), best[p] * (1 + span), points, shift, BOUNDS[p])
            for p in ("beta", "gamma")
        ]
        stage, used = grid_stage(client, observed, *axes, REFINE["replicates"], workdir)
        count += used
        best = stage.loc[stage["loss"].idxmin()]
        wide = stage if wide is None else wide
    return {
        "beta": float(best["beta"]),
        "gamma": float(best["gamma"]),
        "loss": float(best["loss"]),
        "simulations": count,
        "seconds": time.perf_counter() - began,
        "wide": wide,
    }


def loss_noise(client: Client, observed: pd.DataFrame, best: dict, workdir: Path) -> float:
    """Standard deviation of the 32-replicate loss at the grid's best fit over independent sets of replicates.

    Seeds derive from the parameter values, so each repeat moves beta by a relative 1e-12 (a different param_id,
    hence other seeds; the model cannot tell the difference)."""
    betas = best["beta"] * (1 + 1e-12 * np.arange(1, NOISE_REPEATS + 1))
    table, _ = grid_stage(client, observed, betas, np.array([best["gamma"]]), REFINE["replicates"], workdir)
    return float(table["loss"].std(ddof=1))


def calibration(client: Client, observed: pd.DataFrame, seed: int, sampler: str, rounds: int, workdir: Path):
    out = workdir / f"calibration-{sampler}-{seed}-{time.perf_counter_ns()}"
    began = time.perf_counter()
    settings = {
        "initial_design": "sobol",
        "initial_points": 32,
        "sampler": sampler,
        "rounds": rounds,
        "proposals_per_round": 16,
        "seed": seed,
        "refine": REFINE,
    }
    trials = calibrate(
        MODEL, observed, BOUNDS, TARGETS, out / "simulations.parquet", out / "trials.parquet", settings,
        {"replicates": SEARCH_REPLICATES}, fixed_params=FIXED, client=client,
    )  # fmt: skip
    seconds = time.perf_counter() - began
    refined = trials[trials["phase"] == "refine"]
    best = refined.loc[refined["loss"].idxmin()]
    sims = pd.read_parquet(out / "simulations.parquet", columns=["param_id", "replicate"])
    return {
        "beta": float(best["beta"]),
        "gamma": float(best["gamma"]),
        "loss": float(best["loss"]),
        "simulations": int(len(sims.drop_duplicates())),
        "seconds": seconds,
    }


def errors(found: dict, reference: dict) -> dict:
    return {p: abs(found[p] - reference[p]) / reference[p] for p in ("beta", "gamma")}


def bench_line(name: str, value: float, baseline: float, unit: str, goal: str, digits: int = 1) -> None:
    ratio = value / baseline if baseline else float("inf")
    print(
        f"BENCH {name} value={value:.{digits}f}{unit} baseline={baseline:.{digits}f}{unit} ratio={ratio:.2f} "
        f"goal={goal}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--observed-seeds", type=int, nargs="+", default=[7, 8, 9, 10, 11])
    parser.add_argument("--sampler-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--rounds", type=int, default=25, help="TPE rounds of 16 (25: 1,952 simulations)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    budget = 32 * SEARCH_REPLICATES + args.rounds * 16 * SEARCH_REPLICATES
    budget += REFINE["top_k"] * (REFINE["replicates"] - SEARCH_REPLICATES)
    if budget > BUDGET:
        parser.error(f"--rounds {args.rounds} can use {budget} simulations, more than the budget of {BUDGET}")
    logging.basicConfig(level=logging.WARNING)
    print(
        f"# {len(args.observed_seeds)} observed-data seeds x {len(args.sampler_seeds)} sampler seeds; calibration "
        f"budget at most {budget} simulations; LocalCluster of {args.workers} worker processes",
        flush=True,
    )
    results: list[dict] = []
    sobol: list[dict] = []
    grids: list[dict] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench_calibrate_") as tmp,
        LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        workdir = Path(tmp)
        for observed_seed in args.observed_seeds:
            observed = observe({**FIXED, **TRUTH}, observed_seed, noise="poisson")
            grid = grid_search(client, observed, workdir)
            repeat = grid_search(client, observed, workdir, shift=0.5)
            grid["floor"] = errors(repeat, grid)
            noise = loss_noise(client, observed, grid, workdir)
            wide = grid["wide"]
            close = wide[
                wide["loss"] <= wide["loss"].min() + 2 * noise
            ]  # fits the grid cannot tell from its best
            grids.append(grid)
            print(
                f"# observed seed {observed_seed}: grid best beta={grid['beta']:.4f} gamma={grid['gamma']:.4f} "
                f"(NLL {grid['loss']:.1f}; {grid['simulations']} simulations, {grid['seconds']:.0f} s); the "
                f"repeat on half-step-shifted grids (other seeds) finds beta={repeat['beta']:.4f} "
                f"gamma={repeat['gamma']:.4f} ({100 * grid['floor']['beta']:.1f}%, "
                f"{100 * grid['floor']['gamma']:.1f}% away); the loss's Monte Carlo sd there is {noise:.1f}, and "
                f"the +-30% stage's points within 2 sd of its best span gamma {close['gamma'].min():.4f}-"
                f"{close['gamma'].max():.4f}",
                flush=True,
            )
            runs = [(seed, "tpe") for seed in args.sampler_seeds] + [(args.sampler_seeds[0], "sobol")]
            for seed, sampler in runs:
                found = calibration(client, observed, seed, sampler, args.rounds, workdir)
                found["error"] = errors(found, grid)
                found["excess_nll"] = found["loss"] - grid["loss"]
                (results if sampler == "tpe" else sobol).append(found)
                print(
                    f"#   {sampler} seed {seed}: beta={found['beta']:.4f} gamma={found['gamma']:.4f} error beta "
                    f"{100 * found['error']['beta']:.1f}% gamma {100 * found['error']['gamma']:.1f}%, NLL "
                    f"{found['excess_nll']:+.1f} vs the grid's; {found['simulations']} simulations, "
                    f"{found['seconds']:.0f} s",
                    flush=True,
                )
    for parameter in ("beta", "gamma"):
        found = np.array([100 * r["error"][parameter] for r in results])
        floor = np.array([100 * g["floor"][parameter] for g in grids])
        bench_line(f"calibrate_{parameter}_error_median", np.median(found), np.median(floor), "%", "<=5%")
        bench_line(f"calibrate_{parameter}_error_worst", found.max(), floor.max(), "%", "<=5%")
        sobol_only = np.median([100 * r["error"][parameter] for r in sobol])
        bench_line(
            f"calibrate_{parameter}_error_median_sobol_only", sobol_only, np.median(floor), "%", "info"
        )
    bench_line(
        "calibrate_simulations_worst",
        max(r["simulations"] for r in results + sobol),
        float(np.median([g["simulations"] for g in grids])),
        "sims",
        f"<={BUDGET}sims",
        digits=0,
    )


if __name__ == "__main__":
    main()
