"""Typed settings of one training job, built from the ``kd_gat`` config section.

``StageSettings.from_config(section, stage, variant)`` decides what a stage of a variant needs: the size preset
resolved to model arguments, the stage's optimisation settings, the distillation settings for ``student_kd``, the
VGAE loss weights, the GAT curriculum or the DQN settings; a sweep row (``overrides``) replaces training settings or
model arguments. Unknown keys fail with the config key that holds them.

The kd_gat module calls it while Snakemake parses the workflow (so this file imports nothing heavy) and hands the
job ``as_dict()``: only what that job uses, so editing one preset or stage does not touch other jobs' params.
``from_dict`` reads it back in the job.
"""

from __future__ import annotations

import dataclasses
import functools
import operator
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from kdgat.chain import STAGES, STUDENT_KD, TEACHER, VARIANTS, preset_of
from kdgat.presets import argument_problems, model_argument_problem, resolve_preset
from kdgat.tracking.settings import TRACKING_KEY
from wrapper_rules import InputError


class SettingsError(ValueError, InputError):
    """A kd_gat setting that is unknown or out of range; the message names the config key."""


# What a message calls a setting: its kd_gat config key (kd_gat.training) in settings built from the config
# (from_config: the workflow, the kdgat command), its place in the settings a training wrapper is given
# (params.settings.training) in settings read back by from_dict, whose giver has no config key.
_GIVEN_AS: ContextVar[str | None] = ContextVar("settings_given_as", default=None)


def _key(config_key: str, part: str) -> str:
    """``config_key`` (kd_gat.dqn) as the settings' giver names it: itself, or params.settings.<part>."""
    root = _GIVEN_AS.get()
    return config_key if root is None else f"{root}.{part}"


setting_key = _key  # for the job's own refusals (kdgat.training.gat, dqn, held_out, data)


def given_by_wrapper() -> bool:
    """Whether the settings came as a training wrapper's params (their messages name no config key)."""
    return _GIVEN_AS.get() is not None


@dataclass(frozen=True)
class SettingPrefix:
    """How a training job's messages name its settings: ``kd_gat`` (config keys: kd_gat.dqn.keep_folds,
    kd_gat.tracking.backend) or ``params`` (a training wrapper's params.settings.dqn.keep_folds,
    params.tracking.backend). The kd_gat module passes ``SettingPrefix("kd_gat")``: an object, not a string, which
    Snakemake leaves out of its params rerun trigger (as TrackingSettings), so that it retrains nothing."""

    root: str


def settings_named(function):
    """``function`` (a stage's ``run``) takes ``setting_prefix``, ``"kd_gat"`` (the default: the workflow and the
    kdgat command) or ``"params"`` (a training wrapper's user), a string or a :class:`SettingPrefix`: its messages
    name the settings and the tracking settings under it."""

    @functools.wraps(function)
    def call(*args, setting_prefix: str | SettingPrefix = "kd_gat", **kwargs):
        root = setting_prefix.root if isinstance(setting_prefix, SettingPrefix) else setting_prefix
        if root not in ("kd_gat", "params"):
            raise SettingsError(
                f"setting_prefix must be 'kd_gat' (messages name config keys) or 'params' (a training wrapper's "
                f"params.settings and params.tracking), got {setting_prefix!r}"
            )
        given_as = _GIVEN_AS.set(None if root == "kd_gat" else "params.settings")
        tracking_key = TRACKING_KEY.set(f"{root}.tracking")
        try:
            return function(*args, **kwargs)
        finally:
            TRACKING_KEY.reset(tracking_key)
            _GIVEN_AS.reset(given_as)

    return call


