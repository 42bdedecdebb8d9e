"""Snakemake wrapper: run a parameter table × replicates through a model on Dask into one Parquet file.

Progress goes to the log and to ``<output>.progress.json``; finished batches wait in ``<output>.partial/`` for a
rerun. Everything else is ``simcal.runner.simulate``.
"""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from resource_history import mark_if_resumed
from simcal.contract import mapping_of
from simcal.logs import configure_wrapper, failure_logged
from simcal.runner import simulate

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": (0,),
    "output": (0,),
    "params": ("model", "settings", "monitoring", "backend", "backend_options", "fixed", "benchmark", "code"),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("settings", "monitoring", "backend", "backend_options", "fixed", "benchmark", "code"),
}

# Dask starts worker processes with "spawn", which re-imports this script: only the parent may run the body.
if __name__ == "__main__":
    configure_wrapper(
        "simulate",
        snakemake.log,
        {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
        TAKES,
        OPTIONAL,
    )
    with failure_logged(
        "simulate",
        mem_mb=snakemake.resources.get("mem_mb"),
        rule=snakemake.rule,
    ):
        # Snakemake's benchmark of a resumed sweep covers only the simulations run now: a mark next to it keeps
        # that time out of the learned runtime (resource_history.resumed); a sweep run afresh drops an old mark.
        mark_if_resumed(
            snakemake.params.get("benchmark"),
            simulate(
                model_ref=snakemake.params.model,
                parameters=snakemake.input[0],
                output=snakemake.output[0],
                # monitoring: settings that decide no row, which the calibration module keeps out of its rerun trigger
                # mapping_of: a string or list given for a mapping fails naming the param, not as `**` of a str
                settings={
                    **mapping_of(snakemake.params.get("settings", {}), "params.settings"),
                    **mapping_of(snakemake.params.get("monitoring", {}), "params.monitoring"),
                },
                backend=snakemake.params.get("backend", "local"),
                backend_options=snakemake.params.get("backend_options", {}),
                threads=snakemake.threads,
                fixed_params=snakemake.params.get("fixed", {}),
            ),
            key="resumed_simulations",
        )
