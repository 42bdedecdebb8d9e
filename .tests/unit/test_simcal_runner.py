"""The batched, resumable simulation runner on real Dask clusters (LocalCluster with worker processes).

Most tests share one LocalCluster whose scheduler allows no worker death per task (allowed-failures 0), so a batch
whose worker dies is split at once and the tests stay short.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import logging
import os
import random
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import dask
import pandas as pd
import psutil
import pytest
from distributed import Client, LocalCluster
from testkit import dask_client, wait_for

from simcal.backends import (
    Terminated,
    close_on_signals,
    slurm_cluster_kwargs,
    slurm_scaling,
    start_reaper,
    walltime_seconds,
    worker_lifetime,
)
from simcal.contract import ContractError
from simcal.open_files import open_files_needed
from simcal.outcomes import ISOLATION_FAILURES
from simcal.progress import Progress, read_progress
from simcal.runner import (
    Cancelled,
    NoWorkers,
    PartStore,
    SimulationSettings,
    Simulator,
    TooManyFailures,
    plan_manifest,
    plan_tasks,
    planned_parameter_sets,
    read_results,
    run_batch,
    simulate,
)
from simcal.tables import current_umask
from simcal.worker import FAILED_STATUSES, failure_rows

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[1] / "src"


@pytest.fixture(scope="module")
def client():
    with dask_client(2) as connected:
        yield connected


def table(n: int, start: float = 0.0) -> pd.DataFrame:
    return pd.DataFrame({"a": [start + i for i in range(n)]})


def sims(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per simulation (the first of its rows)."""
    return frame.drop_duplicates(["param_id", "replicate"]).reset_index(drop=True)


# -- every planned simulation is in the output, with its keys and parameters -------------------------------------


def test_same_seed_same_output_whatever_the_batching_and_order(tmp_path, client):
    settings = {"replicates": 3}
    one = simulate(
        "simcal_models:series", table(5), tmp_path / "one", {**settings, "batch_size": 1}, client=client
    )
    shuffled = table(5).sample(frac=1.0, random_state=3)
    four = simulate(
        "simcal_models:series", shuffled, tmp_path / "four", {**settings, "batch_size": 4}, client=client
    )
    assert (one.batches, four.batches) == (15, 4)
    first, second = read_results(tmp_path / "one"), read_results(tmp_path / "four")
    columns = ["param_id", "replicate", "seed", "a", "t", "value", "status"]
    pd.testing.assert_frame_equal(first[columns], second[columns])
    assert len(first) == 5 * 3 * 3
    assert first.groupby(["param_id", "replicate"])["seed"].nunique().eq(1).all()


def test_a_sweep_removes_the_temporary_output_a_run_killed_while_publishing_left(tmp_path, client):
    """SIGKILL (the OOM killer, a node failure) while finalize streams the parts into the output leaves
    ``.<output>.<hex>.tmp``, as big as the output, which no later run removed. The next run holds the output's
    lock, so no other run can be writing it: it removes the file."""
    from output_locks import new_temporary

    left = new_temporary(tmp_path / "out.parquet")
    left.write_bytes(b"half an output")
    simulate("simcal_models:series", table(2), tmp_path / "out.parquet", client=client)
    assert not left.exists() and len(sims(read_results(tmp_path / "out.parquet"))) == 2
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_an_empty_table_is_a_row_with_its_parameters_on_the_probe_path(tmp_path, client):
    # batch_size auto: the timing probe runs first, on a worker.
    summary = simulate(
        "simcal_models:empty_for_odd", table(6), tmp_path / "out", {"replicates": 2}, client=client
    )
    result = read_results(tmp_path / "out")
    assert summary.total == 12 and summary.executed == 12
    assert sims(result).shape[0] == 12 and (result["status"] == "ok").all()
    odd = result[result["a"] % 2 == 1]
    assert len(odd) == 6 and odd["event"].isna().all()  # one row each, no outputs
    assert len(result[result["a"] % 2 == 0]) == 12  # two events each
    assert result["seed"].notna().all() and result["param_id"].str.len().eq(16).all()


def test_the_probe_runs_on_workers_never_in_the_driver(tmp_path, client):
    simulate("simcal_models:worker_pid", table(40), tmp_path / "out", client=client)
    pids = set(read_results(tmp_path / "out")["pid"])
    assert os.getpid() not in pids
    assert pids <= {info["pid"] for info in client.run(lambda: {"pid": os.getpid()}).values()}


def test_automatic_batch_size_packs_many_cheap_simulations_per_task(tmp_path, client):
    summary = simulate(
        "simcal_models:noisy_line", table(2000), tmp_path / "out", {"replicates": 2}, client=client
    )
    assert summary.total == 4000
    assert summary.batch_size > 50  # a cheap model: many simulations per task
    assert summary.batches < 4000 / 50
    assert len(read_results(tmp_path / "out")) == 4000
    # The progress file records the size chosen, as the log's last line does, not the setting "auto" (null).
    assert json.loads((tmp_path / "out.progress.json").read_text())["batch_size"] == summary.batch_size


def test_a_sweep_the_timing_probe_finished_records_the_probes_batch_in_its_progress_file(tmp_path, client):
    summary = simulate("simcal_models:noisy_line", table(4), tmp_path / "out", client=client)
    assert summary.batches == 0 or summary.batch_size >= 1
    info = json.loads((tmp_path / "out.progress.json").read_text())
    assert info["state"] == "finished" and info["batch_size"] == summary.batch_size >= 1


def test_a_models_slow_first_call_in_a_worker_does_not_make_batches_of_one(tmp_path, client):
    """A model whose first call in a worker process is slow (numba compiling SIR took 0.38 s, warm 0.00075 s):
    the probe timed that call alone, longer than probe_seconds, and chose batches of one simulation (99,999 tasks
    for 100,000 simulations on the service). It now times the model warm."""
    design = table(2000).assign(run=str(tmp_path))  # a new run: a first call in each worker process
    summary = simulate("simcal_models:slow_first_call", design, tmp_path / "out", client=client)
    assert summary.batch_size > 50, summary.batch_size
    assert len(read_results(tmp_path / "out")) == 2000


def test_the_automatic_batch_size_stays_within_max_batch_size(tmp_path, client):
    summary = simulate(
        "simcal_models:noisy_line", table(4000), tmp_path / "out", {"max_batch_size": 20}, client=client
    )
    assert summary.batch_size == 20  # a cheap model and 4000 simulations would take far more per task
    assert len(read_results(tmp_path / "out")) == 4000


def test_the_automatic_batch_size_aims_at_target_task_seconds(tmp_path, client):
    """Simulations of at least 0.02 s and tasks of 0.05 s: at most round(0.05 / 0.02) = 2 per task (the default
    target, 0.3 s, would pack about 15)."""
    params = table(200).assign(sleep_s=0.02)
    summary = simulate(
        "simcal_models:counted_sleep", params, tmp_path / "out", {"target_task_seconds": 0.05}, client=client
    )
    assert 1 <= summary.batch_size <= 2 and len(read_results(tmp_path / "out")) == 200


PROBE_SIZES: list[int] = []  # filled by counting_run_batch on in-process workers (pickled by reference)


def counting_run_batch(model_ref, tasks, time_budget_s=None, timeout_s=None):
    """run_batch, noting the size of each probe task (one with a time budget)."""
    if time_budget_s is not None:
        PROBE_SIZES.append(len(tasks))
    return run_batch(model_ref, tasks, time_budget_s, timeout_s)


@pytest.mark.parametrize(("threads", "probes"), [(3, 3), (12, 8)])
def test_the_timing_probe_runs_one_task_per_worker_thread_up_to_8(tmp_path, monkeypatch, threads, probes):
    import simcal.batch_execution

    PROBE_SIZES.clear()
    monkeypatch.setattr(simcal.batch_execution, "run_batch", counting_run_batch)
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=threads, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        simulate("simcal_models:noisy_line", table(96), tmp_path / "out", client=client)
    assert len(PROBE_SIZES) == probes and sum(PROBE_SIZES) == 96  # the probe's simulations shared out
    assert len(read_results(tmp_path / "out")) == 96


class RecordingStore:
    """What Execution asks of a store when it records rows: nothing failed, the rows kept in memory."""

    def __init__(self):
        self.written = []

    def write(self, frame, tasks):
        self.written.append(frame)

    def failed_among(self, tasks):
        return 0


class QuietProgress:
    def advance(self, done, failed):
        pass

    def report(self, force=False):
        pass


def test_the_timing_probe_times_only_the_simulations_that_succeeded():
    """A simulation that failed at once (or timed out) says nothing of how long the model takes: only the ok rows'
    durations, one per simulation, choose the batch size; the probe task's first simulation (the worker's one-time
    costs) only where it is the only one."""
    import simcal.runner

    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    frame = failure_rows(tasks, "ok", [None] * 4).assign(
        status=pd.array(["ok", "failed", "ok", "timeout"], dtype="string"), duration_s=[0.2, 1e-6, 0.4, 30.0]
    )
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)  # a second row of the first simulation
    simulator = Simulator("simcal_models:noisy_line", client=object())
    store = RecordingStore()
    execution = simcal.runner.Execution(simulator, store, simcal.runner.RunSummary(), False, QuietProgress())
    execution._finished(simcal.runner.Unit(tasks, "probe-key", budget=0.05), frame)
    assert execution.probe_durations == [0.4]  # the first (0.2) not timed: the third ran warm
    assert len(store.written) == 1 and len(store.written[0]) == 5  # the rows themselves are all recorded
    alone = frame.assign(status=pd.array(["ok", "failed", "failed", "timeout", "ok"], dtype="string"))
    execution.probe_durations.clear()
    execution._finished(simcal.runner.Unit(tasks, "probe-key-2", budget=0.05), alone)
    assert execution.probe_durations == [0.2]


class FourThreads:
    """A client whose workers have 4 threads in all (what _worker_threads asks a connected client)."""

    def nthreads(self):
        return {"tcp://w1": 2, "tcp://w2": 2}


@pytest.mark.parametrize(
    ("seconds_per_simulation", "simulations", "max_batch_size", "expected"),
    [
        (1e-6, 1000, 100_000, 125),  # cheap: at least two tasks per worker thread, 1000 / (2 * 4)
        (1e-6, 1001, 100_000, 126),  # rounded up: 1001 / 8 = 125.1
        (0.1, 1000, 100_000, 3),  # round(target_task_seconds 0.3 / 0.1)
        (1e-6, 1000, 20, 20),  # never above max_batch_size
        (None, 1000, 100_000, 1),  # the probe timed none (each crashed, timed out or failed): one per task
    ],
)
def test_the_automatic_batch_size_aims_at_target_task_seconds_with_two_tasks_per_worker_thread_at_least(
    seconds_per_simulation, simulations, max_batch_size, expected
):
    settings = SimulationSettings(target_task_seconds=0.3, max_batch_size=max_batch_size)
    simulator = Simulator("simcal_models:noisy_line", settings, client=FourThreads())
    simulator._seconds_per_simulation = seconds_per_simulation
    assert simulator._auto_batch_size(simulations) == expected


def test_batch_size_is_chosen_for_each_run_from_the_probes_timing(tmp_path, client):
    """A calibration runs rounds of different sizes on one Simulator: each round gets its own batch size, from
    the first round's timing probe (the first round is larger than the probe, so it also runs batches)."""
    settings = SimulationSettings(replicates=2)
    rounds = {
        "first": plan_tasks(table(600).to_dict("records"), 2),
        "second": plan_tasks(table(4000).to_dict("records"), 2),
    }
    summaries = {}
    with Simulator("simcal_models:noisy_line", settings, client=client) as simulator:
        for name, tasks in rounds.items():
            store = PartStore(tmp_path / name, plan_manifest("simcal_models:noisy_line", tasks, settings))
            summaries[name] = simulator.run(tasks, store)
    first, second = summaries["first"], summaries["second"]
    assert (first.total, second.total) == (1200, 8000)
    assert second.batch_size > first.batch_size  # not the first round's size reused
    assert second.batches < 8000 / 100


@pytest.mark.parametrize("dtype", ["int64", "Int64"])
def test_whole_numbers_beyond_2_53_reach_the_model_and_the_output_exactly(tmp_path, client, dtype):
    """Seeds and IDs beyond what a 64-bit float holds exactly (2**53 + 1), also in a nullable Int64 column and in
    batches of one (each a part of its own), keep every digit in the parameters the model sees and in the output."""
    big = 2**53 + 1
    params = pd.DataFrame({"a": [0.5, 1.5], "id": pd.array([big, 3], dtype=dtype)})
    simulate("simcal_models:echo_id", params, tmp_path / "o.parquet", {"batch_size": 1}, client=client)
    result = read_results(tmp_path / "o.parquet").sort_values("a")
    assert result["id"].tolist() == [big, 3] and result["seen_id"].tolist() == [str(big), "3"]


