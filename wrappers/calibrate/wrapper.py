"""Snakemake wrapper: calibrate a model against observed data (quasi-random design, Optuna TPE rounds, refine) on one Dask cluster."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.calibrate import calibrate_files
from simcal.logs import configure, failure_logged

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure(snakemake.log[0])
    with failure_logged("calibrate"):
        calibrate_files(
            observed=snakemake.input.get("observed", snakemake.input[0]),
            simulations=snakemake.output.simulations,
            trials=snakemake.output.trials,
            threads=snakemake.threads,
            # monitoring: simulation settings that decide no row, which the calibration module keeps out of its
            # rerun trigger; they join the other simulation settings here
            simulation={
                **(snakemake.params.get("simulation") or {}),
                **snakemake.params.get("monitoring", {}),
            },
            **{
                key: value
                for key, value in snakemake.params.items()
                if key not in ("simulation", "monitoring")
            },
        )
