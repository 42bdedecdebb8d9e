"""Snakemake wrapper: summaries over seeds (per-scenario table, teacher vs students, Markdown, chart) of evaluations."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.run import summarize_files
from kdgat.logs import configure_wrapper, failure_logged

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("history_keys", "title")

configure_wrapper("summarize_evaluation", snakemake.log, snakemake.params, PARAMS)
with failure_logged("summarize_evaluation"):
    summarize_files(
        metrics=snakemake.input.metrics,  # one path or several (summarize_files)
        baselines=snakemake.input.get("baselines", []),
        csv=snakemake.output.csv,
        markdown=snakemake.output.markdown,
        chart=snakemake.output.chart,
        scenarios=snakemake.output.scenarios,
        histories=snakemake.input.get("history", []),
        history_keys=snakemake.params.get("history_keys", []),
        curves=snakemake.output.get("curves"),
        title=snakemake.params.get("title", ""),
    )
