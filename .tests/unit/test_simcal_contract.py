"""The simulation contract: model references, parameter ids, seeds, parameter tables, output normalisation."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import os
import pickle
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcal.calibrate import CalibrationSettings, calibrate
from simcal.contract import (
    ContractError,
    canonical_param_sets,
    canonical_params,
    normalise_output,
    param_id,
    replicate_seed,
    replicate_seeds,
    resolve_callable,
    resolve_model,
)
from simcal.observed import generate_observed
from simcal.runner import SimTask, SimulationSettings, Simulator, plan_tasks, run_batch, simulate
from simcal.tables import (
    check_fixed_values,
    check_parameter_table,
    parameter_sets,
    read_parameter_table,
    write_json,
    write_text,
)
from simcal.tasks import Batch

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("no_colon_here", "must look like 'package.module:function'"),
        # an empty name between dots was looked up as '' ("has no attribute 'simulate.'")
        ("simcal.models.sir:simulate.", "must look like 'package.module:function'"),
        ("simcal..models.sir:simulate", "must look like 'package.module:function'"),
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


def test_a_model_module_that_fails_on_import_is_named_with_its_error(tmp_path, monkeypatch):
    """Only an ImportError was named: a module whose own code raised (a data file it reads at import, a typo)
    ended the rule with a bare traceback that named neither the model reference nor what was wrong."""
    (tmp_path / "fuzz_broken_model.py").write_text("raise RuntimeError('calibration.csv not found')\n")
    (tmp_path / "fuzz_exiting_model.py").write_text("import sys\nsys.exit('usage: model.py FILE')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for module, error in [
        ("fuzz_broken_model", "RuntimeError: calibration.csv not found"),
        ("fuzz_exiting_model", "SystemExit: usage: model.py FILE"),
    ]:
        with pytest.raises(
            ContractError,
            match=rf"^model reference '{module}:run': importing module '{module}' failed with {error}",
        ):
            simulate(f"{module}:run", pd.DataFrame({"beta": [0.2]}), tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet.partial").exists()


MODEL_SIGNATURES = """
import functools
import pandas as pd
def observe(params, seed, noise): return pd.DataFrame({"day": [0], "cases": [1]})
def one(params): return {}
def three(params, seed, n): return {}
def keyword_seed(params, *, seed): return {}
def keywords(**options): return {}
class Model:
    def __call__(self, params, seed): return {}
class Forgetful:
    def __call__(self, params): return {}
forgetful = Forgetful()
def defaults(params, seed, n=1): return {}
def varargs(*args, **kwargs): return {}
def positional(params, seed, /, *rest): return {}
model = Model()
class Built:
    def __init__(self, params, seed): pass
class Half:
    def __init__(self, params): pass
partial = functools.partial(three, n=3)
def supplies_n(function):
    @functools.wraps(function)  # the wrapper gives the model its third argument
    def wrapper(params, seed):
        return function(params, seed, 5)
    return wrapper
