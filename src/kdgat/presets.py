"""Named model sizes. `teacher` and `student` follow the original KD-GAT pipeline; `demo_*` keep the demo fast.

Parameter counts at the reference vocabulary of 53 CAN IDs (set_01's size; the embedding and the ID/neighbour
heads grow with the vocabulary). Checked exactly by .tests/unit/test_models.py.

| preset   | VGAE    | GAT     | DQN     | original KD-GAT (VGAE / GAT / DQN) |
|----------|---------|---------|---------|------------------------------------|
| teacher  | 183,496 | 311,506 | 689,493 | 185,850 / 311,138 / 689,493        |
| student  |   9,180 |  49,034 |  32,341 |   9,186 /  49,202 /  32,341        |
"""

from __future__ import annotations

import copy

from kdgat.chain import STAGES

REFERENCE_NUM_IDS = 53

PRESETS: dict[str, dict[str, dict]] = {
    "teacher": {
        "vgae": {
            "embedding_dim": 32,
            "hidden_dims": [352, 176, 48],
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
        "vgae": {"embedding_dim": 4, "hidden_dims": [48, 32], "latent_dim": 16, "heads": 1, "dropout": 0.1},
        "gat": {
            "embedding_dim": 8,
            "hidden": 32,
            "heads": 4,
            "num_layers": 3,
            "fc_hidden": 32,
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


def resolve_preset(name: str, stage: str, custom: dict | None = None) -> dict:
    """Architecture keyword arguments of `stage` in preset `name`; `custom` (config) presets take precedence."""
    if stage not in STAGES:
        raise ValueError(f"unknown model stage {stage!r}; expected one of {STAGES}")
    presets = {**PRESETS, **(custom or {})}
    if name not in presets:
        raise KeyError(f"unknown size preset {name!r} (config kd_gat.*_preset); known: {sorted(presets)}")
    if stage not in presets[name]:
        raise KeyError(f"size preset {name!r} has no {stage!r} section")
    return copy.deepcopy(presets[name][stage])
