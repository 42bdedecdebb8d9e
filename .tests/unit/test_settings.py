"""Typed stage settings built from the kd_gat config section (kdgat.training.settings)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml
from testkit import REPO

from kdgat.presets import resolve_preset
from kdgat.training.settings import (
    SECTION_DEFAULTS,
    CurriculumSettings,
    DistillationSettings,
    DQNSettings,
    SettingsError,
    StageSettings,
    TrainingSettings,
    VGAELossWeights,
)

SCHEMA = yaml.safe_load((REPO / "workflow/modules/kd_gat/schemas/config.schema.yaml").read_text())
KD_GAT = SCHEMA["properties"]["kd_gat"]["properties"]


def schema_defaults(properties: dict) -> dict:
    return {key: spec["default"] for key, spec in properties.items()}


@pytest.mark.parametrize(
    ("cls", "properties"),
    [
        (TrainingSettings, SCHEMA["$defs"]["training"]["properties"]),
        (DistillationSettings, KD_GAT["distillation"]["properties"]),
        (VGAELossWeights, KD_GAT["vgae_loss"]["properties"]),
        (CurriculumSettings, KD_GAT["curriculum"]["properties"]),
        (DQNSettings, KD_GAT["dqn"]["properties"]),
    ],
)
def test_defaults_and_keys_are_the_schemas(cls, properties):
    """A section the library reads without the schema's defaults filled in behaves as the validated config."""
    assert {f.name: f.default for f in dataclasses.fields(cls)} == schema_defaults(properties)


def test_top_level_defaults_are_the_schemas():
    # A job's section holds one `seed`, which the kd_gat module takes from the workflow's kd_gat.seeds.
    expected = {key: KD_GAT[key]["default"] for key in SECTION_DEFAULTS if key != "seed"}
    assert SECTION_DEFAULTS == expected | {"seed": KD_GAT["seeds"]["default"][0]}


@pytest.mark.parametrize(
    ("stage", "section", "key", "value"),
    [
        ("gat", "distillation", "alpha", 0.0),
        ("gat", "distillation", "alpha", 1.0),
        ("vgae", "vgae_loss", "id_weight", 0.0),
        ("vgae", "vgae_loss", "neighbour_weight", 0.0),
        ("vgae", "vgae_loss", "kl_weight", 0.0),
        ("gat", "curriculum", "start_percentile", 0.0),
        ("gat", "curriculum", "end_percentile", 100.0),
        ("dqn", "dqn", "gamma", 1.0),
        ("dqn", "dqn", "eps_end", 0.0),
    ],
)
def test_a_setting_at_an_inclusive_end_of_the_schemas_range_is_accepted(stage, section, key, value):
    """The schema's minimum and maximum include their value: a setting there passes the schema, so the settings
    take it too instead of failing the job the schema let through."""
    bounds = KD_GAT[section]["properties"][key]
    assert value in (bounds.get("minimum"), bounds.get("maximum"))
    settings = StageSettings.from_config({section: {key: value}}, stage, "student_kd")
    block = {"distillation": settings.distillation, "vgae_loss": settings.loss, "curriculum": settings.curriculum,
             "dqn": settings.dqn}[section]  # fmt: skip
    assert getattr(block, key) == value


def test_each_stage_gets_only_what_it_uses():
    workflow = yaml.safe_load((REPO / "config/config.yaml").read_text())["kd_gat"]
    config = {key: value for key, value in workflow.items() if key != "seeds"} | {
        "seed": workflow["seeds"][0]
    }
    vgae = StageSettings.from_config(config, "vgae", "teacher")
    assert vgae.preset == "demo_teacher" and vgae.model == resolve_preset("demo_teacher", "vgae")
    assert vgae.loss == VGAELossWeights() and vgae.curriculum is None and vgae.dqn is None
    assert vgae.distillation is None and vgae.training.epochs == config["training"]["vgae"]["epochs"]
    gat = StageSettings.from_config(config, "gat", "student_kd")
    assert gat.preset == "demo_student" and gat.distillation == DistillationSettings(**config["distillation"])
    assert gat.curriculum == CurriculumSettings(**config["curriculum"]) and gat.loss is None
    dqn = StageSettings.from_config(config, "dqn", "student")
    assert dqn.dqn == DQNSettings(**config["dqn"]) and dqn.distillation is None
    assert StageSettings.from_dict(dqn.as_dict()) == dqn


def test_a_job_carries_only_its_own_preset():
    """Editing one preset must not change other jobs' params (Snakemake reruns on changed params)."""
    mine = {stage: resolve_preset("demo_teacher", stage) for stage in ("vgae", "gat", "dqn")}
    config = {"teacher_preset": "mine", "presets": {"mine": mine}}
    before = StageSettings.from_config(config, "gat", "teacher").as_dict()
    config["presets"]["mine"]["vgae"] = {**config["presets"]["mine"]["vgae"], "latent_dim": 4}
    config["presets"]["other"] = {"vgae": {}, "gat": {}, "dqn": {}}
    assert StageSettings.from_config(config, "gat", "teacher").as_dict() == before
    assert "presets" not in before and before["model"] == resolve_preset("demo_teacher", "gat")