def test_a_misspelt_parameter_column_stops_before_any_cluster_starts(tmp_path):
    params = pd.DataFrame({"beta": [0.3], "gamma": [0.1], "populaton": [1000]})
    with pytest.raises(ContractError, match=r"row 1.*populaton.*population"):
        simulate("simcal.models.sir:simulate", params, tmp_path / "out")  # no client: would start a cluster


@pytest.mark.parametrize("model", ["simcal_models:hijacks_keys", "simcal_models:hijacks_keys_table"])
def test_outputs_named_like_key_columns_are_renamed_alike_for_dicts_and_tables(tmp_path, client, model):
    simulate(model, table(4), tmp_path / "out", {"batch_size": 2}, client=client)
    result = read_results(tmp_path / "out")
    assert len(result) == 4
    assert sorted(result["a"]) == [0.0, 1.0, 2.0, 3.0] and result["param_id"].nunique() == 4
    assert (result["status"] == "ok").all() and (result["seed"] >= 0).all()
    assert (result["output_param_id"] == "hijack").all() and (result["output_seed"] == -1).all()
    assert (result["output_a"] == "output a").all() and (result["output_status"] == "mine").all()


@pytest.mark.parametrize(
    "model",
    [
        "simcal_models:clashes_with_its_own_prefixed_name",
        "simcal_models:clashes_with_its_own_prefixed_name_table",
    ],
)
def test_renamed_outputs_never_take_the_name_of_another_output(tmp_path, client, model):
    simulate(model, table(3), tmp_path / "out", {"batch_size": 3}, client=client)
    result = read_results(tmp_path / "out")
    assert len(result) == 3 and (result["status"] == "ok").all() and result.columns.is_unique
    assert (result["output_output_seed"] == 1.0).all() and (result["output_seed"] == 2.0).all()
    assert result["seed"].nunique() == 3 and sorted(result["y"]) == [0.0, 1.0, 2.0]


def test_a_nested_dict_output_is_a_failed_row_naming_it_and_the_output_is_written(tmp_path, client):
    """A dict inside a dict output is not a scalar: a failed row naming the output, never a struct column that
    makes every later attempt to write the output fail."""
    settings = {"batch_size": 1, "max_failed_fraction": 0.5}
    simulate("simcal_models:nested_for_even", table(4), tmp_path / "out", settings, client=client)
    result = read_results(tmp_path / "out").sort_values("a")
    assert list(result["status"]) == ["failed", "ok", "failed", "ok"]
    assert result["error"].iloc[0].startswith("ContractError: simcal_models:nested_for_even returned a dict")
    assert "for output 'info'" in result["error"].iloc[0]
    assert list(result["info"].iloc[[1, 3]]) == ["text", "text"]


def test_parts_holding_nested_columns_are_written_out_as_text(tmp_path):
    """Parts written before nested values were refused (a struct in one part, text in another) still make one
    output file: the column becomes text, nested values as JSON."""
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    tasks = plan_tasks([{"a": 0}, {"a": 1}], 1)
    for task, info in zip(tasks, [{"k": 1}, "text"], strict=True):
        row = {"param_id": task.param_id, "replicate": 0, "seed": task.seed, "a": task.params["a"],
               "info": info, "status": "ok", "error": None, "duration_s": 0.1}  # fmt: skip
        store.write(pd.DataFrame([row]), [task])
    store.expect(tasks)
    store.finalize()
    result = read_results(tmp_path / "out").sort_values("a")
    assert list(result["info"]) == ['{"k": 1}', "text"]


def test_arrays_in_dicts_fail_clearly_and_type_changes_lose_nothing(tmp_path, client):
    with pytest.raises(
        TooManyFailures, match=r"ContractError: simcal_models:array_in_dict returned a ndarray"
    ):
        simulate(
            "simcal_models:array_in_dict", table(3), tmp_path / "arrays", {"batch_size": 3}, client=client
        )
    rows = pd.concat(pd.read_parquet(p) for p in (tmp_path / "arrays.partial").glob("part-*.parquet"))
    assert len(rows) == 3 and set(rows["status"]) == {"failed"}
    assert rows["error"].str.contains(r"shape \(3,\) for output 'curve'").all()

    # Within a batch (0, 1) and across batches (ints in one part, text in another): nothing lost.
    ints = pd.DataFrame({"a": range(5)})
    simulate("simcal_models:type_changes", ints, tmp_path / "types", {"batch_size": 2}, client=client)
    result = read_results(tmp_path / "types").sort_values("a")
    assert (result["status"] == "ok").all() and len(result) == 5
    assert list(result["value"]) == ["0", "text 1", "2", "text 3", "4"]


# -- failures are rows; dead workers and hangs cost only their own simulation ------------------------------------


def test_failures_become_rows_and_threshold_decides(tmp_path, client):
    params = pd.DataFrame({"a": [1.0, -1.0, 2.0, 3.0]})
    summary = simulate(
        "simcal_models:fails_for_negative",
        params,
        tmp_path / "ok",
        {"batch_size": 4, "max_failed_fraction": 0.25},
        client=client,
    )
    result = read_results(tmp_path / "ok")
    assert summary.total == 4 and summary.failed == 1
    failed = result[result["status"] == "failed"]
    assert list(failed["a"]) == [-1.0]
    assert failed["error"].iloc[0] == "ValueError: a must be >= 0, got -1.0"
    assert result.loc[result["status"] == "ok", "error"].isna().all()

    with pytest.raises(TooManyFailures) as error:
        simulate(
            "simcal_models:fails_for_negative",
            params,
            tmp_path / "bad",
            {"batch_size": 2, "max_failed_fraction": 0.2},
            client=client,
        )
    message = str(error.value)
    assert "1 of 4 simulations failed" in message and "1x ValueError: a must be >= 0, got -1.0" in message
    assert "(a=-1.0)" in message  # the failing parameter set is named
    assert not (tmp_path / "bad").exists()
    assert (
        len(list((tmp_path / "bad.partial").glob("part-*.parquet"))) == 2
    )  # finished parts kept for a rerun


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("simcal_models:exits_for_two", "SystemExit: 3"),
        ("simcal_models:interrupts_for_two", "KeyboardInterrupt: stopped by the model"),
    ],
)
def test_a_model_that_calls_sys_exit_or_raises_keyboard_interrupt_is_a_failed_row(
    tmp_path, client, model, error
):
    """Both are raised, not crashes: a failed row with the error, not a dead worker recorded as crashed (with a
    message blaming native code) after the batch was split and rerun."""
    summary = simulate(
        model, table(4), tmp_path / "out", {"batch_size": 4, "max_failed_fraction": 0.5}, client=client
    )
    result = read_results(tmp_path / "out").sort_values("a")
    assert list(result["status"]) == ["ok", "ok", "failed", "ok"] and summary.batches == 1
    assert result["error"].iloc[2] == error


def test_a_sweep_whose_whole_probe_fails_stops_at_once(tmp_path, client, monkeypatch):
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    with pytest.raises(TooManyFailures, match=r"all \d+ simulations of the timing probe failed") as error:
        simulate(
            "simcal_models:always_fails",
            table(3000),
            tmp_path / "out",
            {"max_failed_fraction": 0.5},
            client=client,
        )
    assert "RuntimeError: always_fails: no result for a=0.0" in str(error.value)
    ran = len(count.read_text().split())
    assert 2 <= ran <= 1000  # the probe only, not the 3000
    kept = sum(len(pd.read_parquet(p)) for p in (tmp_path / "out.partial").glob("part-*.parquet"))
    assert kept == ran


def test_a_failing_sweep_stops_early_with_one_worker_thread_and_a_slow_model(tmp_path):
    """One worker thread and a model slower than probe_seconds: the timing probe covers a single simulation, so
    one more simulation, of another parameter set, runs before the rule decides; it then stops at once."""
    count = tmp_path / "count"
    with dask_client(1, threads_per_worker=1) as one_thread:
        one_thread.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
        with pytest.raises(TooManyFailures, match=r"all 2 simulations of the timing probe failed") as error:
            simulate(
                "simcal_models:fails_slowly", table(20), tmp_path / "out", {"max_failed_fraction": 0.5},
                client=one_thread,
            )  # fmt: skip
    assert "a=0.0" in str(error.value) and "a=1.0" in str(error.value)  # two parameter sets, both failed
    assert len(count.read_text().split()) == 2  # not the 20


def test_a_failing_sweep_with_a_fixed_batch_size_stops_after_its_first_batches(tmp_path, client):
    """A fixed batch size has no timing probe: the batches holding the first simulation of the first two
    parameter sets run first (here batches 0 and 1: each holds one set's two replicates) as a fail-fast probe."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    with pytest.raises(
        TooManyFailures, match=r"all 4 simulations of the first batches .*failed, so the other 76"
    ):
        simulate(
            "simcal_models:always_fails", table(40), tmp_path / "out",
            {"batch_size": 2, "replicates": 2, "max_failed_fraction": 0.5}, client=client,
        )  # fmt: skip
    assert len(count.read_text().split()) == 4
    kept = sum(len(pd.read_parquet(p)) for p in (tmp_path / "out.partial").glob("part-*.parquet"))
    assert kept == 4


def test_a_failing_sweep_of_a_single_parameter_set_stops_after_its_first_batch(tmp_path, client):
    """With one parameter set planned, its first batch failing entirely is enough to stop (there is no second
    set to wait for): the other replicates are not started."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    with pytest.raises(
        TooManyFailures,
        match=r"all 2 simulations of the first batch \(run first as a fail-fast probe\) failed, so the other 38",
    ):
        simulate(
            "simcal_models:always_fails", table(1), tmp_path / "out",
            {"batch_size": 2, "replicates": 40, "max_failed_fraction": 0.5}, client=client,
        )  # fmt: skip
    assert len(count.read_text().split()) == 2


@pytest.mark.parametrize("batch_size", ["auto", 2])
def test_a_probe_with_one_simulation_that_succeeded_never_stops_the_sweep(tmp_path, client, batch_size):
    """Fail-fast needs every simulation of the probe to have failed: a probe (the timing probe, or the first batch
    of a fixed batch size) where one of two parameter sets fails and the other succeeds lets the sweep run on."""
    params = pd.DataFrame({"a": [1.0, -1.0, 2.0, -2.0, 3.0, 4.0]})
    settings = {"batch_size": batch_size, "max_failed_fraction": 0.5}
    summary = simulate("simcal_models:fails_for_negative", params, tmp_path / "out", settings, client=client)
    result = read_results(tmp_path / "out").sort_values("a")
    assert (summary.executed, summary.failed) == (6, 2)
    assert list(result["status"]) == ["failed", "failed", "ok", "ok", "ok", "ok"]


def test_failure_messages_say_where_the_finished_simulations_are_or_what_the_caller_says_a_rerun_is(
    tmp_path, client
):
    """A plain sweep's TooManyFailures ends saying that its finished simulations are kept in its parts for the
    rerun; a caller whose reruns are not that (the simulation service) gives its own sentence instead."""
    params = pd.DataFrame({"a": [1.0, -1.0, 2.0, 3.0]})
    settings = {"batch_size": 2, "max_failed_fraction": 0.2}
    with pytest.raises(TooManyFailures) as threshold:
        simulate("simcal_models:fails_for_negative", params, tmp_path / "bad", settings, client=client)
    assert str(threshold.value).endswith(
        f"Finished simulations are kept in {tmp_path / 'bad.partial'}; a rerun skips them (set "
        "simulation.rerun_failed to run the failed ones again)."
    )
    with pytest.raises(TooManyFailures, match=r"of the timing probe failed") as probe:
        simulate("simcal_models:always_fails", table(20), tmp_path / "probe", {"max_failed_fraction": 0.5},
                 client=client)  # fmt: skip
    assert str(probe.value).endswith(
        f"Finished simulations are kept in {tmp_path / 'probe.partial'} for the rerun."
    )

    theirs = "Submit it again to run every simulation again."
    with pytest.raises(TooManyFailures) as threshold:
        simulate("simcal_models:fails_for_negative", params, tmp_path / "bad2", settings, client=client,
                 rerun=theirs)  # fmt: skip
    assert str(threshold.value).endswith(f"(a=-1.0). {theirs}") and ".partial" not in str(threshold.value)
    with pytest.raises(TooManyFailures, match=r"of the timing probe failed") as probe:
        simulate("simcal_models:always_fails", table(20), tmp_path / "probe2", {"max_failed_fraction": 0.5},
                 client=client, rerun=theirs)  # fmt: skip
    assert str(probe.value).endswith(f". {theirs}") and ".partial" not in str(probe.value)


