"""Snakemake wrapper: a quasi-random design (Sobol, Latin hypercube or random) of parameter sets within bounds."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.design import write_design
from simcal.logs import configure, failure_logged

configure(snakemake.log[0])
with failure_logged("sample_design"):
    write_design(output=snakemake.output[0], **dict(snakemake.params.items()))
