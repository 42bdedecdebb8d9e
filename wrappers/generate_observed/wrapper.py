"""Snakemake wrapper: observed data from a generator ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure_wrapper, failure_logged
from simcal.observed import generate_observed

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": (),
    "output": (0,),
    "params": ("generator", "true_params", "seed", "options", "fixed", "code"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("seed", "options", "fixed", "code"),
}

configure_wrapper(
    "generate_observed",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "generate_observed",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    generate_observed(
        output=snakemake.output[0],
        # code: not read, a rerun trigger (the digest of the generator's source file)
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"] and key != "code"},
    )
