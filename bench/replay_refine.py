"""How far other ways of spending the calibration's refine simulations would go on the SIR recovery benchmark
(bench_calibrate.py), without rerunning whole calibrations for each: a replay of the refine step's local search
and floor scan.

For every observed-data seed and TPE sampler seed it runs the library's calibration (simcal.calibrate.calibrate
on a LocalCluster, the benchmark's settings) up to the refine step's top 8 (no local search, no scan), then
replays, in its own process, each ``--variant`` ROUNDS,SCAN,SPAN: that many local-search rounds, a floor scan of
that many sets spanning that many trust radii either side of the best (the shipped rule: 4,10,0.3), with the
library's own functions (simcal.local_search) and the benchmark's 32-replicate loss as the oracle
(bench_calibrate.chunk_losses with the runner's seeds). With common random numbers that loss is one deterministic
function, so a replay of the shipped rule ends on the parameter set the library's calibration ends on;
``--check`` confirms it for every run against a full library calibration with the first variant's rounds and
scan (the default span). A variant may use more than the benchmark's budget of 2,000 simulations: that is how
one measures what more refine simulations would buy.

Prints, per variant, how many runs end more than 5% from the grid's best fit (bench_calibrate.grid_search, the
benchmark's baseline) in beta or gamma, the worst gamma error, the most and the mean NLL above the grid's best,
and the simulations each run uses (``--runs`` adds a line per run). ``--no-grid`` skips the grid (losses only),
for a quick check of the replay itself. Not part of ``make bench`` (no BENCH lines): a tool for experiments, whose
figures bench/RESULTS.md quotes with their command.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_calibrate as bench  # noqa: E402 (puts src/ on the path)

import simcal.local_search as local_search  # noqa: E402
from simcal.calibration_rounds import new_parameter_sets  # noqa: E402 (the library's own dedup of proposals)
from simcal.design import parse_bounds  # noqa: E402

TOP_K = bench.REFINE["top_k"]
REPLICATES = bench.REFINE["replicates"]
MISS = 0.05  # the goal: within 5% of the grid's best fit
SETTINGS = bench.CALIBRATION  # the benchmark's TPE exploration and shipped refine rule


@dataclass(frozen=True)
class Variant:
    rounds: int
    scan: int
    span: float = local_search.SCAN_SPAN

    @classmethod
    def parse(cls, text: str) -> Variant:
        parts = text.split(",")
        if not 2 <= len(parts) <= 3:
            raise argparse.ArgumentTypeError(f"expected ROUNDS,SCAN[,SPAN], got {text!r}")
        return cls(int(parts[0]), int(parts[1]), *(float(p) for p in parts[2:]))

    def __str__(self) -> str:
        return f"{self.rounds} local rounds + scan of {self.scan} at {self.span:g} radii"


class Oracle:
    """The benchmark's 32-replicate loss of one observed dataset at a parameter set: the grid's seeds and
    likelihood (bench_calibrate.Grid, chunk_losses), computed in this process (one set at a time: a round trip to
    the cluster would cost more than the simulations) and remembered in the grid's table."""

    def __init__(self, observed_seed: int, master_seed: int, workdir: str):
        self.grid = bench.Grid(bench.observed_data(observed_seed), master_seed, True, Path(workdir))

    def __call__(self, params: dict) -> float:
        point = (params["beta"], params["gamma"])
        if point not in self.grid.refined:
            seeds = self.grid.seeds(point, REPLICATES)
            self.grid.refined[point] = bench.chunk_losses([(point, seeds)], self.grid.counts)[0]
        return self.grid.refined[point]


def replay(refined: pd.DataFrame, oracle: Oracle, variant: Variant) -> dict:
    """The local search and floor scan of ``variant`` from the refine rows of a calibration (its top k), in the
    order simcal.calibrate.local_search runs them: the best refine row at the end."""
    bounds = parse_bounds(bench.BOUNDS)
    rows = refined[["beta", "gamma", "loss"]].to_numpy(dtype=float).tolist()
    seen = set(refined["param_id"])

    def state() -> tuple[np.ndarray, np.ndarray]:
        table = np.array(rows)
        units = np.column_stack([b.unit(table[:, i]) for i, b in enumerate(bounds)])
        return units, table[:, 2]

    def run(points: np.ndarray) -> int:
        proposals = new_parameter_sets(points, bounds, bench.FIXED, seen)
        rows.extend([p["beta"], p["gamma"], oracle(p)] for p in proposals)
        return len(proposals)

    region = local_search.TrustRegion.around(*state())
    for _ in range(variant.rounds):
        if not run(region.propose(*state())):
            break
    if variant.scan:
        run(local_search.floor_scan(*state(), region.radius, variant.scan, variant.span))
    table = np.array(rows)
    best = table[int(np.argmin(table[:, 2]))]
    added = len(rows) - len(refined)
    return {"beta": best[0], "gamma": best[1], "loss": best[2], "added": added}