def test_too_many_failures_names_the_three_most_common_errors_with_their_counts_and_the_first_failure(
    tmp_path,
):
    from simcal.runner import check_failures

    tasks = plan_tasks([{"a": float(i)} for i in range(8)], 1)
    errors = ["E: a"] * 3 + ["E: b"] * 2 + ["E: c", "E: d"]
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    store.expect(tasks)
    store.write(failure_rows(tasks[:7], "failed", errors), tasks[:7])
    store.write(failure_rows(tasks[7:], "ok", [None]), tasks[7:])
    with pytest.raises(TooManyFailures) as error:
        check_failures(store, 0.5)
    assert str(error.value).startswith(
        "7 of 8 simulations failed (87.5% > max_failed_fraction 50.0%). Most common errors: 3x E: a; 2x E: b; "
        "1x E: c. First failure: param_id "
    ), str(error.value)
    assert "E: d" not in str(error.value) and "replicate 0 (a=0.0). Finished simulations are kept in " in str(
        error.value
    )


def test_a_cancel_while_a_large_sweep_is_planned_stops_it_within_a_second(tmp_path):
    """Planning 200,000 simulations takes seconds (longer on a busy service): a cancel set meanwhile from another
    thread is heard between chunks of the planning, not only once the simulations start. The sweep stops before
    its parts directory is made, and before any cluster starts (none is given)."""
    sets = pd.DataFrame({"beta": [0.1 + i * 1e-6 for i in range(200_000)], "gamma": 0.1})
    cancel, set_at = threading.Event(), []

    def cancel_soon() -> None:
        time.sleep(0.3)
        set_at.append(time.monotonic())
        cancel.set()

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    with pytest.raises(Cancelled, match="the simulations of simcal.models.sir:simulate were cancelled"):
        simulate("simcal.models.sir:simulate", sets, tmp_path / "out.parquet", cancel=cancel)
    stopped = time.monotonic()
    canceller.join()
    assert stopped - set_at[0] < 1.0, f"stopped {stopped - set_at[0]:.1f} s after the cancel"
    assert not (tmp_path / "out.parquet.partial").exists()


@pytest.mark.parametrize(
    ("seed", "common"), [(None, False), (7, False), (7, True)], ids=["default", "seeded", "common"]
)
def test_planning_in_chunks_gives_the_same_tasks_and_calls_the_check_between_chunks(
    monkeypatch, seed, common
):
    """plan_tasks works through chunks of PLAN_CHUNK parameter sets so that a cancel check runs between them: the
    tasks (ids, seeds, duplicates merged into their first, across chunks too) are those planned in one go, and the
    manifest's digest, built chunk by chunk as well, is the same."""
    from simcal import sweep_plan, tasks

    sets = [{"a": i % 7, "b": "x" if i % 2 else 1.5} for i in range(40)] + [{"a": 1.0, "b": "x"}]
    whole = plan_tasks(sets, 3, seed, common)
    manifest = plan_manifest("simcal_models:noisy_line", whole, SimulationSettings())
    calls = []
    monkeypatch.setattr(tasks, "PLAN_CHUNK", 4)
    monkeypatch.setattr(sweep_plan, "CANCEL_CHUNK", 5)
    chunked = plan_tasks(sets, 3, seed, common, check=lambda: calls.append(1))
    assert chunked == whole and len({t.param_id for t in whole}) == 14
    assert len(calls) == 11 + 14  # 41 sets in chunks of 4, then 14 sets (3 replicates each) one by one
    calls.clear()
    assert (
        plan_manifest(
            "simcal_models:noisy_line", chunked, SimulationSettings(), check=lambda: calls.append(1)
        )
        == manifest
    )
    assert len(calls) == 9  # 42 keys in chunks of 5


@pytest.mark.parametrize("enabled", [True, False])
def test_planning_pauses_the_garbage_collector_and_leaves_it_as_it_was(monkeypatch, enabled):
    """plan_tasks builds its plan with the cyclic garbage collector paused (its checks see it off), and leaves it
    as it found it, also when a check raises (a cancel)."""
    import gc

    from simcal import tasks

    monkeypatch.setattr(tasks, "PLAN_CHUNK", 2)  # 5 sets: 3 chunks to identify, 5 to seed (2 replicates each)
    sets = [{"a": i} for i in range(5)]
    seen = []

    def cancel_at_the_third_check():
        seen.append(gc.isenabled())
        if len(seen) == 3:
            raise Cancelled("cancelled")

    (gc.enable if enabled else gc.disable)()
    try:
        assert len(plan_tasks(sets, 2, check=lambda: seen.append(gc.isenabled()))) == 10
        assert seen == [False] * 8 and gc.isenabled() is enabled
        seen.clear()
        with pytest.raises(Cancelled):
            plan_tasks(sets, 2, check=cancel_at_the_third_check)
        assert seen == [False] * 3 and gc.isenabled() is enabled
    finally:
        gc.enable()


def test_the_manifests_digest_is_that_of_the_set_of_simulations_whatever_their_order():
    """The resume record's digest names the plan's simulations, not their order: the same for the tasks in any
    order, another for a changed seed, replicate, parameter set or one simulation more."""
    sets = [{"a": i, "b": "x" * (i % 3)} for i in range(30)]  # ids of one width, parameters of several
    tasks = plan_tasks(sets, 3)
    digest = plan_manifest("simcal_models:noisy_line", tasks, SimulationSettings())["plan"]
    shuffled = list(tasks)
    random.Random(5).shuffle(shuffled)
    assert plan_manifest("simcal_models:noisy_line", shuffled, SimulationSettings())["plan"] == digest
    first = tasks[0]
    changed = [
        [first._replace(seed=first.seed + 1), *tasks[1:]],
        [first._replace(replicate=3), *tasks[1:]],
        [first._replace(param_id=tasks[3].param_id), *tasks[1:]],
        tasks[:-1],
        [*tasks, first._replace(replicate=3)],
    ]
    digests = {plan_manifest("simcal_models:noisy_line", t, SimulationSettings())["plan"] for t in changed}
    assert len(digests) == len(changed) and digest not in digests


@pytest.mark.parametrize("phase", ["check_parameter_sets", "plan_tasks", "plan_manifest", "PartStore"])
def test_a_cancel_is_heard_within_each_phase_of_planning_not_only_after_it(tmp_path, monkeypatch, phase):
    """simulate's promise: a cancel takes effect while a sweep is planned, between its phases and between chunks of
    CANCEL_CHUNK parameter sets or simulations within them (PartStore: before each part of an earlier run it reads
    back). A cancel set as a phase begins stops that phase itself, not only the sweep at the next phase (on a
    large table, seconds later)."""
    from simcal import runner, sweep_plan, tasks

    monkeypatch.setattr(sweep_plan, "CANCEL_CHUNK", 5)
    monkeypatch.setattr(tasks, "PLAN_CHUNK", 5)
    model, output = "simcal.models.sir:simulate", tmp_path / "out.parquet"
    sets = pd.DataFrame({"beta": [0.1 + i / 100 for i in range(30)], "gamma": 0.1})
    if phase == "PartStore":  # parts of an earlier run of the same sweep, for the rerun to read back
        planned = plan_tasks(sets.to_dict("records"), 1)
        earlier = PartStore(output, plan_manifest(model, planned, SimulationSettings()))
        for task in planned[:3]:
            row = {"param_id": task.param_id, "replicate": 0, "seed": task.seed, **task.params,
                   "status": "ok", "error": None, "duration_s": 0.1}  # fmt: skip
            earlier.write(pd.DataFrame([row]), [task])
        assert len(earlier.parts()) == 3
    cancel, finished = threading.Event(), []
    original = getattr(runner, phase)

    def cancelled_as_it_begins(*args, **kwargs):
        cancel.set()
        result = original(*args, **kwargs)
        finished.append(phase)
        return result

    monkeypatch.setattr(runner, phase, cancelled_as_it_begins)
    with pytest.raises(Cancelled, match=f"the simulations of {model} were cancelled"):
        simulate(model, sets, output, cancel=cancel)
    assert finished == [], f"{phase} went on to its end after the cancel"


def cancel_when(condition, cancel: threading.Event, set_at: list[float]) -> threading.Thread:
    """A thread that sets ``cancel`` once ``condition()`` holds, noting when."""

    def watch() -> None:
        while not condition():
            time.sleep(0.01)
        set_at.append(time.monotonic())
        cancel.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_cancel_during_the_timing_probe_stops_the_sweep_within_seconds(tmp_path, client):
    """The probe's simulations here take 30 s each: a cancel set while they run cancels them on the scheduler
    and the sweep stops at once, without waiting for them (and interrupts them: they sleep in Python steps)."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    sets = pd.DataFrame({"a": [float(i) for i in range(20)], "sleep_s": 30.0})
    cancel, set_at = threading.Event(), []
    began = time.monotonic()
    cancel_when(lambda: time.monotonic() - began > 1.0, cancel, set_at)
    with pytest.raises(Cancelled):
        simulate(
            "simcal_models:sleeps_in_steps", sets, tmp_path / "out.parquet", client=client, cancel=cancel
        )
    stopped = time.monotonic()
    assert stopped - set_at[0] < 3.0, f"stopped {stopped - set_at[0]:.1f} s after the cancel"
    assert not count.exists()  # no simulation of the probe had finished


def test_a_cancel_set_while_the_batches_are_being_submitted_stops_the_submitting(
    tmp_path, client, monkeypatch
):
    """Submitting a large sweep's batches to the scheduler takes seconds (a minute for 100,000 batches of one on a
    busy service): a cancel set meanwhile is heard between two submissions, so the sweep stops without sending the
    rest of its batches, rather than once all of them are on the scheduler."""
    from simcal import runner

    submitted, cancel, set_at = [], threading.Event(), []
    submit = runner.Execution._submit

    def counting_submit(self, unit):
        submitted.append(unit.key)
        if len(submitted) == 5:
            set_at.append(time.monotonic())
            cancel.set()
        submit(self, unit)

    monkeypatch.setattr(runner.Execution, "_submit", counting_submit)
    settings = {"batch_size": 1, "max_failed_fraction": 1}
    with pytest.raises(Cancelled, match="the simulations of simcal_models:noisy_line were cancelled"):
        simulate(
            "simcal_models:noisy_line",
            table(400),
            tmp_path / "out.parquet",
            settings,
            client=client,
            cancel=cancel,
        )
    assert len(submitted) == 5, f"{len(submitted)} of 400 batches submitted after the cancel set at the 5th"


def test_a_cancel_asks_dask_in_chunks_of_its_batches(tmp_path, client, monkeypatch):
    """Dask's scheduler handles one Client.cancel call in a time quadratic in its keys (30,000 batches of one: 78 s
    on this machine, against 13 s in calls of 500), during which no other task starts (the service's next job
    waited minutes). Every batch in flight is cancelled, DASK_CANCEL_CHUNK at a time."""
    from simcal import batch_execution, runner

    monkeypatch.setattr(batch_execution, "DASK_CANCEL_CHUNK", 7)
    cancelled: list[list[str]] = []
    cancel_batches = client.cancel
    monkeypatch.setattr(
        client,
        "cancel",
        lambda futures, **kw: (cancelled.append([f.key for f in futures]), cancel_batches(futures, **kw)),
    )
    submitted, cancel = [], threading.Event()
    submit = runner.Execution._submit

    def submit_then_cancel_at_the_last(self, unit):
        submit(self, unit)
        submitted.append(unit.key)
        if len(submitted) == 30:
            cancel.set()

    monkeypatch.setattr(runner.Execution, "_submit", submit_then_cancel_at_the_last)
    # 2 s each: a batch Dask starts on a slot an interrupted one frees, before its cancel reaches the scheduler,
    # runs to its end (the interrupt came first), and must not hold a worker into the next test
    sets = pd.DataFrame({"a": [float(i) for i in range(30)], "sleep_s": 2.0})
    with pytest.raises(Cancelled):
        simulate(
            "simcal_models:sleeps_in_steps", sets, tmp_path / "out.parquet",
            {"batch_size": 1, "max_failed_fraction": 1},  # no fail-fast first batches: all 30 in one run
            client=client, cancel=cancel,
        )  # fmt: skip
    assert [len(keys) for keys in cancelled] == [7, 7, 7, 7, 2]
    assert sorted(key for keys in cancelled for key in keys) == sorted(submitted)

    def still_running(dask_worker, keys=frozenset(submitted)):  # a cancelled task runs on in its thread
        return [key for key in keys if key in dask_worker.state.tasks]

    wait_for(
        lambda: not any(client.run(still_running).values()), 30, "the cancelled batches to leave the workers"
    )


def cancel_two_simulations_running(tmp_path, client, sleep_s: float, after_s: float) -> float:
    """Sweep two simulations of ``sleep_s`` (in Python steps), one batch each, cancel it ``after_s`` in (both are
    running then), see it raise Cancelled; returns when the cancel was set (time.monotonic)."""
    sets = pd.DataFrame({"a": [0.0, 1.0], "sleep_s": sleep_s})
    cancel, set_at = threading.Event(), []
    began = time.monotonic()
    cancel_when(lambda: time.monotonic() - began > after_s, cancel, set_at)
    with pytest.raises(Cancelled):
        simulate(
            "simcal_models:sleeps_in_steps", sets, tmp_path / "out.parquet", {"batch_size": 1},
            client=client, cancel=cancel,
        )  # fmt: skip
    return set_at[0]


def test_a_cancel_interrupts_the_batches_running_on_the_workers_and_frees_them_at_once(tmp_path, client):
    """Dask lets a running task run to its end: a cancelled sweep interrupts its batches running on the workers
    (here two simulations of 60 s, one on each worker, in Python steps), so both workers take new work at once and
    neither simulation runs to its end."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    cancelled_at = cancel_two_simulations_running(tmp_path, client, sleep_s=60.0, after_s=2.0)
    for worker in client.scheduler_info()["workers"]:
        client.submit(time.monotonic, workers=[worker], pure=False).result(timeout=5)
    assert time.monotonic() - cancelled_at < 8.0
    time.sleep(0.5)
    assert not count.exists()  # neither simulation ran to its end


