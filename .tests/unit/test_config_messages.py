"""config_messages.config_problem on jsonschema's own errors: the dotted key, where it was set, what was expected.

The workflow runs that show the same lines through Snakemake are in test_config_validation.py; these name every
branch without a Snakemake run.
"""

from __future__ import annotations

import jsonschema
import pytest
import yaml

from config_messages import config_location, config_problem, duplicate_keys, overridden_values

SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kd_gat": {
            "type": "object",
            "additionalProperties": False,
            "required": ["seeds"],
            "properties": {
                "seeds": {"type": "array", "items": {"type": "integer"}},
                "epochs": {"type": "integer"},
            },
        },
        "datasets": {
            "type": "object",
            "propertyNames": {"pattern": "^[a-z_]+$"},
            "additionalProperties": {
                "type": "object",
                "properties": {"files": {"type": "array", "items": {"type": "string"}}},
            },
        },
    },
}


def problem_of(config):
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(config))
    assert error is not None, config
    return error


def configfile(tmp_path, name, config):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_wrong_type_names_the_dotted_key_and_the_file_that_set_that_value(tmp_path):
    good = configfile(tmp_path, "base.yaml", {"kd_gat": {"seeds": [1], "epochs": 3}})
    bad = configfile(tmp_path, "site.yaml", {"kd_gat": {"seeds": [1], "epochs": "three"}})
    config = {"kd_gat": {"seeds": [1], "epochs": "three"}}
    line = config_problem(problem_of(config), [good, bad, bad], {})
    assert line == f"config key kd_gat.epochs (set in {bad}): 'three' is not of type 'integer'"


def test_a_list_item_is_named_with_its_index():
    config = {"datasets": {"lab": {"files": ["a.csv", 7]}}}
    line = config_problem(problem_of(config), [], {})
    assert line.startswith("config key datasets.lab.files[1] (set in no config file or --config: a default")
    assert line.endswith("7 is not of type 'string'")


def test_a_list_item_is_named_with_the_file_that_set_it_when_another_files_list_is_shorter(tmp_path):
    """A later config file replaces a list as a whole: an earlier file's shorter list has no item at the refused
    index, so it set nothing there (not an IndexError, which would hide the config's problem in a traceback)."""
    base = configfile(tmp_path, "base.yaml", {"datasets": {"lab": {"files": ["a.csv"]}}})
    site = configfile(tmp_path, "site.yaml", {"datasets": {"lab": {"files": ["a.csv", 7]}}})
    config = {"datasets": {"lab": {"files": ["a.csv", 7]}}}
    line = config_problem(problem_of(config), [base, site], {"datasets": {"lab": {"files": []}}})
    assert line == f"config key datasets.lab.files[1] (set in {site}): 7 is not of type 'string'"


def test_an_unknown_key_is_named_with_the_keys_its_mapping_takes(tmp_path):
    config = {"kd_gat": {"seeds": [1], "epoch": 3}}
    file = configfile(tmp_path, "config.yaml", config)
    line = config_problem(problem_of(config), [file], {})
    assert line == (
        f"config key kd_gat.epoch (set in {file}): an unknown key; kd_gat takes ['epochs', 'seeds']"
    )


def test_an_unknown_top_level_key_set_on_the_command_line_names_the_top_level():
    config = {"kd_gatt": {"seeds": [1]}}
    line = config_problem(problem_of(config), [], {"kd_gatt": {"seeds": [1]}})
    assert (
        line
        == "config key kd_gatt (set in --config): an unknown key; the top level takes ['datasets', 'kd_gat']"
    )


def test_a_missing_required_key_names_the_files_that_give_its_mapping(tmp_path):
    config = {"kd_gat": {"epochs": 3}}
    file = configfile(tmp_path, "config.yaml", config)
    other = configfile(tmp_path, "other.yaml", {"datasets": {}})
    line = config_problem(problem_of(config), [file, other], {})
    assert line == f"config key kd_gat.seeds (set in {file}): a required key is missing from kd_gat"
    # Every file that gives the mapping is named, not only the one whose mapping equals the merged one.
    earlier = configfile(tmp_path, "earlier.yaml", {"kd_gat": {"epochs": 2}})
    line = config_problem(problem_of(config), [earlier, file], {})
    assert line.startswith(f"config key kd_gat.seeds (set in {earlier}, {file}): ")


