"""Snakemake wrapper: observed data from a generator ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure_wrapper, failure_logged
from simcal.observed import generate_observed

# What this wrapper takes, as its meta.yaml names it (.tests/unit/test_wrapper_files.py; 0: it reads the
# first item): an input, output or param a rule names otherwise is logged as a warning.
TAKES = {
    "input": (),
    "output": (0,),
    "params": ("generator", "true_params", "seed", "options", "fixed"),
}

configure_wrapper(
    "generate_observed",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
)
with failure_logged("generate_observed"):
    generate_observed(
        output=snakemake.output[0],
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"]},
    )
