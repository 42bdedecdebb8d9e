"""The calibration config's references and observed data, checked by the library (simcal.config_checks) while the
calibration module is parsed: each mistake a job would meet later is one line naming the dotted key, and what the
Snakemake process cannot judge (a module that does not import there) is left to the job, whose message names the
key too. The dry runs that show the module calling these checks are in test_config_validation.py."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from testkit import REPO, run_snakemake

from simcal.calibrate import parse_targets
from simcal.config_checks import (
    check_model,
    check_observed,
    check_parameters,
    check_sweep_columns,
    check_targets,
    importable_function,
)
from simcal.contract import REFERENCE, ContractError, resolve_callable, resolve_model
from simcal.observed import generate_observed

GENERATED = {
    "path": None,
    "generator": "simcal.models.sir:observe",
    "true_params": {"beta": 0.3, "gamma": 0.1},
    "seed": 7,
    "options": {"noise": "poisson"},
}
FIXED = {"population": 10000, "initial_infected": 10, "days": 100}

# A generator module of the lab's own: one without a declared space, one whose import raises, one that exits.
LAB_MODULES = {
    "calobs_lab_generators": (
        "import pandas as pd\n"
        "rate = 0.5\n"
        "def observe(params, seed, scale=1.0):\n"
        "    return pd.DataFrame({'day': [0], 'cases': [1]})\n"
        "def needs_noise(params, seed, noise):\n"
        "    return pd.DataFrame({'day': [0], 'cases': [1]})\n"
    ),
    "calobs_lab_broken": "raise RuntimeError('calibration.csv not found')\n",
    "calobs_lab_exiting": "import sys\nsys.exit('usage: lab.py FILE')\n",
}


@pytest.fixture
def lab_modules(tmp_path, monkeypatch):
    for name, text in LAB_MODULES.items():
        (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))


def _observed(**changes):
    return {**GENERATED, **changes}


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            "simcal.models.sir:observ",
            "calibration.observed.generator: 'simcal.models.sir:observ': module simcal.models.sir has no 'observ' "
            "(did you mean 'observe'?)",
        ),
        (
            "simcal.models.sir:observe.x",
            "calibration.observed.generator: 'simcal.models.sir:observe.x': simcal.models.sir:observe has no 'x'",
        ),
        (
            "calobs_lab_generators:rate",
            "calibration.observed.generator: 'calobs_lab_generators:rate' is a float, not a function; expected a "
            "callable",
        ),
        (
            "simcal.models.sir.observe",
            "calibration.observed.generator: 'simcal.models.sir.observe' must look like 'package.module:function'",
        ),
    ],
)
def test_a_generator_its_module_lacks_is_refused_naming_the_key_and_the_closest_name(
    lab_modules, reference, expected
):
    """The generator got no check while the workflow was parsed: a misspelt one failed only inside the
    generate_observed job."""
    with pytest.raises(ContractError) as error:
        check_observed(_observed(generator=reference))
    assert str(error.value) == expected


def test_the_model_and_the_generator_share_one_check(lab_modules):
    """calibration.model gets the same words from the same code, under its own key."""
    with pytest.raises(ContractError) as error:
        check_model("simcal.models.sir:simulat")
    assert str(error.value) == (
        "calibration.model: 'simcal.models.sir:simulat': module simcal.models.sir has no 'simulat' "
        "(did you mean 'simulate'?)"
    )
    with pytest.raises(ContractError, match=r"^calibration.model: 'calobs_lab_generators:rate' is a float"):
        check_model("calobs_lab_generators:rate")
    assert importable_function("simcal.models.sir:simulate", "calibration.model").__name__ == "simulate"


@pytest.mark.parametrize(
    "reference",
    [
        "simcal.models.sir:simulate:extra",
        "simcal.models.sir:simulate x",
        "simcal.models.sir:simulate.",
        "simcal..models.sir:simulate",
    ],
)
def test_a_reference_other_than_dotted_names_around_one_colon_is_refused_as_of_the_wrong_form(reference):
    """The whole reference must look like 'package.module:function', as the schema's pattern says, not only its
    start: a second colon would fail with Python's 'too many values to unpack', naming no key, a space would be
    looked up in the module as part of the function's name, and an empty name between dots was looked up as ''
    ("simcal.models.sir:simulate has no ''")."""
    with pytest.raises(ContractError) as error:
        check_model(reference)
    assert str(error.value) == f"calibration.model: {reference!r} must look like 'package.module:function'"


def test_the_schema_refuses_the_references_the_library_refuses_with_the_same_pattern():
    """simcal.contract.REFERENCE is the pattern of both "package.module:function" keys of the calibration schema,
    so the dry run and the job refuse the same references."""
    schema = yaml.safe_load((REPO / "workflow/modules/calibration/schemas/config.schema.yaml").read_text())
    calibration = schema["properties"]["calibration"]["properties"]
    patterns = [
        calibration["model"]["pattern"],
        calibration["observed"]["properties"]["generator"]["pattern"],
    ]
    assert patterns == [f"^{REFERENCE.pattern}$"] * 2


# Models of a lab's own, each of a shape a researcher writes: the first five cannot be called as (params, seed), the
# rest can, as Python counts arguments.
LAB_MODEL_SHAPES = """
import functools
def one(params): return {}
def three(params, seed, n): return {}
def keyword_seed(params, *, seed): return {}
class Model:
    def __call__(self, params, seed): return {}
class Needs:
    def __init__(self, config, params, seed): pass
