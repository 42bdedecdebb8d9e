"""What a resumed sweep keeps of the parts an earlier run left: timeouts under a smaller timeout_s run again."""

from __future__ import annotations

import logging
import os

import pandas as pd
import pyarrow.parquet as pq
import pytest
from testkit import dask_client

from simcal.part_timeouts import TIMEOUT_KEY
from simcal.runner import PartStore, TooManyFailures, plan_tasks, read_results, simulate
from simcal.worker import failure_rows


@pytest.fixture(scope="module")
def client():
    with dask_client(2) as connected:
        yield connected


def ok_rows(tasks) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"param_id": t.param_id, "replicate": t.replicate, "seed": t.seed, **t.params, "y": 1.0,
             "status": "ok", "error": None, "duration_s": 0.1}
            for t in tasks
        ]
    )  # fmt: skip


def mixed_part(tasks) -> pd.DataFrame:
    """One ok simulation, one that failed, one that crashed and one that timed out (in that order)."""
    return pd.concat(
        [
            ok_rows(tasks[:1]),
            failure_rows(tasks[1:2], "failed", "ValueError: boom"),
            failure_rows(tasks[2:3], "crashed", "SimulationCrashed: its worker died"),
            failure_rows(tasks[3:4], "timeout", "SimulationTimeout: ran longer than timeout_s = 1 s"),
        ],
        ignore_index=True,
    )


def test_a_resume_runs_again_the_simulations_that_timed_out_under_a_smaller_timeout_s_and_keeps_the_others(
    tmp_path, caplog
):
    """A part records the timeout_s it ran under; a resume with a larger one (or none) runs its timeouts again,
    and keeps its failed and crashed rows (rerun_failed decides those) and the timeouts under a limit as large."""
    caplog.set_level(logging.INFO, logger="simcal")
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    manifest = {"model": "m:f"}
    PartStore(tmp_path / "out", manifest, timeout_s=1.0).write(mixed_part(tasks), tasks)
    part = next((tmp_path / "out.partial").glob("part-*.parquet"))
    assert pq.read_schema(part).metadata[TIMEOUT_KEY] == b"1.0"
    same = PartStore(tmp_path / "out", manifest, timeout_s=1.0)
    assert same.not_done(tasks) == [] and same.error_of(tasks[3]).startswith("SimulationTimeout")
    assert PartStore(tmp_path / "out", manifest, timeout_s=0.5).not_done(tasks) == []  # a smaller one: kept
    larger = PartStore(tmp_path / "out", manifest, timeout_s=2.0)
    assert larger.not_done(tasks) == tasks[3:]
    assert larger.error_of(tasks[1]) == "ValueError: boom"
    assert larger.error_of(tasks[2]).startswith("SimulationCrashed")
    said = "1 simulations that timed out under a smaller timeout_s than this run's (2 s) run again"
    assert said in caplog.text
    # The part left holds the three kept rows and still says what they ran under.
    assert pq.read_table(part).num_rows == 3 and pq.read_schema(part).metadata[TIMEOUT_KEY] == b"1.0"


def test_no_timeout_s_runs_again_every_timeout_of_a_limit_and_a_part_of_an_older_version_is_judged_by_its_error(
    tmp_path,
):
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], 1)
    PartStore(tmp_path / "out", {"model": "m:f"}, timeout_s=1.0).write(mixed_part(tasks), tasks)
    assert PartStore(tmp_path / "out", {"model": "m:f"}, timeout_s=None).not_done(tasks) == tasks[3:]
    # A part written before parts recorded their timeout_s: the limit its timeout rows name.
    older = tmp_path / "older"
    more = plan_tasks([{"a": float(i)} for i in range(5)], 1)
    PartStore(older, {"model": "m:f"})  # makes older.partial
    start_up = failure_rows(more[4:], "timeout", "SimulationTimeout: had not imported m:f after 60 s")
    rows = pd.concat([mixed_part(more), start_up])
    rows.to_parquet(tmp_path / "older.partial" / "part-old.parquet", index=False)
    assert TIMEOUT_KEY not in (pq.read_schema(tmp_path / "older.partial" / "part-old.parquet").metadata or {})
    assert PartStore(older, {"model": "m:f"}, timeout_s=1.0).not_done(more) == []
    # 1 s named in its error is less than 3 s: run again; the start-up timeout names no limit: kept
    assert PartStore(older, {"model": "m:f"}, timeout_s=3.0).not_done(more) == more[3:4]


def test_a_sweep_resumed_with_a_larger_timeout_s_runs_again_what_timed_out_before(tmp_path, client):
    """Before, a timeout was a result like any failure: kept on resume unless rerun_failed, so raising timeout_s
    after a sweep stopped on its timeouts changed nothing (the same rows, the same TooManyFailures)."""
    count = tmp_path / "count"
    client.run(lambda: os.environ.__setitem__("SIMCAL_TEST_COUNT", str(count)))
    params = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "sleep_s": [0.0, 0.0, 1.5, 0.0]})
    model, out = "simcal_models:sleeps_in_steps", tmp_path / "out"
    with pytest.raises(TooManyFailures):
        simulate(model, params, out, {"batch_size": 4, "timeout_s": 0.3, "max_failed_fraction": 0.0},
                 client=client)  # fmt: skip
    assert sorted(count.read_text().split()) == ["0.0", "1.0", "3.0"]  # a=2 timed out; the parts stay
    again = simulate(model, params, out, {"batch_size": 4, "timeout_s": 30, "max_failed_fraction": 0.0},
                     client=client)  # fmt: skip
    assert (again.skipped, again.executed) == (3, 1)
    assert sorted(count.read_text().split()) == ["0.0", "1.0", "2.0", "3.0"]
    assert (read_results(out)["status"] == "ok").all()
