"""Bad input to simcal gets an error naming where it is (file and line, config key, fixed value, target) and
what was expected, before anything runs, and nothing is written."""

from __future__ import annotations

import logging
import math
import os
import re

import numpy as np
import pandas as pd
import pytest
from testkit import one_set_sweep_files, one_trial_calibration_files

from simcal import api, targets
from simcal.analyze import analyze
from simcal.backends import dask_client, slurm_cluster_kwargs, slurm_scaling
from simcal.calibrate import calibrate, check_model_parameters, check_observed_columns, parse_targets
from simcal.contract import ContractError
from simcal.design import parse_bounds, sample_design, write_design
from simcal.observed import check_generation, generate_observed, read_observed
from simcal.runner import TooManyFailures, simulate
from simcal.service.jobs import RequestRefused, ServiceConfig, plan_request
from simcal.space import Choice, Integer, ParameterSpace, Real, check_fixed
from simcal.tables import read_parameter_table
from simcal.visualize import visualize, visualize_sweep

SIR = "simcal.models.sir:simulate"


def test_a_sweeps_misspelt_or_out_of_bounds_fixed_value_is_named_as_fixed_not_as_the_first_row(tmp_path):
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.2,0.1\n0.3,0.1\n")
    output = tmp_path / "out.parquet"
    with pytest.raises(
        ContractError, match=r"^fixed parameters: 'populaton' is not a parameter of .*'population'"
    ):
        simulate(SIR, table, output, fixed_params={"populaton": 100})
    with pytest.raises(ContractError, match=r"^fixed parameters: parameter 'population' = -5 is below"):
        simulate(SIR, table, output, fixed_params={"population": -5})
    assert not output.exists() and not (tmp_path / "out.parquet.partial").exists()


def test_a_sweeps_table_without_a_required_parameter_is_refused_naming_its_first_line(tmp_path):
    """A column the model requires missing from the table: refused before any cluster starts, not run as one
    failed simulation per row."""
    table = tmp_path / "params.csv"
    table.write_text("beta,days\n0.2,30\n0.3,30\n")
    output = tmp_path / "out.parquet"
    with pytest.raises(
        ContractError,
        match=rf"params.csv, line 2: required parameter\(s\) \['gamma'\] of {re.escape(SIR)} have no value",
    ):
        simulate(SIR, table, output)
    assert not output.exists() and not (tmp_path / "out.parquet.partial").exists()


def test_a_design_refuses_a_reserved_parameter_name_and_a_bad_seed_naming_them(tmp_path):
    """The design is the sweep's parameter table: a parameter named like a result column would only be refused
    by the simulate rule after it, naming a generated file; a seed numpy refuses would name nothing."""
    output = tmp_path / "design.csv"
    with pytest.raises(ContractError, match=r"^design parameters: parameter names \['seed'\] are reserved"):
        write_design({"seed": {"low": 0, "high": 1}, "beta": {"low": 0, "high": 1}}, 4, output)
    for seed in (-1, 1.5, "7", True, None):
        with pytest.raises(
            ContractError,
            match=rf"^design parameters: the design's seed must be a whole number >= 0, got {re.escape(repr(seed))}$",
        ):
            write_design({"beta": {"low": 0, "high": 1}}, 4, output, seed=seed)
    assert not output.exists()
    assert len(write_design({"beta": {"low": 0, "high": 1}}, 4, output, seed=np.int64(3))) == 4


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"adaptive": True}, r"adaptive True: expected \{minimum_jobs, maximum_jobs\}"),
        ({"adaptive": {"max_jobs": 3}}, r"adaptive: unknown keys \['max_jobs'\]"),
        ({"adaptive": {"minimum_jobs": "two"}}, r"adaptive.minimum_jobs 'two': expected a whole number >= 0"),
        ({"jobs": "many"}, r"jobs 'many': expected a whole number >= 1"),
        ({"cores": "four"}, r"cores 'four': expected a whole number >= 1"),
        ({"processes": 0}, r"processes 0: expected a whole number >= 1"),
        ({"gpus": -1}, r"gpus -1: expected a whole number >= 0"),
        ({"job_extra_directives": "--exclusive"}, r"job_extra_directives '--exclusive': expected a list"),
        ({"worker_extra_args": "--nthreads 2"}, r"worker_extra_args '--nthreads 2': expected a list"),
        ({"job_script_prologue": "module load x"}, r"job_script_prologue 'module load x': expected a list"),
    ],
)
def test_slurm_backend_options_of_the_wrong_kind_are_named(options, named):
    """The module's schema checks these; the simulate wrapper and the library alone must too, instead of a
    traceback or a job script of one directive per character."""
    with pytest.raises(ContractError, match=rf"^calibration.backend.slurm.{named}"):
        slurm_scaling(options)
        slurm_cluster_kwargs(options)


def test_an_adaptive_minimum_above_its_maximum_is_refused_before_any_job_is_submitted():
    """The schema checks each of minimum_jobs and maximum_jobs alone and cannot compare them; slurm_scaling, which
    runs before the SLURMCluster starts, must refuse a minimum above the maximum, given or left at 1."""
    for adaptive in ({"minimum_jobs": 3, "maximum_jobs": 2}, {"minimum_jobs": 2}):
        with pytest.raises(
            ContractError,
            match=r"^calibration.backend.slurm.adaptive \{.*\}: need 0 <= minimum_jobs <= maximum_jobs",
        ):
            slurm_scaling({"adaptive": adaptive})
    assert slurm_scaling({"adaptive": {"minimum_jobs": 2, "maximum_jobs": 2}}) == {
        "minimum_jobs": 2,
        "maximum_jobs": 2,
    }


def test_an_adaptive_maximum_of_no_job_is_refused():
    """maximum_jobs must be at least 1 (the schema's minimum): a cluster of at most no job never runs anything."""
    with pytest.raises(
        ContractError, match=r"^calibration.backend.slurm.adaptive \{.*\}: need .* and maximum_jobs >= 1"
    ):
        slurm_scaling({"adaptive": {"minimum_jobs": 0, "maximum_jobs": 0}})


def test_a_zero_worker_lifetime_or_stagger_is_refused_naming_the_option():
    """lifetime and lifetime_stagger must be positive durations; a zero one is named as such."""
    for key in ("lifetime", "lifetime_stagger"):
        with pytest.raises(
            ContractError, match=rf"^calibration.backend.slurm.{key} '0s': must be a positive duration$"
        ):
            slurm_cluster_kwargs({key: "0s"})


def test_queue_and_partition_name_one_partition():
    """queue and partition are two names of SLURM's -p: two different ones are refused, the same one twice or
    either alone is the job's partition."""
    with pytest.raises(
        ContractError, match=r"^calibration.backend.slurm: give either 'queue' or 'partition'"
    ):
        slurm_cluster_kwargs({"queue": "gpu", "partition": "cpu"})
    assert slurm_cluster_kwargs({"queue": "gpu", "partition": "gpu"})["queue"] == "gpu"
    assert slurm_cluster_kwargs({"partition": "cpu"})["queue"] == "cpu"


@pytest.mark.parametrize(
    ("backend", "options", "named"),
    [
        ("local", {"worker": 4}, r"local: unknown keys \['worker'\]"),
        ("local", {"processes": "false"}, r"local.processes 'false': expected true or false"),
        ("local", {"workers": 0}, r"local.workers 0: expected a whole number >= 1"),
        ("local", {"threads_per_worker": 1.5}, r"local.threads_per_worker 1.5: expected a whole number >= 1"),
        ("scheduler", {"adress": "tcp://127.0.0.1:9"}, r"scheduler: unknown keys \['adress'\]"),
    ],
)
def test_local_and_scheduler_backend_options_are_checked_before_a_cluster_starts(backend, options, named):
    """A misspelt option was ignored (the default used instead) and the text 'false' read as true."""
    with pytest.raises(ContractError, match=rf"^calibration.backend.{named}"):
        with dask_client(backend, options):
            pass


@pytest.mark.parametrize(
    ("backend", "options", "named"),
    [
        ("locall", {}, r"calibration backend 'locall' is unknown; expected one of \['local', 'slurm'"),
        ("local", {"worker": 4}, r"calibration.backend.local: unknown keys \['worker'\]"),
        ("slurm", {"walltime": "1h"}, r"calibration.backend.slurm.walltime '1h': expected HH:MM:SS"),
        ("slurm", {"adaptive": 3}, r"calibration.backend.slurm.adaptive 3: expected"),
        ("scheduler", {}, r"calibration backend scheduler: no address"),
        ("service", {"urll": "http://127.0.0.1:9"}, r"calibration.backend.service: unknown keys \['urll'\]"),
    ],
)
@pytest.mark.parametrize("run", ["sweep", "calibration"])
def test_a_bad_backend_stops_a_sweep_or_a_calibration_before_it_writes_anything(
    tmp_path, monkeypatch, run, backend, options, named
):
    """Checked only as the cluster started, a bad backend left the output's parts directory (its manifest) and a
    progress file saying failed behind, which a later `simcal status` listed as a sweep."""
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.2,0.1\n")
    with pytest.raises(ContractError, match=rf"^{named}"):
        if run == "sweep":
            simulate(SIR, table, tmp_path / "out.parquet", backend=backend, backend_options=options)
        else:
            calibrate(
                SIR, pd.DataFrame({"day": [1], "incidence": [3]}), {"beta": {"low": 0.1, "high": 0.6}},
                [{"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence", "on": "day"}],
                tmp_path / "out.parquet", tmp_path / "trials.parquet", backend=backend, backend_options=options,
            )  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.csv"]