def test_sweep_row_overrides_training_or_model_arguments():
    row = {"hidden": np.int64(16), "heads": np.int64(4), "lr": np.float64(0.01)}
    settings = StageSettings.from_config({"teacher_preset": "demo_teacher"}, "gat", "teacher", overrides=row)
    assert settings.model["hidden"] == 16 and settings.model["heads"] == 4 and settings.training.lr == 0.01
    assert type(settings.model["hidden"]) is int and settings.overrides == {
        "hidden": 16,
        "heads": 4,
        "lr": 0.01,
    }
    with pytest.raises(SettingsError, match="sweep column 'depth' is neither a training setting"):
        StageSettings.from_config({}, "gat", "teacher", overrides={"depth": 3})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"epochz": 3}, r"kd_gat: unknown keys \['epochz'\]"),
        ({"training": {"gat": {"epoch": 3}}}, r"kd_gat.training.gat: unknown keys \['epoch'\]"),
        ({"training": {"fusion": {}}}, r"kd_gat.training: unknown keys \['fusion'\]"),
        ({"distillation": {"temp": 2}}, r"kd_gat.distillation: unknown keys \['temp'\]"),
        ({"curriculum": {"ratio": 2}}, r"kd_gat.curriculum: unknown keys \['ratio'\]"),
        ({"student_preset": "huge"}, r"unknown size preset 'huge'"),
        ({"training": {"gat": {"epochs": 0}}}, r"kd_gat.training: epochs must be >= 1, got 0"),
        ({"training": {"gat": {"batch_size": 0}}}, r"kd_gat.training: batch_size must be >= 1, got 0"),
        ({"training": {"gat": {"patience": -2}}}, r"kd_gat.training: patience must be >= 1, got -2"),
        ({"training": {"gat": {"lr": 0.0}}}, r"kd_gat.training: lr must be > 0, got 0.0"),
        ({"training": {"gat": {"grad_clip": -1.0}}}, r"kd_gat.training: grad_clip must be > 0, got -1.0"),
        (
            {"training": {"gat": {"weight_decay": -0.1}}},
            r"kd_gat.training: weight_decay must be >= 0, got -0.1",
        ),
    ],
)
def test_bad_settings_name_the_config_key(config, message):
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config(config, "gat", "student_kd")


@pytest.mark.parametrize(
    ("stage", "config", "message"),
    [
        ("gat", {"training": {"gat": {"lr": float("nan")}}}, r"kd_gat.training: lr must be > 0, got nan"),
        ("gat", {"training": {"gat": {"grad_clip": float("nan")}}}, r"kd_gat.training: grad_clip must be > 0, got nan"),
        ("gat", {"training": {"gat": {"weight_decay": float("nan")}}}, r"kd_gat.training: weight_decay must be >= 0, got nan"),
        ("gat", {"distillation": {"temperature": float("nan")}}, r"kd_gat.distillation: temperature must be > 0"),
        ("dqn", {"dqn": {"miss_cost": float("nan")}}, r"kd_gat.dqn: miss_cost and false_alarm_cost must be > 0"),
        ("dqn", {"dqn": {"false_alarm_cost": float("nan")}}, r"kd_gat.dqn: miss_cost and false_alarm_cost must be > 0"),
    ],
)  # fmt: skip
def test_a_nan_setting_is_refused_naming_its_key(stage, config, message):
    """NaN (`.nan` in YAML, `--lr nan` or `--grad-clip nan` on the command line) compares false with every bound,
    so `value <= 0` let it through: the job then failed in torch naming no key (lr, weight_decay), or trained to a
    NaN loss and blamed the learning rate (grad_clip, temperature), or trained with NaN rewards (the DQN's costs)."""
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config(config, stage, "student_kd")


@pytest.mark.parametrize("key", ["start_ratio", "end_ratio"])
def test_an_infinite_curriculum_ratio_is_refused_naming_its_key(key):
    """`.inf` is a number above the schema's exclusiveMinimum 0: the dry run planned it and the GAT job failed at
    its first epoch with "cannot convert float NaN to integer" (inf + (4 - inf) x progress), naming no key."""
    with pytest.raises(SettingsError) as refused:
        StageSettings.from_config({"curriculum": {key: float("inf")}}, "gat", "student_kd")
    assert str(refused.value) == f"kd_gat.curriculum.{key} must be a finite number > 0, got inf"
    huge = StageSettings.from_config({"curriculum": {key: 1e308}}, "gat", "student_kd")  # finite: taken
    assert getattr(huge.curriculum, key) == 1e308


