"""Snakemake wrapper: observed data from a generator ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.logs import configure
from simcal.observed import generate_observed

configure(snakemake.log[0] if snakemake.log else None)
try:
    generate_observed(output=snakemake.output[0], **dict(snakemake.params.items()))
except BaseException:
    logging.getLogger("simcal").exception("generate_observed failed")
    raise
