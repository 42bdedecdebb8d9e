"""Snakemake wrapper: run a parameter table × replicates through a model on Dask into one Parquet file.

Progress goes to the log and to ``<output>.progress.json``; finished batches wait in ``<output>.partial/`` for a
rerun. Everything else is ``simcal.runner.simulate``.
"""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.logs import configure
from simcal.runner import simulate

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure(snakemake.log[0] if snakemake.log else None)
    params = snakemake.params
    settings = dict(params.get("settings", {}) or {})
    if params.get("replicates") is not None:
        settings["replicates"] = params.get("replicates")
    try:
        simulate(
            model_ref=params.model,
            parameters=snakemake.input[0],
            output=snakemake.output[0],
            settings=settings,
            backend=params.get("backend", "local"),
            backend_options=params.get("backend_options", {}) or {},
            threads=snakemake.threads,
            fixed_params=params.get("fixed", {}) or {},
        )
    except BaseException:
        logging.getLogger("simcal").exception("simulate failed")
        raise
