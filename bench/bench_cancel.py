"""Benchmark: how soon a cancelled large sweep frees its Dask cluster for the next work.

The path the simulation service runs for every job (``simcal.runner.simulate`` with a ``cancel`` event, on a
client it shares with its other jobs): a sweep of ``--sims`` one-simulation batches of a ~10 us model on a
LocalCluster of 2 worker processes is cancelled once its batches are on the scheduler and it has finished
``--done-before-cancel`` simulations. Measured from the cancel to the end of a one-simulation task sent right after
``simulate`` returned (the next job's first task): the cancel itself, and the scheduler's work releasing the
cancelled batches, during which no other task starts.

Baseline, in the same run on the same cluster: the same sweep with every batch cancelled in one ``Client.cancel``
call (``runner.DASK_CANCEL_CHUNK`` set to the sweep's size), as simcal did before; Dask's scheduler takes a time
quadratic in one call's keys. Contenders take turns, ``--repeats`` rounds, each the best of its runs. Goal: at
most half the baseline's time at the default size (where that quadratic term is most of the baseline).

Prints `BENCH <name> value=... baseline=... ratio=... goal=...` lines.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
from distributed import Client, LocalCluster

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from benchkit import load_average  # noqa: E402

from simcal import runner  # noqa: E402
from simcal.progress import progress_path  # noqa: E402
from simcal.runner import Cancelled, simulate  # noqa: E402

CHEAP = "simcal.models.toy:noisy_linear"
RUNS = itertools.count()  # each run its own output: a rerun on the same one would resume from its parts


def seconds_until_free(client: Client, sims: int, done_before: int, chunk: int, folder: Path) -> float:
    """Cancel a sweep of ``sims`` one-simulation batches once ``done_before`` finished; seconds from the cancel to
    the end of the next task."""
    runner.DASK_CANCEL_CHUNK = chunk
    output = folder / f"sweep-{next(RUNS)}.parquet"
    table = pd.DataFrame({"slope": [0.5 + i * 1e-6 for i in range(sims)], "x": 2.0})
    settings = {"batch_size": 1, "max_failed_fraction": 1, "progress_seconds": 0.2}
    cancel, outcome = threading.Event(), []

    def sweep() -> None:
        try:
            simulate(CHEAP, table, output, settings, client=client, cancel=cancel)
        except Cancelled:
            outcome.append("cancelled")

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    deadline = time.monotonic() + 600
    while _done(output) < done_before:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(
                f"the sweep of {sims} did not reach {done_before} simulations (outcome {outcome})"
            )
        time.sleep(0.05)
    began = time.monotonic()
    cancel.set()
    thread.join(600)
    client.submit(time.monotonic, pure=False).result(timeout=600)
    took = time.monotonic() - began
    if outcome != ["cancelled"]:
        raise RuntimeError(f"the sweep was not cancelled: {outcome}")
    return took


def _done(output: Path) -> int:
    try:
        return int(json.loads(progress_path(output).read_text())["done"])
    except (OSError, ValueError, KeyError):
        return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=20_000, help="one-simulation batches in the sweep")
    parser.add_argument("--done-before-cancel", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    chunked = runner.DASK_CANCEL_CHUNK
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        client.submit(time.monotonic, pure=False).result()
        best = {"chunked": float("inf"), "one_call": float("inf")}
        for round_number in range(args.repeats):
            for name, chunk in (("chunked", chunked), ("one_call", args.sims)):
                took = seconds_until_free(client, args.sims, args.done_before_cancel, chunk, Path(tmp))
                best[name] = min(best[name], took)
                print(f"# round {round_number + 1} {name}: {took:.2f} s (load {load_average()})", flush=True)
    value, baseline = best["chunked"], best["one_call"]
    print(
        f"BENCH cancel_{args.sims}_batches_until_the_cluster_is_free value={value:.2f}s baseline={baseline:.2f}s "
        f"ratio={value / baseline:.2f} goal=<=0.5",
        flush=True,
    )


if __name__ == "__main__":
    main()
