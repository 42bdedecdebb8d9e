"""Summary table (CSV + Markdown) and teacher-vs-student chart from evaluate_detector's metrics.json files."""

import logging

from kdgat.evaluation import summarize_files

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
try:
    histories = snakemake.input.get("history", [])
    history_keys = snakemake.params.get("history_keys", [])
    if len(histories) != len(history_keys):
        raise ValueError(
            f"params.history_keys ({len(history_keys)}) must name every input.history ({len(histories)})"
        )
    summarize_files(
        metrics=list(snakemake.input.metrics),
        csv=snakemake.output.csv,
        markdown=snakemake.output.markdown,
        chart=snakemake.output.chart,
        histories=dict(zip(history_keys, histories, strict=True)),
        curves=snakemake.output.get("curves"),
        title=snakemake.params.get("title", ""),
    )
except Exception:
    logging.getLogger("summarize_evaluation").exception("summary failed")
    raise
