"""Train the GAT stage of KD-GAT (VGAE-driven curriculum, optional distillation from a teacher GAT)."""

import logging

from kdgat.training import gat

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    gat.run(
        train=snakemake.input.train,
        val=snakemake.input.val,
        metadata=snakemake.input.metadata,
        vgae=snakemake.input.get("vgae"),
        teacher=snakemake.input.get("teacher"),
        settings=snakemake.params.settings,
        checkpoint=snakemake.params.get("checkpoint"),
        outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_gat").exception("GAT training failed")
    raise
