"""Snakemake wrapper: summaries over seeds (per-scenario table, teacher vs students, Markdown, chart) of evaluations."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.run import summarize_files
from kdgat.logs import configure, failure_logged

configure(snakemake.log[0])
with failure_logged("summarize_evaluation"):
    summarize_files(
        metrics=list(snakemake.input.metrics),
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
