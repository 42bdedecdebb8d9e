"""Named model sizes. `teacher` and `student` are the original KD-GAT pipeline's large and small models
(config/models/{vgae,gat,dqn}/{large,small}.yaml at DQN-Fusion 9d270b4); `demo_*` keep the demo fast.

Parameter counts at the original's vocabulary of 30 CAN IDs, the size its published counts
(reports/data/model_sizes.json) were taken at; the embedding and the VGAE's ID/neighbour heads grow with the
vocabulary. Equal to the original's, checked exactly by .tests/unit/test_models.py.

| preset   | VGAE    | GAT     | DQN     | original KD-GAT (VGAE / GAT / DQN) |
|----------|---------|---------|---------|------------------------------------|
| teacher  | 185,850 | 311,138 | 689,493 | 185,850 / 311,138 / 689,493        |
| student  |   9,186 |  49,202 |  32,341 |   9,186 /  49,202 /  32,341        |

Differences from the original that leave the counts unchanged: the VGAE decoder's hidden layers use `heads`
heads (the original: 4 whatever the preset), the neighbour targets mark both edge directions (the original: the
out-neighbours only). The original's graphs also carried edge features that no model used; ours no longer compute
them (docs/models.md, "Edge features").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

from kdgat.chain import STAGES

REFERENCE_NUM_IDS = 30

# The keyword arguments a preset may give each stage's model (kdgat.models; the training job adds num_ids, and the
# DQN's state width follows from the chain). Listed here because the settings are read while Snakemake parses the
# workflow, where torch is not imported; .tests/unit/test_presets.py checks them against the classes.
MODEL_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "vgae": ("embedding_dim", "hidden_dims", "latent_dim", "heads", "dropout", "logvar_clamp"),
    "gat": ("embedding_dim", "hidden", "heads", "num_layers", "fc_hidden", "fc_layers", "dropout"),
    "dqn": ("hidden", "num_layers", "dropout"),
}

PRESETS: dict[str, dict[str, dict]] = {
    "teacher": {
        "vgae": {
            "embedding_dim": 32,
            "hidden_dims": [480, 240],
            "latent_dim": 48,
            "heads": 4,
            "dropout": 0.15,
        },
        "gat": {
            "embedding_dim": 16,
            "hidden": 48,
            "heads": 8,
            "num_layers": 3,
            "fc_hidden": 32,
            "fc_layers": 1,
            "dropout": 0.2,
        },
        "dqn": {"hidden": 576, "num_layers": 3, "dropout": 0.2},
    },
    "student": {
        "vgae": {"embedding_dim": 4, "hidden_dims": [80, 40], "latent_dim": 16, "heads": 1, "dropout": 0.1},
        "gat": {
            "embedding_dim": 8,
            "hidden": 24,
            "heads": 4,
            "num_layers": 2,
            "fc_hidden": 192,
            "fc_layers": 2,
            "dropout": 0.1,
        },
        "dqn": {"hidden": 160, "num_layers": 2, "dropout": 0.2},
    },
    "demo_teacher": {
        "vgae": {"embedding_dim": 8, "hidden_dims": [48, 24], "latent_dim": 16, "heads": 2, "dropout": 0.1},
        "gat": {
            "embedding_dim": 8,
            "hidden": 16,
            "heads": 4,
            "num_layers": 2,
            "fc_hidden": 32,
            "fc_layers": 2,
            "dropout": 0.1,
        },
        "dqn": {"hidden": 64, "num_layers": 2, "dropout": 0.1},
    },
    "demo_student": {
        "vgae": {"embedding_dim": 4, "hidden_dims": [16, 8], "latent_dim": 8, "heads": 1, "dropout": 0.1},
        "gat": {
            "embedding_dim": 4,
            "hidden": 8,
            "heads": 2,
            "num_layers": 2,
            "fc_hidden": 16,
            "fc_layers": 2,
            "dropout": 0.1,
        },
        "dqn": {"hidden": 32, "num_layers": 2, "dropout": 0.1},
    },
}


# Arguments that count something (a width, heads, layers): whole numbers >= 1.
COUNT_ARGUMENTS = {"embedding_dim", "latent_dim", "heads", "hidden", "num_layers", "fc_hidden", "fc_layers"}


def _count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def argument_problems(stage: str, arguments: dict) -> list[tuple[str, str, object]]:
    """(argument, what it must be, its value) for each value the ``stage`` model cannot take, checked without
    building it (torch is not imported while the workflow is parsed)."""
    problems = []
    for key, value in arguments.items():
        if key in COUNT_ARGUMENTS and not _count(value):
            problems.append((key, "an integer >= 1", value))
        elif key == "hidden_dims" and not (
            isinstance(value, list | tuple) and value and all(map(_count, value))
        ):
            problems.append((key, "a non-empty list of integers >= 1", value))
        elif key == "dropout" and not (_number(value) and 0 <= value < 1):
            problems.append((key, "a number in [0, 1)", value))
        elif key == "logvar_clamp" and not (_number(value) and value > 0):
            problems.append((key, "a number > 0", value))
    if stage == "vgae" and not problems:
        # The first encoder layer and every decoder layer split their width over the heads (kdgat.models.vgae).
        heads, widths = arguments.get("heads", 1), arguments.get("hidden_dims", ())
        if any(width % heads for width in widths):
            problems.append(("hidden_dims", f"widths divisible by heads={heads}", widths))
    return problems


def resolve_preset(name: str, stage: str, custom: dict | None = None, key: str = "kd_gat.*_preset") -> dict:
    """Architecture keyword arguments of `stage` in preset `name`; `custom` (config) presets take precedence.
    `key`: the config key that gave `name` (kd_gat.teacher_preset, say), which an unknown name's message starts
    with."""
    if stage not in STAGES:
        raise ValueError(f"unknown model stage {stage!r}; expected one of {STAGES}")
    # The workflow's schema refuses these shapes; the `kdgat` command and direct library calls meet them here (a
    # stage left empty in YAML, `vgae:` with nothing after it, is None).
    if custom is not None and not isinstance(custom, Mapping):
        raise ValueError(
            "kd_gat.presets: expected a mapping of preset names to their model arguments, got "
            f"{type(custom).__name__}"
        )
    presets = {**PRESETS, **(custom or {})}
    if name not in presets:
        raise KeyError(
            f"{key}: unknown size preset {name!r}; known: {sorted(presets)} (kd_gat.presets defines more)"
        )
    if not isinstance(presets[name], Mapping):
        raise ValueError(
            f"kd_gat.presets.{name}: expected a mapping of vgae, gat and dqn model arguments, got {presets[name]!r}"
        )
    # Every stage, as the workflow's schema requires: `--set presets.demo_teacher.vgae.latent_dim=4` replaced
    # demo_teacher by the model's defaults plus latent_dim and trained that VGAE without a word.
    missing = [part for part in STAGES if part not in presets[name]]
    if missing:
        raise KeyError(
            f"kd_gat.presets.{name}: no {' and '.join(map(repr, missing))} section{'s' * (len(missing) > 1)} "
            f"(a preset gives {', '.join(STAGES[:-1])} and {STAGES[-1]}; a name of a built-in preset replaces it "
            "whole)"
        )
    arguments = presets[name][stage]
    if not isinstance(arguments, Mapping):
        raise ValueError(
            f"kd_gat.presets.{name}.{stage}: expected a mapping of model arguments, got {arguments!r}"
        )
    problem = model_argument_problem(stage, arguments, f"kd_gat.presets.{name}.{stage}")
    if problem:
        raise ValueError(problem)
    return copy.deepcopy(arguments)


def model_argument_problem(stage: str, arguments: Mapping, where: str) -> str | None:
    """Why the ``stage`` model cannot take ``arguments`` (``where``: the config key or setting that gives them): an
    unknown argument, naming the known ones, or the first value it cannot take, naming its key; None when it takes
    them. The one message for a preset (the workflow's config, the kdgat command) and a training job's settings."""
    unknown = sorted(set(arguments) - set(MODEL_ARGUMENTS[stage]))
    if unknown:
        return f"{where}: unknown model arguments {unknown}; known: {list(MODEL_ARGUMENTS[stage])}"
    for key, expected, value in argument_problems(stage, arguments):
        return f"{where}.{key}: expected {expected}, got {value!r}"
    return None
