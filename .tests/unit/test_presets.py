"""Size presets: the model arguments a preset may give, checked without importing torch at parse time."""

from __future__ import annotations

import copy
import inspect
import re

import pytest
import torch
from torch_geometric.data import Batch

from kdgat.models import GAT, NUM_ACTIONS, VGAE, QNetwork
from kdgat.models.dqn import STATE_DIM
from kdgat.presets import MODEL_ARGUMENTS, PRESETS, resolve_preset
from kdgat.testing import toy_graphs
from kdgat.training.settings import SettingsError, StageSettings

# Arguments the chain sets itself: the training job passes num_ids, the DQN's state width is the chain's.
SET_BY_THE_CHAIN = {"self", "num_ids", "state_dim"}


@pytest.mark.parametrize("stage, model_class", [("vgae", VGAE), ("gat", GAT), ("dqn", QNetwork)])
def test_the_listed_arguments_are_the_models_own(stage, model_class):
    parameters = set(inspect.signature(model_class.__init__).parameters) - SET_BY_THE_CHAIN
    assert set(MODEL_ARGUMENTS[stage]) == parameters


TINY_NUM_IDS = 20  # toy_graphs draws up to 13 distinct IDs from 1..num_ids - 2
SHIPPED = [(name, stage) for name, stages in PRESETS.items() for stage in stages]


@pytest.mark.parametrize("name, stage", SHIPPED, ids=[f"{name}-{stage}" for name, stage in SHIPPED])
def test_every_shipped_preset_builds_a_model_that_runs(name, stage):
    arguments = resolve_preset(name, stage)
    assert arguments == PRESETS[name][stage]
    # Resolving only checks the argument names; building and running the model checks their values (e.g. VGAE
    # widths divisible by its heads).
    batch = Batch.from_data_list(toy_graphs(4, num_ids=TINY_NUM_IDS, seed=0))
    with torch.no_grad():
        if stage == "vgae":
            vgae_outputs = VGAE(TINY_NUM_IDS, **arguments).eval()(batch.x, batch.edge_index)
            assert vgae_outputs["mean"].shape == (batch.num_nodes, arguments["latent_dim"])
            outputs = [vgae_outputs[key] for key in ("features", "id_logits", "neighbour_logits")]
        elif stage == "gat":
            outputs = [GAT(TINY_NUM_IDS, **arguments).eval()(batch.x, batch.edge_index, batch.batch)]
            assert outputs[0].shape == (4, 2)
        else:
            outputs = [QNetwork(**arguments).eval()(torch.zeros(4, STATE_DIM))]
            assert outputs[0].shape == (4, NUM_ACTIONS)
    assert all(torch.isfinite(output).all() for output in outputs)


def test_an_unknown_model_argument_of_a_custom_preset_names_its_config_key():
    custom = {
        "mine": {**PRESETS["demo_student"], "gat": {**PRESETS["demo_student"]["gat"], "edge_features": True}}
    }
    with pytest.raises(
        ValueError, match=r"kd_gat\.presets\.mine\.gat: unknown model arguments \['edge_features'\]"
    ):
        resolve_preset("mine", "gat", custom)
    # The other stages of that preset are fine.
    assert resolve_preset("mine", "vgae", custom) == PRESETS["demo_student"]["vgae"]
    section = {"presets": custom, "student_preset": "mine"}
    with pytest.raises(SettingsError, match=r"kd_gat\.presets\.mine\.gat: unknown model arguments"):
        StageSettings.from_config(section, "gat", "student")


