"""Snakemake wrapper: a self-contained HTML page (inline PNGs) of a sweep, plus each picture as a PNG."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure, failure_logged
from simcal.visualize import visualize_sweep

configure(snakemake.log[0])
with failure_logged("visualize_sweep"):
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
