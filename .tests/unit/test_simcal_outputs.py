"""What a model returns reaches the output, or becomes a failed row naming the output: never a dead sweep.

Outputs no Parquet part can hold (a complex number, an empty dict in a cell, a sparse column) fail their own
simulation, with an error naming the column, while the other simulations of the batch keep their rows and the
output file is written on the first run. Duplicate column names are kept, renamed by the ``output_`` rule. A
table's index is kept as columns unless it holds just the row numbers.
"""

from __future__ import annotations

import re
import signal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client, LocalCluster
from testkit import dask_client

import simcal.batch_execution
import simcal.result_rows
import simcal.runner
import simcal.worker
from simcal.contract import ContractError, normalise_output, unique_names
from simcal.runner import PartStore, plan_tasks, read_results, run_batch, simulate
from simcal.store import storage_problem
from simcal.worker import storable_rows

KINDS = [
    "fine",
    "complex_scalar",
    "complex_column",
    "duplicate_columns",
    "int_and_str_names",
    "empty_dict_cell",
    "sparse_column",
    "fine",
]
FAILING = {
    "complex_scalar": "'z'",
    "complex_column": "'z'",
    "empty_dict_cell": "'info'",
    "sparse_column": "'s'",
}


@pytest.fixture(scope="module")
def client():
    with dask_client(1) as connected:
        yield connected


def kinds_table() -> pd.DataFrame:
    return pd.DataFrame({"kind": KINDS, "a": [float(i) for i in range(len(KINDS))]})


def one_row_each(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop_duplicates(["param_id", "replicate"]).set_index("kind", drop=False)


def check_kinds(result: pd.DataFrame) -> None:
    first = one_row_each(result)
    assert len(first) == len(KINDS)  # every simulation is in the output
    for kind in set(KINDS):
        status = result.loc[result["kind"] == kind, "status"]
        assert set(status) == ({"failed"} if kind in FAILING else {"ok"}), kind
    for kind, column in FAILING.items():
        error = first.loc[kind, "error"]
        assert error.startswith("ContractError: simcal_models:output_of_kind returned"), error
        assert f"column {column}" in error or f"output {column}" in error, error
    assert (
        "complex" in first.loc["complex_column", "error"] and "dict" in first.loc["empty_dict_cell", "error"]
    )
    # Duplicate names after str() are both kept: the first under the name, the other with the output_ prefix.
    assert list(first.loc["duplicate_columns", ["x", "output_x"]]) == [3.0, 4.0]
    assert list(first.loc["int_and_str_names", ["1", "output_1"]]) == [4.0, 5.0]
    fine = result[result["kind"] == "fine"].sort_values(["a", "f"])
    assert fine["z"].tolist() == [0.0, 1.0, 7.0, 8.0] and fine["z"].dtype == np.float64


@pytest.mark.parametrize("batch_size", [1, len(KINDS)])
def test_unstorable_outputs_fail_their_own_simulation_and_the_output_is_written_at_once(
    tmp_path, client, batch_size
):
    """One simulation per batch, and all of them in one batch (where pandas widens the fine simulations'
    ``z`` to complex alongside the bad one's): either way the first run writes the output."""
    settings = {"batch_size": batch_size, "max_failed_fraction": 0.6}
    summary = simulate(
        "simcal_models:output_of_kind", kinds_table(), tmp_path / "out", settings, client=client
    )
    assert (tmp_path / "out").is_file() and not (tmp_path / "out.partial").exists()
    assert summary.failed == len(FAILING)
    check_kinds(read_results(tmp_path / "out"))


def unchecked_run_batch(model_ref, tasks, time_budget_s=None, timeout_s=None):
    """What an older or foreign worker might send: the batch's rows with a complex column for a == 1 and an
    empty dict for a == 2, never checked."""
    frame = run_batch(model_ref, tasks, time_budget_s, timeout_s)
    frame["z"] = np.where(frame["a"] == 1.0, 1j, np.nan)
    frame["info"] = [{} if a == 2.0 else None for a in frame["a"]]
    return frame


def _four_simulations_in_one_batch(tmp_path, monkeypatch, batch_runner):
    """A sweep of a = 0, 1, 2, 3 in one batch on a one-worker cluster whose batches ``batch_runner`` runs: the
    rows by ``a`` and the run's summary."""
    monkeypatch.setattr(simcal.batch_execution, "run_batch", batch_runner)
    params = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address="127.0.0.1:0") as cluster,
        Client(cluster) as client,
    ):
        settings = {"batch_size": 4, "max_failed_fraction": 0.5}
        summary = simulate("simcal_models:noisy_line", params, tmp_path / "out", settings, client=client)
    return read_results(tmp_path / "out").set_index("a").sort_index(), summary


