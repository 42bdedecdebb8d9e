"""Snakemake wrapper: observed data from a generator ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure, failure_logged
from simcal.observed import generate_observed

configure(snakemake.log[0])
with failure_logged("generate_observed"):
    generate_observed(output=snakemake.output[0], **dict(snakemake.params.items()))