def test_a_cancel_waits_for_the_workers_interrupt_at_most_interrupt_wait_s(tmp_path, client, monkeypatch):
    """A worker that does not answer the interrupt (its model holding the GIL in native code) delays the cancel by
    INTERRUPT_WAIT_S at most."""
    from simcal import batch_execution

    monkeypatch.setattr(batch_execution, "INTERRUPT_WAIT_S", 0.5)
    monkeypatch.setattr(batch_execution, "_interrupt_on_workers", lambda client, keys: time.sleep(30))
    cancelled_at = cancel_two_simulations_running(tmp_path, client, sleep_s=2.0, after_s=1.0)
    assert time.monotonic() - cancelled_at < 2.5


def test_a_run_that_stops_on_an_error_interrupts_its_batches_running_on_the_workers(
    tmp_path, client, monkeypatch
):
    """A sweep that stops on an error (here the first part write fails as on a full disk) leaves nothing of itself
    running on a cluster that outlives it: its batch of a 60 s simulation, running on the other worker, is
    interrupted within seconds (Dask would let it run on in its thread, beside the next work)."""
    import errno

    from simcal.store import PartStore

    def disk_full(self, frame, tasks, prefix="part"):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PartStore, "write", disk_full)
    sets = pd.DataFrame({"a": [0.0, 1.0], "sleep_s": [0.5, 60.0]})
    with pytest.raises(OSError, match="No space left"):
        simulate(
            "simcal_models:sleeps_in_steps", sets, tmp_path / "out.parquet", {"batch_size": 1}, client=client
        )
    deadline = time.monotonic() + 5
    while running := [key for keys in running_tasks(client).values() for key in keys]:
        assert time.monotonic() < deadline, f"still running after the sweep stopped: {running}"
        time.sleep(0.05)


def running_tasks(client) -> dict[str, list[str]]:
    """The keys each worker's threads are running now (a task Dask released runs on in its thread)."""
    return client.run(lambda dask_worker: list(dask_worker.active_threads.values()))


def test_a_simulation_that_kills_its_worker_is_isolated_and_the_rest_kept(tmp_path, client):
    summary = simulate(
        "simcal_models:crashes_for_three", table(8), tmp_path / "out",
        {"batch_size": 8, "max_failed_fraction": 0.2}, client=client,
    )  # fmt: skip
    result = read_results(tmp_path / "out").sort_values("a")
    outcome = result[["a", "status", "error"]].to_string()  # shown when an assertion fails
    assert len(result) == 8 and summary.failed == 1, outcome
    crashed = result[result["status"] == "crashed"]
    assert list(crashed["a"]) == [3.0] and crashed["seed"].notna().all(), outcome
    expected = (
        "the process running it alone, after its worker died, exited with exit code 11; that process died 1 time(s) "
        "(limit: simulation.allowed_failures = 0;"
    )
    assert expected in crashed["error"].iloc[0], outcome
    assert (result.loc[result["a"] != 3, "status"] == "ok").all(), outcome
    client.wait_for_workers(2, timeout=60)


def test_a_simulation_the_worker_cannot_run_alone_is_failed_not_crashed_and_rerun_failed_runs_it_again(
    tmp_path, client
):
    """Its worker dies (a == 3), so it is run alone; there the model returns fine, but the process running it
    cannot write its rows (a directory stands in their place: as real an OSError as a full disk's). The isolation
    failed, not the model: it is run alone again, ISOLATION_FAILURES times in all, then recorded as failed saying
    so (it was recorded as crashed, its own death), and a rerun with rerun_failed runs it again."""
    count = tmp_path / "alone"
    params = table(6).assign(count_file=str(count))
    settings = {"batch_size": 6, "max_failed_fraction": 0.2}
    model, out = "simcal_models:blocks_its_rows_for_three", tmp_path / "out"
    summary = simulate(model, params, out, settings, client=client)
    result = read_results(out).sort_values("a")
    outcome = result[["a", "status", "error"]].to_string()  # shown when an assertion fails
    assert len(result) == 6 and summary.failed == 1, outcome
    assert (result.loc[result["a"] != 3, "status"] == "ok").all(), outcome
    failed = result[result["a"] == 3]
    assert list(failed["status"]) == ["failed"], outcome
    error = failed["error"].iloc[0]
    assert error.startswith(
        "IsolationFailed: could not run it alone in a process of its own on worker host "
    ), error
    assert "its process could not write its rows to " in error and "IsADirectoryError" in error, error
    assert f"so {ISOLATION_FAILURES} time(s), the limit" in error, error
    assert "The model itself was not seen to fail" in error, error
    assert count.read_text().split() == ["alone"] * ISOLATION_FAILURES  # run alone again, then given up
    client.wait_for_workers(2, timeout=60)
    leave_as_parts(out, model)
    again = simulate(model, params, out, {**settings, "rerun_failed": True}, client=client)
    assert (again.skipped, again.executed) == (5, 1)
    assert count.read_text().split() == ["alone"] * 2 * ISOLATION_FAILURES
    client.wait_for_workers(2, timeout=60)


def test_on_a_worker_of_several_threads_only_the_simulation_that_kills_it_is_recorded_as_crashed(tmp_path):
    """Two threads per worker process: the simulations running beside the crasher die with it, each time it runs
    there. A single simulation whose worker died is therefore run again in a process of its own, and only a death
    of that process blames it."""
    with dask_client(1, threads_per_worker=2) as two_threads:
        summary = simulate(
            "simcal_models:crashes_late_for_three", table(4).iloc[[3, 0, 1, 2]], tmp_path / "out",
            {"batch_size": 1, "max_failed_fraction": 0.5}, client=two_threads,
        )  # fmt: skip
    result = read_results(tmp_path / "out").sort_values("a")
    outcome = result[["a", "status", "error"]].to_string()  # shown when an assertion fails
    assert list(result["status"]) == ["ok", "ok", "ok", "crashed"] and summary.failed == 1, outcome
    assert "killed by signal" not in result["error"].iloc[3] and "exit code 11" in result["error"].iloc[3], (
        outcome
    )


def test_a_transient_worker_death_loses_nothing(tmp_path, client):
    params = table(4).assign(marker=str(tmp_path / "marker"))
    simulate("simcal_models:dies_once", params, tmp_path / "out", {"batch_size": 4}, client=client)
    result = read_results(tmp_path / "out")
    assert (tmp_path / "marker").read_text() == "died"
    assert list(result["status"]) == ["ok"] * 4
    client.wait_for_workers(2, timeout=60)


@pytest.mark.parametrize(
    ("model", "interrupted"),
    [("simcal_models:spins_for_two", True), ("simcal_models:sleeps_for_two", False)],
    ids=["python-loop", "native-sleep"],
)
def test_a_hung_simulation_times_out_and_the_others_are_kept(tmp_path, client, model, interrupted):
    began = time.monotonic()
    summary = simulate(
        model, table(5), tmp_path / "out", {"batch_size": 5, "timeout_s": 0.5, "max_failed_fraction": 0.2},
        client=client,
    )  # fmt: skip
    assert time.monotonic() - began < 60
    result = read_results(tmp_path / "out").sort_values("a")
    assert len(result) == 5 and summary.failed == 1
    timed_out = result[result["status"] == "timeout"]
    assert list(timed_out["a"]) == [2.0]
    assert "timeout_s = 0.5 s" in timed_out["error"].iloc[0]
    if not interrupted:  # stuck in native code: its worker was ended and the rest of the batch rerun
        assert "could not be interrupted" in timed_out["error"].iloc[0]
    assert (result.loc[result["a"] != 2, "status"] == "ok").all()
    client.wait_for_workers(2, timeout=60)


THREAD_WORKER_SWEEP = """
import sys
import pandas as pd
from simcal.runner import simulate
if __name__ == "__main__":
    params = pd.DataFrame({"a": [0, 1, 2], "sleep_s": [0.0, 0.0, 3.0]})
    simulate("simcal_models:counted_sleep", params, sys.argv[1], {"batch_size": 3, "timeout_s": 0.5,
             "max_failed_fraction": 0.5}, backend="local", backend_options={"processes": False}, threads=1)
"""


