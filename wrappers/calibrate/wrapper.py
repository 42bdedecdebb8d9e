"""Snakemake wrapper: calibrate a model against observed data (quasi-random design, Optuna TPE rounds, refine) on one Dask cluster."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from resource_history import mark_if_resumed
from simcal.calibrate import calibrate_files
from simcal.contract import mapping_of
from simcal.logs import configure_wrapper, failure_logged

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("observed", 0),
    "output": ("simulations", "trials"),
    "params": (
        "model",
        "parameters",
        "targets",
        "settings",
        "simulation",
        "monitoring",
        "fixed",
        "backend",
        "backend_options",
        "benchmark",
        "code",
    ),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": (
        "settings",
        "simulation",
        "monitoring",
        "fixed",
        "backend",
        "backend_options",
        "benchmark",
        "code",
    ),
}

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure_wrapper(
        "calibrate",
        snakemake.log,
        {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
        TAKES,
        OPTIONAL,
    )
    with failure_logged(
        "calibrate",
        mem_mb=snakemake.resources.get("mem_mb"),
        rule=snakemake.rule,
    ):
        # As the simulate wrapper: a resumed calibration's benchmark times only the simulations run now (the
        # trials table's attrs count the simulations an earlier run finished).
        mark_if_resumed(
            snakemake.params.get("benchmark"),
            calibrate_files(
                observed=snakemake.input.get("observed", snakemake.input[0]),
                simulations=snakemake.output.simulations,
                trials=snakemake.output.trials,
                threads=snakemake.threads,
                # monitoring: simulation settings that decide no row, which the calibration module keeps out of its
                # rerun trigger; they join the other simulation settings here (mapping_of: a string or list given for a
                # mapping fails naming the param, not as `**` of a str)
                simulation={
                    **mapping_of(snakemake.params.get("simulation"), "params.simulation"),
                    **mapping_of(snakemake.params.get("monitoring", {}), "params.monitoring"),
                },
                **{
                    key: value
                    for key, value in snakemake.params.items()
                    # code: not read, a rerun trigger (the digests of the model's and the targets' source files)
                    if key in TAKES["params"] and key not in ("simulation", "monitoring", "benchmark", "code")
                },
            ),
            key="resumed_simulations",
        )
