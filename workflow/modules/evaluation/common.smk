# Helpers of the evaluation module: which datasets and variants to evaluate, where the wrappers are.
import re
from pathlib import Path

WRAPPERS = Path(workflow.current_basedir.get_path_or_uri(secret_free=True)).parents[2] / "wrappers"
EVALUATION = config["evaluation"]
ALL_VARIANTS = ["teacher", "student_kd", "student"]
STAGES = ["vgae", "gat", "dqn"]


def configured_datasets():
    datasets = config.get("datasets")
    if not datasets:
        raise ValueError(
            "config key 'datasets' is missing or empty: the evaluation module evaluates every dataset named there"
        )
    return list(datasets)


def configured_variants():
    variants = list(config.get("kd_gat", {}).get("variants", ALL_VARIANTS))
    unknown = sorted(set(variants) - set(ALL_VARIANTS))
    if unknown:
        raise ValueError(
            f"config key 'kd_gat.variants' has unknown variants {unknown}; expected {ALL_VARIANTS}"
        )
    return [v for v in ALL_VARIANTS if v in variants]


DATASETS = configured_datasets()
VARIANTS = configured_variants()
REPORT = "../../report"