def test_rows_the_driver_cannot_store_become_failed_rows_and_the_others_are_kept(tmp_path, monkeypatch):
    result, _ = _four_simulations_in_one_batch(tmp_path, monkeypatch, unchecked_run_batch)
    assert list(result["status"]) == ["ok", "failed", "failed", "ok"]
    assert "output column 'z' holding complex128" in result.loc[1.0, "error"]
    assert "output column 'info' holding values of type dict" in result.loc[2.0, "error"]
    assert result.loc[[0.0, 3.0], "y"].notna().all() and "z" not in result.columns


def raises_outside_the_guard_for_two(model_ref, tasks, time_budget_s=None, timeout_s=None):
    """A batch that raises outside the simulations' guard (as rows that cannot be sent back would) whenever it
    holds the simulation with a == 2."""
    if any(task.params["a"] == 2.0 for task in tasks.tasks):
        raise RuntimeError("rows that cannot be sent back")
    return run_batch(model_ref, tasks, time_budget_s, timeout_s)


def test_a_batch_that_raises_outside_the_guard_is_split_until_only_the_simulation_at_fault_fails(
    tmp_path, monkeypatch
):
    result, summary = _four_simulations_in_one_batch(tmp_path, monkeypatch, raises_outside_the_guard_for_two)
    assert list(result["status"]) == ["ok", "ok", "failed", "ok"] and summary.failed == 1
    assert result.loc[2.0, "error"] == "RuntimeError: rows that cannot be sent back"


def drops_the_rows_of_two(model_ref, tasks, time_budget_s=None, timeout_s=None):
    """A batch that returns no row at all for the simulation with a == 2 (never expected of simcal's workers)."""
    rows = run_batch(model_ref, tasks, time_budget_s, timeout_s)
    return rows[rows["a"] != 2.0]


def test_a_simulation_its_batch_returned_no_rows_for_is_recorded_as_failed_not_lost(tmp_path, monkeypatch):
    result, summary = _four_simulations_in_one_batch(tmp_path, monkeypatch, drops_the_rows_of_two)
    assert list(result["status"]) == ["ok", "ok", "failed", "ok"] and summary.failed == 1
    assert result.loc[2.0, "error"] == "InternalError: the batch returned no rows for it"


class FullDisk:
    """A store whose writes raise ``errors`` in turn (None: the write succeeds)."""

    def __init__(self, *errors):
        self.errors, self.written = list(errors), []

    def write(self, frame, tasks):
        error = self.errors.pop(0)
        if error is not None:
            raise error
        self.written.append(frame)


@pytest.mark.parametrize(
    "errors",
    [
        (OSError(28, "No space left on device"),),
        (MemoryError(),),
        (ValueError("rows Arrow refuses"), OSError(28, "No space left on device")),
    ],
    ids=["disk", "memory", "disk-after-rows-refused"],
)
def test_a_full_disk_while_storing_rows_stops_the_run_instead_of_recording_the_simulations_as_failed(errors):
    """The disk or the machine, not the rows: the error stops the sweep (the rerun resumes), and no failed rows
    are stored in place of simulations that may have succeeded."""
    tasks = plan_tasks([{"a": 0.0}], 1)
    frame = run_batch("simcal_models:noisy_line", tasks)
    store = FullDisk(*errors, None, None)
    simulator = simcal.runner.Simulator("simcal_models:noisy_line", client=object())
    execution = simcal.runner.Execution(simulator, store, simcal.runner.RunSummary(), False, None)
    with pytest.raises(type(errors[-1])):
        execution._write(tasks, frame)
    assert store.written == []


