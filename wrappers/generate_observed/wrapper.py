"""Snakemake wrapper: observed data from a generator ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure_wrapper, failure_logged
from simcal.observed import generate_observed

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("generator", "true_params", "seed", "options", "fixed")

configure_wrapper("generate_observed", snakemake.log, snakemake.params, PARAMS)
with failure_logged("generate_observed"):
    generate_observed(
        output=snakemake.output[0], **{key: value for key, value in snakemake.params.items() if key in PARAMS}
    )