def test_a_name_refused_by_the_schema_is_named_as_the_key():
    config = {"datasets": {"Lab-1": {"files": []}}}
    line = config_problem(problem_of(config), [], {"datasets": {"Lab-1": {"files": []}}})
    assert line.startswith("config key datasets.Lab-1 (set in --config): ")
    assert line.endswith("(a name not allowed there)")


@pytest.mark.parametrize("value", ["1", "true"])
def test_a_nested_value_from_the_command_line_that_became_text_gets_the_configfile_hint(value):
    """--config kd_gat='{epochs: 1}' gives the text '1': the line says why and what to do instead."""
    config = {"kd_gat": {"seeds": [1], "epochs": value}}
    line = config_problem(problem_of(config), [], {"kd_gat": {"seeds": [1], "epochs": value}})
    assert "--config reads every value inside a mapping as text" in line
    assert line.endswith("set nested numbers and booleans in a --configfile")


def test_an_unreadable_config_file_is_not_named_and_does_not_raise(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("kd_gat: [unclosed\n")
    config = {"kd_gat": {"seeds": [1], "epochs": "x"}}
    line = config_problem(problem_of(config), [broken, tmp_path / "missing.yaml"], {})
    assert line.startswith("config key kd_gat.epochs (set in no config file or --config")


def test_a_mapping_missing_one_of_its_required_keys_is_named_for_that_key_only(tmp_path):
    schema = {
        "type": "object",
        "properties": {"kd_gat": {"type": "object", "required": ["seeds", "epochs"]}},
    }
    config = {"kd_gat": {"epochs": 3}}
    file = configfile(tmp_path, "config.yaml", config)
    (problem,) = jsonschema.Draft202012Validator(schema).iter_errors(config)
    line = config_problem(problem, [file], {})
    assert line == f"config key kd_gat.seeds (set in {file}): a required key is missing from kd_gat"


def test_a_top_level_value_from_the_command_line_gets_no_hint_about_values_inside_a_mapping():
    """--config reads a top-level value as YAML: `kd_gat=text` is the text 'text' because it is text, not because
    it sits in a mapping, so the hint for nested values would mislead."""
    config = {"kd_gat": "text"}
    line = config_problem(problem_of(config), [], {"kd_gat": "text"})
    assert line == "config key kd_gat (set in --config): 'text' is not of type 'object'"


def test_a_key_given_twice_in_one_config_file_is_named_with_both_lines(tmp_path):
    """YAML keeps the last of two equal keys: a second `kd_gat:` section (a pasted block) dropped the first one's
    seeds without a word, and the run trained other seeds than the file says. Every repeat is named, at any depth."""
    file = tmp_path / "my.yaml"
    file.write_text(
        "kd_gat:\n  seeds: [1]\n  training: {gat: {epochs: 5, epochs: 6}}\ncalibration: {name: x}\n"
        "kd_gat:\n  variants: [teacher]\n"
    )
    single = tmp_path / "single.yaml"
    single.write_text("kd_gat: {seeds: [1]}\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kd_gat: [\n")
    assert duplicate_keys([single, file, file, broken, tmp_path / "missing.yaml"]) == [
        f"config key kd_gat is given twice in {file} (lines 1 and 5): YAML keeps only the last, the other is "
        f"lost; give it once",
        f"config key kd_gat.training.gat.epochs is given twice in {file} (lines 3 and 3): YAML keeps only the "
        f"last, the other is lost; give it once",
    ]


def test_a_config_file_value_that_config_replaces_is_named_with_both_values(tmp_path):
    """Snakemake applies --config, and with it a profile's `config:` (profiles/k8s sets calibration.backend.kind:
    scheduler), over every config file without a word: a config file's `kind: service` ran on the scheduler."""
    shipped = tmp_path / "config.yaml"
    shipped.write_text("calibration:\n  backend: {kind: local}\n  simulation: {replicates: 4}\n")
    mine = tmp_path / "mine.yaml"
    mine.write_text("calibration:\n  backend:\n    kind: service\n")
    overrides = {"calibration": {"backend": {"kind": "scheduler"}, "simulation": {"replicates": 4}}}
    assert overridden_values([shipped, mine], overrides) == [
        f"config key calibration.backend.kind: {shipped} sets 'local', but --config (or a profile's config:) "
        "sets 'scheduler', which is used",
        f"config key calibration.backend.kind: {mine} sets 'service', but --config (or a profile's config:) "
        "sets 'scheduler', which is used",
    ]
    assert overridden_values([mine], {"calibration": {"backend": {"kind": "service"}}}) == []
    assert overridden_values([mine], {"targets": {"calibration": False}}) == []


def test_a_key_of_a_module_given_part_of_the_config_is_named_as_the_config_files_name_it(tmp_path):
    """A downstream Snakefile imports a module with `config: config["lab"]`: its keys were named without `lab.` and
    looked up at the top of the config files, so a key set in one was said to be set in none."""
    file = configfile(tmp_path, "lab.yaml", {"lab": {"kd_gat": {"seeds": [1], "epochs": "three"}}})
    config = {"kd_gat": {"seeds": [1], "epochs": "three"}}
    line = config_problem(problem_of(config), [file], {}, prefix=["lab"], module="kd_gat")
    assert line == (
        f"config key lab.kd_gat.epochs (set in {file}; module kd_gat sees it as kd_gat.epochs): "
        "'three' is not of type 'integer'"
    )
    unknown = {"kd_gat": {"seeds": [1], "epoch": 3}}
    line = config_problem(problem_of(unknown), [file], {"lab": unknown}, prefix=["lab"], module="kd_gat")
    assert line == (
        "config key lab.kd_gat.epoch (set in --config; module kd_gat sees it as kd_gat.epoch): an unknown key; "
        "lab.kd_gat takes ['epochs', 'seeds']"
    )
    line = config_problem(problem_of({"kd_gat": {}}), [file], {}, prefix=["lab"], module="kd_gat")
    assert line.startswith(
        f"config key lab.kd_gat.seeds (set in {file}; module kd_gat sees it as kd_gat.seeds): "
    )
    assert line.endswith("a required key is missing from lab.kd_gat")


def test_a_key_of_a_module_given_a_mapping_built_in_the_snakefile_names_no_file(tmp_path):
    """`config: {**config["lab"], ...}` is no part of the workflow's config: its keys cannot be looked up in the
    config files, and saying "set in no config file" would send the reader to look for a default."""
    file = configfile(tmp_path, "lab.yaml", {"kd_gat": {"seeds": [1], "epochs": "three"}})
    config = {"kd_gat": {"seeds": [1], "epochs": "three"}}
    line = config_problem(problem_of(config), [file], {}, prefix=None, module="kd_gat")
    assert line == (
        "config key kd_gat.epochs (of the config the importing workflow gives module kd_gat: a mapping that is no "
        "part of the workflow's config, so no config file can be named): 'three' is not of type 'integer'"
    )


def test_the_location_of_a_modules_config_is_found_by_identity_or_not_at_all():
    lab = {"kd_gat": {"seeds": [1]}}
    shared = {"seeds": [2]}
    workflow_config = {"labs": [{"name": "a"}, {"conf": lab}], "x": shared, "y": shared}
    assert config_location(workflow_config, workflow_config) == []
    assert config_location(workflow_config, lab) == ["labs", 1, "conf"]
    assert config_location(workflow_config, dict(lab)) is None  # a copy: equal, not the same mapping
    assert config_location(workflow_config, shared) is None  # a YAML alias: two places, neither named


def test_a_modules_own_refusal_names_its_key_behind_the_modules_place_in_the_config():
    from config_messages import placed_message

    keys = {"datasets": {}, "kd_gat": {}}
    assert (
        placed_message("config key 'datasets' is missing", ["lab"], keys)
        == "config key 'lab.datasets' is missing"
    )
    assert (
        placed_message("kd_gat.sweep.table: t.tsv line 3: bad", ["lab", "cfg"], keys)
        == "lab.cfg.kd_gat.sweep.table: t.tsv line 3: bad"
    )
    # a message that starts with no key of the module's config, the whole config, a config built in the Snakefile
    assert placed_message("expected a table: t.tsv", ["lab"], keys) == "expected a table: t.tsv"
    assert placed_message("kd_gat.tracking: bad", [], keys) == "kd_gat.tracking: bad"
    assert placed_message("kd_gat.tracking: bad", None, keys) == "kd_gat.tracking: bad"


def test_every_key_a_modules_own_refusal_names_is_named_behind_the_modules_place_not_the_first_only():
    """`config: config["lab"]`: the message named its first key lab.evaluation.gpu and the others as the module sees
    them (evaluation.device, evaluation.gpu), which lab.yaml does not; a file name that looks dotted is left alone."""
    from config_messages import placed_message

    keys = {"evaluation": {"gpu": 1, "device": "cpu"}, "kd_gat": {"sweep": {}}, "datasets": {"lab": {}}}
    said = placed_message(
        "evaluation.gpu is 1, but evaluation.device is cpu: the evaluation jobs would hold GPUs; set evaluation.gpu "
        "to 0, or evaluation.device to auto",
        ["lab"],
        keys,
    )
    assert said == (
        "lab.evaluation.gpu is 1, but lab.evaluation.device is cpu: the evaluation jobs would hold GPUs; set "
        "lab.evaluation.gpu to 0, or lab.evaluation.device to auto"
    )
    said = placed_message(
        "config key 'kd_gat.sweep' reads kd_gat.tsv; see datasets.lab.files[0] and group 'evaluation'",
        ["labs", 0],
        keys,
    )
    assert said == (
        "config key 'labs[0].kd_gat.sweep' reads kd_gat.tsv; see labs[0].datasets.lab.files[0] and group "
        "'evaluation'"
    )


def test_a_key_of_a_mapping_built_of_parts_of_the_config_is_placed_from_the_part_that_holds_it(tmp_path):
    """An intermediate module's `config: {"kd_gat": config["training"]}`: its kd_gat.epochs is lab.training.epochs
    of the workflow's config; a mapping built anew names the module that built it."""
    from config_messages import config_place

    training = {"seeds": [1], "epochs": "three"}
    workflow_config = {"lab": {"training": training}}
    built = {"kd_gat": training}
    assert config_place(workflow_config, workflow_config["lab"], ["training", "epochs"]) == (["lab"], 0)
    assert config_place(workflow_config, built, ["kd_gat", "epochs"]) == (["lab", "training"], 1)
    assert config_place(workflow_config, {"kd_gat": dict(training)}, ["kd_gat", "epochs"]) is None
    file = configfile(tmp_path, "lab.yaml", workflow_config)
    line = config_problem(problem_of(built), [file], {}, ["lab", "training"], "kd_gat", 1, "outer")
    assert line == (
        f"config key lab.training.epochs (set in {file}; module kd_gat sees it as kd_gat.epochs): 'three' is not of "
        "type 'integer'"
    )
    line = config_problem(problem_of(built), [file], {}, None, "kd_gat", 0, "outer")
    assert line == (
        "config key kd_gat.epochs (of the config module outer gives module kd_gat: a mapping module outer built, no "
        "part of the workflow's config, so no config file can be named): 'three' is not of type 'integer'"
    )


@pytest.mark.parametrize(
    ("module", "key"),
    [
        ("preprocess", ["preprocess", "runtime"]),
        ("kd_gat", ["kd_gat", "resources", "runtime"]),
        ("evaluation", ["evaluation", "runtime"]),
    ],
)
def test_a_runtime_of_0_is_refused_saying_why(tmp_path, module, key):
    """A module's runtime: 0 gave only the schema's bare "0 is less than the minimum of 1", which reads as an
    arbitrary bound: the SLURM executor sends no time limit for 0, so the partition's default would apply."""
    from testkit import REPO

    schema = yaml.safe_load(
        (REPO / "workflow" / "modules" / module / "schemas" / "config.schema.yaml").read_text()
    )
    config = {key[0]: {}}
    node = config[key[0]]
    for name in key[1:-1]:
        node = node.setdefault(name, {})
    node[key[-1]] = 0
    errors = [
        error
        for error in jsonschema.Draft202012Validator(schema).iter_errors(config)
        if list(error.absolute_path) == key
    ]
    assert [error.validator for error in errors] == ["minimum"]
    path = configfile(tmp_path, "site.yaml", config)
    line = config_problem(errors[0], [path], {})
    assert line.startswith(f"config key {'.'.join(key)} (set in {path}): 0 is less than the minimum of 1: ")
    assert "SLURM executor then sends none (no --time)" in line and "partition's default time limit" in line
    # a key without a reason keeps the bare message
    other = {"kd_gat": {"seeds": [1], "epochs": "three"}}
    assert config_problem(problem_of(other), [], {}).endswith("'three' is not of type 'integer'")
