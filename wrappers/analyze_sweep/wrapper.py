"""Snakemake wrapper: one row per parameter set of a sweep (replicate statistics of its outputs) plus a JSON summary."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.analyze import summarize_sweep_files
from simcal.logs import configure, failure_logged

configure(snakemake.log[0])
with failure_logged("analyze_sweep"):
    summarize_sweep_files(
        simulations_path=snakemake.input.get("simulations", snakemake.input[0]),
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary,
        **dict(snakemake.params.items()),
    )