def defaults(params, seed, n=1): return {}
def varargs(*args, **kwargs): return {}
partial = functools.partial(three, n=3)
model = Model()
builtin = max
"""


@pytest.fixture
def lab_model_shapes(tmp_path, monkeypatch):
    (tmp_path / "calmodel_lab_shapes.py").write_text(LAB_MODEL_SHAPES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        ("one", "one(params) cannot be called as one(params, seed), the way every simulation calls a model"),
        ("three", "three(params, seed, n) cannot be called as three(params, seed)"),
        ("keyword_seed", "keyword_seed(params, *, seed) cannot be called as keyword_seed(params, seed)"),
        ("Model", "Model() cannot be called as Model(params, seed)"),
        ("Needs", "Needs(config, params, seed) cannot be called as Needs(params, seed)"),
    ],
)
def test_a_model_that_cannot_take_params_and_seed_is_refused_at_parse_in_the_jobs_words(
    lab_model_shapes, function, expected
):
    """The parse check took any callable: a model 'def f(params)' passed the dry run, and the sweep's job refused it
    (contract.resolve_model) only once it ran. Now the dry run refuses it, under calibration.model, with the
    signature and the expected (params, seed), in the words the job would use after its own prefix."""
    reference = f"calmodel_lab_shapes:{function}"
    with pytest.raises(ContractError) as at_parse:
        check_model(reference)
    with pytest.raises(ContractError) as in_the_job:
        resolve_model(reference)
    message = str(at_parse.value)
    assert message.startswith(f"calibration.model: {reference!r}: {expected}"), message
    assert "expected (params, seed)" in message, message
    job = str(in_the_job.value)
    assert job.startswith(f"model reference {reference!r}: "), job
    assert message.removeprefix(f"calibration.model: {reference!r}: ") == job.removeprefix(
        f"model reference {reference!r}: "
    )
    assert "calibration." not in job, job  # the job's library call names no config key


@pytest.mark.parametrize("function", ["defaults", "varargs", "partial", "model", "builtin"])
def test_models_python_can_call_as_params_and_seed_pass_at_parse(lab_model_shapes, function):
    """Defaults, *args/**kwargs, functools.partial, an instance with __call__, a builtin without a readable
    signature: the parse check refuses none of them, nor the catalog's own model."""
    check_model(f"calmodel_lab_shapes:{function}")
    check_model("simcal.models.sir:simulate")


def test_a_model_that_cannot_take_params_and_seed_stops_the_dry_run_before_any_job(
    lab_model_shapes, tmp_path
):
    """The calibration module's common.smk calls check_model while Snakemake parses: the dry run fails naming the
    key and builds no DAG, where it used to plan every job of a sweep whose simulations would all fail."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(
        yaml.safe_dump(_calibration_only("calmodel_lab_shapes:one", "simcal.models.sir:observe"))
    )
    python_path = os.pathsep.join(filter(None, [str(lab_model_shapes), os.environ.get("PYTHONPATH")]))
    dry = run_snakemake(
        "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(configfile), "--cores", "1",
        env={"PYTHONPATH": python_path}, check=False, timeout=300,
    )  # fmt: skip
    assert dry.returncode != 0, dry.stdout
    assert (
        "calibration.model: 'calmodel_lab_shapes:one': one(params) cannot be called as one(params, seed)"
        in dry.stdout
    ), dry.stdout
    assert "Building DAG of jobs" not in dry.stdout, dry.stdout


@pytest.mark.parametrize(
    "reference",
    [
        "lab_models_only_in_the_jobs_env:observe",  # no such module here
        "calobs_lab_broken:observe",  # its import raises
        "calobs_lab_exiting:observe",  # its import exits
    ],
)
def test_a_reference_whose_module_does_not_import_here_is_left_to_the_job(lab_modules, reference):
    """The module may import only in the jobs' environment (a conda env, a container): nothing is refused, not
    even options and true parameters only its signature or declared space could judge."""
    assert importable_function(reference, "calibration.model") is None
    check_model(reference)
    check_observed(_observed(generator=reference, options={"anything": 1}, true_params={"whatever": 2.0}))


@pytest.mark.parametrize(
    ("what", "reference", "key"),
    [
        ("model", "lab_models_only_in_the_jobs_env:simulate", "calibration.model"),
        ("model", "calobs_lab_broken:simulate", "calibration.model"),
        ("observed-data generator", "calobs_lab_exiting:observe", "calibration.observed.generator"),
    ],
)
def test_the_jobs_message_for_a_module_that_does_not_import_names_the_config_key(
    lab_modules, what, reference, key
):
    """The parse-time check stays silent for these, so the job's message is the first the researcher sees."""
    with pytest.raises(ContractError) as error:
        resolve_callable(reference, what=what)
    message = str(error.value)
    assert message.startswith(f"{what} reference {reference!r}: "), message
    assert message.endswith(
        f"; in the calibration workflow {key} names it, and its module must import where the jobs run"
    ), message


def test_a_reference_the_calibration_config_does_not_set_names_no_config_key(lab_modules):
    """A simulation service's fn_ref (simcal serve) is no key of the calibration workflow."""
    with pytest.raises(ContractError) as error:
        resolve_callable("lab_models_only_in_the_jobs_env:simulate", what="fn_ref")
    assert "calibration." not in str(error.value)


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        # an option the generator's signature does not take
        (
            {"options": {"nois": "poisson"}},
            "calibration.observed.options: simcal.models.sir:observe has no option 'nois' (did you mean 'noise'?); "
            "its options are ['noise', 'dispersion', 'process']",
        ),
        (
            {"generator": "calobs_lab_generators:needs_noise", "options": {}},
            "calibration.observed.options: calobs_lab_generators:needs_noise cannot take the options []: missing a "
            "required argument: 'noise'",
        ),
        # a true parameter the generator's declared space does not have, or a value outside its bounds
        (
            {"true_params": {"beta": 0.3, "gama": 0.1}},
            "calibration.observed.true_params, the true parameters: 'gama' is not a parameter of "
            "simcal.models.sir:observe (did you mean 'gamma'?)",
        ),
        (
            {"true_params": {"beta": -0.3, "gamma": 0.1}},
            "calibration.observed.true_params, the true parameters: parameter 'beta' = -0.3 is below its lower bound",
        ),
        # values no generator can use, judged without it
        (
            {"generator": "lab_models_only_in_the_jobs_env:observe", "true_params": {"beta": None}},
            "calibration.observed.true_params: parameter 'beta' has no value (null); every parameter needs a value",
        ),
        (
            {"generator": "lab_models_only_in_the_jobs_env:observe", "true_params": {"beta": float("nan")}},
            "calibration.observed.true_params: parameter 'beta' is nan: parameter values must be finite",
        ),
    ],
)
def test_what_the_generate_observed_job_would_refuse_is_refused_naming_the_dotted_key(
    lab_modules, changes, expected
):
    with pytest.raises(ContractError) as error:
        check_observed(_observed(**changes))
    assert str(error.value).startswith(expected), str(error.value)


@pytest.mark.parametrize(
    "changes",
    [{"options": {"nois": "poisson"}}, {"true_params": {"beta": 0.3, "gama": 0.1}}],
    ids=["option", "true-parameter"],
)
def test_the_job_refuses_the_same_settings_with_the_same_words(tmp_path, changes):
    """One check (observed.check_generation) serves the parse and the generate_observed job, which names the
    observed section without its module's name, as it did before."""
    output = tmp_path / "observed.csv"
    settings = _observed(**changes)
    with pytest.raises(ContractError) as at_parse:
        check_observed(settings)
    with pytest.raises(ContractError) as in_job:
        generate_observed(
            settings["generator"], settings["true_params"], output, options=settings["options"], fixed=FIXED
        )
    assert str(at_parse.value) == "calibration." + str(in_job.value)
    assert not output.exists()


def test_the_calibrations_fixed_values_are_left_to_the_job_that_calls_the_generator(tmp_path):
    """calibration.fixed serves the sweep too, which never calls the generator: a sweep of a lab model with a
    fixed value the default generator does not take (test_slurm_dask.py's delay_s) must still parse. So must true
    parameters that leave a required one to the fixed values. The generate_observed job still refuses both."""
    check_observed(GENERATED)
    check_observed(_observed(true_params={"beta": 0.3}))
    output = tmp_path / "observed.csv"
    with pytest.raises(
        ContractError, match=r"^calibration.fixed: 'delay_s' is not a parameter of simcal.models"
    ):
        generate_observed(
            "simcal.models.sir:observe", GENERATED["true_params"], output, fixed={"delay_s": 0.2}
        )
    with pytest.raises(
        ContractError, match=r"required parameter\(s\) \['gamma'\] of simcal.models.sir:observe"
    ):
        generate_observed("simcal.models.sir:observe", {"beta": 0.3}, output, fixed=FIXED)
    assert not output.exists()


def test_settings_the_generator_takes_pass_whether_or_not_it_declares_a_space(lab_modules):
    check_observed(GENERATED)
    # no declared space: any true parameter is the generator's to judge; its own option is taken
    check_observed(
        _observed(generator="calobs_lab_generators:observe", true_params={"r0": 3}, options={"scale": 2.0})
    )


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("{folder}", "calibration.observed.path: {folder} is a folder, not a file of observed data"),
        (
            "data/observed.xlsx",
            "calibration.observed.path: data/observed.xlsx: unknown table format '.xlsx'; expected one of "
            "['.csv', '.parquet', '.pq', '.tab', '.tsv', '.txt']",
        ),
        (
            "data/observed",
            "calibration.observed.path: data/observed: unknown table format ''; expected one of ",
        ),
        (
            "",
            "calibration.observed.path: '' names no file; give a CSV, TSV or Parquet file of observed data, or null "
            "to generate them with calibration.observed.generator",
        ),
    ],
)
def test_an_observed_path_no_job_could_read_is_refused_naming_the_key(tmp_path, path, expected):
    """The calibrate and visualize jobs read the file by its suffix (simcal.files.table_format)."""
    folder = tmp_path / "observed"
    folder.mkdir()
    with pytest.raises(ContractError) as error:
        check_observed(_observed(path=path.format(folder=folder)))
    assert str(error.value).startswith(expected.format(folder=folder)), str(error.value)


def test_with_a_path_the_unused_generator_is_not_judged_and_a_file_yet_to_be_made_passes(tmp_path):
    """A rule of the importing workflow may make the file, or a storage provider hold it: not certainly wrong."""
    check_observed(
        _observed(path=str(tmp_path / "not_yet.csv"), generator="simcal.models.sir:observ", options={"x": 1})
    )


def assert_dry_run_refuses(tmp_path: Path, config: dict, expected: str) -> None:
    """A dry run of the workflow with ``config`` fails naming ``expected`` before building the DAG: no job runs."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    dry = run_snakemake(
        "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
        "--configfile", str(configfile), "--cores", "1", check=False, timeout=300,
    )  # fmt: skip
    assert dry.returncode != 0, dry.stdout
    assert expected in dry.stdout, dry.stdout
    assert "Building DAG of jobs" not in dry.stdout, dry.stdout


def _calibration_only(model: str, generator: str) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["calibration"]
    config["model"], config["observed"]["generator"] = model, generator
    return {"calibration": config}


@pytest.mark.parametrize(
    ("model", "generator", "target", "log", "key"),
    [
        (
            "lab_models_only_in_the_jobs_env:simulate",
            "simcal.models.sir:observe",
            "resources/calibration/sir/sweep_design.csv",
            "logs/calibration/sir/sample_design.log",
            "calibration.model",
        ),
        (
            "simcal.models.sir:simulate",
            "lab_generators_only_in_the_jobs_env:observe",
            "resources/calibration/sir/observed.csv",
            "logs/calibration/sir/generate_observed.log",
            "calibration.observed.generator",
        ),
    ],
)
def test_a_job_meeting_a_module_the_dry_run_could_not_import_names_the_config_key(
    tmp_path: Path, model, generator, target, log, key
):
    """The dry run plans it (the parse-time check is silent), and the job that first resolves the reference fails
    naming the key, the reference and the module it cannot import."""
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(_calibration_only(model, generator)))
    args = ["--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path)]
    args += ["--configfile", str(configfile), "--cores", "1"]
    dry = run_snakemake("-n", *args, target, check=False, timeout=300)
    assert dry.returncode == 0, dry.stdout
    run = run_snakemake(*args, target, check=False, timeout=300)
    assert run.returncode != 0, run.stdout
    text = (tmp_path / log).read_text()
    module = generator.split(":")[0] if key.endswith("generator") else model.split(":")[0]
    assert re.search(
        rf"reference '{re.escape(model if key == 'calibration.model' else generator)}': cannot import module "
        rf"'{module}' \(No module named '{module}'\); in the calibration workflow {re.escape(key)} names it",
        text,
    ), text


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            {"function": "simcal.targets:poisson_nl", "column": "incidence"},
            "calibration.targets[1].function: 'simcal.targets:poisson_nl': module simcal.targets has no "
            "'poisson_nl' (did you mean 'poisson_nll'?)",
        ),
        (
            {"function": "simcal.targets:poisson_nll", "colum": "incidence"},
            "calibration.targets[1]: simcal.targets:poisson_nll has no option 'colum' (did you mean 'column'?); "
            "its options are ['column', 'on', 'min_mean']",
        ),
        (
            {"function": "simcal.targets:negbin_nll", "column": "incidence", "dispersal": 5.0},
            "calibration.targets[1]: simcal.targets:negbin_nll has no option 'dispersal' (did you mean "
            "'dispersion'?)",
        ),
        (
            {"function": "simcal.targets:poisson_nll"},
            "calibration.targets[1]: simcal.targets:poisson_nll cannot take the options []: missing a required "
            "argument: 'column'",
        ),
    ],
)
def test_a_target_the_calibrate_job_would_refuse_is_refused_at_parse(target, expected):
    """A misspelt loss function or option failed the calibrate job (parse_targets) only after the design's sweep
    had run: the parse check refuses it first, an option in the job's own words, a function with its closest
    name (the job names the same key)."""
    first = {"name": "other", "function": "simcal.targets:poisson_nll", "column": "other"}
    spec = {"name": "incidence", "weight": 1.0, **target}
    with pytest.raises(ContractError) as at_parse:
        check_targets([first, spec])
    with pytest.raises(ContractError) as in_the_job:
        parse_targets([first, spec])
    assert str(at_parse.value).startswith(expected)
    if ".function" in expected:
        assert str(in_the_job.value).startswith("calibration.targets[1].function reference")
    else:
        assert str(at_parse.value) == str(in_the_job.value)


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (
            [
                {
                    "name": "incidence",
                    "function": "simcal.targets:poisson_nll",
                    "column": "incidence",
                    "weight": 0,
                }
            ],
            "calibration.targets: every weight is 0; at least one target needs a weight > 0",
        ),
        (
            [
                {"name": "incidence", "function": "simcal.targets:poisson_nll", "column": "incidence"},
                {"name": "incidence", "function": "simcal.targets:replicate_mean_mse", "column": "incidence"},
            ],
            "calibration.targets: names must differ (column loss_<name>), got ['incidence', 'incidence']: "
            "['incidence'] named more than once",
        ),
        (  # a target without a name is target_<index>: here the second, as the first is named
            [
                {"name": "target_1", "function": "simcal.targets:poisson_nll", "column": "incidence"},
                {"name": "", "function": "simcal.targets:replicate_mean_mse", "column": "incidence"},
            ],
            "calibration.targets: names must differ (column loss_<name>), got ['target_1', 'target_1']",
        ),
    ],
)
def test_targets_the_calibrate_job_refuses_together_are_refused_at_parse(targets, expected):
    """The schema takes each target's weight 0 and any name, but the calibrate job refused every weight 0 (the
    total loss 0 everywhere) and a name given twice (one loss_<name> column) only after the generate_observed job
    had run: the parse check refuses both first, in the job's own words."""
    with pytest.raises(ContractError) as at_parse:
        check_targets(targets)
    with pytest.raises(ContractError) as in_the_job:
        parse_targets(targets)
    assert str(at_parse.value).startswith(expected), at_parse.value
    assert str(at_parse.value) == str(in_the_job.value)


def test_targets_the_job_would_take_pass_and_one_whose_module_does_not_import_here_is_left_to_the_job():
    check_targets(
        [
            {
                "name": "incidence",
                "function": "simcal.targets:poisson_nll",
                "column": "incidence",
                "on": "day",
            },
            {"name": "peak", "function": "simcal.targets:negbin_nll", "column": "peak", "dispersion": 5.0},
            {"name": "lab", "function": "lab_losses_only_in_the_jobs_env:distance", "anything": 1},
        ]
    )
    with pytest.raises(
        ContractError, match=r"^calibration.targets\[0\].function: 'lab\.losses' must look like"
    ):
        check_targets([{"function": "lab.losses"}])


@pytest.mark.parametrize(
    ("section", "changes", "expected"),
    [
        # JSON Schema's integer takes 4.0; the simulate job's settings do not, after the design jobs had run
        (
            "simulation",
            {"replicates": 4.0},
            "calibration.simulation: simulation settings: replicates must be an integer >= 1, got 4.0",
        ),
        (
            "sweep",
            {"replicates": 2.0},
            "calibration.sweep.replicates: simulation settings: replicates must be",
        ),
        ("calibrate", {"rounds": 6.0}, "calibration.calibrate.rounds must be an integer >= 0, got 6.0"),
    ],
)
def test_a_whole_float_where_the_jobs_need_an_integer_stops_the_dry_run(tmp_path, section, changes, expected):
    config = _calibration_only("simcal.models.sir:simulate", "simcal.models.sir:observe")
    config["calibration"][section].update(changes)
    assert_dry_run_refuses(tmp_path, config, expected)


def test_refine_replicates_not_above_the_simulation_replicates_stops_the_dry_run(tmp_path):
    """simulation.replicates raised to refine.replicates (32, for less noise) passed the dry run; the calibrate job
    refused it only after the observed-data and sweep jobs had run."""
    config = _calibration_only("simcal.models.sir:simulate", "simcal.models.sir:observe")
    config["calibration"]["simulation"]["replicates"] = 32
    assert_dry_run_refuses(
        tmp_path,
        config,
        "calibration.calibrate.refine.replicates (32) must exceed simulation.replicates (32) for the refine step "
        "to add anything (or set refine.top_k: 0)",
    )


@pytest.mark.parametrize(
    ("fixed", "expected"),
    [
        (
            {"beta": 0.2},
            "calibration.fixed and calibration.parameters both name ['beta']: a parameter is either calibrated "
            "or fixed; give it in one of them",
        ),
        (
            {"populaton": 5000},
            "calibration.fixed: 'populaton' is not a parameter of simcal.models.sir:simulate (did you mean "
            "'population'?)",
        ),
    ],
)
def test_fixed_values_the_sweep_and_calibrate_jobs_would_refuse_stop_the_dry_run(tmp_path, fixed, expected):
    """calibration.fixed naming a calibrated parameter, or a name the model's declared space lacks, passed the dry
    run and the design job; the sweep's simulate job then failed with a traceback naming the design file."""
    config = _calibration_only("simcal.models.sir:simulate", "simcal.models.sir:observe")
    config["calibration"]["fixed"].update(fixed)
    assert_dry_run_refuses(tmp_path, config, expected)


def test_a_clash_of_fixed_and_calibrated_names_is_refused_also_for_a_model_that_does_not_import_here():
    """The clash is the config's own: no model is needed to see it; a model that imports only in the jobs'
    environment leaves the rest to the job."""
    parameters = {"beta": {"low": 0.1, "high": 0.6}}
    with pytest.raises(ContractError) as refused:
        check_parameters("lab_models_only_in_the_jobs_env:simulate", parameters, {"beta": 0.2, "delay_s": 1})
    assert str(refused.value) == (
        "calibration.fixed and calibration.parameters both name ['beta']: a parameter is either calibrated or "
        "fixed; give it in one of them"
    )
    check_parameters("lab_models_only_in_the_jobs_env:simulate", parameters, {"delay_s": 1})
    shipped = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["calibration"]
    check_parameters("simcal.models.sir:simulate", shipped["parameters"], shipped["fixed"])


@pytest.mark.parametrize("key", ["columns", "statistics"])
def test_a_sweep_setting_naming_one_thing_twice_stops_the_dry_run(tmp_path, key):
    """analyze_sweep failed inside pandas on a name given twice ("Function names must be unique"), after the sweep
    had run; the schema refuses it first."""
    config = _calibration_only("simcal.models.sir:simulate", "simcal.models.sir:observe")
    config["calibration"]["sweep"][key] = ["max", "max"]
    assert_dry_run_refuses(
        tmp_path,
        config,
        f"config key calibration.sweep.{key} (set in {tmp_path / 'config.yaml'}): ['max', 'max'] has non-unique elements",
    )


SWEEP_SIMULATIONS = "results/calibration/sir/sweep/simulations.parquet"
SWEEP_DESIGN = "resources/calibration/sir/sweep_design.csv"


def shipped_sweep_plan(**fixed_changes) -> str:
    """The sweep plan the shipped config makes (simcal.settings.sweep_plan_record, as the simulate job records it
    and the dry run compares it), with ``fixed_changes`` over calibration.fixed. The schema's defaults of
    calibration.simulation are SimulationSettings' own, so the file's keys alone make the same record."""
    from simcal.settings import SimulationSettings, sweep_plan_record

    calibration = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["calibration"]
    settings = {**calibration["simulation"], "replicates": calibration["sweep"]["replicates"]}
    return sweep_plan_record(
        {**calibration["fixed"], **fixed_changes}, SimulationSettings.from_config(settings)
    )


def an_earlier_sweep(
    directory: Path, model: str | None = "simcal.models.sir:simulate", plan: str | None = "shipped", **drop
) -> Path:
    """The shipped calibration's sweep tables as an earlier run leaves them: the design, then the simulations of
    simcal.models.sir (day, incidence, prevalence) beside the keys, the status and the parameters, recording
    ``model`` and ``plan`` as the simulate job's table does (simcal.store.MODEL_RECORD and SWEEP_PLAN_RECORD;
    None: a table that records none; "shipped": the plan of the shipped config)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from simcal.models.sir import simulate
    from simcal.store import MODEL_RECORD, SWEEP_PLAN_RECORD

    plan = shipped_sweep_plan() if plan == "shipped" else plan

    design = directory / SWEEP_DESIGN
    design.parent.mkdir(parents=True, exist_ok=True)
    design.write_text("param_id,beta,gamma\np0,0.3,0.1\n")
    fixed = {"population": 10000, "initial_infected": 10, "days": 20}
    rows = simulate({"beta": 0.3, "gamma": 0.1, **fixed}, 1).assign(
        param_id="p0",
        replicate=0,
        seed=1,
        beta=0.3,
        gamma=0.1,
        **fixed,
        status="ok",
        error="",
        duration_s=0.1,
    )
    simulations = directory / SWEEP_SIMULATIONS
    simulations.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(rows.drop(columns=list(drop)), preserve_index=False)
    record = {MODEL_RECORD["model"]: model, SWEEP_PLAN_RECORD["sweep_plan"]: plan}
    pq.write_table(
        table.replace_schema_metadata({key: value for key, value in record.items() if value} or None),
        simulations,
    )
    os.utime(design, (1_000_000_000, 1_000_000_000))  # the design before the simulations
    return simulations


def _required() -> list[str]:
    return ["param_id", "replicate", "seed", "beta", "gamma", "population", "initial_infected", "days"]


def test_a_sweep_column_the_earlier_simulations_lack_is_refused_naming_the_file_its_columns_and_the_closest(
    tmp_path,
):
    simulations = an_earlier_sweep(tmp_path)
    with pytest.raises(ContractError) as refused:
        check_sweep_columns(["incidense", "prevalence"], simulations, tmp_path / SWEEP_DESIGN, _required())
    message = str(refused.value)
    assert message.startswith(
        f"calibration.sweep.columns: column 'incidense' is not in {simulations}, the simulations of the sweep an "
        "earlier run wrote, which analyze_sweep would read; it has ["
    ), message
    assert "'day', 'incidence', 'prevalence'" in message and "(did you mean 'incidence'?)" in message, message
    check_sweep_columns(["incidence", "prevalence"], simulations, tmp_path / SWEEP_DESIGN, _required())


@pytest.mark.parametrize("case", ["no simulations yet", "no list", "a newer design", "a parameter it lacks"])
def test_a_sweep_column_is_left_to_the_job_where_the_simulations_are_yet_to_be_written(tmp_path, case):
    """The simulate rule writes the table: not there, or to be written again (a newer design, or parameters the
    config names that it lacks), the job checks the columns against what it reads."""
    simulations = an_earlier_sweep(tmp_path, **({"gamma": True} if case == "a parameter it lacks" else {}))
    columns = None if case == "no list" else ["incidense"]
    if case == "no simulations yet":
        simulations.unlink()
    if case == "a newer design":
        os.utime(tmp_path / SWEEP_DESIGN, None)
        os.utime(simulations, (1_000_000_000, 1_000_000_000))
    check_sweep_columns(columns, simulations, tmp_path / SWEEP_DESIGN, _required())


def test_a_sweep_column_is_left_to_the_job_where_the_simulations_record_another_model_or_none(tmp_path):
    """calibration.model changed to another model (same parameters) that writes the named column: simulate runs
    again for the changed params, but the check read the old model's table and refused. A table of another model,
    or one that records none (written before simcal recorded it), is left to the analyze_sweep job."""
    columns = ["recovered"]
    for recorded in ("simcal.models.sir:mean_field", None):
        simulations = an_earlier_sweep(tmp_path, model=recorded)
        check_sweep_columns(
            columns, simulations, tmp_path / SWEEP_DESIGN, _required(), model="lab_models.sir:with_recovered"
        )
    simulations = an_earlier_sweep(tmp_path, model="lab_models.sir:with_recovered")
    with pytest.raises(ContractError, match=r"^calibration.sweep.columns: column 'recovered' is not in "):
        check_sweep_columns(
            columns, simulations, tmp_path / SWEEP_DESIGN, _required(), model="lab_models.sir:with_recovered"
        )


def test_a_sweep_column_is_left_to_the_job_where_the_simulations_record_another_plan_or_none(tmp_path):
    """calibration.fixed changed (or a setting of the sweep's simulate job): Snakemake reruns simulate for its
    changed params, and the model may then write other columns (here the one named), but the check read the
    table of the old plan and refused. A table of another plan, or one that records none (written before simcal
    recorded it), is left to the analyze_sweep job; the table of the plan the config makes is still checked."""
    columns = ["deaths"]
    now = shipped_sweep_plan(days=20)
    for recorded in (shipped_sweep_plan(), None):
        simulations = an_earlier_sweep(tmp_path, plan=recorded)
        check_sweep_columns(columns, simulations, tmp_path / SWEEP_DESIGN, _required(), plan=now)
    simulations = an_earlier_sweep(tmp_path, plan=now)
    with pytest.raises(ContractError, match=r"^calibration.sweep.columns: column 'deaths' is not in "):
        check_sweep_columns(columns, simulations, tmp_path / SWEEP_DESIGN, _required(), plan=now)


def test_the_simulations_table_records_the_model_and_its_codes_digest(tmp_path):
    """What the dry run's check of calibration.sweep.columns compares with calibration.model: the simulate job's
    table records the model that wrote it (and the digest of its source file, as the resume record has it)."""
    import pyarrow.parquet as pq
    from testkit import dask_client

    from simcal.model_code import model_code_digest
    from simcal.runner import simulate
    from simcal.settings import SimulationSettings
    from simcal.store import SWEEP_PLAN_RECORD, recorded_model

    design = tmp_path / "design.csv"
    design.write_text("beta,gamma\n0.3,0.1\n")
    output = tmp_path / "simulations.parquet"
    model = "simcal.models.sir:mean_field"
    with dask_client(1) as client:
        simulate(
            model,
            design,
            output,
            {"replicates": 1},
            fixed_params={"population": 100, "initial_infected": 1, "days": 3},
            client=client,
        )
    metadata = pq.read_schema(output).metadata
    assert recorded_model(metadata) == {
        "model": model,
        "model_code": model_code_digest(model),
    }
    # and the plan: the fixed values and the settings less those that decide no row, which the dry run compares
    assert json.loads(metadata[SWEEP_PLAN_RECORD["sweep_plan"]]) == {
        "fixed": {"population": 100, "initial_infected": 1, "days": 3},
        "settings": {
            key: value
            for key, value in dataclasses.asdict(SimulationSettings(replicates=1)).items()
            if key not in ("progress_seconds", "no_worker_timeout_s")
        },
    }
    assert len(pq.read_table(output)) == 3  # the rows are still read as before


def _sweep_dry_run(
    directory: Path,
    *extra: str,
    columns: tuple = ("incidense", "prevalence"),
    model: str = "simcal.models.sir:simulate",
) -> subprocess.CompletedProcess:
    config = _calibration_only(model, "simcal.models.sir:observe")
    config["calibration"]["sweep"]["columns"] = list(columns)
    configfile = directory / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return run_snakemake(
        "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(directory),
        "--configfile", str(configfile), "--cores", "1", *extra, check=False, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("extra", [(), ("--force", "results/calibration/sir/sweep/summary.json")])
def test_a_misspelt_sweep_column_stops_the_dry_run_when_an_earlier_sweep_left_its_simulations(
    tmp_path, extra
):
    """sweep.columns ['incidense'] passed the dry run and failed in analyze_sweep, after the simulations. A forced
    target downstream of simulate (the summary) reruns analyze_sweep on the same table: still refused."""
    an_earlier_sweep(tmp_path)
    dry = _sweep_dry_run(tmp_path, *extra)
    assert dry.returncode != 0, dry.stdout[-3000:]
    output = " ".join(dry.stdout.split())
    assert (
        f"calibration.sweep.columns: column 'incidense' is not in {SWEEP_SIMULATIONS}, the simulations of the "
        "sweep an earlier run wrote"
    ) in output, output[-3000:]
    assert "(did you mean 'incidence'?)" in output
    # refused while the DAG is built (when --forcerun is known), before any job is listed
    assert "Job stats" not in dry.stdout, dry.stdout[-3000:]


SWEEP_SUMMARY = "results/calibration/sir/sweep/summary.json"


@pytest.mark.parametrize(
    "extra",
    [
        (),
        ("--forcerun", "calibration_simulate"),
        # forced by naming its output, or the design's rule upstream of it, which Snakemake also reruns it for
        ("--forcerun", SWEEP_SIMULATIONS),
        ("--forcerun", "calibration_sample_design"),
        # the output as a forced target (--force, Snakemake's forcetargets), with the summary analyze_sweep writes
        ("--force", SWEEP_SIMULATIONS, SWEEP_SUMMARY),
    ],
)
def test_a_misspelt_sweep_column_is_left_to_the_job_while_the_simulations_are_to_be_written(tmp_path, extra):
    """No simulations yet, or simulate forced: the dry run passes, and the analyze_sweep job checks the columns.
    Only --forceall and --forcerun of the rule's name were seen: a forced target (--force) or a forced output
    file was refused against the table simulate was about to write again."""
    if extra:
        an_earlier_sweep(tmp_path)
    dry = _sweep_dry_run(tmp_path, *extra)
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert "calibration_analyze_sweep" in dry.stdout


@pytest.mark.parametrize(
    ("earlier", "refused"), [("simcal.models.sir:mean_field", False), ("simcal.models.sir:simulate", True)]
)
def test_a_sweep_column_the_table_of_another_model_lacks_passes_the_dry_run(tmp_path, earlier, refused):
    """calibration.model changed, with the same parameters, to one that writes the column the earlier table lacks:
    Snakemake reruns simulate for its changed params, but the dry run refused against the old table. The table
    of the configured model itself lacking the column is still refused."""
    an_earlier_sweep(tmp_path, model=earlier, prevalence=True)
    dry = _sweep_dry_run(tmp_path, columns=("prevalence",), model="simcal.models.sir:simulate")
    output = " ".join(dry.stdout.split())
    said = "calibration.sweep.columns: column 'prevalence' is not in "
    assert (dry.returncode != 0, said in output) == (refused, refused), output[-3000:]


# A lab's model whose columns depend on a fixed value: `wide` adds deaths beside cases.
WIDENING_MODEL = """\
import pandas as pd


def simulate(params, seed):
    columns = {"day": [0, 1], "cases": [params["beta"], params["gamma"]]}
    if params["wide"]:
        columns["deaths"] = [params["gamma"], params["beta"]]
    return pd.DataFrame(columns)
"""


def test_a_changed_fixed_value_whose_model_writes_the_named_column_passes_the_dry_run_and_runs(tmp_path):
    """After a sweep with calibration.fixed {wide: 0} (columns day, cases), the researcher sets wide: 1 and names
    the deaths column the model now writes. Snakemake reruns simulate for its changed params, but the dry run's
    check read the table of the old plan and refused 'deaths'. It passes now, and the run writes the summary of
    both columns; naming a column the new plan's table lacks is still refused."""
    (tmp_path / "sweepcol_lab.py").write_text(WIDENING_MODEL)
    config = _calibration_only("sweepcol_lab:simulate", "simcal.models.sir:observe")
    config["calibration"].update(fixed={"wide": 0}, simulation={"replicates": 1}, threads=1)
    config["calibration"]["sweep"].update(n=2, replicates=1, columns=["cases"], statistics=["max"])
    python_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))

    def snakemake(*extra: str) -> subprocess.CompletedProcess:
        configfile = tmp_path / "config.yaml"
        configfile.write_text(yaml.safe_dump(config))
        return run_snakemake(
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(configfile), "--cores", "1", *extra, SWEEP_SUMMARY,
            env={"PYTHONPATH": python_path}, check=False, timeout=600,
        )  # fmt: skip

    first = snakemake()
    assert first.returncode == 0, first.stdout[-3000:]
    assert json.loads((tmp_path / SWEEP_SUMMARY).read_text())["outputs"] == ["cases"]
    config["calibration"]["fixed"] = {"wide": 1}
    config["calibration"]["sweep"]["columns"] = ["cases", "deaths"]
    dry = snakemake("-n")
    assert dry.returncode == 0, dry.stdout[-3000:]
    assert "calibration_simulate" in dry.stdout and "params have changed" in dry.stdout, dry.stdout[-3000:]
    second = snakemake()
    assert second.returncode == 0, second.stdout[-3000:]
    assert json.loads((tmp_path / SWEEP_SUMMARY).read_text())["outputs"] == ["cases", "deaths"]
    config["calibration"]["sweep"]["columns"] = ["cases", "deahts"]
    refused = snakemake("-n")
    said = f"calibration.sweep.columns: column 'deahts' is not in {SWEEP_SIMULATIONS}"
    assert refused.returncode != 0 and said in " ".join(refused.stdout.split()), refused.stdout[-3000:]


def test_editing_the_models_source_file_reruns_the_sweep_and_its_summary_follows(tmp_path):
    """The researcher edits the model's file (cases doubled) and reruns: Snakemake's params trigger saw only the
    reference "sweepcol_lab:simulate", the same, and kept the old simulations and summary (nothing to be done). The
    rules that call the model pass the digest of its source file (`code`), so the dry run plans the sweep again
    and the summary is the new code's."""
    model = tmp_path / "sweepcol_lab.py"
    model.write_text(WIDENING_MODEL)
    config = _calibration_only("sweepcol_lab:simulate", "simcal.models.sir:observe")
    config["calibration"].update(fixed={"wide": 0}, simulation={"replicates": 1}, threads=1)
    config["calibration"]["sweep"].update(n=2, replicates=1, columns=["cases"], statistics=["max"])
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    python_path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))

    def snakemake(*extra: str) -> subprocess.CompletedProcess:
        return run_snakemake(
            "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
            "--configfile", str(configfile), "--cores", "1", *extra, SWEEP_SUMMARY,
            env={"PYTHONPATH": python_path}, timeout=600,
        )  # fmt: skip

    def cases() -> list[float]:
        import pandas as pd

        return pd.read_parquet(tmp_path / "results/calibration/sir/sweep/summary.parquet")[
            "cases_max_mean"
        ].tolist()

    snakemake()
    before = cases()
    assert "Nothing to be done" in snakemake("-n").stdout
    model.write_text(WIDENING_MODEL.replace('"cases": [params["beta"]', '"cases": [2 * params["beta"]'))
    dry = snakemake("-n")
    assert "calibration_simulate" in dry.stdout and "calibration_analyze_sweep" in dry.stdout, dry.stdout[
        -3000:
    ]
    snakemake()
    assert cases() == pytest.approx([2 * value for value in before])


def test_code_digests_follow_the_source_file_of_each_reference_and_leave_what_does_not_import_to_the_job(
    tmp_path, monkeypatch
):
    from simcal.model_code import code_digests

    (tmp_path / "codedigest_lab.py").write_text("def simulate(params, seed):\n    return {'x': 1}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    references = [
        "codedigest_lab:simulate",
        "simcal.targets:poisson_nll",
        "codedigest_only_in_the_jobs_env:f",
    ]
    digests = code_digests(references)
    assert list(digests) == references and digests["codedigest_only_in_the_jobs_env:f"] is None
    assert all(digests[reference] for reference in references[:2])
    import sys

    (tmp_path / "codedigest_lab.py").write_text("def simulate(params, seed):\n    return {'x': 2}\n")
    sys.modules.pop("codedigest_lab")
    changed = code_digests(references)
    assert changed["codedigest_lab:simulate"] != digests["codedigest_lab:simulate"]
    assert changed["simcal.targets:poisson_nll"] == digests["simcal.targets:poisson_nll"]
