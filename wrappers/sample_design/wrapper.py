"""Snakemake wrapper: a quasi-random design (Sobol, Latin hypercube or random) of parameter sets within bounds."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.design import write_design
from simcal.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": (),
    "output": (0,),
    "params": ("parameters", "n", "kind", "seed", "model", "code"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("kind", "seed", "model", "code"),
}

configure_wrapper(
    "sample_design",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "sample_design",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    write_design(
        output=snakemake.output[0],
        # code: not read, a rerun trigger (the digest of the model's source file)
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"] and key != "code"},
    )
