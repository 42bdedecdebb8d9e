"""Snakemake wrapper: one row per parameter set of a sweep (replicate statistics of its outputs) plus a JSON summary."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.analyze import summarize_sweep_files
from simcal.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("simulations", 0),
    "output": ("table", "summary"),
    "params": ("parameter_names", "columns", "statistics"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("columns", "statistics"),
}

configure_wrapper(
    "analyze_sweep",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "analyze_sweep",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    summarize_sweep_files(
        simulations_path=snakemake.input.get("simulations", snakemake.input[0]),
        table_path=snakemake.output.table,
        summary_path=snakemake.output.summary,
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"]},
    )
