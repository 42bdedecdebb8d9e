"""Train the VGAE stage of KD-GAT (optionally distilled from a teacher VGAE) on preprocessed CAN graphs."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure, failure_logged
from kdgat.training import vgae

configure(snakemake.log[0])
with failure_logged("train_vgae"):
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
    )
