# Helpers of the evaluation module: which datasets, variants and seeds to evaluate and where their inputs are.
import os
import re
import sys
from pathlib import Path

from kdgat.chain import STAGES, evaluation_rule
from kdgat.evaluation.targets import (
    configured_data_prefix,
    configured_datasets,
    configured_seeds,
    configured_variants,
    kd_gat_section,
)
from kdgat.tracking import TrackingSettings
from snakemake.exceptions import WorkflowError

EVALUATION = config["evaluation"]


include: "../learned_resources.smk"


# evaluation.mem_mb (scaled by the attempt) and evaluation.runtime; with learned_resources.enabled, what the
# rule's benchmarks call for.
evaluation_mem_mb = learned("mem_mb", lambda wildcards, attempt: EVALUATION["mem_mb"] * attempt)
evaluation_runtime = learned("runtime", EVALUATION["runtime"])


# Checked here, naming the config key: the preprocess and kd_gat schemas do not run when this module is used alone.
# A WorkflowError, as every config mistake a module refuses (the library raises ValueError: it knows no Snakemake).
try:
    DATASETS = configured_datasets(config)
    VARIANTS = configured_variants(config)
    SEEDS = configured_seeds(config)
    # The preprocess outputs (val.pt, test.pt) live where the kd_gat module reads them: kd_gat.data_prefix.
    DATA = configured_data_prefix(config)
except ValueError as error:
    raise WorkflowError(str(error)) from None
# Experiment tracking of the training jobs (kd_gat.tracking): an evaluation attaches its metrics and figures to
# the runs of the models it evaluated. An object, so Snakemake leaves it out of the params rerun trigger.
TRACKING = TrackingSettings.from_config(kd_gat_section(config).get("tracking"))
REPORT = "../../report"


# The notebook rule shells out to `papermill` (or `jupyter-nbconvert`); when Snakemake is started as
# `.venv/bin/snakemake` without activating the venv they are not on PATH. Put the running interpreter's bin first.
_interpreter_bin = str(Path(sys.executable).parent)
if _interpreter_bin not in os.environ.get("PATH", "").split(os.pathsep):
    # (sets PATH for this process's local subprocesses; not a required input, so no `envvars:` assertion)
    os.environ.update(PATH=os.pathsep.join([_interpreter_bin, os.environ.get("PATH", "")]))
