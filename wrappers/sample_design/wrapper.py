"""Snakemake wrapper: a quasi-random design (Sobol, Latin hypercube or random) of parameter sets within bounds."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.design import sample_design
from simcal.logs import configure
from simcal.tables import write_csv, write_parquet

configure(snakemake.log[0] if snakemake.log else None)
params = snakemake.params
try:
    design = sample_design(
        params.parameters, int(params.n), params.get("kind", "sobol"), int(params.get("seed", 0))
    )
    output = snakemake.output[0]
    if output.endswith(".parquet"):
        write_parquet(design, output)
    else:
        write_csv(design, output) if output.endswith(".csv") else design.to_csv(output, sep="\t", index=False)
    logging.getLogger("simcal").info("wrote %d parameter sets to %s", len(design), output)
except BaseException:
    logging.getLogger("simcal").exception("sample_design failed")
    raise