@supplies_n
def decorated(params, seed, n): return {}
builtin = max
"""


@pytest.mark.parametrize(
    ("function", "named"),
    [
        ("one", r"one\(params\) cannot be called as one\(params, seed\)"),
        ("three", r"three\(params, seed, n\) cannot be called .*missing a required argument: 'n'"),
        ("keyword_seed", r"keyword_seed\(params, \*, seed\) cannot be called"),
        ("keywords", r"keywords\(\*\*options\) cannot be called"),
        ("forgetful", r"forgetful\(params\) cannot be called"),
        ("Model", r"Model\(\) cannot be called .*'Model' is a class, .*name an instance in the reference"),
        # A class without __call__: an instance would not be callable at all, so it is not what to name.
        (
            "Half",
            r"Half\(params\) cannot be called .*expected \(params, seed\), any other argument with a default$",
        ),
    ],
)
def test_a_model_that_cannot_take_params_and_seed_is_refused_when_imported(
    tmp_path, monkeypatch, function, named
):
    """A model 'def f(params)' or 'def f(params, seed, n)' was imported without a word: every simulation became a
    failed row holding a TypeError, and the probe stopped the sweep. Its signature is now checked where the
    reference is resolved, before anything runs, naming the reference and the expected (params, seed)."""
    (tmp_path / "fuzz_signatures.py").write_text(MODEL_SIGNATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ContractError, match=rf"^model reference 'fuzz_signatures:{function}': {named}"
    ) as error:
        simulate(f"fuzz_signatures:{function}", pd.DataFrame({"beta": [0.2]}), tmp_path / "out.parquet")
    assert "expected (params, seed)" in str(error.value)
    assert not (tmp_path / "out.parquet.partial").exists()


def test_a_calibration_refuses_a_model_that_cannot_take_params_and_seed_before_it_simulates(
    tmp_path, monkeypatch
):
    (tmp_path / "fuzz_signatures.py").write_text(MODEL_SIGNATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ContractError, match=r"^model reference 'fuzz_signatures:one': one\(params\) cannot be"
    ):
        calibrate(
            "fuzz_signatures:one", pd.DataFrame({"y": [1.0]}), {"a": {"low": 0.0, "high": 1.0}},
            [{"function": "simcal_calibration_models:distance_to_one"}], tmp_path / "s.parquet",
            tmp_path / "t.parquet",
        )  # fmt: skip
    assert not (tmp_path / "s.parquet.partial").exists()


def test_a_simulator_refuses_a_model_that_cannot_take_params_and_seed_before_any_cluster_starts(
    tmp_path, monkeypatch
):
    """Simulator (public, and what the calibration's rounds run on) checks the model's signature itself when it is
    made, before any cluster starts, as simulate and calibrate do."""
    (tmp_path / "fuzz_signatures.py").write_text(MODEL_SIGNATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(
        ContractError, match=r"^model reference 'fuzz_signatures:one': one\(params\) cannot be"
    ):
        Simulator("fuzz_signatures:one")


def test_models_python_can_call_with_params_and_seed_are_accepted_whatever_their_shape(tmp_path, monkeypatch):
    """Defaults, *args/**kwargs, positional-only, an instance with __call__, a class built from (params, seed),
    functools.partial, a decorator that supplies an argument, and a builtin whose signature Python cannot read."""
    (tmp_path / "fuzz_signatures.py").write_text(MODEL_SIGNATURES)
    monkeypatch.syspath_prepend(str(tmp_path))
    for function in (
        "defaults",
        "varargs",
        "positional",
        "model",
        "Built",
        "partial",
        "decorated",
        "builtin",
    ):
        assert callable(resolve_model(f"fuzz_signatures:{function}"))
    # Targets and generators take other arguments: only a model's signature is held to (params, seed). A
    # generator with a required option is looked up as a model for its declared space, and must still run.
    assert callable(resolve_callable("fuzz_signatures:one", what="observed-data generator"))
    observed = generate_observed(
        "fuzz_signatures:observe", {"beta": 0.3}, tmp_path / "observed.csv", options={"noise": "none"}
    )
    assert observed.to_dict("list") == {"day": [0], "cases": [1]}


def test_bad_reference_fails_before_any_cluster_starts(tmp_path):
    # The scheduler address is unreachable: reaching it would time out after 30 s instead of failing at once.
    with pytest.raises(ContractError, match="simcal.models.sir:nope"):
        simulate_on_an_unreachable_scheduler("simcal.models.sir:nope", tmp_path)


def simulate_on_an_unreachable_scheduler(reference: str, tmp_path) -> None:
    """Sweep one parameter set of ``reference`` on a scheduler address nobody answers (reaching it would take 30 s
    to give up): what simulate raises must come within 5 s, before the parts directory is made."""
    started = time.perf_counter()
    try:
        simulate(
            reference,
            pd.DataFrame({"beta": [0.2]}),
            tmp_path / "out.parquet",
            backend="scheduler",
            backend_options={"address": "tcp://127.0.0.1:9"},
        )
    finally:
        assert time.perf_counter() - started < 5
        assert not (tmp_path / "out.parquet.partial").exists()


@pytest.mark.parametrize(
    ("module", "definition", "named"),
    [
        (
            "lab_sweep_extra",
            "def simulate(params, seed, extra): return {}",
            r"simulate\(params, seed, extra\) cannot be called",
        ),
        (
            "lab_sweep_class",
            "class simulate:\n    def __init__(self, config, params, seed): pass",
            r"simulate\(config, params, seed\) cannot be called",
        ),
    ],
)
def test_a_model_that_cannot_take_params_and_seed_fails_before_any_cluster_starts(
    tmp_path, monkeypatch, module, definition, named
):
    """The job's check (resolve_model, simulate's first call) refuses a model 'def f(params, seed, extra)' or a class
    needing constructor arguments before simulate reaches for a scheduler (here an unreachable one, which would take
    30 s to give up) or makes its parts directory, in words that name no config key of the calibration workflow."""
    (tmp_path / f"{module}.py").write_text(definition + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ContractError, match=rf"^model reference '{module}:simulate': {named}") as error:
        simulate_on_an_unreachable_scheduler(f"{module}:simulate", tmp_path)
    assert "calibration." not in str(error.value)


def test_param_id_is_canonical():
    base = param_id({"a": 1.5, "b": 2})
    assert param_id({"b": 2, "a": 1.5}) == base  # key order
    assert param_id({"a": np.float64(1.5), "b": np.int64(2)}) == base  # numpy scalars
    assert param_id({"a": 1.5, "b": 2.0}) == base  # 2.0 is 2
    assert param_id({"a": 1.5, "b": 3}) != base
    assert len(base) == 16 and int(base, 16) >= 0


@pytest.mark.parametrize(
    "sets",
    [
        [{"slope": 0.5 + i * 1e-4, "x": 2.0} for i in range(200)],
        [
            {"x": v}
            for v in (
                0.0,
                -0.0,
                3.0,
                2.0**53,
                2.0**53 - 1,
                -(2.0**53),
                1e16,
                1e-7,
                5e-324,
                1.7976931348623157e308,
                0.1,
            )
        ],
        [
            {"b": 1e20, "a": -(10**30), 'q"é': "ü\n\\", "on": True},
            {"b": -2.5, "a": 7, 'q"é': "", "on": False},
        ],
        [{"x": 1, "y": 2.0}, {"x": 1.0, "y": 2}],  # mixed types in a column
        [{"x": np.float64(0.3)}, {"x": 0.3}, {"x": None}],
        [{"a": 1}, {"b": 1}],  # different names
        [{}],
    ],
)
def test_param_ids_built_by_columns_equal_those_built_one_set_at_a_time(sets):
    one_at_a_time = [(param_id(p), canonical_params(p)) for p in sets]
    assert canonical_param_sets(sets) == one_at_a_time
    assert [list(plain) for _, plain in canonical_param_sets(sets)] == [list(p) for _, p in one_at_a_time]


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


def test_without_a_master_seed_the_seeds_of_earlier_versions_are_kept():
    pid = param_id({"beta": 0.3, "gamma": 0.1})
    for replicate in range(5):
        legacy = int.from_bytes(
            hashlib.blake2b(f"{pid}:{replicate}".encode(), digest_size=8).digest(), "little"
        )
        assert replicate_seed(pid, replicate) == legacy % 2**32


def test_a_master_seed_derives_every_seed_through_seed_sequence():
    pid, other = param_id({"a": 1}), param_id({"a": 2})
    expected = np.random.SeedSequence((5, int(pid, 16)), spawn_key=(3,)).generate_state(1, np.uint32)[0]
    assert replicate_seed(pid, 3, master_seed=5) == int(expected)
    assert replicate_seed(pid, 3, master_seed=6) != replicate_seed(pid, 3, master_seed=5)
    assert replicate_seed(pid, 3, master_seed=5) != replicate_seed(other, 3, master_seed=5)
    # Common random numbers: replicate r gets the same seed in every parameter set.
    common = [replicate_seed(p, r, 5, common_random_numbers=True) for p in (pid, other) for r in range(3)]
    assert common[:3] == common[3:] and len(set(common[:3])) == 3
    assert replicate_seed(pid, 0, 6, common_random_numbers=True) != common[0]
    tasks = plan_tasks([{"a": 1}, {"a": 2}], replicates=2, seed=5, common_random_numbers=True)
    assert [t.seed for t in tasks[:2]] == [t.seed for t in tasks[2:]] == common[:2]


@pytest.mark.parametrize("master", [0, 5, 2**32 - 1, 2**32, 2**70 + 3])
def test_seeds_derived_for_a_whole_plan_at_once_equal_numpys_seed_sequence(master):
    """The vectorised derivation gives the integers of one SeedSequence per (master seed, param_id, replicate),
    also for param_ids whose high words are zero and replicate numbers of one and of several words."""
    rng = np.random.default_rng(master % 1000)
    pids = [f"{int(v):016x}" for v in rng.integers(0, 2**63, 150)]
    pids += ["0000000000000000", "00000000ffffffff", "0000000100000000", "ffffffffffffffff"]
    for replicates in (range(40), [0, 7, 2**31, 2**32 - 1], [3, 2**32, 2**40]):
        for common in (False, True):
            expected = [
                [
                    int(
                        np.random.SeedSequence(
                            master if common else (master, int(pid, 16)), spawn_key=(r,)
                        ).generate_state(1, np.uint32)[0]
                    )
                    for r in replicates
                ]
                for pid in pids
            ]
            assert replicate_seeds(pids, replicates, master, common) == expected
    assert replicate_seeds(pids[:3], [0, 1]) == [[replicate_seed(p, r) for r in (0, 1)] for p in pids[:3]]


@pytest.mark.parametrize(
    ("name", "sep"),
    [("p.csv", ","), ("p.tsv", "\t"), ("p.parquet", None), ("p.csv.gz", ","), ("p.tsv.gz", "\t")],
)
def test_parameter_tables_in_three_formats(tmp_path, name, sep):
    frame = pd.DataFrame({"beta": [0.1, 0.2], "gamma": [0.05, 0.1]})
    path = tmp_path / name
    frame.to_parquet(path) if sep is None else frame.to_csv(path, sep=sep, index=False)
    pd.testing.assert_frame_equal(read_parameter_table(path), frame)


def test_a_float32_design_gives_the_values_and_param_ids_of_the_same_design_in_a_csv_file(tmp_path):
    """A design saved as float32 (from numpy or torch) gave the model beta = 0.10000000149011612 and other
    param_ids than the same design written as CSV (0.1), so neither the values nor a resume matched."""
    frame = pd.DataFrame({"beta": [0.1, 0.3], "gamma": [0.05, 0.1]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.astype(np.float32).to_parquet(tmp_path / "p.parquet")
    text, narrow = (read_parameter_table(tmp_path / name) for name in ("p.csv", "p.parquet"))
    assert narrow["beta"].tolist() == [0.1, 0.3] and narrow.dtypes.tolist() == [np.float64, np.float64]
    planned = [plan_tasks(parameter_sets(table), 1) for table in (text, narrow)]
    assert planned[0] == planned[1]
    assert check_parameter_table(frame.astype(np.float16), "params")["gamma"].tolist() == [0.05, 0.1]


def test_a_float32_value_given_to_submit_or_as_fixed_is_the_value_as_written_as_a_float32_column_gives():
    """A float32 column of a design gives 0.3 as written, but the same float32 value given to submit() or as a
    fixed value gave 0.30000001192092896: the same design got other param_ids and seeds there than in a sweep."""
    from simcal.api import SimulationService
    from simcal.runner import planned_parameter_sets

    column = pd.DataFrame(
        {"beta": np.array([0.3], dtype=np.float32), "gamma": np.array([0.1], dtype=np.float16)}
    )
    (swept,) = plan_tasks(planned_parameter_sets(column, None), 1, seed=1)
    assert swept.params == {"beta": 0.3, "gamma": 0.1}
    given = {"beta": np.float32(0.3), "gamma": np.float16(0.1)}
    # The service backend queues what submit() takes until a gather: its future holds the planned simulation
    service = SimulationService(
        backend="service", backend_options={"url": "http://127.0.0.1:1"}, settings={"seed": 1}
    )
    single = service.submit("simcal.models.sir:simulate", given).task
    assert (single.param_id, single.seed, single.params) == (swept.param_id, swept.seed, swept.params)
    (fixed,) = plan_tasks(planned_parameter_sets(column[["beta"]], {"gamma": np.float16(0.1)}), 1, seed=1)
    assert (fixed.param_id, fixed.seed, fixed.params) == (swept.param_id, swept.seed, swept.params)
    assert canonical_params({"beta": np.float32(0.3), "big": np.float64(0.30000001192092896)}) == {
        "beta": 0.3,
        "big": 0.30000001192092896,
    }


def test_parameter_table_errors_name_file_line_and_column(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("beta,gamma\n0.1,0.2\n0.3,\n")
    with pytest.raises(ContractError, match=r"p\.csv, line 3: column 'gamma' is empty"):
        read_parameter_table(path)
    path.write_text("beta,status\n0.1,x\n")
    with pytest.raises(ContractError, match=r"p\.csv: parameter names \['status'\] are reserved"):
        read_parameter_table(path)
    with pytest.raises(ContractError, match="unknown parameter table format '.json'"):
        read_parameter_table(tmp_path / "p.json")


@pytest.mark.parametrize(
    ("name", "text", "named"),
    [
        # One field more than the header names: pandas took the first field as the row label, so beta was 0.1
        # and gamma 7, every value one column to the left.
        (
            "p.csv",
            "beta,gamma\n0.2,0.1,7\n0.3,0.1,8\n",
            r"line 2: 3 fields, but the header \(line 1\) names 2",
        ),
        ("p.csv", "beta,beta\n0.2,0.3\n", r"line 1: column name\(s\) \['beta'\] appear more than once"),
        ("p.tsv", ",beta\tgamma\n".replace(",", "\t") + "0\t0.2\t0.1\n", r"line 1: column 1 has no name"),
        ("p.csv", "# sweep of beta\nbeta,gamma\n0.2,0.1\n", r"line 1: the header starts with '#'"),
        (
            "p.csv",
            "beta;gamma\n0.2;0.1\n",
            r"line 1: one column named 'beta;gamma': the file looks separated by ';'",
        ),
        # 'beta, gamma' (a space after the comma): the model got ' gamma', and params.get("gamma", 0.1) its default.
        ("p.csv", "beta, gamma\n0.2, 0.1\n", r"line 1: column name ' gamma' begins or ends with a space"),
        ("p.tsv", "beta \tgamma\n0.2\t0.1\n", r"line 1: column name 'beta ' begins or ends with a space"),
    ],
    ids=[
        "extra-field",
        "repeated-name",
        "unnamed-index",
        "comment-line",
        "semicolons",
        "spaced-name",
        "name-spaced-after",
    ],
)
def test_a_header_pandas_would_silently_repair_is_refused_naming_the_line(tmp_path, name, text, named):
    """pandas reads each of these without a word: values shifted a column, a parameter 'beta.1' or 'Unnamed: 0',
    a parameter named after the comment, or one text parameter 'beta;gamma'. A model that declares no parameters
    would have run with them."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ContractError, match=rf"^{re.escape(str(path))}, {named}"):
        read_parameter_table(path)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("p.csv", "beta,gamma\n0.1,0.2\n#0.3,0.4\n0.5,0.6\n", 3),  # beta became a column of text
        ("p.csv", "beta,gamma\n0.1,0.2\n# dropped\n0.5,0.6\n", 3),  # 'gamma is empty', the cause unsaid
        ("p.csv", "beta,gamma\n0.1,0.2\n# 0.3,0.4,old\n", 3),  # 'Expected 2 fields in line 3, saw 3'
        ("p.tsv", "beta\tgamma\n\n0.1\t0.2\n  #0.3\t0.4\n", 4),
        ("p.csv.gz", 'name,beta\n"A\n#x",0.2\n#B,0.3\n', 4),  # a quoted field's line is not a line's start
    ],
    ids=["same-fields", "fewer-fields", "more-fields", "tsv-indented", "gzip-after-a-quoted-line-break"],
)
def test_a_commented_out_parameter_set_is_refused_naming_its_line(tmp_path, name, text, line):
    """A parameter set commented out with '#' was read as data: with as many fields as the header, its first value
    was the text '#0.3', which made the whole column text (a model that declares no parameters ran with
    beta = '0.1'); with fewer or more, the message named an empty value or pandas' tokenizer, not the comment.
    Comment lines are refused like a '#' header is; a quoted value may start with '#'."""
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(
        ContractError,
        match=rf"^{re.escape(str(path))}, line {line}: the line starts with '#' .*comment lines are not supported",
    ):
        simulate("simcal_models:noisy_line", path, tmp_path / "o")
    assert not (tmp_path / "o.partial").exists()
    quoted = tmp_path / "q.csv"
    quoted.write_text('name,beta\n"#A",0.2\n"B\n#x",0.3\n')
    assert read_parameter_table(quoted)["name"].tolist() == ["#A", "B\n#x"]


def test_a_dataframe_whose_column_names_are_equal_as_text_is_refused(tmp_path):
    """Two columns 'a' broke the value checks with pandas' 'truth value of a Series is ambiguous'; columns '1' and
    1 became one parameter '1', the first value lost."""
    for columns in (["a", "a"], ["1", 1]):
        with pytest.raises(
            ContractError, match=r"^parameter DataFrame: column name\(s\) \['(a|1)'\] appear more than once"
        ):
            simulate("simcal_models:noisy_line", pd.DataFrame([[0.1, 0.2]], columns=columns), tmp_path / "o")
    assert not (tmp_path / "o.partial").exists()


@pytest.mark.parametrize("name", ["p.csv", "p.csv.gz"])
def test_a_bad_row_after_a_blank_line_or_a_quoted_line_break_is_named_at_its_own_line(tmp_path, name):
    """pandas skips blank lines and reads a quoted line break as part of a field: the row after one was named a
    line too early (line 3 for the empty value on line 4), in the missing-value check and in the model's."""
    path = tmp_path / name
    text = 'beta,gamma\n\n0.2,0.1\n"0.3\n",0.1\n\n0.4,\n'  # the empty gamma is on line 7
    path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
    with pytest.raises(ContractError, match=rf"^{re.escape(str(path))}, line 7: column 'gamma' is empty"):
        read_parameter_table(path)
    path = tmp_path / "q.csv"
    path.write_text("beta,gamma\n0.2,0.1\n\n0.3,abc\n")
    with pytest.raises(
        ContractError, match=r"q\.csv, line 4: parameter 'gamma' = 'abc' is text, not a number"
    ):
        simulate("simcal.models.sir:simulate", path, tmp_path / "o.parquet")


def test_a_word_read_as_a_missing_value_is_named_not_called_empty(tmp_path):
    """A region 'NA' (North America) or a scenario 'None' is read by pandas as a missing value: the message said
    the cell was empty, which the file contradicts."""
    path = tmp_path / "p.csv"
    path.write_text("beta,region\n0.2,EU\n0.3,NA\n")
    with pytest.raises(
        ContractError, match=r"p\.csv, line 3: column 'region' is 'NA', which is read as a missing"
    ):
        read_parameter_table(path)
    path.write_text("beta,gamma\n0.2,0.1\n0.3,\n")  # a real gap is still called empty
    with pytest.raises(ContractError, match=r"p\.csv, line 3: column 'gamma' is empty"):
        read_parameter_table(path)


@pytest.mark.parametrize("name", ["p.csv", "p.tsv"])
def test_a_value_of_spaces_only_is_refused_as_empty_naming_its_line(tmp_path, name):
    """A row of blank cells typed with spaces (' , ') was read as text: a parameter set of ' ' values, and every
    other value of its columns text too (a = '1', not 1), without a word."""
    path = tmp_path / name
    path.write_text("a,b\n1,2\n , \n3,4\n".replace(",", "," if name.endswith(".csv") else "\t"))
    with pytest.raises(
        ContractError, match=rf"{name}, line 3: column 'a' is ' ', only spaces; every parameter needs"
    ):
        read_parameter_table(path)
    path.write_text("a,region\n1, EU\n".replace(",", "," if name.endswith(".csv") else "\t"))  # text is kept
    assert read_parameter_table(path)["region"].tolist() == [" EU"]


def test_a_value_of_several_spaces_is_refused_as_one_space_is(tmp_path):
    """'only spaces': a cell typed as three spaces (a row of blank cells aligned by hand) is as empty as one."""
    path = tmp_path / "p.csv"
    path.write_text("a,b\n1,2\n3,   \n")
    with pytest.raises(ContractError, match=r"p\.csv, line 3: column 'b' is '   ', only spaces"):
        read_parameter_table(path)


def test_a_parameter_table_without_rows_or_columns_is_refused_naming_it(tmp_path):
    header_only = tmp_path / "p.csv"
    header_only.write_text("beta,gamma\n")
    with pytest.raises(
        ContractError, match=rf"^{re.escape(str(header_only))}: the parameter table has no rows"
    ):
        read_parameter_table(header_only)
    with pytest.raises(
        ContractError, match=r"^parameter DataFrame: the parameter table has no rows or no columns"
    ):
        simulate("simcal_models:noisy_line", pd.DataFrame(index=[0, 1]), tmp_path / "o")
    assert not (tmp_path / "o.partial").exists()


def test_a_file_that_is_no_table_of_its_kind_is_named_not_a_reader_error(tmp_path):
    """A CSV saved under a Parquet name: the reader's own error would name neither the file nor what it is."""
    path = tmp_path / "p.parquet"
    path.write_text("beta,gamma\n0.1,0.2\n")
    with pytest.raises(ContractError, match=rf"^{re.escape(str(path))}: cannot read the parameter table \("):
        read_parameter_table(path)


def test_an_infinite_number_in_a_column_that_also_holds_words_is_refused_naming_its_row():
    """A column of mixed values (object dtype) is not checked as numbers, yet an infinite value in it is refused."""
    table = pd.DataFrame({"a": [0.5, np.inf, "x"]}, index=[10, 11, 12])
    with pytest.raises(
        ContractError,
        match=r"^params, row 2 \(index label 11\): column 'a' is inf; parameter values must be finite",
    ):
        check_parameter_table(table, "params")


def test_every_column_a_batch_adds_next_to_the_models_outputs_is_a_reserved_parameter_name():
    """A parameter named like a column simcal writes for each simulation would be overwritten by it (or overwrite
    it): each such column, found in a batch's rows, is refused as a table's column and as a fixed value."""
    tasks = plan_tasks([{"a": 1.0}], replicates=1)
    rows = run_batch(
        "simcal_models:indexed_series_in_dict", tasks
    )  # a dict with a table: every column simcal adds
    assert (rows["status"] == "ok").all(), rows["error"]
    models_own = {"day", "cases", "total"}  # the Series' index and name, the scalar's key
    added = set(rows.columns) - set(tasks[0].params) - models_own
    assert {"param_id", "seed", "status"} <= added  # the rows are simcal's, not only the model's
    for name in sorted(added):
        with pytest.raises(ContractError, match=rf"^params\.csv: parameter names \['{name}'\] are reserved"):
            check_parameter_table(pd.DataFrame({"a": [1.0], name: [1]}), "params.csv")
        with pytest.raises(
            ContractError, match=rf"^fixed parameters: parameter names \['{name}'\] are reserved"
        ):
            check_fixed_values({name: 1}, "fixed parameters")


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    return path


def test_a_bad_row_has_the_same_number_in_every_message(tmp_path):
    """The row with a value out of bounds, an empty value or an infinite one is numbered the same way: a file by
    its name and line (the header is line 1), a Parquet file by its row, a DataFrame by its row from 1 and its
    index label."""
    sir = "simcal.models.sir:simulate"
    out_of_bounds = pd.DataFrame({"beta": [0.3, -0.3], "gamma": [0.1, 0.1]}, index=[10, 11])
    empty = pd.DataFrame({"beta": [0.3, None], "gamma": [0.1, 0.1]}, index=[10, 11])
    infinite = pd.DataFrame({"beta": [0.3, np.inf], "gamma": [0.1, 0.1]}, index=[10, 11])
    places = {}
    for kind, place in [("csv", "{path}, line 3: "), ("parquet", "{path}, row 2: ")]:
        places[kind] = ([write_table(frame, tmp_path / f"{name}.{kind}") for name, frame in
                         [("bounds", out_of_bounds), ("empty", empty), ("infinite", infinite)]], place)  # fmt: skip
    places["DataFrame"] = ([out_of_bounds, empty, infinite], "parameter DataFrame, row 2 (index label 11): ")
    for tables, place in places.values():
        messages = []
        for parameters in tables:
            with pytest.raises(ContractError) as error:
                simulate(sir, parameters, tmp_path / "o")
            messages.append(str(error.value))
        for parameters, message in zip(tables, messages, strict=True):
            assert message.startswith(place.format(path=parameters)), messages
        assert "'beta' = -0.3 is below its lower bound" in messages[0]
        assert "column 'beta' is empty" in messages[1]
        assert "column 'beta' is inf; parameter values must be finite" in messages[2]


def test_values_of_unsupported_types_are_named_by_their_row(tmp_path):
    """Dates, lists and other values that are not numbers, strings or booleans are refused before anything runs,
    naming the row as every message about a row does."""
    dates = write_table(pd.DataFrame({"a": [1.0, 2.0], "t": pd.to_datetime(["2020-01-01", "2020-01-02"])}),
                        tmp_path / "dates.parquet")  # fmt: skip
    lists = write_table(pd.DataFrame({"a": [1.0, 2.0], "l": [[1, 2], [3]]}), tmp_path / "lists.parquet")
    mixed = pd.DataFrame({"a": [1.0, 2.0], "t": [0.5, pd.Timestamp("2020-01-02")]}, index=[10, 11])
    for parameters, expected in [
        (
            dates,
            rf"^{re.escape(str(dates))}, row 1: column 't' holds a value of type Timestamp \(Timestamp\(",
        ),
        (
            lists,
            rf"^{re.escape(str(lists))}, row 1: column 'l' holds a value of type ndarray \(array\(\[1, 2\]\)\)",
        ),
        (
            mixed,
            r"^parameter DataFrame, row 2 \(index label 11\): column 't' holds a value of type Timestamp",
        ),
    ]:
        with pytest.raises(
            ContractError, match=expected + ".*parameter values must be numbers, strings or booleans"
        ):
            simulate("simcal_models:noisy_line", parameters, tmp_path / "o")
    assert not (tmp_path / "o.partial").exists()


def test_fixed_values_that_cannot_be_parameters_are_named_as_fixed(tmp_path):
    for fixed, expected in [
        (
            {"days": float("nan")},
            r"calibration.fixed: parameter 'days' is nan: parameter values must be finite",
        ),
        ({"days": [30]}, r"calibration.fixed: parameter 'days' has unsupported type list"),
    ]:
        with pytest.raises(ContractError, match=expected):
            calibrate(
                "simcal.models.sir:simulate", pd.DataFrame({"day": [0], "incidence": [1]}),
                {"beta": {"low": 0.1, "high": 0.6}}, [{"function": "simcal.targets:poisson_nll"}],
                tmp_path / "s.parquet", tmp_path / "t.parquet", fixed_params=fixed,
            )  # fmt: skip
    assert not (tmp_path / "s.parquet.partial").exists()


def test_a_sweeps_fixed_values_that_cannot_be_parameters_are_named_as_fixed(tmp_path):
    with pytest.raises(
        ContractError, match=r"^fixed parameters: parameter 'c' is nan: parameter values must be"
    ):
        simulate(
            "simcal_models:noisy_line", pd.DataFrame({"a": [1.0]}), tmp_path / "o", fixed_params={"c": np.nan}
        )


def test_whole_numbers_the_output_would_change_are_refused_naming_column_and_row(tmp_path):
    """A seed or an ID beyond 2**53 next to a fractional number (pandas makes the column 64-bit floats) reached
    the model and the output rounded (9007199254740993 as 9007199254740992); one beyond int64 passed the checks
    and the sweep ran to its end, to fail writing the output (Arrow cannot put 2**64 - 1 and 3 in one column).
    Each is refused before anything runs, naming the line or row and the column."""
    path = tmp_path / "p.csv"
    path.write_text(f"a,id\n0.5,{2**53 + 1}\n0.6,3.0\n")
    with pytest.raises(
        ContractError,
        match=rf"p\.csv, line 2: column 'id' is {2**53 + 1}, a whole number beyond 2\*\*53 .* become {2**53}",
    ):
        simulate("simcal_models:noisy_line", path, tmp_path / "o")
    mixed = pd.DataFrame({"a": [0.5, 0.6], "id": [3.5, 2**53 + 1]}, dtype=object)
    with pytest.raises(
        ContractError, match=r"row 2 \(index label 1\): column 'id' is 9007199254740993, a whole"
    ):
        simulate("simcal_models:noisy_line", mixed, tmp_path / "o")
    for big in (
        pd.DataFrame({"a": [0.5, 0.6], "id": np.array([3, 2**64 - 1], dtype=np.uint64)}),
        pd.DataFrame({"a": [0.5, 0.6], "id": [3, 2**70]}, dtype=object),
    ):
        with pytest.raises(
            ContractError,
            match=r"row 2 \(index label 1\): column 'id' is \d+, a whole number beyond the 64-bit",
        ):
            simulate("simcal_models:noisy_line", big, tmp_path / "o")
    with pytest.raises(
        ContractError, match=r"^fixed parameters: parameter 'id' is 18446744073709551616, a whole"
    ):
        simulate(
            "simcal_models:noisy_line", pd.DataFrame({"a": [1.0]}), tmp_path / "o", fixed_params={"id": 2**64}
        )
    assert not (tmp_path / "o.partial").exists()
    # Whole numbers a column holds exactly are no problem: 2**53 + 1 among whole numbers, 2**53 + 2 among floats.
    path.write_text(f"a,id\n0.5,{2**53 + 1}\n0.6,3\n")
    assert read_parameter_table(path)["id"].tolist() == [2**53 + 1, 3]
    path.write_text(f"a,id\n0.5,{2**53 + 2}\n0.6,3.0\n")
    assert read_parameter_table(path)["id"].tolist() == [2**53 + 2, 3]
    # A column of whole numbers made floats by an empty cell: the empty cell is what is wrong.
    path.write_text(f"a,id\n0.5,{2**53 + 1}\n0.6,\n")
    with pytest.raises(ContractError, match=r"p\.csv, line 3: column 'id' is empty"):
        read_parameter_table(path)


def test_the_ends_of_the_64_bit_integers_are_taken_in_a_table_and_as_fixed_values():
    """docs/simulation.md refuses whole numbers beyond the 64-bit integers of a Parquet column (-2**63 to
    2**63 - 1): the ends themselves are IDs such a column holds exactly, and are taken as given."""
    ends = {"low": -(2**63), "high": 2**63 - 1}
    check_fixed_values(ends, "fixed parameters")
    table = pd.DataFrame({"a": [0.5, 0.6], "low": [3, -(2**63)], "high": [3, 2**63 - 1]}, dtype=object)
    assert parameter_sets(check_parameter_table(table, "params"))[1] == {"a": 0.6, **ends}
    for beyond in (2**63, -(2**63) - 1):
        with pytest.raises(ContractError, match=rf"^fixed parameters: parameter 'id' is {beyond}, a whole"):
            check_fixed_values({"id": beyond}, "fixed parameters")


def test_negative_whole_numbers_the_output_would_change_are_refused_as_positive_ones_are(tmp_path):
    """The whole numbers below -2**53 beside a fractional number (64-bit floats round them) and below -2**63 (no
    Parquet integer holds them) are refused as their positive twins are, naming the line or row and the column;
    a whole number beyond 2**53 that a float holds exactly (2**53 + 2) beside fractions is no problem."""
    low = -(2**53) - 1
    path = tmp_path / "p.csv"
    path.write_text(f"a,id\n0.5,{low}\n0.6,3.0\n")
    rounded = rf"column 'id' is {low}, a whole number beyond 2\*\*53 .* become {int(float(low))}"
    with pytest.raises(ContractError, match=rf"p\.csv, line 2: {rounded}"):
        read_parameter_table(path)
    with pytest.raises(ContractError, match=rf"params, row 2 \(index label 1\): {rounded}"):
        check_parameter_table(pd.DataFrame({"a": [0.5, 0.6], "id": [3.5, low]}, dtype=object), "params")
    beyond = pd.DataFrame({"a": [0.5, 0.6], "id": [3, -(2**63) - 1]}, dtype=object)
    with pytest.raises(
        ContractError,
        match=rf"params, row 2 \(index label 1\): column 'id' is {-(2**63) - 1}, a whole number beyond",
    ):
        check_parameter_table(beyond, "params")
    exact = pd.DataFrame({"a": [0.5, 0.6], "id": [3.5, 2**53 + 2]}, dtype=object)
    assert parameter_sets(check_parameter_table(exact, "params"))[1]["id"] == 2**53 + 2


def test_a_fixed_value_left_out_is_refused_as_an_empty_cell_is(tmp_path):
    """YAML's 'fixed: {c: }' gives None: it reached a model that declares no parameters as the value None, where
    the same gap in the table is refused."""
    with pytest.raises(ContractError, match=r"^fixed parameters: parameter 'c' has no value \(null\)"):
        simulate(
            "simcal_models:noisy_line", pd.DataFrame({"a": [1.0]}), tmp_path / "o", fixed_params={"c": None}
        )
    assert not (tmp_path / "o.partial").exists()


def test_reserved_names_are_refused_in_every_input_naming_the_column(tmp_path):
    for parameters, fixed, expected in [
        (
            pd.DataFrame({"beta": [0.2], "seed": [1]}),
            None,
            r"parameter DataFrame: parameter names \['seed'\]",
        ),
        (pd.DataFrame({"beta": [0.2]}), {"status": "x"}, r"fixed parameters: parameter names \['status'\]"),
        (
            pd.DataFrame({"beta": [0.2]}),
            {"beta": 0.3},
            r"parameters \['beta'\] are both columns .* and fixed",
        ),
        (
            pd.DataFrame({"beta": [0.2, None]}),
            None,
            r"parameter DataFrame, row 2 \(index label 1\): column 'beta' is empty",
        ),
    ]:
        with pytest.raises(ContractError, match=expected):
            simulate("simcal_models:noisy_line", parameters, tmp_path / "o", fixed_params=fixed)
    assert not (tmp_path / "o.partial").exists()


def test_settings_name_what_is_wrong():
    with pytest.raises(ContractError, match="'retries' was removed .*allowed_failures"):
        SimulationSettings.from_config({"retries": 2})
    for key, value, expected in [
        ("timeout_s", -1, "a number > 0 or null"),
        ("seed", -3, "an integer >= 0 or null"),
        ("allowed_failures", 1.5, "an integer >= 0"),
        ("batch_size", "big", 'an integer >= 1 or "auto"'),
        ("batch_size", 0, 'an integer >= 1 or "auto"'),  # not a silent "auto"
        ("batch_size", False, 'an integer >= 1 or "auto"'),
        ("common_random_numbers", "yes", "true or false"),
    ]:
        with pytest.raises(ContractError, match=rf"simulation settings: {key} must be {re.escape(expected)}"):
            SimulationSettings.from_config({key: value})
    assert SimulationSettings.from_config({"batch_size": "auto", "seed": 3}).batch_size is None


def test_settings_given_as_numpy_scalars_are_taken_as_the_numbers_and_booleans_they_are():
    """Snakemake's Paramspace.instance gives numpy scalars: a rule taking its replicates or seed from a Paramspace
    row was refused with 'replicates must be an integer >= 1, got np.int64(2)', while fixed values and
    simcal.api.submit take them. They count as the Python values they hold, and are kept as those."""
    settings = SimulationSettings.from_config(
        {
            "replicates": np.int64(2),
            "seed": np.int64(3),
            "batch_size": np.int32(5),
            "allowed_failures": np.uint8(1),
            "timeout_s": np.float32(60.0),
            "common_random_numbers": np.bool_(True),
        }
    )
    integers = (settings.replicates, settings.seed, settings.batch_size, settings.allowed_failures)
    assert integers == (2, 3, 5, 1) and {type(value) for value in integers} == {int}
    assert settings.timeout_s == 60.0 and settings.common_random_numbers is True
    with pytest.raises(
        ContractError, match=r"simulation settings: replicates must be an integer >= 1, got 2\.0"
    ):
        SimulationSettings.from_config({"replicates": np.float64(2.0)})  # a fraction's type is still refused


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("replicates", 0, "an integer >= 1"),
        ("target_task_seconds", 0, "a number > 0"),
        ("probe_seconds", -0.05, "a number > 0"),
        ("max_batch_size", 0, "an integer >= 1"),
        ("max_failed_fraction", 1.5, "in [0, 1]"),
        ("max_failed_fraction", math.nan, "in [0, 1]"),
        ("timeout_s", math.inf, "a number > 0 or null"),
        ("rerun_failed", "no", "true or false"),
        ("no_worker_timeout_s", 0, "a number > 0"),
        ("no_worker_timeout_s", math.inf, "a number > 0"),
        ("progress_seconds", 0, "a number > 0"),
        ("progress_seconds", math.nan, "a number > 0"),
    ],
)
def test_each_simulation_setting_out_of_its_range_is_named_with_what_it_must_be(key, value, expected):
    """config/README.md gives each calibration.simulation key its range: a value outside it is refused when the
    settings are read, before anything runs, naming the key, what it must be and the value given. The test above
    tries a few keys; this one every range the check holds (a non-finite number is no number of seconds)."""
    with pytest.raises(
        ContractError,
        match=rf"^simulation settings: {key} must be {re.escape(expected)}, got {re.escape(repr(value))}$",
    ):
        SimulationSettings.from_config({key: value})


def test_run_batch_turns_every_kind_of_output_into_rows():
    tasks = plan_tasks([{"a": 1}, {"a": 2}, {"a": 3}], replicates=1)
    empty = run_batch("simcal_models:empty_for_odd", tasks)
    assert sorted(empty.drop_duplicates("param_id")["a"]) == [1, 2, 3]
    assert len(empty) == 1 + 2 + 1 and (empty["status"] == "ok").all()
    arrays = run_batch("simcal_models:array_in_dict", tasks[:1])
    assert (
        arrays["status"].iloc[0] == "failed"
        and "ndarray of shape (3,) for output 'curve'" in arrays["error"].iloc[0]
    )
    hijack = run_batch("simcal_models:hijacks_keys", tasks[:1])
    table = run_batch("simcal_models:hijacks_keys_table", tasks[:1])
    assert list(hijack.columns) == list(table.columns)
    assert hijack["param_id"].iloc[0] == tasks[0].param_id and hijack["output_param_id"].iloc[0] == "hijack"
    missing = run_batch("simcal_models:not_there", tasks[:2])  # e.g. not installed on this worker
    assert (
        list(missing["status"]) == ["failed"] * 2
        and "has no attribute 'not_there'" in missing["error"].iloc[0]
    )


@pytest.mark.parametrize("shape", ["dict", "table"])
def test_outputs_named_only_like_status_columns_get_the_prefix_and_never_replace_the_status(shape):
    """A model whose outputs clash with no key column nor parameter, only with status, error and duration_s: they
    are renamed output_<name> (a dict's and a table's alike), and the row's own status columns are simcal's."""
    rows = run_batch("simcal_models:names_status_columns", plan_tasks([{"shape": shape}], replicates=1))
    assert len(rows) == 1, rows
    row = rows.iloc[0]
    assert row["status"] == "ok" and pd.isna(row["error"]) and row["duration_s"] >= 0
    assert (row["output_status"], row["output_error"], row["output_duration_s"], row["y"]) == (
        "mine",
        "none of yours",
        -1.0,
        1.0,
    )


def test_a_time_budget_counts_from_the_first_simulations_end_and_stops_the_batch_after_the_one_that_used_it_up():
    """run_batch with time_budget_s (the timing probe) stops once that much time has passed since its first
    simulation ended (that one pays the worker's one-time costs), having run a warm one after it; after a first
    simulation that failed, since the batch began. The simulations it did not reach have no rows."""
    tasks = plan_tasks([{"a": float(i)} for i in range(4)], replicates=1)
    spent = run_batch("simcal_models:noisy_line", tasks, time_budget_s=0.0)
    assert list(spent["a"]) == [0.0, 1.0] and list(spent["status"]) == ["ok", "ok"]
    failed = run_batch("simcal_models:always_fails", tasks, time_budget_s=0.0)
    assert list(failed["a"]) == [0.0] and list(failed["status"]) == ["failed"]
    assert list(run_batch("simcal_models:noisy_line", tasks, time_budget_s=600.0)["a"]) == [
        0.0,
        1.0,
        2.0,
        3.0,
    ]
    # The budget is the whole batch's, not each simulation's: simulations of 0.1 s each, a budget of 0.25 s after
    # the first.
    slow = plan_tasks([{"a": float(i), "sleep_s": 0.1} for i in range(6)], replicates=1)
    assert 2 <= len(run_batch("simcal_models:counted_sleep", slow, time_budget_s=0.25)) <= 4


def test_the_key_columns_of_a_row_are_the_simulations_own_even_when_a_parameter_has_their_name():
    """The key columns win over anything in the parameters (reserved names are refused on input anyway)."""
    tasks = plan_tasks([{"a": 1.0, "param_id": "x", "replicate": 7, "seed": 99}], replicates=1)
    rows = run_batch("simcal_models:noisy_line", tasks)
    assert list(rows["status"]) == ["ok"]
    assert rows[["param_id", "replicate", "seed"]].iloc[0].tolist() == [tasks[0].param_id, 0, tasks[0].seed]


def test_a_model_is_imported_once_per_process_and_reused_by_its_later_batches(monkeypatch):
    from simcal import worker

    imported = []

    def resolve(reference):
        imported.append(reference)
        return lambda params, seed: {"y": float(params["a"])}

    monkeypatch.setattr(worker, "resolve_callable", resolve)
    monkeypatch.setattr(worker, "MODELS", {})
    tasks = plan_tasks([{"a": 1.0}, {"a": 2.0}], replicates=1)
    for key in ("sweep-once-1", "sweep-once-2", ""):  # keyed batches (as Dask runs them) and one in process
        rows = run_batch("once_only:model", Batch(tasks, key, driver=None))
        assert list(rows["y"]) == [1.0, 2.0] and list(rows["status"]) == ["ok", "ok"]
    assert imported == ["once_only:model"]
    assert worker.cached_model("once_only:model") is worker.cached_model("once_only:model")
    assert imported == ["once_only:model"]


def test_a_table_column_made_by_simcal_never_overwrites_an_output_of_that_name():
    """A dict holding tables gets a ``table`` column naming each one; a scalar output named ``table`` or a table's
    own ``table`` column is renamed ``output_table`` instead of being overwritten."""
    scalar = normalise_output({"curve": pd.DataFrame({"t": [0, 1]}), "table": 3}, "m:f")
    assert list(scalar["table"]) == ["curve", "curve"] and list(scalar["output_table"]) == [3, 3]
    own = normalise_output({"curve": pd.DataFrame({"t": [0, 1], "table": ["x", "y"]})}, "m:f")
    assert list(own["table"]) == ["curve", "curve"] and list(own["output_table"]) == ["x", "y"]
    series = normalise_output({"curve": pd.Series([5, 6], name="table")}, "m:f")
    assert list(series["table"]) == ["curve", "curve"] and list(series["output_table"]) == [5, 6]
    # A scalar named like a column of the tables keeps both.
    both = normalise_output({"curve": pd.DataFrame({"t": [0, 1]}), "t": 9}, "m:f")
    assert list(both["t"]) == [0, 1] and list(both["output_t"]) == [9, 9]
    # Plain scalars and plain tables get no table column: a ``table`` output keeps its name there.
    assert list(normalise_output({"table": 3}, "m:f")["table"]) == [3]


def test_nested_values_in_a_dict_output_are_refused_naming_the_output():
    tasks = plan_tasks([{"a": 0}], replicates=1)
    rows = run_batch("simcal_models:nested_for_even", tasks)
    assert list(rows["status"]) == ["failed"] and "info" not in rows
    assert "returned a dict for output 'info'" in rows["error"].iloc[0]
    for value in ({"k": 1}, {1, 2}):
        with pytest.raises(ContractError, match=r"m:f returned a (dict|set) for output 'x'; the values"):
            normalise_output({"curve": pd.DataFrame({"t": [0]}), "x": value}, "m:f")


def test_a_batch_sent_as_columns_arrives_as_the_same_simulations():
    tasks = plan_tasks([{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], replicates=2, seed=4)
    sent = Batch(tasks, "simcal-batch-k", start_topic="topic", isolated=True)
    arrived = pickle.loads(pickle.dumps(sent))
    assert (arrived.tasks, arrived.key, arrived.driver, arrived.start_topic, arrived.isolated) == (
        tasks,
        "simcal-batch-k",
        sent.driver,
        "topic",
        True,
    )
    assert all(type(t) is SimTask for t in arrived.tasks) and len(pickle.loads(pickle.dumps(sent))) == 4
    rows = run_batch("simcal_models:empty_for_odd", pickle.loads(pickle.dumps(sent)))  # run alone, isolated
    expected = run_batch("simcal_models:empty_for_odd", tasks)
    pd.testing.assert_frame_equal(rows.drop(columns="duration_s"), expected.drop(columns="duration_s"))


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    script = (
        "import os, sys; os.umask(int(sys.argv[2], 8)); from simcal.tables import write_text, write_json; "
        "write_text('x', sys.argv[1] + '/a.txt'); write_json({'a': 1}, sys.argv[1] + '/b.json')"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), oct(umask)[2:]], check=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC)},
    )  # fmt: skip
    for name in ("a.txt", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert not list(tmp_path.glob(".*.tmp"))


def test_atomic_writes_get_what_a_plain_open_gets_in_a_folder_whose_default_acl_shares_it(tmp_path):
    """A project folder whose default ACL lets the project group (here gid 4321) read what is written in it, and
    others nothing: there the ACL, not the umask, decides, as for a plain open() (and kdgat.files). A file made
    0600 and then chmodded to 0666 less the umask was unreadable to the group under umask 077 and readable by
    everybody under 022."""
    import struct

    def acl(entries):  # the kernel's xattr form: version 2, then (tag, permissions, id) per entry
        return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *entry) for entry in entries)

    anyone = 0xFFFFFFFF  # user owner 1, group owner 4, named group 8, mask 0x10, other 0x20
    shared = acl([(1, 7, anyone), (4, 5, anyone), (8, 5, 4321), (0x10, 7, anyone), (0x20, 0, anyone)])
    os.setxattr(tmp_path, "system.posix_acl_default", shared)
    script = (
        "import os, sys; os.umask(int(sys.argv[2], 8)); from simcal.tables import write_text; "
        "write_text('x', sys.argv[1] + '/simcal.txt'); open(sys.argv[1] + '/plain.txt', 'w').close()"
    )
    for umask in ("077", "022"):
        subprocess.run(
            [sys.executable, "-c", script, str(tmp_path), umask], check=True, timeout=60,
            env={**os.environ, "PYTHONPATH": str(SRC)},
        )  # fmt: skip
        plain, written = tmp_path / "plain.txt", tmp_path / "simcal.txt"
        assert stat.S_IMODE(written.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o660, umask
        access = "system.posix_acl_access"
        assert os.getxattr(written, access) == os.getxattr(plain, access), umask


def test_atomic_write_fsyncs_the_file_before_renaming_it_and_the_directory_after(tmp_path, monkeypatch):
    """A power loss right after the rename must find the new file's contents on disk: the temporary file is fsynced
    before os.replace, and the directory after it (so the new name is durable too)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, target):
        events.append(("replace", str(source), str(target)))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "data.txt"
    write_text("contents", target)
    assert target.read_text() == "contents"
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    (_, synced), (_, renamed, into), (_, directory) = events
    assert synced == renamed != into == str(target) and directory == str(tmp_path)
    events.clear()
    write_json({"a": 1}, tmp_path / "progress.json", durable=False)  # rewritten often: no fsync at all
    assert [e[0] for e in events] == ["replace"]


def test_json_files_are_strict_json_with_null_for_nan_and_infinity(tmp_path):
    """A summary of a sweep or calibration may hold NaN (the spread of one replicate, the range of no values):
    Python's bare NaN is no JSON, and jq or a browser refuses the whole file over it."""

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    path = write_json(
        {
            "sd": float("nan"),
            "range": [np.float64("inf"), -math.inf],
            "count": np.int64(3),
            7: np.bool_(True),
        },
        tmp_path / "summary.json",
    )
    document = json.loads(path.read_text(), parse_constant=refuse)
    assert document == {"sd": None, "range": [None, None], "count": 3, "7": True}


def test_the_module_schema_describes_every_simulation_setting():
    """Every key SimulationSettings accepts can be set through the calibration module's config."""
    import yaml

    schema = yaml.safe_load(
        (SRC.parent / "workflow/modules/calibration/schemas/config.schema.yaml").read_text()
    )
    described = schema["$defs"]["simulation"]["properties"]
    assert set(described) == set(SimulationSettings.__dataclass_fields__)
    assert all(spec.get("description") for spec in described.values())


def test_duplicate_parameter_sets_are_merged_with_one_log_line(caplog):
    caplog.set_level(logging.INFO, logger="simcal")
    tasks = plan_tasks([{"a": 1}, {"a": 2}, {"a": 1}, {"a": 1.0}, {"a": 2}], replicates=2)
    assert len(tasks) == 2 * 2
    merged = [r.getMessage() for r in caplog.records if "merged" in r.getMessage()]
    assert merged == [
        f"3 duplicate parameter set(s) merged into the first of each: param_id {tasks[0].param_id} (3 rows), "
        f"param_id {tasks[2].param_id} (2 rows)"
    ]
    caplog.clear()
    plan_tasks([{"a": 1}, {"a": 2}], replicates=1)
    assert not caplog.records


def test_the_merge_log_line_names_five_merged_groups_and_counts_the_others(caplog):
    """One line however many sets were merged: the first five groups by param_id, then how many more."""
    caplog.set_level(logging.INFO, logger="simcal")
    tasks = plan_tasks([{"a": i} for i in range(7)] * 2, replicates=1)
    assert len(tasks) == 7
    (merged,) = [r.getMessage() for r in caplog.records if "merged" in r.getMessage()]
    groups = ", ".join(f"param_id {task.param_id} (2 rows)" for task in tasks[:5])
    assert merged == f"7 duplicate parameter set(s) merged into the first of each: {groups}, and 2 more"


def test_dict_outputs_stack_tables_and_repeat_scalars():
    out = normalise_output({"curve": pd.DataFrame({"t": [0, 1]}), "peak": np.int64(7), "r0": 2.5})
    assert list(out["table"]) == ["curve", "curve"]
    assert list(out["peak"]) == [7, 7]
    with pytest.raises(ContractError, match="expected a pandas DataFrame or a dict"):
        normalise_output([1, 2], "m:f")
    with pytest.raises(ContractError, match=r"m:f returned a list of shape \(2,\) for output 'xs'"):
        normalise_output({"curve": pd.DataFrame({"t": [0]}), "xs": [1, 2]}, "m:f")
    only_scalars = normalise_output({"curve": pd.DataFrame({"t": []}), "peak": 3}, "m:f")
    assert len(only_scalars) == 1 and only_scalars["peak"].iloc[0] == 3


@pytest.mark.parametrize(
    ("settings", "where"),
    [(SimulationSettings, "simulation settings"), (CalibrationSettings, "calibration.calibrate")],
)
def test_settings_reject_unknown_keys_naming_section_and_key(settings, where):
    with pytest.raises(
        ContractError, match=rf"{re.escape(where)}: unknown keys \['batchsize'\]; known: \[.*'"
    ):
        settings.from_config({"batchsize": 4})
