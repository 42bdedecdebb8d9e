"""Snakemake wrapper: a self-contained HTML page (inline PNGs) of a calibration, plus each picture as a PNG."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure, failure_logged
from simcal.visualize import visualize

configure(snakemake.log[0])
with failure_logged("visualize_calibration"):
    visualize(
        trials_path=snakemake.input.trials,
        simulations_path=snakemake.input.simulations,
        observed_path=snakemake.input.observed,
        best_path=snakemake.input.best,
        summary_path=snakemake.input.summary,
        html_path=snakemake.output.html,
        png_paths={
            name: snakemake.output.get(name)
            for name in ("fit", "loss", "history")
            if snakemake.output.get(name)
        },
        **dict(snakemake.params.items()),
    )
