"""Train the VGAE stage of KD-GAT (optionally distilled from a teacher VGAE) on preprocessed CAN graphs."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure_wrapper, failure_logged
from kdgat.training import vgae
from resource_history import mark_if_resumed

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("settings", "checkpoint", "tracking", "benchmark")

configure_wrapper("train_vgae", snakemake.log, snakemake.params, PARAMS)
with failure_logged("train_vgae"):
    # Snakemake's benchmark of a resumed job covers only the epochs run now: a mark next to it keeps that time
    # out of the learned runtime (resource_history.resumed); a job that started afresh drops an old mark.
    mark_if_resumed(
        snakemake.params.get("benchmark"),
        vgae.run(
            train=snakemake.input.train,
            val=snakemake.input.val,
            metadata=snakemake.input.metadata,
            teacher=snakemake.input.get("teacher"),
            settings=snakemake.params.settings,
            checkpoint=snakemake.params.get("checkpoint"),
            tracking=snakemake.params.get("tracking"),
            outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
            threads=snakemake.threads,
        ),
        key="resumed_from_epoch",
    )