def test_storable_rows_keeps_a_frame_that_can_be_stored_and_fails_every_simulation_when_it_must(monkeypatch):
    tasks = plan_tasks([{"a": 0.0}, {"a": 1.0}], 1)
    frame = run_batch("simcal_models:noisy_line", tasks)
    assert storable_rows(frame, tasks) is frame
    broken = frame.assign(info=[{}, None])
    rows = storable_rows(broken, tasks, "m:f").set_index("a").sort_index()
    assert list(rows["status"]) == ["failed", "ok"] and storage_problem(rows) is None
    assert rows.loc[0.0, "error"].startswith(
        "ContractError: m:f returned output column 'info' holding values of type dict"
    )
    # Rows that each simulation could store alone but not together: every simulation fails, none is lost.
    monkeypatch.setattr(
        simcal.result_rows,
        "storage_problem",
        lambda rows: "too many" if rows["param_id"].nunique() > 1 else None,
    )
    rows = storable_rows(frame, tasks, "m:f")
    assert len(rows) == 2 and set(rows["status"]) == {"failed"}
    assert (rows["error"] == "ContractError: the rows of m:f cannot be stored: too many").all()


def test_a_batch_with_one_bad_simulation_checks_it_alone_and_keeps_the_rest():
    tasks = plan_tasks(
        [{"kind": "fine", "a": float(i)} for i in range(200)] + [{"kind": "sparse_column", "a": 1.0}], 1
    )
    frame = run_batch("simcal_models:output_of_kind", tasks)
    assert (frame["status"] == "ok").sum() == 400 and (frame["status"] == "failed").sum() == 1
    assert "Series.sparse.to_dense()" in frame.loc[frame["status"] == "failed", "error"].iloc[0]
    assert storage_problem(frame) is None


# -- a table's index is data ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "outputs", "days"),
    [
        ("simcal_models:day_indexed", ["day", "cases"], [10, 11, 12]),
        ("simcal_models:indexed_series_in_dict", ["day", "cases", "table", "total"], [1, 2]),
        ("simcal_models:default_index", ["cases"], None),
    ],
)
def test_an_index_reaches_the_output_as_columns_and_row_numbers_do_not(
    tmp_path, client, model, outputs, days
):
    simulate(model, pd.DataFrame({"a": [1.0, 2.0]}), tmp_path / "out", {"batch_size": 2}, client=client)
    result = read_results(tmp_path / "out")
    fixed = {"param_id", "replicate", "seed", "a", "status", "error", "duration_s"}
    assert [c for c in result.columns if c not in fixed] == outputs and (result["status"] == "ok").all()
    if days is not None:
        assert result.groupby("a")["day"].apply(list).tolist() == [days, days]


def test_index_levels_are_named_and_never_overwrite_a_column():
    unnamed = pd.DataFrame({"y": [1.0, 2.0]}, index=[5, 6])
    assert normalise_output(unnamed).to_dict("list") == {"index": [5, 6], "y": [1.0, 2.0]}
    levels = pd.MultiIndex.from_tuples([("a", 1), ("b", 2)], names=["region", None])
    assert list(normalise_output(pd.DataFrame({"y": [1.0, 2.0]}, index=levels)).columns) == [
        "region",
        "level_1",
        "y",
    ]
    clash = pd.DataFrame({"day": [7, 8]}, index=pd.Index([1, 2], name="day"))
    assert normalise_output(clash).to_dict("list") == {"output_day": [1, 2], "day": [7, 8]}
    grouped = pd.DataFrame({"g": ["a", "b", "a"], "v": [1, 2, 3]}).groupby("g").sum()
    assert normalise_output({"by_g": grouped}).to_dict("list") == {
        "g": ["a", "b"],
        "v": [4, 2],
        "table": ["by_g"] * 2,
    }
    # Row numbers 0..n-1 with no name carry nothing, whatever the index's type.
    assert list(normalise_output(pd.DataFrame({"y": [1.0]}, index=[0])).columns) == ["y"]
    assert list(normalise_output(pd.DataFrame({"y": [1.0, 2.0]}, index=pd.RangeIndex(2))).columns) == ["y"]
    assert list(
        normalise_output(pd.DataFrame({"y": [1.0, 2.0]}, index=pd.RangeIndex(2, name="step"))).columns
    ) == ["step", "y"]


