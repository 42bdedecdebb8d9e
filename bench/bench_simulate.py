"""Benchmark of the simulate wrapper's library path (simcal.runner.simulate) against its baselines.

1. 10,000 cheap simulations on one LocalCluster (2 worker processes), Parquet writing included everywhere:
   the runner vs (a) bare client.map, one task per simulation, and (b) hand-batched client.map (the floor).
2. Fixed overhead of a tiny batch (4 simulations) from process start to Parquet on disk, as the wrapper runs it.
3. 1,000 simulations as one `simulate` Snakemake job vs as 1,000 Snakemake jobs (measured on a smaller number of
   jobs and extrapolated per job, since 1,000 real jobs take tens of minutes on 2 cores).

Prints `BENCH <name> value=... baseline=... ratio=... goal=...` lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pandas as pd
from distributed import Client, LocalCluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from simcal.contract import param_id, replicate_seed  # noqa: E402
from simcal.models.toy import noisy_linear  # noqa: E402
from simcal.runner import simulate  # noqa: E402

MODEL = "simcal.models.toy:noisy_linear"


def bench_line(name: str, value: float, baseline: float, unit: str, ratio: float, goal: str) -> None:
    print(
        f"BENCH {name} value={value:.3f}{unit} baseline={baseline:.3f}{unit} ratio={ratio:.2f} goal={goal}",
        flush=True,
    )


def parameter_table(n: int) -> pd.DataFrame:
    return pd.DataFrame({"slope": [0.5 + i * 1e-4 for i in range(n)], "x": 2.0})


def one_simulation(params: dict, seed: int, pid: str, replicate: int) -> dict:
    return {"param_id": pid, "replicate": replicate, "seed": seed, **params, **noisy_linear(params, seed)}


def run_hand_batch(items: list) -> pd.DataFrame:
    return pd.DataFrame([one_simulation(*item) for item in items])


def simulation_items(n: int) -> list:
    items = []
    for params in parameter_table(n).to_dict("records"):
        pid = param_id(params)
        items.append((params, replicate_seed(pid, 0), pid, 0))
    return items


def best_of(repeats: int, function) -> float:
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        function()
        times.append(time.perf_counter() - began)
    return min(times)


def bench_throughput(client: Client, n: int, workdir: Path, repeats: int) -> None:
    table = parameter_table(n)

    def runner() -> None:
        out = workdir / "runner.parquet"
        shutil.rmtree(out, ignore_errors=True)
        simulate(MODEL, table, out, {"replicates": 1}, client=client)

    # Every contender produces the same table (param_id, replicate, seed, parameters, output), so the baselines
    # also derive ids and seeds inside their timed part.
    def bare_map() -> None:  # (a) one Dask task per simulation
        items = simulation_items(n)
        futures = client.map(one_simulation, *zip(*items, strict=True), pure=False)
        pd.DataFrame(client.gather(futures)).to_parquet(workdir / "bare.parquet")

    def hand_batched() -> None:  # (b) the floor: one task per worker thread x 2, no bookkeeping
        items = simulation_items(n)
        chunks = 2 * sum(client.nthreads().values())
        size = -(-len(items) // chunks)
        futures = client.map(
            run_hand_batch, [items[i : i + size] for i in range(0, len(items), size)], pure=False
        )
        pd.DataFrame([row for rows in client.gather(futures) for row in rows]).to_parquet(
            workdir / "hand.parquet"
        )

    runner()  # warm the workers' imports once, for every contender alike
    hand_batched()
    ours = best_of(repeats, runner)
    bare = best_of(max(1, repeats - 1), bare_map)
    floor = best_of(repeats, hand_batched)
    bench_line(f"simulate_{n}_vs_one_task_each", ours, bare, "s", bare / ours, ">=10")
    bench_line(f"simulate_{n}_vs_hand_batched", ours, floor, "s", ours / floor, "<=1.5")


TINY = """
import sys, time
import pandas as pd
from simcal.runner import simulate
simulate("simcal.models.toy:noisy_linear", pd.DataFrame({"slope": [1.0, 2.0]}), sys.argv[1], {"replicates": 2})
"""

# The floor of any Python job that writes the same table: interpreter, pandas + pyarrow imports, one Parquet file.
FLOOR = """
import sys
import pandas as pd
pd.DataFrame({"slope": [1.0, 1.0, 2.0, 2.0], "y": [0.0, 1.0, 2.0, 3.0]}).to_parquet(sys.argv[1])
"""


def timed_subprocess(code: str, out: Path, env: dict) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def bench_tiny_batch(workdir: Path, repeats: int) -> None:
    """What a wrapper job does after Snakemake hands over: interpreter, imports, simulate(), the Parquet rename."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    ours, floor = [], []
    for i in range(repeats):
        ours.append(timed_subprocess(TINY, workdir / f"tiny{i}.parquet", env))
        assert len(pd.read_parquet(workdir / f"tiny{i}.parquet")) == 4
        floor.append(timed_subprocess(FLOOR, workdir / f"floor{i}.parquet", env))
    value, base = min(ours), min(floor)
    bench_line("simulate_tiny_batch_total", value, base, "s", value / base, "<=1.5")
    # The goal is absolute: what simulate adds on top of that floor must stay under a 1 s budget.
    bench_line("simulate_tiny_batch_overhead", value - base, 1.0, "s", (value - base) / 1.0, "<=1")


