"""Snakemake wrapper: a quasi-random design (Sobol, Latin hypercube or random) of parameter sets within bounds."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.design import write_design
from simcal.logs import configure_wrapper, failure_logged

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("parameters", "n", "kind", "seed", "model")

configure_wrapper("sample_design", snakemake.log, snakemake.params, PARAMS)
with failure_logged("sample_design"):
    write_design(
        output=snakemake.output[0], **{key: value for key, value in snakemake.params.items() if key in PARAMS}
    )