@pytest.mark.parametrize("threads", ["4", 2.5, None, -1, True])
def test_threads_that_are_no_whole_number_are_named_before_a_cluster_starts(tmp_path, threads):
    """SimulationService(threads=os.environ["SLURM_CPUS_PER_TASK"]) failed with TypeError: '>' not supported
    between instances of 'str' and 'int', naming neither threads nor the value; -1 started one worker silently."""
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.2,0.1\n")
    named = rf"^threads {re.escape(repr(threads))}: expected a whole number of threads >= 0 "
    with pytest.raises(ContractError, match=named):
        api.SimulationService(backend="local", threads=threads).submit(SIR, {"beta": 0.2, "gamma": 0.1})
    with pytest.raises(ContractError, match=named):
        simulate(SIR, table, tmp_path / "out.parquet", threads=threads)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.csv"]


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (
            {"fixed_params": ["days"]},
            r"fixed parameters: expected a mapping of names to values, got list \['days'\]",
        ),
        (
            {"settings": "replicates: 2"},
            r"simulation settings: expected a mapping of names to values, got str",
        ),
        (
            {"backend_options": ["workers", 2]},
            r"calibration.backend.local: expected a mapping of names to values",
        ),
        (
            {"parameters": [{"beta": 0.3}]},
            r"parameter table: expected a file path \(.csv, .tsv or .parquet\) or a ",
        ),
    ],
    ids=["fixed", "settings", "backend_options", "parameters"],
)
def test_a_sweeps_inputs_of_the_wrong_kind_are_named(tmp_path, given, named):
    """A wrapper's params come from YAML: a string or a list where a mapping belongs was a bare ValueError
    ('dictionary update sequence element #0 ...') or TypeError naming nothing."""
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.2,0.1\n")
    arguments = {"parameters": table, **given}
    with pytest.raises(ContractError, match=rf"^{named}"):
        simulate(SIR, output=tmp_path / "out.parquet", **arguments)
    assert not (tmp_path / "out.parquet.partial").exists()


def test_the_service_names_a_misspelt_fixed_value_as_fixed(tmp_path):
    body = {"fn_ref": SIR, "parameter_sets": [{"beta": 0.3, "gamma": 0.1}], "fixed": {"populaton": 100}}
    with pytest.raises(RequestRefused, match=r"^fixed: 'populaton' is not a parameter"):
        plan_request(body, ServiceConfig(state_dir=tmp_path))


def test_the_service_refuses_a_fn_ref_that_cannot_be_called_as_a_model_before_accepting_the_job(tmp_path):
    """A function of an allowed module that does not take (params, seed) was accepted (202) and its job failed
    once it ran: the request is checked completely before it is accepted, as the sweep checks its model."""
    body = {"fn_ref": "simcal.models.sir:epidemic_counts", "parameter_sets": [{"beta": 0.3, "gamma": 0.1}]}
    with pytest.raises(RequestRefused) as refused:
        plan_request(body, ServiceConfig(state_dir=tmp_path))
    assert refused.value.status == 422
    assert refused.value.message.startswith("fn_ref 'simcal.models.sir:epidemic_counts': ")
    assert "cannot be called as epidemic_counts(params, seed)" in refused.value.message


@pytest.mark.parametrize("fixed", [None, {"beta": 0.3, "gamma": 0.1}], ids=["alone", "with-fixed"])
def test_the_service_names_empty_parameter_sets_as_parameter_sets(tmp_path, fixed):
    """parameter_sets [{}] (replicates of fixed values, or of a model's defaults) was refused as 'request: the
    parameter table has no rows or no columns', naming neither the field nor what to send instead."""
    body = {"fn_ref": SIR, "parameter_sets": [{}, {}], "fixed": fixed, "n_replicates": 3}
    with pytest.raises(RequestRefused) as refused:
        plan_request(body, ServiceConfig(state_dir=tmp_path))
    assert refused.value.status == 422
    assert refused.value.message.startswith("parameter_sets[0]: an empty parameter set; ")
    assert "parameter_sets: [{...}] with n_replicates" in refused.value.message


SPACED = "column name ' gamma' begins or ends with a space, which is part of the parameter's name (a model would get"


def test_a_parameter_name_with_spaces_around_it_is_refused_on_every_path_as_in_a_csv_header(tmp_path):
    """' gamma' was refused in a CSV header only: a DataFrame, a fixed value and a service request of a model
    without a declared space ran with it, and the model's params.get('gamma', default) got its default."""
    model = "simcal_models:noisy_line"  # declares no parameter space: nothing else refuses the name
    table = tmp_path / "p.csv"
    table.write_text("a, gamma\n0.2,0.1\n")
    with pytest.raises(ContractError, match=rf"^{re.escape(str(table))}, line 1: {re.escape(SPACED)}"):
        simulate(model, table, tmp_path / "o.parquet")
    frame = pd.DataFrame({"a": [0.2], " gamma": [0.1]})
    with pytest.raises(ContractError, match=rf"^parameter DataFrame: {re.escape(SPACED)}"):
        simulate(model, frame, tmp_path / "o.parquet")
    with pytest.raises(
        ContractError,
        match=r"^fixed parameters: parameter name ' days' begins or ends with a space, which is part of",
    ):
        simulate(model, pd.DataFrame({"a": [0.2]}), tmp_path / "o.parquet", fixed_params={" days": 3})
    config = ServiceConfig(state_dir=tmp_path, allow_models=("simcal_models",))
    with pytest.raises(RequestRefused, match=rf"^request: {re.escape(SPACED)}") as refused:
        plan_request({"fn_ref": model, "parameter_sets": [{"a": 0.2, " gamma": 0.1}]}, config)
    assert refused.value.status == 422
    assert not (tmp_path / "o.parquet.partial").exists()


def test_an_empty_parameter_name_is_refused_on_every_path_naming_its_column(tmp_path):
    """A CSV header's empty name is refused ('column 1 has no name'); a DataFrame column, a fixed value or a
    request's parameter named '' reached the model as params['']."""
    model = "simcal_models:noisy_line"
    with pytest.raises(
        ContractError, match=r"^parameter DataFrame: column 2 has no name \(''\); name it or remove it$"
    ):
        simulate(model, pd.DataFrame({"a": [0.2], "": [0.1]}), tmp_path / "o.parquet")
    with pytest.raises(
        ContractError, match=r"^fixed parameters: parameter 1 has no name \(' '\); name it or remove it$"
    ):
        simulate(model, pd.DataFrame({"a": [0.2]}), tmp_path / "o.parquet", fixed_params={" ": 3})
    config = ServiceConfig(state_dir=tmp_path, allow_models=("simcal_models",))
    with pytest.raises(RequestRefused, match=r"^request: column 2 has no name \(''\); name it or remove it$"):
        plan_request({"fn_ref": model, "parameter_sets": [{"a": 0.2, "": 0.1}]}, config)
    assert not (tmp_path / "o.parquet.partial").exists()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            " gamma",
            "parameter name ' gamma' begins or ends with a space, which is part of the parameter's name",
        ),
        (
            "gamma ",
            "parameter name 'gamma ' begins or ends with a space, which is part of the parameter's name",
        ),
        ("", "parameter 2 has no name (''); name it or remove it"),
    ],
    ids=["leading-space", "trailing-space", "empty"],
)
def test_a_calibrated_or_designed_parameter_name_empty_or_with_spaces_around_it_is_refused_naming_the_key(
    tmp_path, name, message
):
    """calibration.parameters and a design's bounds were checked for reserved names only, not as a table's columns
    are: a model without a declared space was calibrated (or a design written) with ' gamma', and its
    params.get('gamma', default) got the default."""
    bounds = {"a": {"low": 0.0, "high": 2.0}, name: {"low": 0.0, "high": 1.0}}
    with pytest.raises(ContractError) as refused:
        check_model_parameters("simcal_calibration_models:undeclared", bounds, {})
    assert str(refused.value).startswith(f"calibration.parameters: {message}")
    with pytest.raises(ContractError) as refused:
        write_design(bounds, 4, tmp_path / "design.csv")
    assert str(refused.value).startswith(f"design parameters: {message}")
    assert not (tmp_path / "design.csv").exists()


def test_the_service_names_a_parameter_set_with_other_names_by_its_place_in_the_request(tmp_path):
    sets = [{"beta": 0.3, "gamma": 0.1}, {"beta": 0.2, "gamma": 0.1}, {"beta": 0.3}]
    with pytest.raises(
        RequestRefused, match=r"^parameter_sets\[2\]: names \['beta'\], but parameter_sets\[0\]"
    ):
        plan_request({"fn_ref": SIR, "parameter_sets": sets}, ServiceConfig(state_dir=tmp_path))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # One word makes pandas read the whole column as text: '0.1' on line 2 is not what is wrong.
        ("beta,gamma\n0.2,0.1\n0.3,0.1\n0.4,abc\n", "line 4: parameter 'gamma' = 'abc'"),
        # Both columns are text (a word in each): line 3's beta '0.3' is fine, its gamma 'abc' is not.
        ("beta,gamma\n0.2,0.1\n0.3,abc\nxyz,0.1\n", "line 3: parameter 'gamma' = 'abc'"),
    ],
    ids=["one-text-column", "two-text-columns"],
)
def test_a_word_in_a_number_column_is_named_at_its_own_line_and_column(tmp_path, text, named):
    table = tmp_path / "params.csv"
    table.write_text(text)
    with pytest.raises(ContractError, match=rf"params.csv, {named} is text, not a number"):
        simulate(SIR, table, tmp_path / "out.parquet")


