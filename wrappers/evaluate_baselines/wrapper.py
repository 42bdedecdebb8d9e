"""Snakemake wrapper: the trivial baselines of one CAN dataset (unknown-ID rule, logistic regression on ID counts,
per-ID rate deviation)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.baselines import baselines_files
from kdgat.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (.tests/unit/test_wrapper_files.py; 0: it reads the
# first item): an input, output or param a rule names otherwise is logged as a warning.
TAKES = {
    "input": ("train", "val", "test", "metadata"),
    "output": ("metrics", "scores"),
    "params": ("dataset", "fpr_targets"),
}

configure_wrapper(
    "evaluate_baselines",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
)
with failure_logged("evaluate_baselines"):
    baselines_files(
        train=snakemake.input.train,
        val=snakemake.input.val,
        test=snakemake.input.test,
        metadata=snakemake.input.metadata,
        metrics=snakemake.output.metrics,
        scores=snakemake.output.scores,
        dataset=snakemake.params.get("dataset", "dataset"),
        fpr_targets=snakemake.params.get("fpr_targets", [0.05, 0.01, 0.001]),
    )