@pytest.mark.parametrize(
    ("stage", "arguments", "message"),
    [
        ("vgae", {"hidden_dims": 64}, r"hidden_dims: expected a non-empty list of integers >= 1, got 64"),
        ("vgae", {"hidden_dims": []}, r"hidden_dims: expected a non-empty list of integers >= 1, got \[\]"),
        ("vgae", {"hidden_dims": [64, 30], "heads": 4}, r"hidden_dims: expected widths divisible by heads=4"),
        ("vgae", {"logvar_clamp": 0}, r"logvar_clamp: expected a number > 0, got 0"),
        ("gat", {"hidden": 0}, r"hidden: expected an integer >= 1, got 0"),
        ("gat", {"heads": 2.5}, r"heads: expected an integer >= 1, got 2\.5"),
        ("gat", {"num_layers": True}, r"num_layers: expected an integer >= 1, got True"),
        ("dqn", {"dropout": 1.5}, r"dropout: expected a number in \[0, 1\), got 1\.5"),
        ("dqn", {"dropout": "0.1"}, r"dropout: expected a number in \[0, 1\), got '0\.1'"),
    ],
)
def test_a_custom_preset_value_the_model_cannot_take_names_its_config_key(stage, arguments, message):
    """Refused while the workflow is parsed, naming kd_gat.presets.<name>.<stage>.<key>, instead of a TypeError or
    torch error inside the training job after its data is read."""
    custom = {"mine": {**PRESETS["demo_student"], stage: {**PRESETS["demo_student"][stage], **arguments}}}
    with pytest.raises(ValueError, match=rf"kd_gat\.presets\.mine\.{stage}\.{message}"):
        resolve_preset("mine", stage, custom)
    section = {"presets": custom, "student_preset": "mine"}
    with pytest.raises(SettingsError, match=rf"kd_gat\.presets\.mine\.{stage}\.{message}"):
        StageSettings.from_config(section, stage, "student")


@pytest.mark.parametrize(
    ("presets", "message"),
    [
        ({"mine": {"vgae": None, "gat": {}, "dqn": {}}}, r"kd_gat\.presets\.mine\.vgae: expected a mapping of model arguments, got None"),
        ({"mine": {"vgae": [8, 4], "gat": {}, "dqn": {}}}, r"kd_gat\.presets\.mine\.vgae: expected a mapping of model arguments, got \[8, 4\]"),
        ({"mine": 3}, r"kd_gat\.presets\.mine: expected a mapping of vgae, gat and dqn model arguments, got 3"),
        ({"mine": {"gat": {}, "dqn": {}}}, r"kd_gat\.presets\.mine: no 'vgae' section"),
        ([{"mine": {}}], r"kd_gat\.presets: expected a mapping of preset names to their model arguments, got list"),
    ],
)  # fmt: skip
def test_a_custom_preset_that_is_no_mapping_names_its_config_key_not_a_type_error(presets, message):
    """A stage left empty in YAML (``vgae:`` with nothing after it is null), a preset or presets of the wrong shape:
    refused naming the config key, as for a bad argument, not a TypeError traceback from the `kdgat` command."""
    # resolve_preset raises KeyError for a missing preset or section, as before; SettingsError otherwise.
    with pytest.raises((KeyError, ValueError), match=message):
        resolve_preset("mine", "vgae", presets)
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config({"presets": presets, "teacher_preset": "mine"}, "vgae", "teacher")


@pytest.mark.parametrize("stage", ["vgae", "gat", "dqn"])
def test_a_custom_preset_without_every_stage_is_refused_for_each_stage_naming_what_is_missing(stage):
    """The workflow's schema requires vgae, gat and dqn in every kd_gat.presets entry. `kdgat train vgae --set
    presets.demo_teacher.vgae.latent_dim=4` (meant as a tweak) replaced demo_teacher by a preset of the model's
    defaults plus latent_dim 4 and trained it without a word; the gat and dqn jobs failed only later."""
    section = {"teacher_preset": "demo_teacher", "presets": {"demo_teacher": {"vgae": {"latent_dim": 4}}}}
    message = (
        "kd_gat.presets.demo_teacher: no 'gat' and 'dqn' sections (a preset gives vgae, gat and dqn; a name of a "
        "built-in preset replaces it whole)"
    )
    with pytest.raises(SettingsError) as error:
        StageSettings.from_config(section, stage, "teacher")
    assert str(error.value) == message


