"""Snakemake wrapper: best parameters, top-k and summary statistics of a calibration (Parquet + JSON)."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.analyze import analyze_files
from simcal.logs import configure

configure(snakemake.log[0] if snakemake.log else None)
try:
    analyze_files(
        trials_path=snakemake.input.get("trials", snakemake.input[0]),
        best_path=snakemake.output.best,
        top_k_path=snakemake.output.top_k,
        summary_path=snakemake.output.summary,
        **dict(snakemake.params.items()),
    )
except BaseException:
    logging.getLogger("simcal").exception("analyze_calibration failed")
    raise
