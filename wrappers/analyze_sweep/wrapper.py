"""Snakemake wrapper: one row per parameter set of a sweep (replicate statistics of its outputs) plus a JSON summary."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.analyze import summarize_sweep_files
from simcal.logs import configure

configure(snakemake.log[0] if snakemake.log else None)
try:
    summarize_sweep_files(
        simulations_path=snakemake.input.get("simulations", snakemake.input[0]),
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary,
        **dict(snakemake.params.items()),
    )
except BaseException:
    logging.getLogger("simcal").exception("analyze_sweep failed")
    raise