CHOICE_MODEL = """
from simcal.space import Choice, ParameterSpace, Real

SPACE = ParameterSpace(mode=Choice(options=("fast", "slow")), rate=Real(low=0.0))


@SPACE.declare
def model(params, seed):
    return {"y": params["rate"]}
"""


def test_a_word_in_a_number_column_is_named_at_its_own_line_beside_a_column_of_choices(tmp_path, monkeypatch):
    """A declared Choice of words makes its column text by nature: it is no column of numbers holding a word. Taken
    for one, its first row's 'fast' was the word found first, and the error blamed line 2's '0.1' of the number
    column instead of line 4's 'abc'."""
    (tmp_path / "choice_lab_model.py").write_text(CHOICE_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = tmp_path / "params.csv"
    table.write_text("mode,rate\nfast,0.1\nslow,0.2\nfast,abc\n")
    with pytest.raises(
        ContractError, match=r"params.csv, line 4: parameter 'rate' = 'abc' is text, not a number"
    ):
        simulate("choice_lab_model:model", table, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet.partial").exists()


INTEGER_MODEL = """
from simcal.space import Integer, ParameterSpace

SPACE = ParameterSpace(n=Integer(low=1), k=Integer(default=1, low=1))


@SPACE.declare
def model(params, seed):
    return {"y": len(range(params["n"])) * len(range(params["k"])), "n_is": type(params["n"]).__name__}
"""


def test_a_whole_float_for_an_integer_parameter_reaches_the_model_as_an_int(tmp_path, monkeypatch):
    """A column pandas read as floats (20.0 written so, or beside an empty cell elsewhere) passed the Integer check
    and reached the model as a float, where range(params["n"]) failed every row. The declared type is the
    contract: the model gets an int, from the table, from fixed values and from submit()."""
    (tmp_path / "integer_lab_model.py").write_text(INTEGER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = tmp_path / "params.csv"
    table.write_text("n\n2.0\n3\n")
    simulate("integer_lab_model:model", table, tmp_path / "out.parquet", fixed_params={"k": 2.0})
    out = pd.read_parquet(tmp_path / "out.parquet").sort_values("n")
    assert out["status"].tolist() == ["ok", "ok"]
    assert out["y"].tolist() == [4, 6]
    assert out["n_is"].tolist() == ["int", "int"]
    assert out["n"].dtype == np.int64
    future = api.submit("integer_lab_model:model", {"n": np.float64(20.0)}, client=_Client())
    assert future.task.params == {"n": 20} and type(future.task.params["n"]) is int
    # calibration.fixed and an observed-data generator's true parameters
    typed = check_fixed("integer_lab_model:model", {"k": 2.0}, "calibration.fixed")
    assert typed == {"k": 2} and type(typed["k"]) is int
    params, _ = check_generation("integer_lab_model:model", lambda p, s: None, {"n": 5.0}, {}, {"k": 3.0})
    assert params == {"n": 5, "k": 3} and {type(v) for v in params.values()} == {int}


def test_a_fractional_value_for_an_integer_parameter_is_refused_naming_its_line(tmp_path, monkeypatch):
    (tmp_path / "integer_lab_model.py").write_text(INTEGER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = tmp_path / "params.csv"
    table.write_text("n\n2\n20.5\n")
    with pytest.raises(
        ContractError, match=r"params.csv, line 3: parameter 'n' = 20.5 is not a whole number \(integer in"
    ):
        simulate("integer_lab_model:model", table, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet.partial").exists()


UNDECLARED_MODEL = """
def model(params, seed):
    return {"y": params["rate"] * 0.5}
"""


def test_a_word_among_numbers_for_a_model_without_a_space_is_warned_of_at_its_line(
    tmp_path, monkeypatch, caplog
):
    """Without a declared space nothing refuses the word, and the whole column reaches the model as text: every row
    fails with the model's own TypeError, which does not say why. The log names the word's line and column; a
    column of more words than numbers (IDs) is text on purpose and not warned of."""
    (tmp_path / "undeclared_lab_model.py").write_text(UNDECLARED_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    table = tmp_path / "params.csv"
    table.write_text("site,rate\n07,0.1\nB12,0.2\nC3,abc\n")
    caplog.set_level(logging.WARNING, logger="simcal")
    with pytest.raises(TooManyFailures):
        simulate("undeclared_lab_model:model", table, tmp_path / "out.parquet", {"max_failed_fraction": 0.5})
    warned = [r.getMessage() for r in caplog.records if "a word among numbers" in r.getMessage()]
    assert len(warned) == 1, warned  # rate only: site, mostly words (07, B12, C3), is text on purpose
    assert warned[0].startswith(
        f"{table}, line 4: column 'rate' is 'abc', a word among numbers (2 of 3 values"
    )
    assert "undeclared_lab_model:model gets every value of it as text" in warned[0]


def test_a_missing_parquet_file_is_named_as_missing(tmp_path):
    with pytest.raises(ContractError, match=r"params.parquet: the parameter table file does not exist"):
        read_parameter_table(tmp_path / "params.parquet")
    with pytest.raises(ContractError, match=r"observed.parquet: the observed data file does not exist"):
        read_observed(tmp_path / "observed.parquet")


def test_a_parquet_tables_named_index_is_a_column_as_in_the_same_table_saved_as_csv(tmp_path):
    """A design or observed data saved with ``set_index(...).to_parquet()``: pandas' Parquet reader made the named
    index (a column of the file, as every other reader sees it) the row labels, so a parameter silently dropped
    out of every parameter set (rows differing only in it merged into one), and observed data 'had no column'
    'day'. The same table saved as CSV keeps the column; only an unnamed index of row labels is left out."""
    design = pd.DataFrame({"beta": [0.2, 0.3, 0.4], "gamma": [0.1, 0.1, 0.1]})
    design.set_index("beta").to_parquet(tmp_path / "design.parquet")
    design.set_index("beta").to_csv(tmp_path / "design.csv")
    from_parquet = read_parameter_table(tmp_path / "design.parquet")
    assert from_parquet.to_dict("records") == read_parameter_table(tmp_path / "design.csv").to_dict("records")
    assert sorted(from_parquet.columns) == ["beta", "gamma"]
    assert from_parquet["beta"].tolist() == [0.2, 0.3, 0.4]
    filtered = design[design["beta"] > 0.2]  # unnamed row labels 1, 2: not a column
    filtered.to_parquet(tmp_path / "filtered.parquet")
    read = read_parameter_table(tmp_path / "filtered.parquet")
    assert read.to_dict("records") == filtered.to_dict("records")
    observed = pd.DataFrame({"day": [0, 1, 2], "cases": [5, 7, 9]})
    observed.set_index("day").to_parquet(tmp_path / "observed.parquet")
    read = read_observed(tmp_path / "observed.parquet", ["day", "cases"])
    assert read[["day", "cases"]].to_dict("records") == observed.to_dict("records")


@pytest.mark.parametrize(
    ("text", "line"),
    [("day,cases\n0,1\n#1,2\n2,3\n", 3), ("# weekly counts\nday,cases\n0,1\n", 1)],
    ids=["an-observation", "a-title"],
)
def test_an_observed_file_with_a_comment_line_is_refused_naming_the_line(tmp_path, text, line):
    """An observation commented out was read as data: the day column became text, the up-front checks passed,
    and the calibration ran its whole design to stop with 'no finite loss', never naming the line. A title
    line made the header '# weekly counts'. Refused as in a parameter table."""
    path = tmp_path / "observed.csv"
    path.write_text(text)
    with pytest.raises(ContractError, match=rf"observed.csv, line {line}: the line starts with '#'"):
        read_observed(path, ["day", "cases"])


@pytest.mark.parametrize(
    ("write", "message"),
    [
        (
            lambda path: pd.DataFrame({"day": [0, 1], "cases": [3, 4]}).to_csv(path),
            r"observed.csv, line 1: column 1 has no name \(a DataFrame saved by to_csv\(\) without index=False",
        ),
        (
            lambda path: path.write_text("day,cases,cases\n0,3,4\n"),
            r"observed.csv, line 1: column name\(s\) \['cases'\] appear more than once; give each variable one",
        ),
    ],
    ids=["pandas-index-column", "a-name-twice"],
)
def test_an_observed_file_with_an_unnamed_or_repeated_column_is_refused_as_a_parameter_table_is(
    tmp_path, write, message
):
    """A DataFrame saved by to_csv() without index=False came back with an 'Unnamed: 0' column, and a name given
    twice as 'cases' and 'cases.1', without a word, though a parameter table refuses both."""
    path = tmp_path / "observed.csv"
    write(path)
    with pytest.raises(ContractError, match=rf"^{re.escape(str(tmp_path))}/{message}"):
        read_observed(path)


@pytest.mark.parametrize(
    ("name", "text", "line"),
    [
        ("params.csv", "beta,gamma\n0,0.3,0.1\n1,0.4,0.2\n", 2),
        ("params.tsv", "beta\tgamma\n\n0\t0.3\t0.1\n", 3),  # pandas skips the blank line 2
        ("observed.csv", "day,cases\n0,1,5\n1,2,7\n", 2),
    ],
    ids=["parameters", "parameters-after-a-blank-line", "observed"],
)
def test_one_field_more_than_the_header_is_refused_even_when_the_extra_fields_count_from_0(
    tmp_path, name, text, line
):
    """pandas takes the extra first fields as row labels; labels 0, 1, ... made the same index as no labels, so
    every value was shifted a column left without a word (beta 0.3 read as 0.1...)."""
    path = tmp_path / name
    path.write_text(text)
    read = read_observed if name.startswith("observed") else read_parameter_table
    with pytest.raises(
        ContractError,
        match=rf"^{re.escape(str(path))}, line {line}: 3 fields, but the header \(line 1\) names 2 columns",
    ):
        read(path)


def test_observed_data_without_a_column_asked_for_are_named_with_the_file(tmp_path):
    path = tmp_path / "observed.csv"
    path.write_text("day,cases\n0,1\n")
    assert list(read_observed(path, ["day", "cases"]).columns) == ["day", "cases"]
    with pytest.raises(ContractError, match=r"observed.csv: observed data have no column\(s\) \['deaths'\]"):
        read_observed(path, ["day", "deaths"])


@pytest.mark.parametrize("low, high", [(0.0, math.inf), (-math.inf, 1.0), (math.nan, 1.0)])
def test_bounds_must_be_finite(low, high):
    with pytest.raises(
        ContractError, match=r"calibration.parameters.slope: low and high must be finite numbers"
    ):
        parse_bounds({"slope": {"low": low, "high": high}})


def test_bounds_whose_range_overflows_a_float_are_named_and_no_design_is_written(tmp_path):
    """low -1e308, high 1e308 (meant as 'any value'): high - low overflows, and every value drawn was inf, written
    into the design without a word (the sweep then refused the design file, not the setting)."""
    with pytest.raises(ContractError, match=r"^design parameters.slope: high - low must be a finite number"):
        write_design({"slope": {"low": -1e308, "high": 1e308}}, 4, tmp_path / "design.csv")
    assert not (tmp_path / "design.csv").exists()


def test_integer_bounds_beyond_what_a_float_holds_exactly_are_named():
    """Drawn through floats into int64, high 1e20 wrapped around to -2**63 and Optuna failed naming that value."""
    with pytest.raises(ContractError, match=r"parameters.n: an integer parameter's bounds must lie within"):
        parse_bounds({"n": {"low": 0, "high": 1e20, "integer": True}})
    assert sample_design({"n": {"low": 0, "high": 2**53, "integer": True}}, 64)["n"].between(0, 2**53).all()


def test_a_targets_misspelt_or_missing_option_fails_when_the_config_is_read():
    with pytest.raises(
        ContractError,
        match=r"calibration.targets\[0\]: simcal.targets:poisson_nll has no option 'colum' "
        r"\(did you mean 'column'\?\)",
    ):
        parse_targets([{"function": "simcal.targets:poisson_nll", "colum": "incidence"}])
    with pytest.raises(
        ContractError, match=r"calibration.targets\[0\]: .*missing a required argument: 'column'"
    ):
        parse_targets([{"function": "simcal.targets:poisson_nll", "on": "day"}])
    parse_targets(
        [{"function": "simcal.targets:negbin_nll", "column": "incidence", "on": "day", "dispersion": 5}]
    )


def test_a_generators_misspelt_option_is_named_and_nothing_is_written(tmp_path):
    output = tmp_path / "observed.csv"
    with pytest.raises(
        ContractError, match=r"^observed.options: .*has no option 'nois' \(did you mean 'noise'\?\)"
    ):
        generate_observed(
            "simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1}, output, options={"nois": "none"}
        )
    assert not output.exists()


@pytest.mark.parametrize("dispersion", [0, -1.0, math.nan, math.inf, "ten"])
def test_a_generators_negative_binomial_dispersion_that_is_no_positive_number_is_named(tmp_path, dispersion):
    """numpy said 'n <= 0', 'p <= 0, p > 1 or p contains NaNs' or a ufunc error: none named the option."""
    output = tmp_path / "observed.csv"
    with pytest.raises(
        ContractError,
        match=r"^observed.options: simcal.models.sir:observe's option dispersion must be a finite number > 0, "
        rf"got {dispersion!r}$",
    ):
        generate_observed(
            "simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1}, output,
            options={"noise": "negbin", "dispersion": dispersion},
        )  # fmt: skip
    assert not output.exists()


@pytest.mark.parametrize(
    "options, expected",
    [
        ({"noise": "bogus"}, r"noise = 'bogus' is unknown; expected one of \['poisson', 'negbin', 'none'\]"),
        ({"noise": ""}, r"noise = '' is unknown"),
        ({"noise": None}, r"noise = None is unknown"),
        ({"process": "x"}, r"process = 'x' is unknown; expected one of \['stochastic', 'mean_field'\]"),
        ({"process": []}, r"process = \[\] is unknown"),
    ],
)
def test_a_generators_unknown_noise_or_process_is_named_before_the_epidemic_runs(tmp_path, options, expected):
    """An unknown noise was a plain ValueError (a wrapper's traceback, as for a bug) raised only after the whole
    epidemic had run (days: 10**9 runs for hours first); a list as process was 'unhashable type: list'."""
    output = tmp_path / "observed.csv"
    with pytest.raises(
        ContractError, match=rf"^observed.options: simcal.models.sir:observe's option {expected}"
    ):
        generate_observed(
            "simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1, "days": 10**9}, output, options=options
        )
    assert not output.exists()


@pytest.mark.parametrize("seed", [-1, 1.5, "7", True])
def test_a_design_or_generator_seed_that_is_no_whole_number_is_named(tmp_path, seed):
    """numpy said 'expected non-negative integer' (or '1.5 cannot be used to seed'), naming no setting; int() took
    the generator's '7' and 7.9 silently."""
    with pytest.raises(
        ContractError, match=rf"^design parameters: the design's seed must be .*got {seed!r}$"
    ):
        sample_design({"x": {"low": 0, "high": 1}}, 4, "sobol", seed)
    output = tmp_path / "observed.csv"
    with pytest.raises(ContractError, match=rf"^observed.seed must be a whole number >= 0, got {seed!r}$"):
        generate_observed("simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1}, output, seed=seed)
    assert not output.exists()


def test_observed_data_without_rows_are_named_whether_read_or_generated(tmp_path):
    """A header-only file, and a generator returning an empty table or a dict, fail naming the file or the
    generator; nothing is written."""
    (tmp_path / "header.csv").write_text("day,cases\n")
    with pytest.raises(ContractError, match=r"header.csv: the observed data have no rows$"):
        read_observed(tmp_path / "header.csv")
    output = tmp_path / "observed.csv"
    with pytest.raises(
        ContractError, match=r"generator 'simcal_models:empty_for_odd' returned DataFrame \(empty\)"
    ):
        generate_observed("simcal_models:empty_for_odd", {"a": 1}, output)
    with pytest.raises(
        ContractError, match=r"'simcal_models:noisy_line' returned dict; expected a non-empty pandas"
    ):
        generate_observed("simcal_models:noisy_line", {"a": 1}, output)
    assert not output.exists()


@pytest.mark.parametrize("name", ["observed.csv", "observed.parquet"])
def test_a_generators_table_indexed_by_day_keeps_its_days(tmp_path, monkeypatch, name):
    """A generator returning set_index("day") lost the days without a word (the table was written without its
    index), so the calibration then said the observed data had no column 'day'. The index is kept as columns, as
    a model's is."""
    (tmp_path / "fuzz_generators.py").write_text(
        "import pandas as pd\n"
        "def indexed(params, seed):\n"
        "    return pd.DataFrame({'day': [0, 1, 2], 'cases': [4, 5, 6]}).set_index('day')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    output = tmp_path / name
    generate_observed("fuzz_generators:indexed", {"beta": 0.3}, output)
    observed = read_observed(output, ["day", "cases"])
    assert observed["day"].tolist() == [0, 1, 2] and observed["cases"].tolist() == [4, 5, 6]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"true_params": None}, r"observed.true_params has no value \(null\)"),  # YAML 'true_params:'
        (
            {"true_params": [{"beta": 0.3}]},
            r"observed.true_params: expected a mapping of names to values, got list",
        ),
        ({"options": ["poisson"]}, r"observed.options: expected a mapping of names to values, got list"),
        ({"fixed": "days=20"}, r"calibration.fixed: expected a mapping of names to values, got str"),
        ({"true_params": {"beta": math.nan}}, r"observed.true_params: parameter 'beta' is nan"),
        ({"true_params": {"beta": None}}, r"observed.true_params: parameter 'beta' has no value \(null\)"),
        ({"fixed": {"days": math.inf}}, r"calibration.fixed: parameter 'days' is inf"),
    ],
    ids=["null", "list", "options-list", "fixed-text", "nan", "value-left-out", "fixed-inf"],
)
def test_a_generators_settings_of_the_wrong_kind_or_without_a_value_are_named(tmp_path, settings, named):
    """dict() of a list or None ended the rule with 'dictionary update sequence element #0 has length 1' or
    ''NoneType' object is not iterable', naming no setting; a NaN, inf or null true or fixed value reached a
    generator without a declared space, which wrote NaN observations without a word."""
    output = tmp_path / "observed.csv"
    arguments = {"true_params": {"a": 1.0}, **settings}
    with pytest.raises(ContractError, match=rf"^{named}"):
        generate_observed("simcal_models:as_observed", output=output, **arguments)
    assert not output.exists()


def test_the_calibrations_fixed_values_are_named_as_fixed_when_observed_data_are_generated(tmp_path):
    output = tmp_path / "observed.csv"
    with pytest.raises(ContractError, match=r"^calibration.fixed: 'populaton' is not a parameter"):
        generate_observed(
            "simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1}, output, fixed={"populaton": 5000}
        )
    assert not output.exists()
    observed = generate_observed(  # the fixed values reach the generator, under the true parameters
        "simcal.models.sir:observe", {"beta": 0.3, "gamma": 0.1, "days": 30}, output, fixed={"days": 20}
    )
    assert len(observed) == 30 and output.exists()


@pytest.mark.parametrize(
    "function, text, message",
    [
        (
            "replicate_mean_mse",
            "day,cases\n0,1\n1,abc\n",
            r"column 'cases' must hold numbers; found 'abc' at day 1",
        ),
        ("mean_replicate_mse", "day,cases\n0,1\n0,2\n", r"2 rows that share their day \(first at day 0\)"),
        ("poisson_nll", "day,cases\n0,1\n1,2.5\n", r"must hold counts .* found 2.5 at day 1"),
        ("negbin_nll", "day,cases\n0,1\n1,-2\n", r"must hold counts .* found -2 at day 1"),
        ("poisson_nll", "day,cases\n0,0\n1,-1\n", r"must hold counts .* found -1 at day 1"),
        # every loss was inf, so NaN: after the design the calibration blamed the key columns
        ("replicate_mean_mse", "day,cases\n0,1\n1,inf\n", r"must hold finite numbers; found inf at day 1"),
        # the observation matched no simulated row and was left out without a word
        (
            "mean_replicate_mse",
            "day,cases\n0,1\n,2\n",
            r"1 observed value\(s\) of 'cases' have an empty key column \(day\), .*row 2 of the data .*cases = 2$",
        ),
    ],
)
def test_observed_data_the_built_in_targets_cannot_use_are_refused_before_anything_runs(
    tmp_path, function, text, message
):
    path = tmp_path / "observed.csv"
    path.write_text(text)
    parsed = parse_targets([{"name": "cases", "function": f"simcal.targets:{function}", "column": "cases"}])
    with pytest.raises(
        ContractError, match=rf"calibration target 'cases': observed data \(.*observed.csv\): .*{message}"
    ):
        check_observed_columns(read_observed(path), parsed, f"observed data ({path})")


@pytest.mark.parametrize("function", ["replicate_mean_mse", "mean_replicate_mse"])
def test_the_up_front_check_lets_the_mse_targets_have_missing_fractional_or_hand_built_observations(function):
    # NaN is left out by the MSE targets and a fraction is a fine observation: only the likelihoods need counts.
    parsed = parse_targets([{"name": "cases", "function": f"simcal.targets:{function}", "column": "cases"}])
    for cases in ([2.0, math.nan, 2.5], pd.Series([1, None, 3], dtype=object)):
        check_observed_columns(pd.DataFrame({"day": [0, 1, 2], "cases": cases}), parsed)
    # a row with neither a key nor a value (a line of empty fields) holds no observation to lose: not refused as
    # a value with an empty key
    check_observed_columns(pd.DataFrame({"day": [0, 1, math.nan], "cases": [2.0, 2.5, math.nan]}), parsed)


def test_observed_counts_in_an_object_column_are_numbers_and_a_word_is_named_before_a_number_as_text():
    parsed = parse_targets([{"name": "cases", "function": "simcal.targets:poisson_nll", "column": "cases"}])
    check_observed_columns(pd.DataFrame({"day": [0, 1], "cases": pd.Series([1, 2], dtype=object)}), parsed)
    with pytest.raises(ContractError, match=r"must hold numbers; found 'x' at day 2$"):
        check_observed_columns(pd.DataFrame({"day": [0, 1, 2], "cases": ["1", "2", "x"]}), parsed)


@pytest.mark.parametrize("blank_lines", [1, 2, 3])
def test_any_number_of_lines_of_empty_fields_in_the_observed_data_is_left_out_alike(tmp_path, blank_lines):
    """A CSV's trailing ``,`` lines hold neither a key nor a value: one or several are left out the same way (two
    were refused as rows sharing "day nan"), by the up-front check and by the target itself."""
    path = tmp_path / "observed.csv"
    path.write_text("day,cases\n0,1\n1,2\n" + ",\n" * blank_lines)
    observed = pd.read_csv(path)
    assert len(observed) == 2 + blank_lines
    check_observed_columns(
        observed,
        parse_targets([{"name": "c", "function": "simcal.targets:replicate_mean_mse", "column": "cases"}]),
    )
    simulated = pd.DataFrame({"replicate": [0, 0], "day": [0, 1], "cases": [2.0, 2.0]})
    assert targets.replicate_mean_mse(simulated, observed, "cases") == pytest.approx(0.5)  # (1 + 0) / 2


def test_a_target_called_directly_names_repeated_observed_keys():
    simulated = pd.DataFrame({"replicate": [0, 0], "day": [0, 1], "cases": [1.0, 2.0]})
    observed = pd.DataFrame({"day": [0, 0, 1], "cases": [1, 2, 3]})
    with pytest.raises(
        ValueError, match=r"observed data have 2 rows that share their day \(first at day 0\)"
    ):
        targets.replicate_mean_mse(simulated, observed, "cases")


def test_analyze_refuses_a_top_k_below_one():
    trials = pd.DataFrame(
        {"trial": [0], "round": [0], "phase": ["design"], "param_id": ["a"], "beta": [0.1], "loss": [1.0]}
    )
    with pytest.raises(ContractError, match=r"top_k must be an integer >= 1, got 0"):
        analyze(trials, ["beta"], 0)


def test_submit_names_a_nan_parameter_as_submitted():
    with pytest.raises(ContractError, match=r"^submit\(params\): parameter 'beta' is nan"):
        api.submit(SIR, {"beta": math.nan, "gamma": 0.1}, client=object())


@pytest.mark.parametrize(
    "keywords, message",
    [
        ({"seed": -1}, r"^submit: seed must be a whole number >= 0, got -1$"),
        ({"seed": 1.5}, r"^submit: seed must be a whole number >= 0, got 1.5$"),
        ({"replicate": -1}, r"^submit: replicate must be a whole number >= 0, got -1$"),
        ({"replicate": True}, r"^submit: replicate must be a whole number >= 0, got True$"),
        # 2**64 failed only as the simulation's row ('cannot be stored: OverflowError'); 2**32 ran, unlike in a sweep
        (
            {"seed": 2**32},
            r"^submit: seed must be below 2\*\*32 \(as every seed of a sweep is\), got 4294967296$",
        ),
        ({"seed": 2.0**64}, r"^submit: seed must be below 2\*\*32 .*got 1.8446744073709552e\+19$"),
    ],
)
def test_submit_refuses_a_negative_or_fractional_seed_or_replicate(keywords, message):
    with pytest.raises(ContractError, match=message):
        api.submit(SIR, {"beta": 0.3, "gamma": 0.1}, client=object(), **keywords)


class _Client:
    def submit(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("replicate", [2**63, 2**64, 2.0**63])
def test_submit_refuses_a_replicate_the_int64_replicate_column_cannot_hold(replicate):
    """2**63 ran and came back as a uint64 column, 2**64 ran and then gather raised pyarrow's OverflowError, losing
    the rows of every simulation gathered with it: refused at submit, before anything runs, naming the range."""
    with pytest.raises(
        ContractError,
        match=rf"^submit: replicate must be a whole number from 0 to 2\*\*63 - 1 \(the rows' replicate column is "
        rf"int64\), got {re.escape(repr(replicate))}$",
    ):
        api.submit(SIR, {"beta": 0.3, "gamma": 0.1}, client=_Client(), replicate=replicate)


def test_submit_takes_the_largest_replicate_the_int64_replicate_column_holds():
    future = api.submit(SIR, {"beta": 0.3, "gamma": 0.1}, client=_Client(), replicate=2**63 - 1)
    assert future.task.replicate == 2**63 - 1


@pytest.mark.parametrize("keywords", [{"seed": 7.0}, {"seed": np.float64(7.0)}, {"replicate": 2.0}])
def test_submit_takes_a_whole_number_written_as_a_float(keywords):
    future = api.submit(SIR, {"beta": 0.3, "gamma": 0.1}, client=_Client(), **keywords)
    assert (future.task.seed == 7) if "seed" in keywords else (future.task.replicate == 2)


def test_the_mse_targets_leave_out_a_missing_observation_and_the_likelihoods_refuse_it():
    simulated = pd.DataFrame({"replicate": [0, 0, 1, 1], "day": [0, 1, 0, 1], "cases": [1.0, 5.0, 3.0, 7.0]})
    observed = pd.DataFrame({"day": [0, 1], "cases": [2.0, math.nan]})
    assert targets.replicate_mean_mse(simulated, observed, "cases") == 0.0  # day 0 only: mean 2 against 2
    assert targets.mean_replicate_mse(simulated, observed, "cases") == 1.0  # (1 - 2)² and (3 - 2)²
    with pytest.raises(ValueError, match=r"must hold counts .* found nan at day 1"):
        targets.poisson_nll(simulated, observed, "cases")


@pytest.mark.parametrize("function", ["poisson_nll", "negbin_nll"])
def test_a_simulated_series_that_stops_early_or_turns_nan_at_an_observed_day_has_no_likelihood(function):
    """A likelihood is a sum over the observed days: over fewer days it was smaller than the true fit's over all
    of them (the Poisson NLL of a series stopped after 4 of 10 days was 5.6 against 14.9 for an exact fit), so the
    calibration steered towards parameter sets whose simulation stopped early or returned NaN. Such a set now gets
    NaN, a failed trial."""
    target = getattr(targets, function)
    observed = pd.DataFrame({"day": range(10), "cases": list(range(10))})

    def simulated(stop_second_at=10, nan_day=None, days=10):
        frame = pd.DataFrame(
            [{"replicate": r, "day": d, "cases": 2.0 * d} for r in (0, 1) for d in range(days)]
        )
        frame = frame[(frame["replicate"] == 0) | (frame["day"] < stop_second_at)].copy()
        frame.loc[(frame["replicate"] == 1) & (frame["day"] == nan_day), "cases"] = math.nan
        return frame

    full = target(simulated(), observed, "cases")
    assert math.isfinite(full)
    assert target(simulated(days=15), observed, "cases") == full  # simulated days beyond the observed ones
    assert math.isnan(target(simulated(stop_second_at=4), observed, "cases"))
    assert math.isnan(target(simulated(nan_day=5), observed, "cases"))
    stopped = simulated(days=4).assign(cases=lambda f: f["day"].astype(float))  # exact on the days it has
    assert math.isnan(target(stopped, observed, "cases"))


@pytest.mark.parametrize(
    "function", ["replicate_mean_mse", "mean_replicate_mse", "poisson_nll", "negbin_nll"]
)
def test_a_target_names_simulated_rows_that_repeat_a_day_within_a_replicate(function):
    """A model returning a row per age group under the same day was scored on the groups' mean (or on twice the
    days), silently, against one observed value per day."""
    simulated = pd.DataFrame(
        {"replicate": [0] * 4 + [1] * 4, "day": [0, 0, 1, 1] * 2, "age": ["young", "old"] * 4, "cases": 1.0}
    )
    observed = pd.DataFrame({"day": [0, 1], "cases": [2, 2]})
    with pytest.raises(
        ValueError,
        match=r"^simulated data have 8 rows that share their replicate and day \(first at \['replicate', 'day'\] "
        r"\[0, 0\]\); .* add the column that tells them apart to on",
    ):
        getattr(targets, function)(simulated, observed, "cases")
    by_age = pd.DataFrame({"day": [0, 0, 1, 1], "age": ["young", "old"] * 2, "cases": 1})
    assert getattr(targets, function)(simulated, by_age, "cases", on=["day", "age"]) >= 0.0


@pytest.mark.parametrize(
    "targets_spec, message",
    [
        (
            {"function": "simcal.targets:poisson_nll"},
            r"calibration.targets: expected a list of .*got \{'function'",
        ),
        (
            "simcal.targets:poisson_nll",
            r"calibration.targets: expected a list of .*got 'simcal.targets:poisson_nll'",
        ),
        (
            [{"function": "simcal.targets:poisson_nll", "column": "y", "weight": -1}],
            r"targets\[0\].weight: .*>= 0",
        ),
        (
            [{"function": "simcal.targets:poisson_nll", "column": "y", "weight": math.inf}],
            r"targets\[0\].weight",
        ),
        (  # every total would be 0: the whole budget spent on a constant
            [{"function": "simcal.targets:poisson_nll", "column": "y", "weight": 0}] * 2,
            r"calibration.targets: every weight is 0; at least one target needs a weight > 0",
        ),
    ],
)
def test_targets_that_are_not_a_list_or_weigh_against_the_fit_are_named(targets_spec, message):
    """One target written without its list is named as such (not as its first key or letter); a negative weight
    would have the calibration minimise towards a worse fit of that target. Weight 0 is allowed beside a weighted
    target (recorded, not scored)."""
    with pytest.raises(ContractError, match=message):
        parse_targets(targets_spec)
    scored = {"name": "fit", "function": "simcal.targets:poisson_nll", "column": "y"}
    watched = {"name": "watch", "function": "simcal.targets:poisson_nll", "column": "y", "weight": 0}
    assert [t.weight for t in parse_targets([scored, watched])] == [1.0, 0.0]


@pytest.mark.parametrize(
    "parameters, message",
    [
        (
            {"a": {"low": 1, "high": 2, "log": "false"}},
            r"parameters.a.log: expected true or false, got 'false'",
        ),
        (
            {"a": {"low": 0, "high": 5, "integer": "no"}},
            r"parameters.a.integer: expected true or false, got 'no'",
        ),
        ({"a": {"low": 0.5, "high": 0.5}}, r"parameters.a: need low < high .*got 0.5, 0.5"),
        (
            {"a": {"low": 0, "high": 1, "log": True}},
            r"parameters.a: need .*low > 0 when log: true\), got 0.0, 1.0",
        ),
        (
            [{"a": {"low": 0, "high": 1}}],
            r"calibration.parameters: expected \{name: \{low: number, high: number\}",
        ),
    ],
)
def test_bound_flags_must_be_booleans_and_the_parameters_a_mapping(parameters, message):
    """bool('false') is True: the text would have put the parameter on a log scale without a word."""
    with pytest.raises(ContractError, match=message):
        parse_bounds(parameters)
    assert parse_bounds({"a": {"low": 1, "high": 2, "log": np.bool_(False)}})[0].log is False


@pytest.mark.parametrize(
    ("parameters", "where", "message"),
    [
        (
            {"days": {"low": 30, "high": 30, "integer": True}},
            "calibration.parameters",
            "calibration.parameters.days: need low < high (and low > 0 when log: true), got 30.0, 30.0; "
            "a parameter held at one value belongs in calibration.fixed: {days: 30}",
        ),
        (
            {"beta": {"low": 0.25, "high": 0.25}},
            "calibration.parameters",
            "calibration.parameters.beta: need low < high (and low > 0 when log: true), got 0.25, 0.25; "
            "a parameter held at one value belongs in calibration.fixed: {beta: 0.25}",
        ),
        (  # the sample_design wrapper's params.parameters: fixed is the simulate and calibrate rules' param
            {"days": {"low": 7, "high": 7, "integer": True}},
            "design parameters",
            "design parameters.days: need low < high (and low > 0 when log: true), got 7.0, 7.0; "
            "a parameter held at one value belongs in fixed: {days: 7}",
        ),
        (  # low above high is a mistake in the bounds, not a fixed value: no hint
            {"days": {"low": 9, "high": 3, "integer": True}},
            "calibration.parameters",
            "calibration.parameters.days: need low < high (and low > 0 when log: true), got 9.0, 3.0",
        ),
    ],
)
def test_a_parameter_with_low_equal_to_high_is_told_it_belongs_in_fixed(parameters, where, message):
    """Before, an integer parameter at one value (low 30, high 30) got "need low < high" alone, which reads as
    though a range were wanted: a value held fixed belongs in fixed (calibration.fixed)."""
    with pytest.raises(ContractError) as refused:
        parse_bounds(parameters, where)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    "design", [parse_bounds, lambda parameters: sample_design(parameters, 4)], ids=["bounds", "design"]
)
def test_a_bound_with_a_key_of_another_name_is_refused_naming_it(design):
    """A misspelt flag ('lgo' for 'log') would sample the parameter on a linear scale without a word: only low,
    high, log and integer are taken."""
    with pytest.raises(
        ContractError,
        match=r"parameters.gamma: expected \{low: number, high: number, log: bool, integer: bool\}, "
        r"got \{'low': 0.01, 'high': 1.0, 'lgo': True\}",
    ):
        design({"gamma": {"low": 0.01, "high": 1.0, "lgo": True}})


def test_a_parameter_the_model_declares_as_a_choice_cannot_be_given_bounds():
    """Only numbers are calibrated or sampled: a Choice of the numbers 1, 2, 3 given bounds 1..3 would be sampled
    as 2.37 and the like, every one of them refused by the model. The error says to fix it instead."""
    space = ParameterSpace(level=Choice(options=(1, 2, 3)), rate=Real(low=0.0))
    with pytest.raises(
        ContractError,
        match=r"^calibration.parameters.level: the model declares it as a choice \(one of \[1, 2, 3\], required\); "
        r"only numbers can be calibrated or sampled: set it in fixed instead$",
    ):
        parse_bounds({"rate": {"low": 0.1, "high": 0.5}, "level": {"low": 1, "high": 3}}, space=space)


def test_a_choice_of_flags_refuses_1_and_0_and_a_choice_of_numbers_refuses_true_and_false():
    """Python's 1 == True let a CSV's 1/0 through a Choice of True/False (the model got 1, and `is True` was False),
    and True/False through a Choice of the numbers 0/1, without a word."""
    space = ParameterSpace(
        vaccinate=Choice(default=False, options=(True, False)), level=Choice(options=(0, 1, 2))
    )
    for value in (1, 0, 1.0, np.int64(1)):
        with pytest.raises(
            ContractError,
            match=rf"^here: parameter 'vaccinate' = {re.escape(repr(value))} is not one of \[True, False\]",
        ):
            space.check_values({"vaccinate": value}, "here")
    for value in (True, np.bool_(False)):
        with pytest.raises(
            ContractError,
            match=rf"^here: parameter 'level' = {re.escape(repr(value))} is not one of \[0, 1, 2\]",
        ):
            space.check_values({"level": value}, "here")
    space.check(
        {"vaccinate": np.bool_(True), "level": 1}, "here"
    )  # a flag is a flag, a number a number (1.0 too)
    space.check({"vaccinate": False, "level": 2.0}, "here")


@pytest.mark.parametrize(
    "spec, message",
    [
        (Real(low=1.0, high=0.5), r"parameter 'x': low 1.0 is above high 0.5"),
        (Integer(low=math.nan), r"parameter 'x': low must be a number or None, got nan"),
        (Real(high="1"), r"parameter 'x': high must be a number or None, got '1'"),
        (Real(low=True), r"parameter 'x': low must be a number or None, got True"),
        (Choice(options=()), r"parameter 'x': a Choice needs at least one option"),
    ],
)
def test_a_declared_space_with_bounds_that_bound_nothing_or_everything_is_refused(spec, message):
    """Refused where the model declares it: a NaN bound would let every value through, low > high would refuse
    every value (blaming the value), a text bound would fail with a TypeError at the first check."""
    with pytest.raises(ValueError, match=message):
        ParameterSpace(x=spec)
    ParameterSpace(x=Real(low=0.5, high=0.5, default=0.5), n=Integer(low=-math.inf))


@pytest.mark.parametrize(
    "value, message",
    [
        (1.5, r"'x' = 1.5 is above its upper bound 1.0 \(real in \[0.0, 1.0\], required\)"),
        (-0.5, r"'x' = -0.5 is below its lower bound 0.0"),
        (math.inf, r"'x' = inf is not finite"),
        (math.nan, r"'x' = nan is not finite"),
        (True, r"'x' = True is not a number"),
    ],
)
def test_a_declared_space_refuses_values_outside_its_bounds_naming_the_parameter(value, message):
    """Every bound of a declared parameter holds, the upper one too (the SIR model declares none), and a value
    that is no finite number is refused rather than compared with the bounds (NaN would pass both)."""
    space = ParameterSpace(x=Real(low=0.0, high=1.0))
    with pytest.raises(ContractError, match=rf"^the sets, set 3: parameter {message}"):
        space.check({"x": value}, "the sets, set 3")
    space.check({"x": 1.0}, "the sets, set 3")  # the bounds are inclusive
    with pytest.raises(
        ContractError, match=r"calibration.parameters.x: bound 2.0 is above its upper bound 1.0"
    ):
        parse_bounds({"x": {"low": 0.5, "high": 2.0}}, space=space)


@pytest.mark.parametrize(
    "function, options, observed, message",
    [
        ("negbin_nll", {"dispersion": math.inf}, None, r"dispersion must be a finite number > 0, got inf"),
        ("negbin_nll", {"dispersion": "ten"}, None, r"dispersion must be a finite number > 0, got 'ten'"),
        ("poisson_nll", {"min_mean": math.nan}, None, r"min_mean must be a finite number >= 0, got nan"),
        # a bool is no number (True would be a dispersion of 1, False a floor of 0), as a parameter's is not
        ("negbin_nll", {"dispersion": True}, None, r"dispersion must be a finite number > 0, got True"),
        ("poisson_nll", {"min_mean": False}, None, r"min_mean must be a finite number >= 0, got False"),
        (
            "replicate_mean_mse",
            {},
            {"day": [0, 1], "cases": [math.nan] * 2},
            r"'cases' has no .*all 2 are missing",
        ),
        (
            "poisson_nll",
            {},
            {"day": [], "cases": []},
            r"'cases' has no values .*the observed data have no rows",
        ),
        # these failed as a bare KeyError: 'day' and 'not enough values to unpack', naming no target
        ("replicate_mean_mse", {"on": "cases"}, {"day": [0, 1], "cases": [1, 2]}, r"on must name the key"),
        ("poisson_nll", {"on": []}, {"day": [0, 1], "cases": [1, 2]}, r"other than .* 'cases'; got \[\]"),
    ],
)
def test_target_options_and_observed_data_that_give_every_set_a_nan_loss_are_refused_before_anything_runs(
    function, options, observed, message
):
    """Each of these made every loss NaN (or failed only after round 0): the whole budget spent on nothing."""
    parsed = parse_targets(
        [{"name": "cases", "function": f"simcal.targets:{function}", "column": "cases", **options}]
    )
    frame = pd.DataFrame(observed or {"day": [0, 1], "cases": [1, 2]})
    with pytest.raises(ContractError, match=rf"^calibration target 'cases': observed data: .*{message}"):
        check_observed_columns(frame, parsed)
    if observed is None:  # a bad option also fails in the target itself, named, not as NaN or a float() error
        simulated = pd.DataFrame({"replicate": [0, 0], "day": [0, 1], "cases": [1.0, 2.0]})
        with pytest.raises(ValueError, match=message):
            getattr(targets, function)(simulated, frame, "cases", **options)


@pytest.mark.parametrize(
    "simulated, observed, named",
    [
        ("cases", "incidence", r"simulations.parquet: the simulations have no column\(s\) \['incidence'\]"),
        ("incidence", "cases", r"observed.csv: the observed data have no column\(s\) \['incidence'\]"),
    ],
)
def test_the_calibration_page_names_a_plot_column_the_outputs_or_the_observed_data_lack(
    tmp_path, simulated, observed, named
):
    """plot.column defaults to the SIR model's incidence: for another model the page named neither the file nor
    the setting (the simulations' side failed inside Arrow, listing the file's schema)."""
    paths = one_trial_calibration_files(
        tmp_path, outputs={simulated: [1.0, 2.0]}, observed={observed: [1, 2]}
    )
    with pytest.raises(ContractError, match=rf"{named} to plot; set plot.column and plot.on"):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta"], tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def test_a_plot_column_of_text_is_named_with_its_file_on_both_pages(tmp_path):
    """A model that outputs a label (a phase name, say) picked as plot.column: both pages failed inside pandas
    ("dtype 'str' does not support operation 'mean'"), naming neither the file, the column nor the setting."""
    phases = {"phase": ["rise", "fall"]}
    paths = one_trial_calibration_files(tmp_path, outputs=phases, observed={"phase": [1, 2]})
    said = r"simulations.parquet: plot.column 'phase' of the simulations holds str values, not numbers"
    with pytest.raises(ContractError, match=said):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta"], tmp_path / "page.html",
                  column="phase")  # fmt: skip
    sweep = one_set_sweep_files(tmp_path, outputs=phases)
    with pytest.raises(ContractError, match=said):
        visualize_sweep(*sweep, ["beta"], tmp_path / "sweep.html", column="phase", on="day")
    assert not (tmp_path / "page.html").exists() and not (tmp_path / "sweep.html").exists()


def test_an_observed_plot_column_of_text_is_named_with_the_observed_file(tmp_path):
    """The observed side of plot.column holding text ("pending" for a week not yet reported) while the model's
    output holds numbers: the page is refused naming the observed file and the setting, not drawn with text on
    the y axis."""
    paths = one_trial_calibration_files(tmp_path, observed={"incidence": ["3", "pending"]})
    with pytest.raises(
        ContractError,
        match=r"observed.csv: plot.column 'incidence' of the observed data holds \w+ values, not numbers; set "
        r"plot.column to a numeric output",
    ):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta"], tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def test_a_parameter_name_missing_from_the_best_parameters_is_named_with_the_best_file(tmp_path):
    """parameter_names naming a column of the trials that best.json has no value for (a best.json of another
    analysis): named with best.json, not a KeyError from inside the loss picture."""
    paths = one_trial_calibration_files(tmp_path, {"beta": 0.3, "gamma": 0.1})
    with pytest.raises(
        ContractError,
        match=r"best.json: parameter_names \['gamma'\] are not columns of the best parameters; it has \['beta'\]",
    ):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta", "gamma"],
                  tmp_path / "page.html")  # fmt: skip
    assert not (tmp_path / "page.html").exists()


def test_a_series_picture_asked_for_without_a_column_to_draw_names_the_settings(tmp_path):
    """visualize_sweep with column null (no series) but a series PNG among the outputs said only "no picture
    named 'series'", after drawing everything, naming neither the path nor the settings that left it out."""
    sweep = one_set_sweep_files(tmp_path, replicates_ok=1)
    with pytest.raises(ContractError, match=r"the series picture \(.*series.png\) was asked for, but column=None "
                       r"and on='day' name no series to draw; set both, or drop the series output"):  # fmt: skip
        visualize_sweep(
            *sweep, ["beta"], tmp_path / "sweep.html", {"series": tmp_path / "series.png"}, column=None
        )
    assert not (tmp_path / "sweep.html").exists()


@pytest.mark.parametrize(
    ("names", "named"),
    [
        (["gama"], r"parameter_names \['gama'\] are not columns of the (trials|sweep table); it has \["),
        (
            3,
            r"parameter_names: expected a list of parameter names, got int 3",
        ),  # YAML's 3 ('beta' is one name)
        ([], r"parameter_names: the list is empty"),
    ],
    ids=["misspelt", "a-number", "empty"],
)
def test_parameter_names_that_are_no_columns_or_no_list_are_named_on_both_pages(tmp_path, names, named):
    """Both pages failed inside pandas or matplotlib: KeyError 'gama', TypeError for a number, 'Number of columns
    must be a positive integer, not 0', naming neither the file nor the setting. (One name given as a string is
    one name: test_one_parameter_name_given_as_a_string_is_one_name.)"""
    paths = one_trial_calibration_files(tmp_path)
    sweep = one_set_sweep_files(tmp_path, replicates_ok=1)
    with pytest.raises(ContractError, match=named):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", names, tmp_path / "page.html")
    with pytest.raises(ContractError, match=named):
        visualize_sweep(*sweep, names, tmp_path / "sweep.html")
    assert not (tmp_path / "page.html").exists() and not (tmp_path / "sweep.html").exists()


@pytest.mark.parametrize("name", ["outputs.svg", "outputs.PDF", "outputs"])
def test_a_picture_output_not_named_png_is_refused_before_anything_is_written(tmp_path, name):
    """visualize_sweep's and visualize_calibration's picture outputs named .svg (as evaluate_detector's are) got
    PNG bytes under that name, which a report or an SVG viewer shows broken: refused naming the file."""
    sweep = one_set_sweep_files(tmp_path, replicates_ok=1, incidence_mean_mean=1.5)
    picture = tmp_path / name
    expected = re.escape(f"{picture}: the outputs picture is written as PNG: name the output *.png")
    with pytest.raises(ContractError, match=f"^{expected}$"):
        visualize_sweep(*sweep, ["beta"], tmp_path / "sweep.html", {"outputs": picture})
    paths = one_trial_calibration_files(tmp_path)
    expected = re.escape(f"{tmp_path / 'fit.svg'}: the fit picture is written as PNG: name the output *.png")
    with pytest.raises(ContractError, match=f"^{expected}$"):
        visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", ["beta"], tmp_path / "page.html",
                  {"fit": tmp_path / "fit.svg"})  # fmt: skip
    assert not picture.exists() and not (tmp_path / "fit.svg").exists()
    assert not (tmp_path / "sweep.html").exists() and not (tmp_path / "page.html").exists()


@pytest.mark.parametrize("kind", ["sobol", "lhs", "random"])
def test_a_design_too_large_for_memory_is_refused_naming_n_before_anything_is_allocated(tmp_path, kind):
    """n = 2**40 of two parameters (32 TiB with the table) was numpy's MemoryError 'Unable to allocate 16.0 TiB',
    naming no param; the estimate n x parameters x 8 bytes, twice, is held to the memory the process can have."""
    parameters = {"beta": {"low": 0.1, "high": 0.5}, "gamma": {"low": 0.05, "high": 0.2}}
    with pytest.raises(
        ContractError,
        match=rf"^design parameters: the number of parameter sets n = {2**40} (does not fit in memory: "
        rf"{2**40} x 2 parameter\(s\) x 8 bytes, held twice while drawn, is 3.2\de\+04 GiB|is more than a Sobol)",
    ):
        write_design(parameters, 2**40, tmp_path / "design.csv", kind)
    assert not (tmp_path / "design.csv").exists()


def test_a_design_is_held_to_the_memory_limit_the_process_has_and_a_sobol_one_to_2_to_the_30(monkeypatch):
    """The limit is the least of the machine's memory, the cgroup's and `ulimit -v` (simcal.design.memory_limit);
    a design under it is drawn. scipy's Sobol engine allocated n points and only then said 'At most 2**30'."""
    import simcal.design as design

    parameters = {"x": {"low": 0, "high": 1}, "y": {"low": 0, "high": 1}}
    monkeypatch.setattr(design, "memory_limit", lambda: 2 * 1000 * 2 * 8)  # exactly 1000 points of two
    assert len(sample_design(parameters, 1000, "lhs")) == 1000
    with pytest.raises(ContractError, match=r"n = 1001 does not fit in memory: .* at most 2.98e-05 GiB"):
        sample_design(parameters, 1001, "lhs")
    monkeypatch.setattr(design, "memory_limit", lambda: None)  # unknown: not refused for memory
    with pytest.raises(ContractError, match=rf"n = {2**30 + 1} is more than a Sobol design draws \(2\*\*30"):
        sample_design(parameters, 2**30 + 1, "sobol")
    monkeypatch.undo()
    machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < design.memory_limit() <= machine


@pytest.mark.parametrize(
    "run, settings, named",
    [
        (
            "sweep",
            {"replicates": 10**12},
            rf"simulation settings: replicates = {10**12} x 2 parameter set\(s\)",
        ),
        (
            "calibration",
            {"simulation": {"replicates": 10**12}, "settings": {"refine": {"top_k": 0}}},
            rf"simulation.replicates = {10**12} x 32 ",
        ),
        (
            "calibration",
            {"settings": {"refine": {"top_k": 8, "replicates": 10**12}}},
            rf"calibration.calibrate.refine.replicates = {10**12} x 8 parameter set\(s\) is {8 * 10**12} ",
        ),
    ],
)
def test_replicates_whose_plan_cannot_fit_in_memory_are_refused_before_a_cluster_starts(
    tmp_path, run, settings, named
):
    """replicates 10**12 planned seeds for hours (simcal.tasks.plan_tasks) and would then have died of a
    MemoryError naming no setting; a refine step's replicates only when its round came, after every other round."""
    table = tmp_path / "params.csv"
    table.write_text("beta,gamma\n0.2,0.1\n0.3,0.1\n")
    with pytest.raises(ContractError, match=rf"^{named}.* GiB this process can have .*give fewer replicates"):
        if run == "sweep":
            simulate(SIR, table, tmp_path / "out.parquet", settings=settings)
        else:
            calibrate(
                SIR, pd.DataFrame({"day": [1], "incidence": [3]}), {"beta": {"low": 0.1, "high": 0.6}},
                [{"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence", "on": "day"}],
                tmp_path / "out.parquet", tmp_path / "trials.parquet", fixed_params={"gamma": 0.1}, **settings,
            )  # fmt: skip
    assert sorted(path.name for path in tmp_path.iterdir()) == ["params.csv"]


def test_a_plan_is_held_to_the_memory_the_process_has_at_100_bytes_a_simulation(monkeypatch):
    import simcal.tasks as tasks

    monkeypatch.setattr(tasks, "memory_limit", lambda: 100 * 6)  # six simulations' plan
    sets = [{"beta": 0.2, "gamma": 0.1}, {"beta": 0.3, "gamma": 0.1}]
    assert len(tasks.plan_tasks(sets, 3)) == 6
    with pytest.raises(
        ContractError, match=r"^simulation settings: replicates = 4 x 2 parameter set\(s\) is 8 "
    ):
        tasks.plan_tasks(sets, 4)
    # two rows of one parameter set are one set (merged before the plan is judged)
    assert len(tasks.plan_tasks([sets[0], sets[0]], 6)) == 6


@pytest.mark.parametrize(
    "options, named",
    [
        (
            {"column": ["incidence"]},
            r"option column must name one column \(a non-empty string\), got \['incidence'\]",
        ),
        ({"column": 3}, r"option column must name one column \(a non-empty string\), got 3"),
        ({"on": None}, r"option on must name a key column or a list of them \(non-empty strings\), got None"),
        ({"on": ["day", 1]}, r"option on must name a key column or a list of them .*got \['day', 1\]"),
        ({"on": ["day", "day"]}, r"option on names \['day'\] more than once; give each key column once"),
    ],
)
@pytest.mark.parametrize("function", ["simcal.targets:poisson_nll", "simcal.targets:replicate_mean_mse"])
def test_a_targets_column_or_on_of_another_shape_is_named_before_the_design_runs(options, named, function):
    """A list as column was 'TypeError: unhashable type: list' and null as on 'NoneType object is not iterable',
    naming no target (a wrapper's traceback, as for a bug); on: [day, day] was taken."""
    observed = pd.DataFrame({"day": [0, 1, 2], "incidence": [1, 2, 3]})
    parsed = parse_targets(
        [{"name": "cases", "function": function, "column": "incidence", "on": "day", **options}]
    )
    with pytest.raises(ContractError, match=rf"^calibration target 'cases': {named}$"):
        check_observed_columns(observed, parsed)


@pytest.mark.parametrize(
    "params, named",
    [
        ({"title": None}, r"title: expected the page's title as a string, got NoneType None"),
        ({"title": 3}, r"title: expected the page's title as a string, got int 3"),
        (
            {"column": "day", "on": "day"},
            r"plot.column and plot.on are both 'day': a column plotted along itself",
        ),
        ({"parameter_names": ["beta", "beta"]}, r"parameter_names: \['beta'\] given more than once"),
    ],
)
@pytest.mark.parametrize("page", ["calibration", "sweep"])
def test_a_page_title_that_is_no_string_a_column_plotted_along_itself_or_a_name_given_twice_is_named(
    tmp_path, params, named, page
):
    """A title of null or a number was "AttributeError: 'NoneType' object has no attribute 'replace'" (a
    wrapper's traceback, as for a bug); column == on failed inside pandas on the calibration page and drew y = x
    on the sweep's; a parameter name given twice was drawn twice."""
    params = {"parameter_names": ["beta"], **params}
    with pytest.raises(ContractError, match=rf"^{named}"):
        if page == "calibration":
            paths = one_trial_calibration_files(tmp_path)
            visualize(*paths, tmp_path / "best.json", tmp_path / "summary.json", html_path=tmp_path / "page.html",
                      **params)  # fmt: skip
        else:
            visualize_sweep(*one_set_sweep_files(tmp_path), html_path=tmp_path / "page.html", **params)
    assert not (tmp_path / "page.html").exists()
