"""Snakemake wrapper: the trivial baselines of one CAN dataset (unknown-ID rule, logistic regression on ID counts,
per-ID rate deviation)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.baselines import baselines_files
from kdgat.logs import configure, failure_logged

configure(snakemake.log[0])
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
