"""Recovery benchmark of the calibration (simcal.calibrate.calibrate, the path the calibrate wrapper runs) against a
dense grid search on the same observed data with the same likelihood.

The demo's problem: a stochastic SIR (simcal.models.sir:simulate, population 10,000, 10 initially infected, 100
days) fitted to daily case counts (one epidemic at beta 0.3, gamma 0.1 plus Poisson reporting noise) with the
Poisson likelihood of the demo (simcal.targets:poisson_nll, the replicate mean as expected count).

For every observed-data seed:

- Baseline, a grid search through the same library path (simcal.runner.simulate on the same cluster, losses from
  simcal.calibrate.losses_for with the same target): a coarse grid over the whole box (26 x 28 points, 8
  replicates), then 21 x 21 points over +-15% around its best, then 21 x 21 points over +-4% around that (both
  with the refine step's 32 replicates, so the same likelihood estimate the calibration chooses its best by). The
  grid's best fit is the best point of the last stage.
- Noise floor of that best fit: the last stage again, shifted by half a step (other parameter sets, hence other
  seeds). How far its best moves says how precisely "the best fit" is defined at 32 replicates.
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


def around(
    centre: float, span: float, points: int, low: float, high: float, shift: float = 0.0
) -> np.ndarray:
    step = 2 * span * centre / (points - 1)
    values = np.linspace(centre * (1 - span), centre * (1 + span), points) + shift * step
    return np.clip(values, low, high)


def grid_search(client: Client, observed: pd.DataFrame, workdir: Path) -> dict:
    began = time.perf_counter()
    coarse, count = grid_stage(
        client, observed, np.linspace(0.1, 0.6, 26), np.linspace(0.03, 0.3, 28), 8, workdir
    )
    best = coarse.loc[coarse["loss"].idxmin()]
    for span in (0.15, 0.04):
        final_axes = [
            around(best[p], span, 21, BOUNDS[p]["low"], BOUNDS[p]["high"]) for p in ("beta", "gamma")
        ]
        stage, used = grid_stage(client, observed, *final_axes, REFINE["replicates"], workdir)
        count += used
        best = stage.loc[stage["loss"].idxmin()]
    seconds = time.perf_counter() - began
    shifted_axes = [
        around(final_axes[0].mean(), 0.04, 21, 0.1, 0.6, shift=0.5),
        around(final_axes[1].mean(), 0.04, 21, 0.03, 0.3, shift=0.5),
    ]
    shifted, _ = grid_stage(client, observed, *shifted_axes, REFINE["replicates"], workdir)
    other = shifted.loc[shifted["loss"].idxmin()]
    return {
        "beta": float(best["beta"]),
        "gamma": float(best["gamma"]),
        "loss": float(best["loss"]),
        "simulations": count,
        "seconds": seconds,
        "floor": {p: abs(float(other[p]) - float(best[p])) / float(best[p]) for p in ("beta", "gamma")},
    }


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
            grids.append(grid)
            print(
                f"# observed seed {observed_seed}: grid best beta={grid['beta']:.4f} gamma={grid['gamma']:.4f} "
                f"(NLL {grid['loss']:.1f}; {grid['simulations']} simulations, {grid['seconds']:.0f} s); "
                f"shifted grid's best differs by beta {100 * grid['floor']['beta']:.1f}%, "
                f"gamma {100 * grid['floor']['gamma']:.1f}%",
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
