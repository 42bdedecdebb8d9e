"""Snakemake wrapper: a self-contained HTML page (inline PNGs) of a sweep, plus each picture as a PNG."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.logs import configure
from simcal.visualize import visualize_sweep

configure(snakemake.log[0] if snakemake.log else None)
try:
    visualize_sweep(
        simulations_path=snakemake.input.simulations,
        table_path=snakemake.input.table,
        summary_path=snakemake.input.summary,
        html_path=snakemake.output.html,
        png_paths={
            name: snakemake.output.get(name) for name in ("outputs", "series") if snakemake.output.get(name)
        },
        **dict(snakemake.params.items()),
    )
except BaseException:
    logging.getLogger("simcal").exception("visualize_sweep failed")
    raise
