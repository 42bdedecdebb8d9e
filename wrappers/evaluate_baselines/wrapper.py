"""Snakemake wrapper: the trivial baselines of one CAN dataset (unknown-ID rule, logistic regression on ID counts,
per-ID rate deviation)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.baselines import baselines_files
from kdgat.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("train", "val", "test", "metadata"),
    "output": ("metrics", "scores"),
    "params": ("dataset", "fpr_targets"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("dataset", "fpr_targets"),
}

configure_wrapper(
    "evaluate_baselines",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "evaluate_baselines",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    baselines_files(
        train=snakemake.input.train,
        val=snakemake.input.val,
        test=snakemake.input.test,
        metadata=snakemake.input.metadata,
        metrics=snakemake.output.metrics,
        scores=snakemake.output.scores,
        dataset=snakemake.params.get("dataset"),  # None: the name metadata.json records
        fpr_targets=snakemake.params.get("fpr_targets", [0.05, 0.01, 0.001]),
    )
