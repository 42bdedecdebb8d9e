"""Snakemake wrapper: write one synthetic CAN log (HCRL-style traffic with injected attacks)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure_wrapper, failure_logged
from kdgat.rule_items import integer
from kdgat.synthetic import generate_file

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": (),
    "output": (0,),
    "params": ("options", "file_index", "entry", "setting_prefix", "library_code"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("file_index", "entry", "setting_prefix", "library_code"),
}

configure_wrapper(
    "generate_can",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "generate_can",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    generate_file(
        options=snakemake.params.options,
        file_index=integer(snakemake.params.get("file_index", 0), "params.file_index"),
        path=snakemake.output[0],
        entry=snakemake.params.get("entry"),
        # how a message names an option: params.options.num_ids, or the config key the preprocess module's came from
        setting_prefix=snakemake.params.get("setting_prefix", "params"),
    )
