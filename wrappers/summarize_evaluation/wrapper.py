"""Summary table (CSV + Markdown) and teacher-vs-student chart from evaluate_detector's metrics.json files."""

import logging

from kdgat.evaluation.run import summarize_files

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
try:
    summarize_files(
        metrics=list(snakemake.input.metrics),
        csv=snakemake.output.csv,
        markdown=snakemake.output.markdown,
        chart=snakemake.output.chart,
        histories=snakemake.input.get("history", []),
        history_keys=snakemake.params.get("history_keys", []),
        curves=snakemake.output.get("curves"),
        title=snakemake.params.get("title", ""),
    )
except Exception:
    logging.getLogger("summarize_evaluation").exception("summary failed")
    raise
