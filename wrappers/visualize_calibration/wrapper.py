"""Snakemake wrapper: a self-contained HTML page (inline PNGs) of a calibration, plus each picture as a PNG."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from simcal.logs import configure_wrapper, failure_logged
from simcal.visualize import visualize

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("trials", "simulations", "observed", "best", "summary"),
    "output": ("html", "fit", "loss", "history"),
    "params": ("parameter_names", "column", "on", "title"),
}
OPTIONAL = {
    "input": (),
    "output": ("fit", "loss", "history"),
    "params": ("column", "on", "title"),
}

configure_wrapper(
    "visualize_calibration",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "visualize_calibration",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    visualize(
        trials_path=snakemake.input.trials,
        simulations_path=snakemake.input.simulations,
        observed_path=snakemake.input.observed,
        best_path=snakemake.input.best,
        summary_path=snakemake.input.summary,
        html_path=snakemake.output.html,
        png_paths={
            name: snakemake.output.get(name)
            for name in ("fit", "loss", "history")
            if snakemake.output.get(name)
        },
        **{key: value for key, value in snakemake.params.items() if key in TAKES["params"]},
    )
