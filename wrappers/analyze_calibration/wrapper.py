"""Snakemake wrapper: best parameters, top-k and summary statistics of a calibration (Parquet + JSON)."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.analyze import analyze_files
from simcal.logs import configure

configure(snakemake.log[0] if snakemake.log else None)
params = snakemake.params
try:
    best = analyze_files(
        trials_path=snakemake.input.get("trials", snakemake.input[0]),
        parameter_names=list(params.parameter_names),
        best_path=snakemake.output.best,
        top_k_path=snakemake.output.top_k,
        summary_path=snakemake.output.summary,
        top_k=int(params.get("top_k", 10)),
        true_params=params.get("true_params") or None,
    )
    logging.getLogger("simcal").info("best parameters: %s (loss %.6g)", best["params"], best["loss"])
except BaseException:
    logging.getLogger("simcal").exception("analyze failed")
    raise