def test_a_sweep_column_value_the_model_cannot_take_names_the_column():
    with pytest.raises(SettingsError, match=r"sweep column 'hidden': expected an integer >= 1, got 0"):
        StageSettings.from_config({}, "gat", "student", overrides={"hidden": 0})
    assert StageSettings.from_config({}, "gat", "student", overrides={"hidden": 8}).model["hidden"] == 8


def test_sweep_heads_that_do_not_divide_the_presets_widths_name_the_column():
    """A column valid alone can break a rule between arguments: the VGAE splits each hidden width over its heads.
    Refused when the settings are built, naming the column, not by the model inside the training job."""
    widths = PRESETS["student"]["vgae"]["hidden_dims"]  # the student variant's default preset
    heads = next(h for h in range(2, 20) if any(width % h for width in widths))
    message = (
        f"sweep columns ['heads']: the vgae model of preset 'student' then has hidden_dims {widths}, "
        f"expected widths divisible by heads={heads}"
    )
    with pytest.raises(SettingsError, match=re.escape(message)):
        StageSettings.from_config({}, "vgae", "student", overrides={"heads": heads})
    divisor = next(h for h in range(2, 20) if not any(width % h for width in widths))
    fitting = StageSettings.from_config({}, "vgae", "student", overrides={"heads": divisor})
    assert fitting.model["heads"] == divisor


def test_a_custom_preset_replaces_the_built_in_one_of_the_same_name():
    """config/README.md: a name in kd_gat.presets replaces a built-in preset of the same name."""
    mine = {**PRESETS["demo_student"]["gat"], "hidden": PRESETS["demo_student"]["gat"]["hidden"] + 4}
    custom = {"demo_student": {**PRESETS["demo_student"], "gat": mine}}
    assert resolve_preset("demo_student", "gat", custom) == mine != PRESETS["demo_student"]["gat"]
    section = {"presets": custom, "student_preset": "demo_student"}
    assert StageSettings.from_config(section, "gat", "student").model == mine


def test_a_dropout_of_one_is_refused_in_a_preset_and_a_sweep_column():
    """Dropout is a number in [0, 1) (kdgat.presets.argument_problems): torch takes 1 and then drops every unit
    while training, so a model trained at 1 would learn nothing, and no error would say so."""
    custom = {"mine": {**PRESETS["demo_student"], "gat": {**PRESETS["demo_student"]["gat"], "dropout": 1}}}
    with pytest.raises(
        ValueError, match=r"kd_gat\.presets\.mine\.gat\.dropout: expected a number in \[0, 1\), got 1$"
    ):
        resolve_preset("mine", "gat", custom)
    with pytest.raises(
        SettingsError, match=r"sweep column 'dropout': expected a number in \[0, 1\), got 1\.0"
    ):
        StageSettings.from_config({}, "dqn", "student", overrides={"dropout": 1.0})


def test_no_dropout_is_a_value_a_preset_may_take():
    custom = {"mine": {**PRESETS["demo_student"], "dqn": {**PRESETS["demo_student"]["dqn"], "dropout": 0}}}
    assert resolve_preset("mine", "dqn", custom)["dropout"] == 0  # [0, 1): 0 switches dropout off


def test_changing_resolved_arguments_leaves_the_preset_as_it_was():
    """The settings apply sweep overrides to what resolve_preset returns: that must not reach PRESETS, which every
    later job of the same process reads."""
    shipped = copy.deepcopy(PRESETS["demo_teacher"]["vgae"])
    arguments = resolve_preset("demo_teacher", "vgae")
    arguments["hidden_dims"].append(8)
    arguments["latent_dim"] += 1
    assert resolve_preset("demo_teacher", "vgae") == shipped == PRESETS["demo_teacher"]["vgae"]
