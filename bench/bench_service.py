"""Benchmark of the simulation service (`simcal serve`) against the runner called directly, on the same warm cluster.

One LocalCluster (2 worker processes on 127.0.0.1) in this process, and a `simcal serve` subprocess connected to it
with --scheduler, running ``--max-concurrent-jobs`` jobs at a time (8, the service's default). Both contenders run
the very same runner on the very same workers, in turns, and every service answer is checked against the direct
rows.

1. One batch (8 SIR parameter sets x 4 replicates): `simcal.runner.simulate(..., client=...)` and reading its file,
   vs the same batch through the service: (a) `SimulationClient.submit` + `wait` + `to_pandas` (the path of the
   `service` backend and of notebooks), (b) `simulate_sync` (one request). The added time per batch is the median
   of the paired differences; its goal (<= 0.2 s) is absolute, so its baseline column is the source design's
   budget of 5 s per batch submission, not a measurement.
2. Load: 200 small jobs (2 parameter sets x 2 replicates) from 20 client threads, each with its own key, through the
   service, vs the same 200 batches run directly by 20 threads on the same client. Jobs per second, end to end.

Prints `BENCH <name> value=... baseline=... ratio=... goal=...` lines.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from distributed import Client, LocalCluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / ".tests"))

from servicekit import ServiceProcess, make_keys  # noqa: E402

from simcal.runner import read_results, simulate  # noqa: E402
from simcal.service.client import SimulationClient  # noqa: E402

SIR = "simcal.models.sir:simulate"
BUDGET_S = 5.0  # the source design's budget for submitting a batch
ADDED_GOAL_S = 0.2  # what the service may add to a batch, in seconds: a goal on the value, not on the ratio
KEYS = ["param_id", "replicate"]


def bench_line(name: str, value: float, baseline: float, unit: str, ratio: float, goal: str) -> None:
    print(
        f"BENCH {name} value={value:.3f}{unit} baseline={baseline:.3f}{unit} ratio={ratio:.2f} goal={goal}",
        flush=True,
    )


def added_time_line(name: str, added: float) -> None:
    """The seconds the service adds to one batch, against the budget (the baseline column, not a measurement)."""
    bench_line(f"service_batch_{name}_added", added, BUDGET_S, "s", added / BUDGET_S, f"<={ADDED_GOAL_S}s")


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEYS, kind="stable").reset_index(drop=True).drop(columns="duration_s")


def batch_table(sets: int, offset: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"beta": [0.15 + offset + i * 0.05 for i in range(sets)], "gamma": 0.1})


def bench_one_batch(client: Client, api: SimulationClient, workdir: Path, repeats: int) -> None:
    table, settings = batch_table(8), {"seed": 3}
    direct_s, submitted_s, sync_s = [], [], []
    for index in range(repeats + 1):  # the first round warms imports and code paths; it is not counted
        out = workdir / f"direct-{index}.parquet"
        began = time.perf_counter()
        simulate(SIR, table, out, {**settings, "replicates": 4}, client=client)
        direct = read_results(out)
        direct_time = time.perf_counter() - began

        began = time.perf_counter()
        job = api.submit(SIR, table, n_replicates=4, settings=settings)
        job.wait(timeout=300, poll_interval=0.02)
        served = job.to_pandas()
        submitted_time = time.perf_counter() - began

        began = time.perf_counter()
        answered = api.simulate_sync(SIR, table, n_replicates=4, settings=settings)
        sync_time = time.perf_counter() - began

        expected = comparable(direct)
        for rows in (served, answered):
            pd.testing.assert_frame_equal(comparable(rows), expected)  # no shortcut: the same rows
        if index:
            direct_s.append(direct_time)
            submitted_s.append(submitted_time)
            sync_s.append(sync_time)
    direct = statistics.median(direct_s)
    for name, times in (("submit_wait", submitted_s), ("sync", sync_s)):
        added = statistics.median(t - d for t, d in zip(times, direct_s, strict=True))
        print(
            f"# {name}: median {statistics.median(times):.3f} s vs direct {direct:.3f} s "
            f"(32 simulations, {repeats} paired rounds; added per round: "
            f"{', '.join(f'{t - d:+.3f}' for t, d in zip(times, direct_s, strict=True))})",
            flush=True,
        )
        added_time_line(name, added)


def bench_load(client: Client, service: ServiceProcess, workdir: Path, clients: int, per_client: int) -> None:
    def tables(index: int) -> list[pd.DataFrame]:
        return [
            pd.DataFrame({"beta": [0.2 + index / 100, 0.5 + n / 100], "gamma": 0.1})
            for n in range(per_client)
        ]

    def through_service(index: int) -> int:
        with SimulationClient(service.url, service.keys[f"load-{index}"]) as api:
            jobs = [api.submit(SIR, table, n_replicates=2, settings={"seed": 1}) for table in tables(index)]
            rows = 0
            for job in jobs:
                job.wait(timeout=600, poll_interval=0.2)
                rows += len(job.to_pandas())
            return rows

    def directly(index: int) -> int:
        rows = 0
        for n, table in enumerate(tables(index)):
            out = workdir / f"load-{index}-{n}.parquet"
            simulate(SIR, table, out, {"seed": 1, "replicates": 2}, client=client)
            rows += len(read_results(out))
        return rows

    results = {}
    for name, function in (("direct", directly), ("service", through_service)):
        began = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            rows = sum(pool.map(function, range(clients)))
        elapsed = time.perf_counter() - began
        results[name] = clients * per_client / elapsed
        print(f"# {name}: {clients * per_client} jobs, {rows} rows, in {elapsed:.1f} s", flush=True)
    bench_line("service_load_jobs_per_s", results["service"], results["direct"], "/s",
               results["service"] / results["direct"], ">=0.5")  # fmt: skip


def service_process(workdir: Path, scheduler_address: str, args: argparse.Namespace) -> ServiceProcess:
    """`simcal serve` on the benchmark's cluster, not yet started: a key for the batch comparison and one per load
    client, no rate limit in the way, ``--max-concurrent-jobs`` jobs at a time."""
    keys = make_keys(workdir / "keys", "bench", *[f"load-{i}" for i in range(args.clients)])
    service = ServiceProcess(
        workdir,
        workdir / "keys",
        "--scheduler",
        scheduler_address,
        "--rate",
        "1000",
        "--burst",
        "1000",
        "--max-concurrent-jobs",
        str(args.max_concurrent_jobs),
    )
    service.keys = keys
    return service


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=20, help="paired rounds of the one-batch comparison")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--jobs-per-client", type=int, default=10)
    parser.add_argument("--max-concurrent-jobs", type=int, default=8, help="the service's (8: its default)")
    parser.add_argument("--skip-batch", action="store_true", help="only the load comparison")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        )
        with cluster, Client(cluster) as client:
            service = service_process(workdir, cluster.scheduler_address, args)
            service.start()
            try:
                if not args.skip_batch:
                    with SimulationClient(service.url, service.keys["bench"]) as api:
                        bench_one_batch(client, api, workdir, args.repeats)
                bench_load(client, service, workdir, args.clients, args.jobs_per_client)
            finally:
                service.stop()


if __name__ == "__main__":
    main()