@pytest.mark.parametrize(
    ("variant", "key"),
    [("teacher", "teacher_preset"), ("student_kd", "student_preset"), ("student", "student_preset")],
)
def test_an_unknown_preset_names_the_key_of_the_variant_that_uses_it(variant, key):
    """It said `config kd_gat.*_preset`, leaving the user to guess which of the two keys holds the bad name."""
    with pytest.raises(SettingsError) as error:
        StageSettings.from_config({key: "huge", "presets": {"mine": {}}}, "gat", variant)
    assert str(error.value) == (
        f"kd_gat.{key}: unknown size preset 'huge'; known: ['demo_student', 'demo_teacher', 'mine', 'student', "
        f"'teacher'] (kd_gat.presets defines more)"
    )


@pytest.mark.parametrize(
    ("dqn", "message"),
    [
        ({"fit_split": "train"}, r"kd_gat.dqn.fit_split/stop_split: not `train`"),
        (
            {"fit_split": "fusion", "stop_split": "train"},
            r"not `train`, the graphs the VGAE and GAT trained on",
        ),
        (
            {"fit_split": "test"},
            r"kd_gat.dqn.fit_split/stop_split: not `test`, the scenarios every model is scored",
        ),
        ({"fit_split": "fusion", "stop_split": "test"}, r"not `test`"),
        (
            {"fit_split": "val", "stop_split": "val"},
            r"kd_gat.dqn.fit_split must name a split file and differ",
        ),
        ({"kd_weighting": "teacher"}, r"kd_gat.dqn.kd_weighting must be one of"),
        ({"early_stop_share": 1.0}, r"kd_gat.dqn.early_stop_share"),
    ],
)
def test_dqn_never_learns_from_the_base_models_training_split(dqn, message):
    with pytest.raises(SettingsError, match=message):
        StageSettings.from_config({"dqn": dqn}, "dqn", "student")


def test_unknown_stage_or_variant_and_foreign_sections_fail():
    with pytest.raises(SettingsError, match="unknown stage 'fusion'"):
        StageSettings.from_config({}, "fusion", "teacher")
    with pytest.raises(SettingsError, match="unknown variant 'assistant'"):
        StageSettings.from_config({}, "gat", "assistant")
    values = StageSettings.from_config({}, "gat", "teacher").as_dict()
    with pytest.raises(SettingsError, match="the gat stage does not take the 'dqn' settings"):
        StageSettings.from_dict(values | {"dqn": {}})
    with pytest.raises(SettingsError, match=r"params.settings: unknown keys \['presets'\]"):
        StageSettings.from_dict(values | {"presets": {}})


def test_the_defaults_and_shipped_settings_docs_models_md_states_are_the_schemas_and_the_configs():
    """docs/models.md names the DQN's defaults (schema) and the shipped config's curriculum and fusion split."""
    text = " ".join((REPO / "docs/models.md").read_text().split())
    dqn = schema_defaults(KD_GAT["dqn"]["properties"])
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert "5 of 20 contiguous blocks of the fit windows (`early_stop_share: 0.25`)" in text
    assert dqn["early_stop_share"] == 0.25
    assert "`kd_gat.dqn.keep_folds` (5)" in text and dqn["keep_folds"] == 5
    assert "`false_alarm_cost` for a false alarm (both 1 by default)" in text
    assert dqn["miss_cost"] == dqn["false_alarm_cost"] == 1.0
    assert "`kd_gat.dqn.kd_weighting: agreement` (default)" in text and dqn["kd_weighting"] == "agreement"
    assert "the schema's default, for a preprocess without a fusion split, is `val.pt`" in text
    assert dqn["fit_split"] == "val" and dqn["gamma"] == 0.0  # "γ = 0"
    assert "(25 → 50 in the shipped config)" in text
    curriculum = config["kd_gat"]["curriculum"]
    assert (curriculum["start_percentile"], curriculum["end_percentile"]) == (25.0, 50.0)
    assert "`preprocess.held_out: {fusion: 0.3}`" in text and config["preprocess"]["held_out"] == {
        "fusion": 0.3
    }
    assert "`kd_gat.dqn: {fit_split: fusion, stop_split: val}`" in text
    shipped = config["kd_gat"]["dqn"]
    assert (shipped["fit_split"], shipped["stop_split"], shipped["keep_folds"]) == ("fusion", "val", 5)


def test_settings_given_as_no_mapping_are_refused_naming_params_settings():
    # params.settings="teacher" (a preset's name for the settings) died on dict()'s ValueError, a traceback
    with pytest.raises(
        SettingsError,
        match=r"^params.settings: expected a mapping \(StageSettings.as_dict\(\)\), got 'teacher'$",
    ):
        StageSettings.from_dict("teacher")