def test_a_simulation_stuck_past_its_timeout_in_a_thread_worker_never_ends_the_driver(tmp_path):
    """Thread workers run in the driver's own process: the watchdog must not end it when a simulation ignores
    its interrupt (native code); the interrupt lands once the call returns, and the simulation is a timeout row."""
    script, output = tmp_path / "sweep.py", tmp_path / "out.parquet"
    script.write_text(THREAD_WORKER_SWEEP)
    done = subprocess.run(
        [sys.executable, str(script), str(output)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{SRC}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = read_results(output).sort_values("a")
    assert list(result["status"]) == ["ok", "ok", "timeout"]
    assert result["error"].iloc[2] == "SimulationTimeout: ran longer than timeout_s = 0.5 s"


@pytest.mark.parametrize("index", [7, 0])
def test_a_timeout_report_naming_no_simulation_of_its_batch_costs_nothing(
    tmp_path, client, monkeypatch, index
):
    """A timeout report whose index and param_id name no simulation of the batch it is keyed by (never sent by
    simcal's own workers) cancels that batch; it runs again and every simulation ends ok, not in a loop. An index
    within the batch whose simulation has another param_id names none either: no simulation is blamed by index."""
    import simcal.runner

    monkeypatch.setattr(simcal.runner.secrets, "token_hex", lambda _: f"stalereport{index}")
    client.log_event(
        "simcal-timeout", {"batch": f"simcal-batch-stalereport{index}-0", "index": index, "param_id": "none"}
    )
    settings = SimulationSettings(batch_size=2, timeout_s=30)
    tasks = plan_tasks(table(2).assign(sleep_s=0.5).to_dict("records"), 1)
    store = PartStore(tmp_path / "out", plan_manifest("simcal_models:counted_sleep", tasks, settings))
    with Simulator("simcal_models:counted_sleep", settings, client=client) as simulator:
        summary = simulator.run(tasks, store)
    store.finalize()
    assert (summary.executed, summary.failed) == (2, 0)
    assert list(read_results(tmp_path / "out")["status"]) == ["ok", "ok"]


def test_batches_end_ok_in_error_or_lost_and_only_errors_are_blamed(client):
    from distributed import wait

    from simcal.outcomes import settle

    finished, erred = client.submit(sum, [1, 2], pure=False), client.submit(divmod, 1, 0, pure=False)
    cancelled = client.submit(time.sleep, 30, pure=False)
    cancelled.cancel()
    wait([finished, erred])
    assert settle(finished) == ("ok", 3)
    outcome, error = settle(erred)
    assert outcome == "error" and isinstance(error, ZeroDivisionError)
    outcome, error = settle(cancelled)  # Dask gave up on it: run again, not recorded as a failure
    assert outcome == "lost" and "cancelled" in f"{type(error).__name__} {error}".lower()


def test_settle_all_settles_each_batch_as_settle_does_with_one_fetch_for_the_finished(client):
    """simcal.api.gather settles the batches that are done together (one gather of the finished ones' tables):
    each ends as settle would end it alone, in order, and a finished batch whose table vanished before the fetch
    is lost, as settle has it when its result() raises."""
    from distributed import wait

    from simcal.outcomes import settle_all

    finished = [client.submit(sum, [1, n], pure=False) for n in range(3)]
    erred = client.submit(divmod, 1, 0, pure=False)
    cancelled = client.submit(time.sleep, 30, pure=False)
    cancelled.cancel()
    wait([*finished, erred])
    (ok0, ok1, error, lost, ok2) = settle_all([finished[0], finished[1], erred, cancelled, finished[2]])
    assert [ok0, ok1, ok2] == [("ok", 1), ("ok", 2), ("ok", 3)]
    assert error[0] == "error" and isinstance(error[1], ZeroDivisionError)
    assert lost[0] == "lost" and "cancelled" in f"{type(lost[1]).__name__} {lost[1]}".lower()

    class Vanished:  # finished, but its table was lost and its rerun erred before the fetch (gather skips it)
        status, key = "finished", "vanished-batch"

        def __init__(self, owner, rerun):
            self.client, self.rerun = owner, rerun

        def exception(self, *args, **kwargs):
            return self.rerun.exception(*args, **kwargs)

    class Skipping:
        def gather(self, futures, errors):
            assert errors == "skip"
            return dict.fromkeys(futures)

    # lost, with the error its result() would have raised (a KilledWorker is judged as a death), not a timeout
    ((outcome, error),) = settle_all([Vanished(Skipping(), erred)])
    assert outcome == "lost" and isinstance(error, ZeroDivisionError), error


def test_a_batch_whose_result_is_lost_again_and_again_is_run_again_a_few_times_then_recorded_as_failed(
    tmp_path, monkeypatch
):
    """A lost batch (its result vanished, or Dask cancelled it on its own) did nothing wrong and is run again, but
    not for ever: after UNCONFIRMED_DEATHS losses in a row it is recorded as failed with the error."""
    from concurrent.futures import CancelledError

    import simcal.batch_execution
    from simcal.outcomes import UNCONFIRMED_DEATHS

    settled = []

    def always_lost(future):
        settled.append(future.key)
        if len(settled) > 10:
            raise AssertionError("a lost batch was run again and again")
        return "lost", CancelledError("Dask cancelled the batch")

    monkeypatch.setattr(simcal.batch_execution, "settle", always_lost)
    settings = {"batch_size": 1, "max_failed_fraction": 1.0}
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as in_process,
    ):
        summary = simulate(
            "simcal_models:noisy_line", table(1), tmp_path / "out", settings, client=in_process
        )
    assert len(settled) == len(set(settled)) == UNCONFIRMED_DEATHS  # each time under a new key
    result = read_results(tmp_path / "out")
    assert (summary.executed, summary.failed) == (1, 1)
    assert list(result["status"]) == ["failed"] and list(result["error"]) == [
        "CancelledError: Dask cancelled the batch"
    ]


# -- resume: keyed by the plan, parts by their contents ------------------------------------------------------------


def test_removing_the_bad_row_and_rerunning_keeps_only_the_new_plan(tmp_path, client):
    # The review's case: the threshold fails the rule, the user drops the bad row and reruns.
    params = pd.DataFrame({"a": [0.2, -0.3, 0.4, 0.5]})
    settings = {"batch_size": 2, "max_failed_fraction": 0.1}
    with pytest.raises(TooManyFailures, match="1 of 4 simulations failed"):
        simulate("simcal_models:fails_for_negative", params, tmp_path / "out", settings, client=client)
    fixed = params[params["a"] > 0]
    summary = simulate("simcal_models:fails_for_negative", fixed, tmp_path / "out", settings, client=client)
    assert summary.total == 3 and summary.skipped == 3 and summary.executed == 0  # nothing redone
    result = read_results(tmp_path / "out")
    assert sorted(result["a"]) == [0.2, 0.4, 0.5] and (result["status"] == "ok").all()


def leave_as_parts(output: Path, model: str) -> None:
    """Turn a finished output back into the parts an interrupted run of the same model would have left."""
    partial = PartStore(output, {"model": model}).partial
    output.rename(partial / "part-previous.parquet")


def test_changed_replicates_or_seed_reuse_exactly_the_matching_simulations(tmp_path, client):
    model, out = "simcal_models:noisy_line", tmp_path / "out"
    simulate(model, table(3), out, {"batch_size": 2, "replicates": 2}, client=client)
    previous = read_results(out)
    leave_as_parts(out, model)
    more = simulate(model, table(4), out, {"batch_size": 2, "replicates": 3}, client=client)
    assert (more.skipped, more.executed) == (6, 6)  # the 3 x 2 finished ones have the same seeds: kept
    result = read_results(out)
    assert len(result) == 12 and sorted(set(result["a"])) == [0, 1, 2, 3]

    leave_as_parts(out, model)
    fewer = simulate(model, table(2), out, {"batch_size": 2, "replicates": 1}, client=client)
    assert (fewer.skipped, fewer.executed) == (2, 0)
    assert len(read_results(out)) == 2  # the rows of the larger plan are left out

    leave_as_parts(out, model)
    reseeded = simulate(model, table(3), out, {"batch_size": 2, "replicates": 2, "seed": 5}, client=client)
    assert (reseeded.skipped, reseeded.executed) == (0, 6)  # other seeds: other simulations
    assert not set(read_results(out)["seed"]) & set(previous["seed"])


def test_parts_of_another_model_are_discarded_and_its_simulations_run_again(tmp_path, client):
    """The same parameter table, replicates and seeds give the same keys whatever the model: only the model in
    the resume record tells another model's finished simulations apart, and none of them may reach the output."""
    params, out = table(3), tmp_path / "out"
    simulate("simcal_models:noisy_line", params, out, {"batch_size": 2}, client=client)
    leave_as_parts(out, "simcal_models:noisy_line")
    summary = simulate("simcal_models:counted_sleep", params, out, {"batch_size": 2}, client=client)
    assert (summary.skipped, summary.executed) == (0, 3)
    result = read_results(out)
    assert len(result) == 3 and sorted(result["y"]) == [0.0, 1.0, 2.0]


def test_an_output_path_that_is_a_directory_of_other_files_is_refused_and_kept(tmp_path, client):
    """Older versions wrote the output as a directory of Parquet parts, which the single file replaces; any other
    directory at the output path is someone's data: refused before anything runs, never deleted."""
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ContractError, match=rf"^{mine}: the output is a directory holding other files than"):
        simulate("simcal_models:noisy_line", table(2), mine, {"batch_size": 1}, client=client)
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "results.partial").exists()

    legacy = tmp_path / "legacy"
    legacy.mkdir()
    table(1).to_parquet(legacy / "part-0.parquet")
    simulate("simcal_models:noisy_line", table(2), legacy, {"batch_size": 1}, client=client)
    assert legacy.is_file() and len(read_results(legacy)) == 2