def reject_unknown_keys(options: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Fail naming the config section and its unknown keys (the schema catches them too, but the library is
    also called directly)."""
    known = set(known)
    unknown = set(options) - known
    if unknown:
        raise SettingsError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")


def _mapping(options: Any, where: str) -> Mapping[str, Any]:
    """A config block that must be a mapping (None: empty); anything else fails naming the block."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise SettingsError(f"{where}: expected a mapping, got {type(options).__name__}")
    return options


def _section(cls, options: Mapping[str, Any] | None, where: str):
    """A dataclass from a config mapping: missing keys take the dataclass defaults, unknown keys fail, and a value
    of the wrong type fails naming its key (the schema checks types too, but settings also come from the
    command line and from direct library calls)."""
    options = dict(_mapping(options, where))
    reject_unknown_keys(options, cls.__dataclass_fields__, where)
    for name, value in options.items():
        expected = type(cls.__dataclass_fields__[name].default)
        # An integer is a fine float; a bool is not a number here.
        fits = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
        if not fits and not (expected is float and isinstance(value, int) and not isinstance(value, bool)):
            raise SettingsError(
                f"{where}.{name}: expected {expected.__name__}, got {value!r}{_yaml_hint(value, expected)}"
            )
    return cls(**options)


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    """Fail naming the config key, what it must be and what it was."""
    if not ok:
        raise SettingsError(f"{key} must be {expected}, got {value!r}")


def _yaml_hint(value: Any, expected: type) -> str:
    """Why a float can arrive as text: YAML 1.1 (PyYAML, Snakemake) reads 3e-3 and 1.0e5 as strings, as it wants
    both a decimal point and a signed exponent (3.0e-3, 1.0e+5)."""
    number = r"[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+"
    if expected is float and isinstance(value, str) and re.fullmatch(number, value.strip()):
        return (
            " (YAML reads a number like 3e-3 or 1.0e5 as text: write it with a decimal point and a signed "
            "exponent, 3.0e-3 or 1.0e+5)"
        )
    return ""


@dataclass(frozen=True)
class TrainingSettings:
    """Optimisation of one stage (``kd_gat.training.<stage>``); for the DQN stage an epoch is an episode."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.0001
    patience: int = 5
    grad_clip: float = 1.0

    def __post_init__(self):
        # Each bound is written so that NaN, which compares false with everything, fails it.
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise SettingsError(
                    f"{_key('kd_gat.training', 'training')}: {name} must be >= 1, got {getattr(self, name)!r}"
                )
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise SettingsError(
                    f"{_key('kd_gat.training', 'training')}: {name} must be > 0, got {getattr(self, name)!r}"
                )
        if not self.weight_decay >= 0:
            raise SettingsError(
                f"{_key('kd_gat.training', 'training')}: weight_decay must be >= 0, got {self.weight_decay!r}"
            )


@dataclass(frozen=True)
class DistillationSettings:
    """``kd_gat.distillation``: temperature of the GAT soft targets and the weight of the distillation term."""

    temperature: float = 4.0
    alpha: float = 0.7

    def __post_init__(self):
        if not self.temperature > 0 or not 0 <= self.alpha <= 1:  # NaN fails both
            raise SettingsError(
                f"{_key('kd_gat.distillation', 'distillation')}: temperature must be > 0 and alpha in [0, 1]"
            )


@dataclass(frozen=True)
class VGAELossWeights:
    """``kd_gat.vgae_loss``: weights of the VGAE loss terms next to the node-feature MSE."""

    id_weight: float = 0.1
    neighbour_weight: float = 0.05
    kl_weight: float = 0.01

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            _require(value >= 0, f"{_key('kd_gat.vgae_loss', 'loss')}.{name}", ">= 0", value)


@dataclass(frozen=True)
class CurriculumSettings:
    """``kd_gat.curriculum`` (see kdgat.curriculum.Curriculum, which takes these plus the epochs and seed)."""

    enabled: bool = True
    start_ratio: float = 1.0
    end_ratio: float = 4.0
    start_percentile: float = 25.0
    end_percentile: float = 50.0

    def __post_init__(self):
        where = _key("kd_gat.curriculum", "curriculum")
        for name in ("start_ratio", "end_ratio"):
            value = getattr(self, name)  # .inf passed, and the first epoch failed: "cannot convert float NaN"
            _require(value > 0 and value != float("inf"), f"{where}.{name}", "a finite number > 0", value)
        for name in ("start_percentile", "end_percentile"):
            value = getattr(self, name)
            _require(0 <= value <= 100, f"{where}.{name}", "in [0, 100]", value)

    def schedule(self) -> dict[str, float]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "enabled"}


KD_WEIGHTINGS = ("agreement", "uniform")


# Splits the DQN never learns or stops on, and why (the schema refuses them too).
NOT_DQN_SPLITS = {
    "train": "the graphs the VGAE and GAT trained on (on them the GAT is nearly always right and the agent learns "
    "to copy it)",
    "test": "the scenarios every model is scored on (an agent that learns or stops on them is scored on what it "
    "learnt)",
}


# The least value of each integer setting of kd_gat.dqn (the schema's `minimum`); a test keeps the two equal.
MINIMUMS_OF_DQN = {
    "buffer_size": 1,
    "batch_size": 1,
    "steps_per_episode": 2,  # half normal, half attack graphs
    "updates_per_episode": 1,
    "target_update": 1,
}


@dataclass(frozen=True)
class DQNSettings:
    """``kd_gat.dqn``: the reinforcement-learning side of the fusion stage (see kdgat.training.dqn)."""

    buffer_size: int = 50000
    batch_size: int = 64
    steps_per_episode: int = 512
    updates_per_episode: int = 16
    gamma: float = 0.0
    target_update: int = 50
    eps_start: float = 1.0
    eps_end: float = 0.05
    miss_cost: float = 1.0
    false_alarm_cost: float = 1.0
    early_stop_share: float = 0.25
    # Folds of the fit + stop graphs on which copies of the agent are trained and judged out of fold to decide
    # whether the learnt policy is kept (kdgat.training.fusion_policy); 0: judged on the stop graphs alone.
    keep_folds: int = 5
    kd_weighting: str = "agreement"
    # Which preprocess split files the kd_gat module gives the stage (<split>.pt): it learns from `fit_split` and
    # early-stops on `stop_split` (empty: blocks held out of the fit split, early_stop_share of them).
    fit_split: str = "val"
    stop_split: str = ""

    def __post_init__(self):
        dqn = _key("kd_gat.dqn", "dqn")
        # The minimums of the module's config schema (workflow/modules/kd_gat/schemas/config.schema.yaml).
        for name, least in MINIMUMS_OF_DQN.items():
            value = getattr(self, name)
            _require(value >= least, f"{dqn}.{name}", f"an integer >= {least}", value)
        _require(
            self.batch_size <= self.buffer_size,
            f"{dqn}.batch_size",
            f"at most {dqn}.buffer_size ({self.buffer_size}; a larger batch is never drawn, so the agent "
            "would not learn)",
            self.batch_size,
        )
        for name in ("eps_start", "eps_end"):
            _require(0 <= getattr(self, name) <= 1, f"{dqn}.{name}", "in [0, 1]", getattr(self, name))
        if not 0 <= self.gamma <= 1:
            raise SettingsError(f"{dqn}.gamma must lie in [0, 1], got {self.gamma}")
        if not (self.miss_cost > 0 and self.false_alarm_cost > 0):  # NaN fails it
            raise SettingsError(f"{dqn}: miss_cost and false_alarm_cost must be > 0")
        if not 0 < self.early_stop_share < 1:
            raise SettingsError(f"{dqn}.early_stop_share must lie in (0, 1), got {self.early_stop_share}")
        if self.keep_folds < 0 or self.keep_folds == 1:
            raise SettingsError(f"{dqn}.keep_folds must be 0 or at least 2, got {self.keep_folds}")
        for split, why in NOT_DQN_SPLITS.items():
            if split in (self.fit_split, self.stop_split):
                raise SettingsError(
                    f"{dqn}.fit_split/stop_split: not `{split}`, {why}; use a held-out split such as `val`"
                )
        if not self.fit_split or self.fit_split == self.stop_split:
            raise SettingsError(f"{dqn}.fit_split must name a split file and differ from stop_split")
        if self.kd_weighting not in KD_WEIGHTINGS:
            raise SettingsError(
                f"{dqn}.kd_weighting must be one of {KD_WEIGHTINGS}, got {self.kd_weighting!r}"
            )


# Keys of the kd_gat section that the workflow module reads (paths, which variants, resources, the sweep table):
# accepted here, not used by a training job.
WORKFLOW_KEYS = ("data_prefix", "variants", "resources", "sweep", "tracking")
SECTION_DEFAULTS = {"teacher_preset": "teacher", "student_preset": "student", "device": "auto", "seed": 42}
SECTION_KEYS = (
    *WORKFLOW_KEYS,
    *SECTION_DEFAULTS,
    "presets",
    "distillation",
    "vgae_loss",
    "curriculum",
    "training",
    "dqn",
)
TRAINING_KEYS = tuple(TrainingSettings.__dataclass_fields__)


@dataclass(frozen=True)
class StageSettings:
    """Everything one training job of the chain needs; sections a stage does not use are None."""

    stage: str
    variant: str
    preset: str
    model: dict[str, Any]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    seed: int = 42
    device: str = "auto"
    distillation: DistillationSettings | None = None  # student_kd only
    loss: VGAELossWeights | None = None  # vgae only
    curriculum: CurriculumSettings | None = None  # gat only
    dqn: DQNSettings | None = None  # dqn only
    overrides: dict[str, Any] = field(default_factory=dict)  # the sweep row already applied above

    def __post_init__(self):
        if self.stage not in STAGES:
            raise SettingsError(f"unknown stage {self.stage!r}; expected one of {STAGES}")
        if self.variant not in VARIANTS:
            raise SettingsError(
                f"unknown variant {self.variant!r} ({_key('kd_gat.variants', 'variant')}); "
                f"expected one of {VARIANTS}"
            )
        _seed(self.seed)
        # A preset's arguments were checked as the preset was read; settings given whole (a training wrapper's
        # params.settings, from_dict) reached the model's constructor, and torch's traceback, unchecked.
        where = _key("training settings 'model'", "model")
        if not isinstance(self.model, Mapping):
            raise SettingsError(
                f"{where}: expected a mapping of the {self.stage} model's arguments, got {self.model!r}"
            )
        problem = model_argument_problem(self.stage, self.model, where)
        if problem:
            raise SettingsError(problem)
        needs = {"vgae": "loss", "gat": "curriculum", "dqn": "dqn"}
        for stage, name in needs.items():
            if (getattr(self, name) is not None) != (stage == self.stage):
                state = "needs" if stage == self.stage else "does not take"
                raise SettingsError(f"the {self.stage} stage {state} the {name!r} settings")

    @classmethod
    def from_config(
        cls,
        section: Mapping[str, Any] | None,
        stage: str,
        variant: str,
        overrides: Mapping[str, Any] | None = None,
    ) -> StageSettings:
        """The settings of ``stage`` for ``variant`` from the ``kd_gat`` config section (defaults filled in)."""
        section = dict(section or {})
        reject_unknown_keys(section, SECTION_KEYS, "kd_gat")
        if stage not in STAGES:
            raise SettingsError(f"unknown stage {stage!r}; expected one of {STAGES}")
        if variant not in VARIANTS:
            raise SettingsError(f"unknown variant {variant!r} (kd_gat.variants); expected one of {VARIANTS}")
        top = {key: section.get(key, default) for key, default in SECTION_DEFAULTS.items()}
        preset = preset_of(variant, top["teacher_preset"], top["student_preset"])
        training_sections = dict(_mapping(section.get("training"), "kd_gat.training"))
        reject_unknown_keys(training_sections, STAGES, "kd_gat.training")
        key = "kd_gat.teacher_preset" if variant == TEACHER else "kd_gat.student_preset"
        try:
            model = resolve_preset(preset, stage, section.get("presets"), key)
        except (KeyError, ValueError) as error:
            # str() of a KeyError quotes its message; args[0] is the message itself.
            raise SettingsError(str(error.args[0]) if isinstance(error, KeyError) else str(error)) from None
        training = dict(_mapping(training_sections.get(stage), f"kd_gat.training.{stage}"))
        model, training, applied = _apply_overrides(model, training, overrides, stage, preset)
        return cls(
            stage=stage,
            variant=variant,
            preset=preset,
            model=model,
            training=_section(TrainingSettings, training, f"kd_gat.training.{stage}"),
            seed=_seed(top["seed"]),
            device=str(top["device"]),
            distillation=_section(DistillationSettings, section.get("distillation"), "kd_gat.distillation")
            if variant == STUDENT_KD
            else None,
            loss=_section(VGAELossWeights, section.get("vgae_loss"), "kd_gat.vgae_loss")
            if stage == "vgae"
            else None,
            curriculum=_section(CurriculumSettings, section.get("curriculum"), "kd_gat.curriculum")
            if stage == "gat"
            else None,
            dqn=_section(DQNSettings, section.get("dqn"), "kd_gat.dqn") if stage == "dqn" else None,
            overrides=applied,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values only (Snakemake params, checkpoint fingerprints, metrics)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> StageSettings:
        """The inverse of :meth:`as_dict` (what a training wrapper receives as ``params.settings``)."""
        if isinstance(values, StageSettings):
            return values
        given_as = _GIVEN_AS.set("params.settings")  # a training wrapper's, not config keys
        try:
            return cls._from_dict(values)
        finally:
            _GIVEN_AS.reset(given_as)

    @classmethod
    def _from_dict(cls, values: Mapping[str, Any]) -> StageSettings:
        if not isinstance(values, Mapping):
            raise SettingsError(
                f"params.settings: expected a mapping (StageSettings.as_dict()), got {values!r}"
            )
        values = dict(values)
        reject_unknown_keys(values, cls.__dataclass_fields__, "params.settings")
        missing = [key for key in ("stage", "variant", "preset", "model") if key not in values]
        if missing:
            raise SettingsError(f"params.settings lack {missing} (build them with StageSettings.from_config)")
        sections = {
            "training": TrainingSettings,
            "distillation": DistillationSettings,
            "loss": VGAELossWeights,
            "curriculum": CurriculumSettings,
            "dqn": DQNSettings,
        }
        for name, section_class in sections.items():
            if values.get(name) is not None:
                values[name] = _section(section_class, values[name], f"params.settings.{name}")
        return cls(**values)


def _seed(value: Any) -> int:
    """A seed as every RNG takes it: numpy wants [0, 2**32 - 1]; a float or text is refused, not truncated."""
    try:
        seed = operator.index(value)  # int and numpy integers, not 1.7 or "3"
    except TypeError:
        seed = None
    if seed is None or isinstance(value, bool) or not 0 <= seed < 2**32:
        where = _key("kd_gat.seed (the workflow sets it from kd_gat.seeds)", "seed")
        raise SettingsError(f"{where} must be an integer in [0, 2**32 - 1], got {value!r}")
    return seed


def _plain(value):
    """Paramspace rows hold numpy scalars: plain Python values keep params comparable and JSON-able."""
    return value.item() if hasattr(value, "item") else value


def _apply_overrides(model: dict, training: dict, overrides, stage: str, preset: str):
    applied = {str(key): _plain(value) for key, value in (overrides or {}).items()}
    model, training = dict(model), dict(training)
    for key, value in applied.items():
        if key in TRAINING_KEYS:
            training[key] = value
        elif key in model:
            model[key] = value
        else:
            raise SettingsError(
                f"sweep column {key!r} is neither a training setting {list(TRAINING_KEYS)} nor an argument of "
                f"the {stage} model of preset {preset!r} {sorted(model)}"
            )
    # The preset passed these checks, so whatever fails now comes from the sweep's columns: a column's own value, or
    # an argument the columns no longer fit (heads that do not divide the preset's hidden_dims).
    problems = argument_problems(stage, model)
    if problems:
        key, expected, value = problems[0]
        if key in applied:
            raise SettingsError(f"sweep column {key!r}: expected {expected}, got {value!r}")
        columns = sorted(column for column in applied if column in model)
        raise SettingsError(
            f"sweep columns {columns}: the {stage} model of preset {preset!r} then has {key} {value!r}, "
            f"expected {expected}"
        )
    return model, training, applied
