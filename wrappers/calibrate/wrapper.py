"""Snakemake wrapper: calibrate a model against observed data (quasi-random design, Optuna TPE rounds, refine) on one Dask cluster."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.calibrate import calibrate_files
from simcal.logs import configure

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure(snakemake.log[0] if snakemake.log else None)
    try:
        calibrate_files(
            observed=snakemake.input.get("observed", snakemake.input[0]),
            simulations=snakemake.output.simulations,
            trials=snakemake.output.trials,
            threads=snakemake.threads,
            **dict(snakemake.params.items()),
        )
    except BaseException:
        logging.getLogger("simcal").exception("calibrate failed")
        raise