def test_row_labels_of_a_sliced_table_are_kept_as_the_index_column():
    """Only row numbers starting at 0 are dropped (docs/simulation.md): a table sliced by position, such as a
    series without its burn-in (``frame.iloc[3:]``), keeps pandas' RangeIndex 3, 4, ..., labels that mean
    something (the days), whatever the type of index holds them."""
    series = pd.DataFrame({"y": [0.0, 1.0, 2.0, 3.0, 4.0]})
    assert normalise_output(series.iloc[3:]).to_dict("list") == {"index": [3, 4], "y": [3.0, 4.0]}
    assert normalise_output({"late": series.iloc[3:]})["index"].tolist() == [3, 4]
    assert list(normalise_output(series.iloc[:2]).columns) == ["y"]  # 0, 1: the rows' own numbers


def test_repeated_names_are_renamed_by_the_output_prefix_rule():
    dict_output = normalise_output({1: 1.0, "1": 2.0, "t": pd.DataFrame({"x": [1]})})
    assert dict_output.to_dict("list") == {"x": [1], "table": ["t"], "1": [1.0], "output_1": [2.0]}
    scalars = run_batch("simcal_models:int_and_str_keys", plan_tasks([{"a": 1.0}], 1))
    assert scalars[["1", "output_1"]].iloc[0].tolist() == [1.0, 2.0]
    assert unique_names(["x", "x", "x", "output_x"]) == [
        "x",
        "output_output_x",
        "output_output_output_x",
        "output_x",
    ]
    assert unique_names(["a", "b"]) == ["a", "b"]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_whole_number_outputs_beyond_2_53_keep_every_digit_beside_gaps_and_failures(
    tmp_path, client, batch_size
):
    """An output beyond 2**53 (an ID) was rounded to the nearest float wherever a 64-bit float column took it: in a
    batch with a failed simulation or a missing value (pandas widens to float64), and when reading the output
    (an integer column with gaps). Every digit now reaches the output and read_results, as nullable Int64."""
    table = pd.DataFrame({"kind": ["dict", "table", "missing", "fails"]})
    settings = {"batch_size": batch_size, "max_failed_fraction": 0.5, "replicates": 1}
    simulate("simcal_models:whole_beyond_2_53", table, tmp_path / "o", settings, client=client)
    result = read_results(tmp_path / "o")
    n = {kind: rows["n"].tolist() for kind, rows in result.groupby("kind")}
    assert n["dict"] == [2**53 + 1] and n["table"] == [2**53 + 3, 2**53 + 5], n
    assert pd.isna(n["missing"][0]) and pd.isna(n["fails"][0])
    assert result["n"].dtype == "Int64"


@pytest.mark.parametrize("batch_size", [1, 2])
def test_whole_numbers_beyond_2_53_beside_fractions_are_kept_as_text_and_the_output_is_written(
    tmp_path, client, batch_size, caplog
):
    """2**53 + 1 in one simulation and 1.5 in another: in one batch pandas rounded the first to a float; in two
    batches every run stopped writing the output (Arrow refuses the lossy cast), after the whole sweep, for
    ever. No float holds both exactly, so the column is stored as text, with a warning naming it, as a column
    mixing numbers and text is."""
    table = pd.DataFrame({"kind": ["dict", "half"]})
    settings = {"batch_size": batch_size, "replicates": 1}
    simulate("simcal_models:whole_beyond_2_53", table, tmp_path / "o", settings, client=client)
    result = read_results(tmp_path / "o").set_index("kind")
    assert result.loc["dict", "n"] == str(2**53 + 1) and float(result.loc["half", "n"]) == 1.5
    assert re.search(r"output columns? \[?'n'.* (stored as text|hold values of different types)", caplog.text)


