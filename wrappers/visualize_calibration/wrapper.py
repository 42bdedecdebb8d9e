"""Snakemake wrapper: a self-contained HTML page (inline PNGs) of a calibration, plus each picture as a PNG."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.logs import configure
from simcal.visualize import visualize

configure(snakemake.log[0] if snakemake.log else None)
params = snakemake.params
output = snakemake.output
try:
    visualize(
        trials_path=snakemake.input.trials,
        simulations_path=snakemake.input.simulations,
        observed_path=snakemake.input.observed,
        best_path=snakemake.input.best,
        summary_path=snakemake.input.summary,
        parameter_names=list(params.parameter_names),
        html_path=output.html,
        png_paths={name: output.get(name) for name in ("fit", "loss", "history") if output.get(name)},
        column=params.get("column", "incidence"),
        on=params.get("on", "day"),
        title=params.get("title", "Calibration"),
    )
except BaseException:
    logging.getLogger("simcal").exception("visualize failed")
    raise
