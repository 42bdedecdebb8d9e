"""Snakemake wrapper: best parameters, top-k and summary statistics of a calibration (Parquet + JSON)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.analyze import analyze_files
from simcal.logs import configure, failure_logged

configure(snakemake.log[0])
with failure_logged("analyze_calibration"):
    analyze_files(
        trials_path=snakemake.input.get("trials", snakemake.input[0]),
        best_path=snakemake.output.best,
        top_k_path=snakemake.output.top_k,
        summary_path=snakemake.output.summary,
        **dict(snakemake.params.items()),
    )