def test_a_batch_keeps_whole_numbers_beyond_2_53_beside_gaps_and_failures_as_nullable_int64():
    """run_batch's rows (what a worker returns): a whole number beyond 2**53 beside a missing value or a failed
    simulation's row, which made pandas widen the column to float64, becomes a nullable Int64 column with every
    digit, as the worker's docstring says, not Python objects."""
    kinds = ["dict", "table", "missing", "fails"]
    rows = run_batch("simcal_models:whole_beyond_2_53", plan_tasks([{"kind": kind} for kind in kinds], 1))
    assert rows["n"].dtype == "Int64"
    n = {kind: group["n"].tolist() for kind, group in rows.groupby("kind")}
    assert n["dict"] == [2**53 + 1] and n["table"] == [2**53 + 3, 2**53 + 5], n
    assert pd.isna(n["missing"][0]) and pd.isna(n["fails"][0])


def test_read_results_keeps_every_digit_where_pandas_would_round_and_reads_the_rest_as_pandas(tmp_path):
    """read_results differs from pandas' read only for an integer column with gaps holding a whole number beyond
    2**53 in magnitude (pandas widens it to float64): that keeps every digit, negative ones too, and unsigned ones
    beyond int64 (a 64-bit hash); every other column is as pandas reads it."""
    path = tmp_path / "out.parquet"
    hashes, debts = [2**64 - 1, None, 2**53 + 1], [-(2**53) - 1, None, 1]
    pq.write_table(
        pa.table({
            "param_id": ["a", "b", "c"], "replicate": [0, 0, 0],
            "hash": pa.array(hashes, pa.uint64()), "debt": pa.array(debts, pa.int64()),
            "id": pa.array([2**53 + 1, 2**62 + 1, 3], pa.int64()),  # no gap: pandas keeps it int64
            "small": pa.array([1, None, 3], pa.int64()),  # a gap, nothing beyond 2**53: float64 holds it
        }),
        path,
    )  # fmt: skip
    result, as_pandas = read_results(path), pd.read_parquet(path)
    for name, given in [("hash", hashes), ("debt", debts)]:
        assert [None if pd.isna(value) else int(value) for value in result[name]] == given, name
    for name in ("param_id", "replicate", "id", "small"):
        pd.testing.assert_series_equal(result[name], as_pandas[name])


def test_large_floats_and_small_whole_numbers_beside_fractions_stay_floats_in_the_output(tmp_path):
    """Only whole numbers beyond 2**53 (an integer column of a part) beside fractions make a column text: a float
    column whose values are beyond 2**53 in one part (1e20, a rate) and fractional in another stays float64, and
    so do small whole numbers (an integer column of a third part), which a float holds exactly."""
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    values = [1e20, 1.5, 3]
    tasks = plan_tasks([{"a": i} for i in range(len(values))], 1)
    for task, x in zip(tasks, values, strict=True):
        row = {"param_id": task.param_id, "replicate": 0, "seed": task.seed, "a": task.params["a"],
               "x": x, "status": "ok", "error": None, "duration_s": 0.1}  # fmt: skip
        store.write(pd.DataFrame([row]), [task])
    store.expect(tasks)
    store.finalize()
    result = read_results(tmp_path / "out").sort_values("a")
    assert result["x"].dtype == "float64" and result["x"].tolist() == values


