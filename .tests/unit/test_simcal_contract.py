"""The simulation contract: model references, parameter ids, seeds, parameter tables, output normalisation."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pytest

from simcal.calibrate import CalibrationSettings
from simcal.contract import ContractError, normalise_output, param_id, replicate_seed, resolve_callable
from simcal.runner import SimulationSettings, plan_tasks, simulate
from simcal.tables import read_parameter_table


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("no_colon_here", "must look like 'package.module:function'"),
        ("simcal.nonexistent_module:run", "cannot import module 'simcal.nonexistent_module'"),
        ("simcal.models.sir:missing", "has no attribute 'missing'"),
        ("simcal_models:not_callable", "is a int, not callable"),
    ],
)
def test_bad_model_reference_is_named(reference, expected):
    with pytest.raises(ContractError) as error:
        resolve_callable(reference)
    assert reference in str(error.value)
    assert expected in str(error.value)


def test_bad_reference_fails_before_any_cluster_starts(tmp_path):
    # The scheduler address is unreachable: reaching it would time out after 30 s instead of failing at once.
    started = time.perf_counter()
    with pytest.raises(ContractError, match="simcal.models.sir:nope"):
        simulate(
            "simcal.models.sir:nope",
            pd.DataFrame({"beta": [0.2]}),
            tmp_path / "out.parquet",
            backend="scheduler",
            backend_options={"address": "tcp://127.0.0.1:9"},
        )
    assert time.perf_counter() - started < 5
    assert not (tmp_path / "out.parquet.partial").exists()


def test_param_id_is_canonical():
    base = param_id({"a": 1.5, "b": 2})
    assert param_id({"b": 2, "a": 1.5}) == base  # key order
    assert param_id({"a": np.float64(1.5), "b": np.int64(2)}) == base  # numpy scalars
    assert param_id({"a": 1.5, "b": 2.0}) == base  # 2.0 is 2
    assert param_id({"a": 1.5, "b": 3}) != base
    assert len(base) == 16 and int(base, 16) >= 0


def test_param_id_refuses_nan():
    with pytest.raises(ContractError, match="'a' is nan"):
        param_id({"a": float("nan")})


def test_seeds_depend_only_on_param_id_and_replicate():
    pid = param_id({"a": 1})
    seeds = [replicate_seed(pid, r) for r in range(100)]
    assert seeds == [replicate_seed(pid, r) for r in range(100)]
    assert len(set(seeds)) == 100
    assert all(0 <= s < 2**32 for s in seeds)
    assert replicate_seed(param_id({"a": 2}), 0) != seeds[0]


def test_plan_tasks_merges_duplicate_sets_and_counts_replicates():
    tasks = plan_tasks([{"a": 1}, {"a": 2}, {"a": 1.0}], replicates=3)
    assert len(tasks) == 6
    assert [t.replicate for t in tasks] == [0, 1, 2, 0, 1, 2]
    assert tasks[0].seed == replicate_seed(tasks[0].param_id, 0)


@pytest.mark.parametrize(("name", "sep"), [("p.csv", ","), ("p.tsv", "\t"), ("p.parquet", None)])
def test_parameter_tables_in_three_formats(tmp_path, name, sep):
    frame = pd.DataFrame({"beta": [0.1, 0.2], "gamma": [0.05, 0.1]})
    path = tmp_path / name
    frame.to_parquet(path) if sep is None else frame.to_csv(path, sep=sep, index=False)
    pd.testing.assert_frame_equal(read_parameter_table(path), frame)


def test_parameter_table_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("beta,gamma\n0.1,0.2\n0.3,\n")
    with pytest.raises(ContractError, match=r"p\.csv: line 3, column 'gamma' is empty"):
        read_parameter_table(path)
    path.write_text("beta,status\n0.1,x\n")
    with pytest.raises(ContractError, match="reserved"):
        read_parameter_table(path)
    with pytest.raises(ContractError, match="unknown parameter table format '.json'"):
        read_parameter_table(tmp_path / "p.json")


def test_dict_outputs_stack_tables_and_repeat_scalars():
    out = normalise_output({"curve": pd.DataFrame({"t": [0, 1]}), "peak": np.int64(7), "r0": 2.5})
    assert list(out["table"]) == ["curve", "curve"]
    assert list(out["peak"]) == [7, 7]
    with pytest.raises(ContractError, match="expected a pandas DataFrame or a dict"):
        normalise_output([1, 2], "m:f")


@pytest.mark.parametrize(
    ("settings", "where"),
    [(SimulationSettings, "simulation settings"), (CalibrationSettings, "calibration.calibrate")],
)
def test_settings_reject_unknown_keys_naming_section_and_key(settings, where):
    with pytest.raises(
        ContractError, match=rf"{re.escape(where)}: unknown keys \['batchsize'\]; known: \[.*'"
    ):
        settings.from_config({"batchsize": 4})
