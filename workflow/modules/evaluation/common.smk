# Helpers of the evaluation module: which datasets, variants and seeds to evaluate and where their inputs are.
import os
import re
import sys
from pathlib import Path

from kdgat.chain import DEFAULT_SEEDS, STAGES, VARIANTS as ALL_VARIANTS, evaluation_rule
from kdgat.tracking import TrackingSettings

EVALUATION = config["evaluation"]


include: "../learned_resources.smk"


# evaluation.mem_mb (scaled by the attempt) and evaluation.runtime; with learned_resources.enabled, what the
# rule's benchmarks call for.
evaluation_mem_mb = learned("mem_mb", lambda wildcards, attempt: EVALUATION["mem_mb"] * attempt)
evaluation_runtime = learned("runtime", EVALUATION["runtime"])
# The preprocess outputs (val.pt, test.pt) live where the kd_gat module reads them: kd_gat.data_prefix.
DATA = config.get("kd_gat", {}).get("data_prefix", "results/preprocess").rstrip("/")
# Experiment tracking of the training jobs (kd_gat.tracking): an evaluation attaches its metrics and figures to
# the runs of the models it evaluated. An object, so Snakemake leaves it out of the params rerun trigger.
TRACKING = TrackingSettings.from_config(config.get("kd_gat", {}).get("tracking"))


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
            f"config key 'kd_gat.variants' has unknown variants {unknown}; expected {list(ALL_VARIANTS)}"
        )
    return [v for v in ALL_VARIANTS if v in variants]


def configured_seeds():
    """kd_gat.seeds (validated by the kd_gat module's schema); its default when the kd_gat section is absent."""
    return [int(seed) for seed in config.get("kd_gat", {}).get("seeds", DEFAULT_SEEDS)]


DATASETS = configured_datasets()
VARIANTS = configured_variants()
SEEDS = configured_seeds()
REPORT = "../../report"


# The notebook rule shells out to `papermill` (or `jupyter-nbconvert`); when Snakemake is started as
# `.venv/bin/snakemake` without activating the venv they are not on PATH. Put the running interpreter's bin first.
_interpreter_bin = str(Path(sys.executable).parent)
if _interpreter_bin not in os.environ.get("PATH", "").split(os.pathsep):
    # (sets PATH for this process's local subprocesses; not a required input, so no `envvars:` assertion)
    os.environ.update(PATH=os.pathsep.join([_interpreter_bin, os.environ.get("PATH", "")]))
