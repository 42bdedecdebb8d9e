"""Size presets: the model arguments a preset may give, checked without importing torch at parse time."""

from __future__ import annotations

import inspect

import pytest

from kdgat.models import GAT, VGAE, QNetwork
from kdgat.presets import MODEL_ARGUMENTS, PRESETS, resolve_preset
from kdgat.training.settings import SettingsError, StageSettings

# Arguments the chain sets itself: the training job passes num_ids, the DQN's state width is the chain's.
SET_BY_THE_CHAIN = {"self", "num_ids", "state_dim"}


@pytest.mark.parametrize("stage, model_class", [("vgae", VGAE), ("gat", GAT), ("dqn", QNetwork)])
def test_the_listed_arguments_are_the_models_own(stage, model_class):
    parameters = set(inspect.signature(model_class.__init__).parameters) - SET_BY_THE_CHAIN
    assert set(MODEL_ARGUMENTS[stage]) == parameters


def test_every_shipped_preset_resolves():
    for name, stages in PRESETS.items():
        for stage in stages:
            assert resolve_preset(name, stage) == stages[stage]


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