def test_the_output_file_and_read_results_list_the_columns_in_the_documented_order_whichever_part_comes_first(
    tmp_path,
):
    """docs/simulation.md and the simulate wrapper's meta.yaml give the output's columns as param_id, replicate,
    seed, the parameters, the outputs, status, error, duration_s. The file took the order of its first part: when
    that part held only a failed simulation (no outputs), the outputs came after duration_s for every reader
    (pandas.read_parquet, polars, R's arrow, DuckDB), and for read_results until it reordered them."""
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    failed, fine = plan_tasks([{"a": -1.0}, {"a": 1.0}], 1)
    store.write(simcal.worker.failure_rows([failed], "failed", "ValueError: no"), [failed], prefix="a")
    row = {"param_id": fine.param_id, "replicate": 0, "seed": fine.seed, "a": 1.0, "y": 2.0, "status": "ok",
           "error": None, "duration_s": 0.1}  # fmt: skip
    store.write(pd.DataFrame([row]), [fine])  # part-<hash>.parquet, after a-<hash>.parquet
    store.expect([failed, fine])
    documented = ["param_id", "replicate", "seed", "a", "y", "status", "error", "duration_s"]
    for result in (pd.read_parquet(store.finalize()), read_results(tmp_path / "out")):
        assert list(result.columns) == documented
        ordered = result.sort_values("a")
        assert ordered["status"].tolist() == ["failed", "ok"]
        assert ordered["y"].isna().tolist() == [True, False] and ordered["y"].iloc[1] == 2.0


SIMULATIONS_IN_PARTS = 5  # one part each, and the manifest: 6 files to remove


@pytest.mark.parametrize("removed_before_the_stop", range(1, SIMULATIONS_IN_PARTS + 1))
def test_a_clean_up_stopped_after_the_output_is_published_leaves_the_resume_record_for_the_remaining_parts(
    removed_before_the_stop, tmp_path, monkeypatch
):
    """finalize removes the parts once the output is published. A SIGTERM during that (thousands of parts on a
    network filesystem) fails the job, and Snakemake deletes the output: the rerun must keep every part still on
    disk. The folder went in one rmtree, in whatever order the directory lists: with _manifest.json gone first,
    the rerun discarded every remaining part ("made by model unknown") and ran the whole sweep again. Every
    point of interruption is tried."""
    import os

    from simcal.backends import Terminated

    tasks = plan_tasks([{"a": float(i)} for i in range(SIMULATIONS_IN_PARTS)], 1)
    store = PartStore(tmp_path / "out", {"model": "m:f"})
    for task in tasks:
        row = {"param_id": task.param_id, "replicate": 0, "seed": task.seed, "a": task.params["a"], "y": 1.0,
               "status": "ok", "error": None, "duration_s": 0.1}  # fmt: skip
        store.write(pd.DataFrame([row]), [task])
    store.expect(tasks)
    remove = os.unlink  # what Path.unlink and shutil.rmtree call
    removed = []

    def unlink_until_stopped(path, *args, **kwargs):
        name = os.path.basename(path)
        if name.startswith("part-") or name == "_manifest.json":
            if len(removed) == removed_before_the_stop:
                raise Terminated(128 + signal.SIGTERM)
            removed.append(name)
        return remove(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink_until_stopped)
    with pytest.raises(Terminated):
        store.finalize()
    monkeypatch.setattr(os, "unlink", remove)
    (tmp_path / "out").unlink()  # what Snakemake does with the outputs of a failed job
    left = {part.name for part in store.parts()}
    assert len(left) == len(tasks) - sum(name.startswith("part-") for name in removed)
    rerun = PartStore(tmp_path / "out", {"model": "m:f"})
    assert {part.name for part in rerun.parts()} == left, f"stopped after removing {removed}"
    assert len(rerun.not_done(tasks)) == len(tasks) - len(left)


def test_read_results_of_a_table_no_sweep_wrote_names_the_file_and_what_it_lacks(tmp_path):
    """A calibration's trials table (or any other Parquet file) given to read_results: KeyError: 'param_id'
    before, naming neither the file nor what was expected."""
    path = tmp_path / "trials.parquet"
    pq.write_table(pa.table({"trial": [0, 1], "round": [0, 0], "loss": [1.5, 0.5]}), path)
    with pytest.raises(
        ContractError,
        match=re.escape(
            f"{path}: not a simulation dataset written by simulate (no param_id or replicate column; it has "
            "trial, round, loss)"
        ),
    ):
        read_results(path)
