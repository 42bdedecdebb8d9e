"""Train the GAT stage of KD-GAT (VGAE-driven curriculum, optional distillation from a teacher GAT)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure, failure_logged
from kdgat.training import gat

configure(snakemake.log[0])
with failure_logged("train_gat"):
    gat.run(
        train=snakemake.input.train,
        val=snakemake.input.val,
        metadata=snakemake.input.metadata,
        vgae=snakemake.input.get("vgae"),
        teacher=snakemake.input.get("teacher"),
        settings=snakemake.params.settings,
        checkpoint=snakemake.params.get("checkpoint"),
        tracking=snakemake.params.get("tracking"),
        outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
        threads=snakemake.threads,
    )