def snakemake_bin() -> str:
    candidate = Path(sys.executable).with_name("snakemake")
    return str(candidate) if candidate.exists() else "snakemake"


def bench_snakemake_jobs(workdir: Path, n_sims: int, n_jobs_measured: int) -> None:
    wrapper = REPO / "wrappers" / "simulate"
    workdir.mkdir(parents=True, exist_ok=True)
    parameter_table(n_sims).to_csv(workdir / "all.csv", index=False)
    for i in range(n_jobs_measured):
        parameter_table(n_sims).iloc[[i]].to_csv(workdir / f"one_{i}.csv", index=False)
    (workdir / "Snakefile").write_text(
        textwrap.dedent(
            f"""
            rule one_job:
                input: "all.csv"
                output: directory("one_job.parquet")
                log: "logs/one_job.log"
                params: model="{MODEL}", settings={{"replicates": 1}}
                threads: 2
                wrapper: "file:{wrapper}"

            rule job_per_simulation:
                input: "one_{{i}}.csv"
                output: directory("per_sim/{{i}}.parquet")
                log: "logs/per_sim_{{i}}.log"
                params: model="{MODEL}", settings={{"replicates": 1}}
                threads: 1
                wrapper: "file:{wrapper}"

            rule many_jobs:
                input: expand("per_sim/{{i}}.parquet", i=range({n_jobs_measured}))
            """
        )
    )

    def run(target: str) -> float:
        began = time.perf_counter()
        subprocess.run(
            [snakemake_bin(), target, "--cores", "2", "--quiet", "all"],
            cwd=workdir, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return time.perf_counter() - began

    one = run("one_job")
    many = run("many_jobs")
    per_job = many / n_jobs_measured
    extrapolated = per_job * n_sims
    print(
        f"# {n_jobs_measured} one-simulation jobs took {many:.1f} s ({per_job:.2f} s/job), extrapolated to {n_sims}"
    )
    bench_line(
        f"simulate_{n_sims}_one_job_vs_{n_sims}_jobs", one, extrapolated, "s", extrapolated / one, ">=100"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs-measured", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_simulate_") as tmp:
        workdir = Path(tmp)
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster:
            with Client(cluster) as client:
                bench_throughput(client, args.sims, workdir, args.repeats)
        bench_tiny_batch(workdir, args.repeats)
        bench_snakemake_jobs(workdir / "snakemake", 1000, args.jobs_measured)


if __name__ == "__main__":
    main()
