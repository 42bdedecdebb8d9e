"""Snakemake wrapper: the trivial baselines of one CAN dataset (unknown-ID rule, logistic regression on ID counts,
per-ID rate deviation)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.baselines import baselines_files
from kdgat.logs import configure_wrapper, failure_logged

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("dataset", "fpr_targets")

configure_wrapper("evaluate_baselines", snakemake.log, snakemake.params, PARAMS)
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
