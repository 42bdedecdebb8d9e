"""Snakemake wrapper: calibrate a model against observed data in rounds (quasi-random design, then Optuna TPE) on one Dask cluster."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

import pandas as pd

from simcal.calibrate import calibrate
from simcal.logs import configure

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure(snakemake.log[0] if snakemake.log else None)
    params = snakemake.params
    observed_path = snakemake.input.get("observed", snakemake.input[0])
    try:
        observed = (
            pd.read_parquet(observed_path)
            if observed_path.endswith(".parquet")
            else pd.read_csv(observed_path, sep="\t" if observed_path.endswith(".tsv") else ",")
        )
        calibrate(
            model_ref=params.model,
            observed=observed,
            parameters=params.parameters,
            targets=params.targets,
            simulations_output=snakemake.output.simulations,
            trials_output=snakemake.output.trials,
            settings=params.get("settings", {}) or {},
            simulation=params.get("simulation", {}) or {},
            fixed_params=params.get("fixed", {}) or {},
            backend=params.get("backend", "local"),
            backend_options=params.get("backend_options", {}) or {},
            threads=snakemake.threads,
        )
    except BaseException:
        logging.getLogger("simcal").exception("calibrate failed")
        raise