def one_run(
    observed_seed: int,
    sampler_seed: int,
    variants: list[Variant],
    check: bool,
    master_seed: int,
    workdir: str,
) -> dict:
    """In a driver process: the calibration to its top k, each variant's replay, and with ``check`` the library's
    full calibration for the first variant."""
    rounds, replicates = SETTINGS["rounds"], SETTINGS["replicates"]
    top_k = bench.calibration(
        observed_seed, sampler_seed, "tpe", rounds, replicates, 0, master_seed, True, workdir
    )
    trials = pd.read_parquet(top_k["trials"])
    exploration = int(top_k["simulations"])
    oracle = Oracle(observed_seed, master_seed, workdir)
    refined = trials[trials["phase"] == "refine"]
    result = {"observed_seed": observed_seed, "sampler_seed": sampler_seed, "exploration": exploration}
    result["replays"] = [replay(refined, oracle, variant) for variant in variants]
    if check:
        first = variants[0]
        library = bench.calibration(
            observed_seed,
            sampler_seed,
            "tpe",
            rounds,
            replicates,
            first.rounds,
            master_seed,
            True,
            workdir,
            first.scan,
        )
        replayed = result["replays"][0]
        result["matches"] = all(
            np.isclose(library[k], replayed[k], rtol=1e-12) for k in ("beta", "gamma", "loss")
        )
    return result


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    bench.add_run_arguments(parser)
    parser.add_argument(
        "--variant",
        type=Variant.parse,
        action="append",
        help="ROUNDS,SCAN[,SPAN] (repeatable; default: the shipped 4,10,0.3)",
    )
    parser.add_argument(
        "--check", action="store_true", help="compare the first variant with the library's run"
    )
    parser.add_argument("--no-grid", action="store_true", help="no grid search: losses only")
    parser.add_argument("--runs", action="store_true", help="a line per run and variant")
    args = parser.parse_args()
    args.variants = args.variant or [Variant(SETTINGS["refine_rounds"], SETTINGS["scan"])]
    if args.check and args.variants[0].span != local_search.SCAN_SPAN:
        parser.error(
            f"--check compares the first variant with the library, whose scan spans {local_search.SCAN_SPAN}"
        )
    return args


def main() -> None:
    args = parse_arguments()
    began = time.perf_counter()
    with bench.cluster_and_drivers(args.workers, args.drivers, "replay_refine_") as (workdir, pool):
        grids = {}
        if not args.no_grid:
            for seed in args.observed_seeds:
                grids[seed] = pool.submit(
                    bench.grid_search, seed, args.simulation_seed, True, workdir, bench.GRID_POINTS
                )
        runs = [
            pool.submit(one_run, o, s, args.variants, args.check, args.simulation_seed, workdir)
            for o in args.observed_seeds
            for s in args.sampler_seeds
        ]
        grids = {seed: future.result() for seed, future in grids.items()}
        runs = [future.result() for future in runs]
    report(args, grids, runs)
    print(f"# {time.perf_counter() - began:.0f} s in all", flush=True)


def report(args: argparse.Namespace, grids: dict, runs: list[dict]) -> None:
    print(
        f"# {len(args.observed_seeds)} observed-data seeds x {len(args.sampler_seeds)} TPE sampler seeds; the "
        f"calibration to its top {TOP_K} uses {max(r['exploration'] for r in runs)} simulations; each added "
        f"parameter set {REPLICATES} more",
        flush=True,
    )
    if args.check:
        matched = sum(r["matches"] for r in runs)
        print(
            f"# replay of the first variant matches the library's calibration: {matched} of {len(runs)} runs"
        )
    for seed, grid in grids.items():
        print(
            f"# observed seed {seed}: grid best beta={grid['beta']:.4f} gamma={grid['gamma']:.4f} (NLL {grid['loss']:.2f})"
        )
    for index, variant in enumerate(args.variants):
        misses, gamma_errors, rises, simulations = 0, [], [], []
        for run in runs:
            found = run["replays"][index]
            simulations.append(run["exploration"] + REPLICATES * found["added"])
            if not grids:
                continue
            grid = grids[run["observed_seed"]]
            error = bench.errors(found, grid)
            missed = max(error.values()) > MISS
            misses += missed
            gamma_errors.append(error["gamma"])
            rises.append(found["loss"] - grid["loss"])
            if args.runs:
                print(
                    f"#   {variant}: observed seed {run['observed_seed']} sampler seed {run['sampler_seed']}: "
                    f"beta {100 * error['beta']:.1f}% gamma {100 * error['gamma']:.1f}% away, NLL "
                    f"{rises[-1]:+.2f}{' (miss)' if missed else ''}"
                )
        line = f"# {variant}: at most {max(simulations)} simulations"
        if grids:
            line += (
                f"; {misses} of {len(runs)} runs more than {100 * MISS:.0f}% from the grid's best, gamma worst "
                f"{100 * max(gamma_errors):.1f}%, NLL above the grid's best worst {max(rises):+.2f} "
                f"mean {np.mean(rises):+.2f}"
            )
        else:
            losses = [run["replays"][index]["loss"] for run in runs]
            line += f"; best NLL {', '.join(f'{loss:.2f}' for loss in losses)}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
