"""The KD-GAT chain's vocabulary, defined once: stages, variants, scored models, rule names, feature counts.

The library, the kd_gat and evaluation modules (at parse time, so this file imports nothing heavy), the config
schemas and the profiles all use these names; .tests/unit/test_chain.py checks the schemas' enums, the modules'
rule lists and the profiles' GPU settings against them.
"""

from __future__ import annotations

# Training stages in chain order: the VGAE's anomaly score drives the GAT curriculum, the DQN fuses both.
STAGES = ("vgae", "gat", "dqn")

# Variants of every chain: the large models, the small ones distilled from the teacher of the same stage, and the
# small ones trained alone (the distillation baseline).
TEACHER, STUDENT_KD, STUDENT = "teacher", "student_kd", "student"
VARIANTS = (TEACHER, STUDENT_KD, STUDENT)
VARIANT_TITLES = {TEACHER: "teacher", STUDENT_KD: "student (KD)", STUDENT: "student (no KD)"}
# The variants whose preset and VGAE a GAT sweep can use (distillation takes no part in a sweep).
SWEEP_VARIANTS = (TEACHER, STUDENT)
SWEEP_STAGE = "gat"

# What evaluation scores: each stage's model alone, the DQN stage as the fused detector.
MODELS = ("vgae", "gat", "fusion")
MODEL_TITLES = {"vgae": "VGAE (alone)", "gat": "GAT (alone)", "fusion": "DQN fusion"}

# Seeds of every variant's training when kd_gat.seeds is not given (the kd_gat schema's default; the evaluation
# module, importable without the kd_gat section, uses it too).
DEFAULT_SEEDS = (42, 43, 44)

# Window graphs (kdgat.graphs): node features [CAN-ID index, 8 payload-byte means, count, position] and one edge
# feature, the edge's message count (read by the trivial baselines only). The models' input width follows from
# NODE_FEATURES.
NODE_FEATURES = 11
EDGE_FEATURES = 1


def training_rule(stage: str, variant: str) -> str:
    """The kd_gat module's rule that trains ``stage`` of ``variant`` (before a caller's ``use rule`` prefix)."""
    return f"train_{stage}_{variant}"


TRAINING_RULES = tuple(training_rule(stage, variant) for variant in VARIANTS for stage in STAGES)
SWEEP_RULE = f"train_{SWEEP_STAGE}_sweep"
# Rules of the kd_gat module that ask for a GPU (resources gpu=1).
GPU_TRAINING_RULES = (*TRAINING_RULES, SWEEP_RULE)


def evaluation_rule(variant: str) -> str:
    """The evaluation module's rule that evaluates ``variant`` of a dataset."""
    return f"evaluate_{variant}"


def preset_of(variant: str, teacher_preset: str, student_preset: str) -> str:
    """Which configured size preset a variant uses: the teacher's, or the students' for both student variants."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    return teacher_preset if variant == TEACHER else student_preset


# The decision rule of the GAT and of the fused detector: attack when p(attack) > DECISION_THRESHOLD (a tie is
# normal), in training, fusion and evaluation alike (kdgat.evaluation.thresholds).
DECISION_THRESHOLD = 0.5
