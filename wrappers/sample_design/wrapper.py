"""Snakemake wrapper: a quasi-random design (Sobol, Latin hypercube or random) of parameter sets within bounds."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.design import write_design
from simcal.logs import configure

configure(snakemake.log[0] if snakemake.log else None)
try:
    write_design(output=snakemake.output[0], **dict(snakemake.params.items()))
except BaseException:
    logging.getLogger("simcal").exception("sample_design failed")
    raise
