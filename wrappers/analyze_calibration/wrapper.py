"""Snakemake wrapper: best parameters, top-k and summary statistics of a calibration (Parquet + JSON)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.analyze import analyze_files
from simcal.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("trials", 0),
    "output": ("best", "top_k", "summary"),
    "params": ("parameter_names", "top_k", "true_params"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("top_k", "true_params"),
}

configure_wrapper(
    "analyze_calibration",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "analyze_calibration",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    analyze_files(
        trials_path=snakemake.input.get("trials", snakemake.input[0]),
        best_path=snakemake.output.best,
        top_k_path=snakemake.output.top_k,
        summary_path=snakemake.output.summary,
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"]},
    )