@pytest.mark.parametrize("name", ["sims.csv", "sims.TSV", "sims.txt"])
def test_an_output_named_as_delimited_text_is_refused_before_anything_runs(tmp_path, client, name):
    """The simulate wrapper's output named sims.csv got Parquet bytes under that name: refused, naming the file."""
    output = tmp_path / name
    with pytest.raises(
        ContractError, match=rf"^{output}: the simulations are written as Parquet, not as '\.\w+' text"
    ):
        simulate("simcal_models:noisy_line", table(2), output, {"batch_size": 1}, client=client)
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_part_is_discarded_and_redone(tmp_path, client):
    params = pd.DataFrame({"a": [1.0, -1.0, 2.0, 3.0]})
    with pytest.raises(TooManyFailures):
        simulate(
            "simcal_models:fails_for_negative", params, tmp_path / "out", {"batch_size": 1}, client=client
        )
    parts = sorted((tmp_path / "out.partial").glob("part-*.parquet"))
    data = parts[0].read_bytes()
    parts[0].write_bytes(data[: len(data) // 2])  # what a crash during a copy could leave
    summary = simulate(
        "simcal_models:fails_for_negative", params, tmp_path / "out", {"batch_size": 1, "max_failed_fraction": 0.25},
        client=client,
    )  # fmt: skip
    assert (summary.skipped, summary.executed) == (3, 1)
    assert len(read_results(tmp_path / "out")) == 4


def test_rerun_failed_runs_only_the_failed_simulations_again(tmp_path, client):
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    params = table(4)
    # max_failed_fraction 1: no fail-fast probe, every simulation runs (and fails).
    simulate("simcal_models:always_fails", params, tmp_path / "out", {"batch_size": 2, "max_failed_fraction": 1.0},
             client=client)  # fmt: skip
    assert len(count.read_text().split()) == 4
    leave_as_parts(tmp_path / "out", "simcal_models:always_fails")
    kept = simulate("simcal_models:always_fails", params, tmp_path / "out", {"batch_size": 2, "max_failed_fraction": 1.0},
                    client=client)  # fmt: skip
    assert (kept.skipped, kept.executed) == (4, 0)  # failed rows are results: kept, not run again
    assert len(count.read_text().split()) == 4
    # `simcal status` counts the resumed failures among the failed, not only those of this run.
    info = json.loads((tmp_path / "out.progress.json").read_text())
    assert (info["done"], info["total"], info["failed"]) == (4, 4, 4), info
    leave_as_parts(tmp_path / "out", "simcal_models:always_fails")
    again = simulate(
        "simcal_models:always_fails", params, tmp_path / "out",
        {"batch_size": 2, "max_failed_fraction": 1.0, "rerun_failed": True}, client=client,
    )  # fmt: skip
    assert (again.skipped, again.executed) == (0, 4) and len(count.read_text().split()) == 8


def test_rerun_failed_replaces_the_failed_rows_of_a_part_that_also_holds_finished_ones(tmp_path, client):
    """One part holding two finished and two failed simulations: after the fix, the rerun keeps the two, runs the
    two again, and the output holds each simulation once (never its old failed row next to its new one)."""
    model, out, params = "simcal_models:fails_for_negative_until_fixed", tmp_path / "out", table(4, -2.0)
    settings = {"batch_size": 4, "max_failed_fraction": 1.0}
    simulate(model, params, out, settings, client=client)
    assert sorted(read_results(out)["status"]) == ["failed", "failed", "ok", "ok"]
    leave_as_parts(out, model)
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_FIXED", "1"))
    try:
        again = simulate(model, params, out, {**settings, "rerun_failed": True}, client=client)
    finally:
        client.run(lambda: os.environ.pop("SIMCAL_TEST_FIXED", None))
    assert (again.skipped, again.executed) == (2, 2)
    result = read_results(out)
    assert sorted(result["a"]) == [-2.0, -1.0, 0.0, 1.0] and (result["status"] == "ok").all()


def ok_rows(tasks) -> pd.DataFrame:
    """The rows of finished simulations, one each, as a batch of them returns them."""
    return pd.DataFrame(
        [
            {"param_id": t.param_id, "replicate": t.replicate, "seed": t.seed, **t.params, "y": 1.0,
             "status": "ok", "error": None, "duration_s": 0.1}
            for t in tasks
        ]
    )  # fmt: skip


def test_rerun_failed_runs_again_the_simulations_that_timed_out_or_crashed_too(tmp_path):
    """config/README.md: rerun_failed runs again the simulations that "failed, timed out or crashed"; after a fix
    (or a longer timeout_s) a timeout or a crash deserves its rerun as much as an exception does."""
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    rows = [ok_rows(tasks[:1])] + [
        failure_rows([task], status, f"{status} here")
        for task, status in zip(tasks[1:], FAILED_STATUSES, strict=True)
    ]
    store.write(pd.concat(rows, ignore_index=True), tasks)
    again = PartStore(tmp_path / "out", {"model": "m:f"}, rerun_failed=True)
    assert again.not_done(tasks) == tasks[1:]  # the ok one is kept, every failed status runs again
    kept = PartStore(tmp_path / "out", {"model": "m:f"})
    assert kept.not_done(tasks) == tasks[1:] and kept.error_of(tasks[1]) is None


def test_a_part_whose_rows_all_failed_is_gone_after_rerun_failed_so_a_later_resume_keeps_the_new_rows(
    tmp_path,
):
    """rerun_failed leaves no failed row in the parts: a rerun that is interrupted after redoing a simulation in a
    batch of another size, and resumed without rerun_failed, must find its new row, not the old failed one of a
    part read first (parts are read in name order)."""
    tasks = plan_tasks([{"a": 0.0}, {"a": 1.0}], 1)
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    store.write(failure_rows(tasks, "failed", "boom"), tasks, prefix="earlier")  # named to be read first
    rerun = PartStore(tmp_path / "out", {"model": "m:f"}, rerun_failed=True)
    assert rerun.not_done(tasks) == tasks
    rerun.write(ok_rows(tasks[:1]), tasks[:1])  # interrupted here, the second not run yet
    resumed = PartStore(tmp_path / "out", {"model": "m:f"})
    assert resumed.not_done(tasks) == tasks[1:]
    assert resumed.error_of(tasks[0]) is None
    resumed.expect(tasks[:1])
    resumed.finalize()
    assert read_results(tmp_path / "out")["status"].tolist() == ["ok"]


# -- progress, watchdog and backends ---------------------------------------------------------------------------


def test_progress_goes_to_the_log_and_to_a_json_file_that_simcal_status_reads(tmp_path, client, caplog):
    caplog.set_level(logging.INFO, logger="simcal")
    out = tmp_path / "out.parquet"
    simulate("simcal_models:noisy_line", table(6), out, {"batch_size": 2}, client=client)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("simulations ")]
    assert lines and "6/6 (100.0%), 0 failed" in lines[-1]
    assert "/s, ETA" in lines[-1] and "dashboard http://127.0.0.1:" in lines[-1]
    info = json.loads((tmp_path / "out.parquet.progress.json").read_text())
    assert info["state"] == "finished" and (info["done"], info["total"], info["failed"]) == (6, 6, 0)
    assert info["backend"] == "local" and info["dashboard"].startswith("http://127.0.0.1:")
    assert info["workers"] == 2 and "workers 2, dashboard" in lines[-1]  # the module's cluster has two
    assert info["rate_per_s"] > 0
    # Outputs get a plain open()'s permissions (0666 less the umask), not mkstemp's 0600: the group can read them.
    expected = 0o666 & ~current_umask()
    for path in (out, tmp_path / "out.parquet.progress.json"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == expected, f"{path.name}: {oct(mode)} != {oct(expected)}"
        assert mode & stat.S_IRGRP or not expected & stat.S_IRGRP

    status = subprocess.run(
        [sys.executable, "-m", "simcal.cli", "status", str(out)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    header, row = status.stdout.splitlines()
    assert header.split()[:4] == ["STATE", "DONE", "TOTAL", "FAILED"]
    assert row.split()[:4] == ["finished", "6", "6", "0"] and str(out) in row


def test_a_running_sweep_rewrites_its_progress_file_while_it_runs(tmp_path, client):
    out = tmp_path / "out.parquet"
    progress = tmp_path / "out.parquet.progress.json"
    params = table(12).assign(sleep_s=0.15)
    settings = {"batch_size": 1, "progress_seconds": 0.1}
    sweep = threading.Thread(
        target=simulate,
        args=("simcal_models:counted_sleep", params, out, settings),
        kwargs={"client": client},
    )
    sweep.start()
    seen = set()
    while sweep.is_alive():
        try:
            info = json.loads(progress.read_text())
        except FileNotFoundError:  # not written yet; a rewrite is atomic, so never half-written
            info = None
        if info is not None:
            seen.add((info["state"], info["done"], info["total"]))
        time.sleep(0.01)
    sweep.join()
    running = sorted(done for state, done, total in seen if state == "running" and 0 < done < total == 12)
    assert len(running) >= 2, seen  # several snapshots while running, not only the first and the last
    assert json.loads(progress.read_text())["state"] == "finished" and len(read_results(out)) == 12


def test_no_worker_watchdog_fails_with_a_clear_message(tmp_path):
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as empty,
    ):
        began = time.monotonic()
        with pytest.raises(
            NoWorkers, match=r"no Dask worker has been connected for \d+ s .*no_worker_timeout_s = 2"
        ):
            simulate(
                "simcal_models:noisy_line", table(2), tmp_path / "out", {"batch_size": 1, "no_worker_timeout_s": 2},
                client=empty,
            )  # fmt: skip
        assert time.monotonic() - began < 30
    info = json.loads((tmp_path / "out.progress.json").read_text())
    assert info["state"] == "failed" and "NoWorkers" in info["message"] and info["workers"] == 0


def test_no_worker_timeout_counts_only_time_with_simulations_waiting(tmp_path):
    """Between two runs of one Simulator (a calibration's rounds) nothing waits: an adaptive cluster may have no
    worker then, for longer than no_worker_timeout_s, and the next run still waits that long for one."""
    settings = SimulationSettings(batch_size=1, no_worker_timeout_s=3)
    rounds = [plan_tasks([{"a": float(i)} for i in range(first, first + 2)], 1) for first in (0, 2)]
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
        Simulator("simcal_models:noisy_line", settings, client=client) as simulator,
    ):
        store = PartStore(tmp_path / "out", plan_manifest("simcal_models:noisy_line", rounds[0], settings))
        assert simulator.run(rounds[0], store).executed == 2
        cluster.scale(0)
        while client.nthreads():  # until the worker has left
            time.sleep(0.05)
        time.sleep(4)  # idle, with no worker, for longer than no_worker_timeout_s
        threading.Timer(1.0, cluster.scale, args=(1,)).start()  # the next run's worker comes within 1 s
        assert simulator.run(rounds[1], store).executed == 2


class NoWorkersConnected:
    """A client whose scheduler has no worker (what worker_count asks)."""

    def scheduler_info(self):
        return {"workers": {}}


def test_time_without_a_worker_counts_towards_no_worker_timeout_s_only_while_simulations_wait():
    simulator = Simulator(
        "simcal_models:noisy_line", SimulationSettings(no_worker_timeout_s=60), client=NoWorkersConnected()
    )
    simulator._last_worker_seen = time.monotonic() - 120  # no worker for two minutes, nothing waiting
    assert simulator.check_workers(waiting=False) == 0  # nothing waits: not counted, the clock starts again
    assert simulator.check_workers(waiting=True) == 0  # now simulations wait, but not for 60 s yet
    simulator._last_worker_seen = time.monotonic() - 120
    with pytest.raises(
        NoWorkers, match=r"no Dask worker has been connected for 12\d s .*no_worker_timeout_s = 60"
    ):
        simulator.check_workers(waiting=True)


def test_local_backend_starts_and_closes_its_own_cluster_and_counts_deaths_itself(tmp_path):
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    summary = simulate(
        "simcal_models:crashes_for_three", table(6), tmp_path / "out",
        {"batch_size": 2, "allowed_failures": 1, "max_failed_fraction": 0.5}, backend="local", threads=2,
    )  # fmt: skip
    assert summary.total == 6
    result = read_results(tmp_path / "out")
    assert os.getpid() not in set(result.loc[result["status"] == "ok", "pid"])
    crashed = result[result["status"] == "crashed"]
    assert list(crashed["a"]) == [3] and "died 2 time(s)" in crashed["error"].iloc[0]
    time.sleep(0.5)
    leftover = {p.pid for p in psutil.Process().children(recursive=True) if p.is_running() and not tracker(p)}
    assert not leftover - before, f"worker processes left running: {leftover - before}"


def tracker(process: psutil.Process) -> bool:
    """multiprocessing's resource tracker: one per parent process, started by the first worker process this
    pytest process spawns and kept for its life (a test run alone starts it), so it is no worker left behind."""
    with contextlib.suppress(psutil.Error):
        return "multiprocessing.resource_tracker" in " ".join(process.cmdline())
    return False


def test_the_cluster_a_simulator_starts_lets_no_task_cause_a_worker_death_before_simcal_hears_of_it():
    """Clusters simcal starts run Dask with allowed-failures 0: every worker death reaches simcal at once, and only
    simulation.allowed_failures counts (Dask's own reruns would kill more workers first)."""
    settings = SimulationSettings(allowed_failures=2)
    with Simulator("simcal_models:noisy_line", settings, backend_options={"processes": False}) as simulator:
        allowed = simulator.client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    assert allowed == 0


def test_a_local_cluster_waits_minutes_not_seconds_for_a_worker_restarting_after_a_death():
    """Dask's LocalCluster drops a worker for good when its restarted process has not joined within
    distributed.deploy.lost-worker-timeout, which it reads when the worker leaves (15 s by default). Crash isolation
    ends workers on purpose; under load (CI, 2026-12-05) a restart took 15 s and the cluster went on one worker
    short. The local backend holds a longer timeout for the cluster's whole life, and gives the old one back."""
    from dask.utils import parse_timedelta

    from simcal.backends import LOCAL_LOST_WORKER_TIMEOUT, dask_client

    def lost_worker_timeout_s() -> float:
        return parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout"))

    before = lost_worker_timeout_s()
    with dask_client("local", {"workers": 1}):
        assert lost_worker_timeout_s() == parse_timedelta(LOCAL_LOST_WORKER_TIMEOUT) == 300  # docs: 5 minutes
    assert lost_worker_timeout_s() == before


def test_scheduler_backend_uses_an_existing_scheduler_and_leaves_it_running(tmp_path, monkeypatch):
    with LocalCluster(n_workers=1, processes=True, dashboard_address=":0") as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        simulate(
            "simcal_models:noisy_line", table(4), tmp_path / "env", {"batch_size": 2}, backend="scheduler"
        )
        simulate(
            "simcal_models:noisy_line", table(4), tmp_path / "cfg", {"batch_size": 2},
            backend="scheduler", backend_options={"address": cluster.scheduler_address},
        )  # fmt: skip
        assert len(read_results(tmp_path / "env")) == len(read_results(tmp_path / "cfg")) == 4
        with Client(cluster.scheduler_address, timeout=5) as again:  # still alive, workers too
            assert len(again.scheduler_info()["workers"]) == 1


def test_a_crash_on_an_existing_scheduler_that_reruns_tasks_is_still_isolated(tmp_path):
    """An existing scheduler keeps its own allowed-failures (here 1): it reruns a batch whose worker died before
    simcal hears of the death. The simulation is then run alone in a process of its own, where only
    simulation.allowed_failures counts (the scheduler sees no worker die)."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        with LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster:
            simulate(
                "simcal_models:crashes_for_three", table(4), tmp_path / "out",
                {"batch_size": 1, "max_failed_fraction": 0.5}, backend="scheduler",
                backend_options={"address": cluster.scheduler_address},
            )  # fmt: skip
            events = [event for _, event in cluster.scheduler.get_events("all") if isinstance(event, dict)]
            deaths = [  # the worker deaths the scheduler saw, each with the tasks it was running
                e["processing-tasks"]
                for e in events
                if e.get("action") == "remove-worker" and not e["expected"]
            ]
    result = read_results(tmp_path / "out").sort_values("a")
    assert list(result["status"]) == ["ok", "ok", "ok", "crashed"]
    error = result["error"].iloc[3]
    assert (
        "exited with exit code 11; that process died 1 time(s) (limit: simulation.allowed_failures = 0;"
        in error
    )
    # docs/simulation.md: the existing scheduler first reran the crashing batch per its own setting (two worker
    # deaths, that batch among the tasks of both; one queued behind it may be there too), then simcal ran it alone,
    # where its death kills no worker.
    assert len(deaths) == 2 and deaths[0] & deaths[1], deaths


def test_scheduler_backend_without_address_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with pytest.raises(ContractError, match="DASK_SCHEDULER_ADDRESS"):
        simulate("simcal_models:noisy_line", table(2), tmp_path / "o", {"batch_size": 1}, backend="scheduler")


def test_slurm_job_script_from_config():
    from dask_jobqueue import SLURMCluster

    options = {
        "account": "PAS1234", "queue": "gpu", "walltime": "00:30:00", "cores": 4, "memory": "16GB",
        "processes": 2, "job_extra_directives": ["--exclusive"], "gpus": 2, "interface": "lo",
        "job_script_prologue": ["module load python"], "adaptive": {"minimum_jobs": 0, "maximum_jobs": 3},
    }  # fmt: skip
    kwargs = slurm_cluster_kwargs(options, "dask-worker-test")
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    # 30 min walltime: stagger 90 s (5%), margin 270 s (15%): workers retire 24 min +- 1.5 min in.
    for expected in [
        "#SBATCH -J dask-worker-test", "#SBATCH -A PAS1234", "#SBATCH -p gpu", "#SBATCH -t 00:30:00",
        "#SBATCH --cpus-per-task=4", "#SBATCH --exclusive", "#SBATCH --gpus-per-node=2", "module load python",
        "--nworkers 2", "--resources GPU=1", "--death-timeout 60", "--lifetime 1440s", "--lifetime-stagger 90s",
    ]:  # fmt: skip
        assert expected in script, f"{expected!r} not in job script:\n{script}"
    assert slurm_scaling(options) == {"minimum_jobs": 0, "maximum_jobs": 3}
    assert slurm_scaling({"jobs": 4}) == {"minimum_jobs": 4, "maximum_jobs": 4}  # replaced when they retire
    with pytest.raises(ContractError, match="unknown options \\['acount'\\]"):
        slurm_cluster_kwargs({"acount": "typo"})


def test_slurm_worker_command_paths_with_spaces_stay_one_word_in_the_job_script(monkeypatch):
    """dask-jobqueue joins the worker command with spaces, unquoted: a venv or local_directory under a folder with a
    space ("my project") split into words, and no worker started. A log_directory with a space is refused."""
    import shlex

    from dask_jobqueue import SLURMCluster

    monkeypatch.setattr(sys, "executable", "/home/me/my project/.venv/bin/python")
    kwargs = slurm_cluster_kwargs({"local_directory": "/scratch/my runs/café"}, "dask-worker-test")
    with SLURMCluster(**kwargs, scheduler_options={"dashboard_address": None}) as cluster:
        script = cluster.job_script()
    command = shlex.split(next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line))
    assert command[:3] == ["/home/me/my project/.venv/bin/python", "-m", "distributed.cli.dask_worker"]
    assert command[command.index("--local-directory") + 1] == "/scratch/my runs/café"
    with pytest.raises(
        ContractError, match=r"^calibration.backend.slurm.log_directory '/x/my logs' contains whi"
    ):
        slurm_cluster_kwargs({"log_directory": "/x/my logs"})


@pytest.mark.parametrize("walltime", ["0", "00:00:00", "0-0", "0-00:00:00", "UNLIMITED", "infinite"])
def test_a_walltime_of_0_or_unlimited_is_no_time_limit_as_slurm_reads_it_and_retires_no_worker(walltime):
    """sbatch --time: "A time limit of zero requests that no time limit be imposed" (and UNLIMITED or INFINITE
    say the same): the walltime check refused it ("lifetime (-20 s) + lifetime_stagger (0 s) must be positive and
    shorter than the walltime 0 (0 s)", or UNLIMITED as a bad format). It reaches sbatch as written, and with no
    walltime to end a worker none is retired, unless a lifetime is set."""
    from dask_jobqueue import SLURMCluster

    assert walltime_seconds(walltime) is None and worker_lifetime({"walltime": walltime}) is None
    kwargs = slurm_cluster_kwargs({"walltime": walltime}, "dask-worker-test")
    with SLURMCluster(**kwargs, scheduler_options={"dashboard_address": None}) as cluster:
        script = cluster.job_script()
    assert f"#SBATCH -t {walltime}\n" in script and "--lifetime" not in script, script
    # A lifetime set still retires them, with a stagger of 5% of it (at most 5 min) unless it is set too.
    assert worker_lifetime({"walltime": walltime, "lifetime": "50m"}) == (3000, 150)
    assert worker_lifetime({"walltime": walltime, "lifetime": "10h", "lifetime_stagger": 60}) == (36000, 60)


def test_worker_lifetime_is_shorter_than_the_walltime():
    assert walltime_seconds("01:00:00") == 3600 and walltime_seconds("2-00:30") == 174600
    assert walltime_seconds("5") == 300 and walltime_seconds("01:30") == 90
    assert worker_lifetime({"walltime": "00:01:00"}) == (37, 3)
    assert worker_lifetime({"walltime": "01:00:00"}) == (2880, 180)
    assert worker_lifetime({"walltime": "04:00:00"}) == (14400 - 600 - 300, 300)  # both caps: 10 min, 5 min
    assert worker_lifetime({"walltime": "00:01:00", "lifetime": "30s", "lifetime_stagger": 5}) == (30, 5)
    with pytest.raises(
        ContractError, match=r"lifetime \(70 s\) \+ lifetime_stagger \(3 s\) .* walltime 00:01:00"
    ):
        worker_lifetime({"walltime": "00:01:00", "lifetime": 70})
    # Retiring at the walltime itself is too late: SLURM ends the job as the worker begins to close.
    assert worker_lifetime({"walltime": "00:01:00", "lifetime": 54, "lifetime_stagger": 5}) == (54, 5)
    with pytest.raises(ContractError, match=r"lifetime \(55 s\) \+ lifetime_stagger \(5 s\) must be"):
        worker_lifetime({"walltime": "00:01:00", "lifetime": 55, "lifetime_stagger": 5})
    with pytest.raises(ContractError, match=r"walltime '1h'"):
        walltime_seconds("1h")


def test_a_walltime_in_days_counts_its_hours_minutes_and_seconds_too():
    """SLURM's D-HH, D-HH:MM and D-HH:MM:SS: every part counts (a part dropped lets workers outlive the walltime)."""
    assert walltime_seconds("1-02") == 86400 + 2 * 3600
    assert walltime_seconds("1-02:03") == 86400 + 2 * 3600 + 3 * 60
    assert walltime_seconds("1-02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4


def test_each_worker_process_of_a_gpu_job_gets_at_least_one_gpu_resource():
    """gpus per job split over the job's worker processes, never to 0: a worker with GPU=0 never runs a task that
    asks resources={"GPU": 1}."""
    for gpus, processes, each in ((1, 2, 1), (4, 2, 2), (2, 1, 2)):
        args = slurm_cluster_kwargs({"gpus": gpus, "processes": processes})["worker_extra_args"]
        assert args[args.index("--resources") + 1] == f"GPU={each}", (gpus, processes, args)
    assert "--resources" not in slurm_cluster_kwargs({})["worker_extra_args"]


def test_the_death_timeout_of_slurm_workers_is_the_configured_one_else_60_s():
    """calibration.backend.slurm.death_timeout: seconds a worker whose scheduler vanished waits before it exits
    (default 60)."""
    assert slurm_cluster_kwargs({})["death_timeout"] == 60
    assert slurm_cluster_kwargs({"death_timeout": 120})["death_timeout"] == 120


def test_the_local_backend_runs_a_worker_per_thread_of_the_rule_unless_workers_is_given():
    """calibration.backend.local: "workers defaults to the rule's threads" (at least one)."""
    from simcal.backends import local_cluster_shape

    assert local_cluster_shape({}, threads=3) == (3, 1, True)
    assert local_cluster_shape({}, threads=0) == (1, 1, True)
    assert local_cluster_shape({"workers": 2, "threads_per_worker": 4, "processes": False}, threads=3) == (
        2,
        4,
        False,
    )


def test_the_scheduler_address_option_wins_over_dask_scheduler_address(monkeypatch):
    """calibration.backend.scheduler.address, "null reads DASK_SCHEDULER_ADDRESS": the environment is the fallback."""
    from simcal.backends import scheduler_address

    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", "tcp://from-the-environment:8786")
    assert scheduler_address({"address": "tcp://from-the-config:8786"}) == "tcp://from-the-config:8786"
    assert scheduler_address({"address": None}) == "tcp://from-the-environment:8786"


def test_with_a_client_given_the_backend_name_is_checked_but_not_its_options():
    """check_backend: with a client given, the options would start nothing and are not read further (a scheduler
    backend needs no address then); the backend's name is still checked."""
    from simcal.backends import check_backend

    with pytest.raises(ContractError, match="no address"):
        check_backend("scheduler", {"address": None})
    check_backend("scheduler", {"address": None}, client=object())
    check_backend("local", {"workers": 0}, client=object())
    with pytest.raises(ContractError, match="'locall' is unknown"):
        check_backend("locall", {}, client=object())


@pytest.mark.parametrize(("failures", "exit_code"), [(2, 0), (3, 1)])
def test_the_reaper_cancels_the_worker_jobs_once_the_driver_is_gone_asking_scancel_up_to_three_times(
    tmp_path, monkeypatch, failures, exit_code
):
    """simcal.reaper: when the driver's end of its pipe closes (however the driver ended), it runs scancel for the
    run's job name and user, and asks again, up to three times, when scancel fails (a busy controller)."""
    calls = tmp_path / "calls"
    fake = tmp_path / "bin" / "scancel"
    fake.parent.mkdir()
    fake.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n[ "$(wc -l < {calls})" -gt {failures} ] || exit 1\nexit 0\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    reaper = start_reaper("dask-worker-0a1b2c3d")
    time.sleep(0.5)
    assert reaper.poll() is None and not calls.exists()  # waits while the driver lives
    reaper.stdin.close()  # the driver is gone
    assert reaper.wait(timeout=30) == exit_code
    asked = calls.read_text().splitlines()
    assert asked == [f"--name dask-worker-0a1b2c3d --user {getpass.getuser()}"] * min(failures + 1, 3)


def test_sigterm_becomes_an_exception_that_unwinds_the_block():
    closed = []
    with pytest.raises(Terminated):
        with close_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            finally:
                closed.append(True)
    assert closed == [True]
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


@pytest.mark.parametrize(
    ("stop", "message"),
    [
        (Terminated(128 + signal.SIGTERM), "stopped by SIGTERM"),
        (Terminated(128 + signal.SIGHUP), "stopped by SIGHUP"),
        (KeyboardInterrupt(), "stopped by SIGINT (Ctrl-C)"),
    ],
    ids=["sigterm", "sighup", "ctrl-c"],
)
def test_a_sweep_stopped_by_a_signal_is_recorded_as_stopped_naming_the_signal_not_as_failed(
    tmp_path, stop, message
):
    """A SIGKILLed sweep shows as stopped in simcal status; one stopped by SIGTERM (scancel, a walltime, a pod's
    deletion) or Ctrl-C was recorded as failed with 'Terminated: 143', as if the sweep itself had gone wrong."""
    out = tmp_path / "out.parquet"
    with pytest.raises(type(stop)):
        with Simulator("simcal_models:noisy_line", client=object()) as simulator:
            simulator.progress = Progress(out, "local")  # what the first run of a sweep makes
            raise stop
    info = read_progress(tmp_path / "out.parquet.progress.json")
    assert (info["state"], info["message"], info["dashboard"]) == ("stopped", message, None)


def test_a_cancelled_sweep_is_recorded_as_stopped_saying_it_was_cancelled_not_as_failed(tmp_path):
    """A cancel (a service job's, Simulator.cancel) was recorded as failed with 'Cancelled: ...', as if the sweep
    had gone wrong; like a stop by a signal, it is stopped, and a rerun resumes it."""
    out = tmp_path / "out.parquet"
    with pytest.raises(Cancelled):
        with Simulator("simcal_models:noisy_line", client=object()) as simulator:
            simulator.progress = Progress(out, "local")
            simulator.cancel()
            simulator.check_cancelled()
    info = read_progress(tmp_path / "out.parquet.progress.json")
    assert (info["state"], info["message"], info["dashboard"]) == (
        "stopped",
        "stopped by a cancel: the simulations of simcal_models:noisy_line were cancelled",
        None,
    )


def test_sighup_too_becomes_terminated_with_the_shells_exit_status_of_the_signal():
    """Terminated is raised for SIGTERM and SIGHUP (a closed terminal or session ends the driver too), with the
    status a shell gives a process that signal killed (128 + its number); the handler found is put back after."""

    def ignored(signum, frame):  # were SIGHUP left alone, its default action would end pytest itself
        pass

    previous = signal.signal(signal.SIGHUP, ignored)
    try:
        with pytest.raises(Terminated) as caught:
            with close_on_signals():
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(2)
        assert caught.value.code == 128 + signal.SIGHUP
        assert signal.getsignal(signal.SIGHUP) is ignored
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_reaper_runs_in_a_session_of_its_own_so_the_drivers_process_group_signal_spares_it():
    """A SIGKILL or Ctrl-C sent to the driver's process group must not take the reaper with it: it is the one left
    to cancel the worker jobs."""
    reaper = start_reaper("dask-worker-0a1b2c3d")
    try:
        assert os.getsid(reaper.pid) == reaper.pid != os.getsid(0)
    finally:
        reaper.kill()
        reaper.wait(timeout=30)
        reaper.stdin.close()


class FakeReaper:
    """What slurm_cluster does with the reaper process: closes its stdin and waits for it."""

    def __init__(self, job_name: str, events: list):
        self.job_name, self.events, self.pid = job_name, events, 0
        self.stdin = SimpleNamespace(close=lambda: events.append("reaper told"))

    def wait(self, timeout=None):
        self.events.append("reaper waited")
        return 0


def fake_slurm(monkeypatch) -> SimpleNamespace:
    """dask_jobqueue.SLURMCluster and the reaper replaced by recorders: what slurm_cluster asked of them."""
    import dask_jobqueue

    from simcal import backends

    seen = SimpleNamespace(kwargs=None, adapt=None, reaper=None, events=[])

    class FakeSLURMCluster:
        def __init__(self, **kwargs):
            seen.kwargs = kwargs

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.events.append("cluster closed")

        def adapt(self, **scaling):
            seen.adapt = scaling

        def job_script(self):
            return "#!/bin/sh"

    def reaper(job_name):
        seen.reaper = FakeReaper(job_name, seen.events)
        return seen.reaper

    monkeypatch.setattr(dask_jobqueue, "SLURMCluster", FakeSLURMCluster)
    monkeypatch.setattr(backends, "start_reaper", reaper)
    return seen


def test_a_slurm_cluster_names_its_jobs_as_its_reaper_cancels_them_and_tells_the_reaper_on_every_exit(
    monkeypatch,
):
    """The reaper cancels the worker jobs by their name: the jobs must get the very name it was given
    (dask-worker-<run id>). The cluster scales adaptively within slurm_scaling's bounds, and when the block ends,
    also by an error, the cluster is closed, then the reaper is told (its stdin closed) and waited for."""
    from simcal.backends import slurm_cluster

    seen = fake_slurm(monkeypatch)
    with pytest.raises(RuntimeError, match="the sweep failed"):
        with slurm_cluster({"walltime": "00:30:00", "adaptive": {"minimum_jobs": 1, "maximum_jobs": 4}}):
            assert seen.events == []
            raise RuntimeError("the sweep failed")
    assert re.fullmatch(r"dask-worker-[0-9a-f]{8}", seen.reaper.job_name)
    assert seen.kwargs["job_name"] == seen.reaper.job_name
    assert seen.adapt == {"minimum_jobs": 1, "maximum_jobs": 4}
    assert seen.events == ["cluster closed", "reaper told", "reaper waited"]
    with slurm_cluster({"jobs": 3}):
        pass
    assert seen.adapt == {"minimum_jobs": 3, "maximum_jobs": 3}  # replaced when they retire


def test_the_slurm_backend_drops_a_retired_workers_job_from_the_plan_after_3_s_while_its_cluster_lives(
    monkeypatch,
):
    """A retired worker's job leaves the adaptive plan after distributed.deploy.lost-worker-timeout; the slurm
    backend holds it at 3 s (Dask's 15 s leaves the sweep a worker short for that long) while its cluster lives,
    and gives the old value back."""
    from dask.utils import parse_timedelta

    from simcal import backends

    seen = []

    @contextlib.contextmanager
    def cluster(options):
        seen.append(parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")))
        with LocalCluster(n_workers=0, processes=False, dashboard_address=None) as local:
            yield local

    monkeypatch.setattr(backends, "slurm_cluster", cluster)
    before = dask.config.get("distributed.deploy.lost-worker-timeout")
    with backends.dask_client("slurm", {"walltime": "00:30:00"}):
        assert parse_timedelta(dask.config.get("distributed.deploy.lost-worker-timeout")) == 3
    assert seen == [3]
    assert dask.config.get("distributed.deploy.lost-worker-timeout") == before


RUN_SWEEP = """
import sys
from simcal.logs import configure
from simcal.runner import simulate
import pandas as pd
if __name__ == "__main__":
    configure()
    simulate("simcal_models:counted_sleep", pd.DataFrame({"a": range(24), "sleep_s": 0.1}), sys.argv[1],
             {"batch_size": 2}, backend="local", threads=2)
"""


def start_sweep(tmp_path: Path, output: Path, count_file: Path) -> subprocess.Popen:
    script = tmp_path / "sweep.py"
    script.write_text(RUN_SWEEP)
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{SRC}", "SIMCAL_TEST_COUNT": str(count_file)}
    return subprocess.Popen(
        [sys.executable, str(script), str(output)], env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def wait_for_parts(partial: Path, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while len(list(partial.glob("part-*.parquet"))) < at_least:
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no batch finished in time"
        time.sleep(0.05)


def test_resume_after_a_crash_redoes_only_unfinished_batches(tmp_path, monkeypatch):
    output = tmp_path / "sweep.parquet"
    proc = start_sweep(tmp_path, output, tmp_path / "first.count")
    wait_for_parts(output.with_name("sweep.parquet.partial"), 3, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # a hard crash: no cleanup at all
    proc.wait()
    assert not output.exists()
    parts = list(output.with_name("sweep.parquet.partial").glob("part-*.parquet"))
    finished = sum(len(pd.read_parquet(p)) for p in parts)
    assert 6 <= finished < 24

    monkeypatch.setenv("SIMCAL_TEST_COUNT", str(tmp_path / "second.count"))
    summary = simulate(
        "simcal_models:counted_sleep", pd.DataFrame({"a": range(24), "sleep_s": 0.1}), output,
        {"batch_size": 2}, backend="local", threads=2,
    )  # fmt: skip
    assert summary.skipped == finished
    assert summary.executed == 24 - finished
    assert (
        len((tmp_path / "second.count").read_text().split()) == 24 - finished
    )  # nothing finished was redone
    result = read_results(output)
    assert sorted(result["a"]) == list(range(24))
    assert not output.with_name("sweep.parquet.partial").exists()


def test_a_finished_sweep_keeps_no_parts_so_a_changed_table_runs_every_simulation_again(
    tmp_path, monkeypatch
):
    """docs/simulation.md "Resume": resume keeps the valid work of a run that did not finish; a finished sweep's
    parts are merged and removed, so one more row means every simulation again (the cost the docs state)."""
    output = tmp_path / "sweep.parquet"
    for count, rows in (("first.count", 4), ("second.count", 5)):
        monkeypatch.setenv("SIMCAL_TEST_COUNT", str(tmp_path / count))
        summary = simulate(
            "simcal_models:counted_sleep",
            pd.DataFrame({"a": range(rows), "sleep_s": 0.0}),
            output,
            backend="local",
        )
        assert (summary.executed, summary.skipped) == (rows, 0)
        assert len((tmp_path / count).read_text().split()) == rows
        assert not output.with_name("sweep.parquet.partial").exists()


def test_sigterm_closes_the_local_cluster_and_keeps_finished_parts(tmp_path):
    output = tmp_path / "sweep.parquet"
    proc = start_sweep(tmp_path, output, tmp_path / "count")
    wait_for_parts(output.with_name("sweep.parquet.partial"), 1, proc)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers, "the LocalCluster should have worker processes"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) != 0
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"worker processes survived SIGTERM: {alive}"
    assert list(output.with_name("sweep.parquet.partial").glob("part-*.parquet"))
    # a stop, not a failure: simcal status shows it as it shows a SIGKILLed sweep
    record = json.loads(Path(f"{output}.progress.json").read_text())
    assert (record["state"], record["message"]) == ("stopped", "stopped by SIGTERM")


def test_a_second_sweep_on_an_output_being_written_is_refused_and_the_first_keeps_every_row(tmp_path):
    """Two sweeps writing one output at once (a notebook beside a Snakemake job, or a run started twice): the
    second's plan deleted the first's parts (not in its plan), and the first then published what was left as
    finished (150 rows of 400 in a run by hand). The second is now refused at its start, naming the output and
    the holder; the first writes every row."""
    from output_locks import OutputInUse

    in_threads = {"backend": "local", "backend_options": {"processes": False, "workers": 1}}
    output = tmp_path / "sweep.parquet"
    first = pd.DataFrame({"a": [float(i) for i in range(40)], "sleep_s": 0.05})
    outcome: list = []

    def run_first() -> None:
        try:
            outcome.append(
                simulate("simcal_models:counted_sleep", first, output, {"batch_size": 2}, **in_threads)
            )
        except Exception as error:  # noqa: BLE001 - the outcome is what the test looks at
            outcome.append(error)

    thread = threading.Thread(target=run_first)
    thread.start()
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("sweep.parquet.partial/*.parquet")):
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.05)
    second = pd.DataFrame({"a": [100.0, 101.0], "sleep_s": 0.0})
    with pytest.raises(OutputInUse, match=f"{output}: another process .* is writing this sweep output now"):
        simulate("simcal_models:counted_sleep", second, output, {}, **in_threads)
    thread.join(timeout=120)
    assert not isinstance(outcome[0], Exception), outcome
    rows = pd.read_parquet(output)
    assert sorted(rows["a"]) == list(first["a"]) and (rows["status"] == "ok").all()


def test_a_parameter_that_is_both_a_column_and_fixed_is_refused_naming_the_table_file(tmp_path):
    """Every other message about a parameter table names its file; this one named neither the file nor where the
    fixed values came from, so a workflow with several sweeps left the user to guess which table it meant."""
    table = tmp_path / "design.csv"
    table.write_text("beta,gamma\n0.2,0.1\n")
    with pytest.raises(
        ContractError,
        match=rf"^{re.escape(str(table))}: parameters \['gamma'\] are both columns of the parameter table and "
        r"fixed parameters; give each in one place$",
    ):
        planned_parameter_sets(table, {"gamma": 0.2})


# A sweep of 4 worker processes in a process whose open-file limit is LOW_OPEN_FILES (soft) and argv[2] (hard).
LOW_OPEN_FILES = 48
SWEEP_UNDER_AN_OPEN_FILE_LIMIT = """
import logging, resource, sys
import pandas as pd
from simcal.runner import simulate

if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[3]), int(sys.argv[2])))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("simcal.open_files").setLevel(logging.INFO)
    params = pd.DataFrame({"a": [float(i) for i in range(40)]})
    simulate("simcal_models:noisy_line", params, sys.argv[1], {"batch_size": 4, "replicates": 2},
             backend="local", backend_options={"workers": 4})
    print(*resource.getrlimit(resource.RLIMIT_NOFILE))
"""


def test_a_sweep_of_worker_processes_under_a_low_open_file_limit_raises_it_to_the_hard_limit(tmp_path):
    """4 worker processes under `ulimit -n 48`: the LocalCluster failed to start (``AssertionError:
    Status.starting``, nannies' ``Failed to start process``), naming no limit (under a little more, the sweep
    died later with ``[Errno 24] Too many open files``). The soft limit is now raised to the hard one before the
    cluster starts (its workers inherit it), and the sweep finishes."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    assert hard >= open_files_needed(4, True), (
        f"this machine's hard open-file limit, {hard}, is too low to test"
    )
    output = tmp_path / "out.parquet"
    done = subprocess.run(
        [sys.executable, "-c", SWEEP_UNDER_AN_OPEN_FILE_LIMIT, str(output), str(hard), str(LOW_OPEN_FILES)],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{SRC}"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == [str(hard), str(hard)]
    assert (
        f"INFO simcal.open_files: raised this process's open-file limit (ulimit -n) from {LOW_OPEN_FILES} to its "
        f"hard limit {hard}: a LocalCluster of 4 worker processes needs about {open_files_needed(4, True)} open "
        "files"
    ) in done.stderr.splitlines()
    result = read_results(output)
    assert len(result) == 80 and (result["status"] == "ok").all()


@pytest.mark.parametrize("processes, fit", [(True, 1), (False, 4)])
def test_an_open_file_limit_too_low_even_at_its_hard_limit_is_a_warning_naming_ulimit_n_and_the_workers(
    processes, fit
):
    """Where the hard limit is too low as well, nothing can be raised: a warning, before the cluster starts,
    naming the limits, ``ulimit -n`` and how many workers fit (the limit is left as it is)."""
    kind = "worker processes" if processes else "thread workers"
    workers = 4 if processes else 8
    needed = open_files_needed(workers, processes)
    script = (
        "import logging, resource, sys\nfrom simcal.open_files import ensure_open_files\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))\n"
        f"print(ensure_open_files({workers}, {processes}), *resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["48", "48", "48"]
    assert done.stderr == (
        f"WARNING simcal.open_files: this process may open 48 files at most (ulimit -n; its hard limit is 48), and "
        f"a LocalCluster of {workers} {kind} needs about {needed}: it may fail to start or end with '[Errno 24] Too "
        f"many open files'. Raise the limit (`ulimit -n {needed}` or more in the shell or job script that starts "
        "snakemake; above the hard limit only as root, or in /etc/security/limits.conf) or set "
        f"calibration.backend.local.workers to {fit} or fewer (without it, a worker per thread of the rule)\n"
    )
