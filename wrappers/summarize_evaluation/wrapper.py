"""Snakemake wrapper: summaries over seeds (per-scenario table, teacher vs students, Markdown, chart) of evaluations."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.run import summarize_files
from kdgat.logs import configure_wrapper, failure_logged
from kdgat.rule_items import listed

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("metrics", "baselines", "history"),
    "output": ("csv", "markdown", "scenarios", "chart", "curves"),
    "params": ("history_keys", "title"),
}
OPTIONAL = {
    "input": ("baselines", "history"),
    "output": ("curves",),
    "params": ("history_keys", "title"),
}

configure_wrapper(
    "summarize_evaluation",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "summarize_evaluation",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    summarize_files(
        metrics=snakemake.input.metrics,  # one path or several (summarize_files)
        baselines=snakemake.input.get("baselines", []),
        csv=snakemake.output.csv,
        markdown=snakemake.output.markdown,
        chart=snakemake.output.chart,
        scenarios=snakemake.output.scenarios,
        histories=snakemake.input.get("history", []),
        history_keys=listed(snakemake.params.get("history_keys", [])),  # one key given as a string is one key
        curves=snakemake.output.get("curves"),
        title=snakemake.params.get("title", ""),
    )
