"""Train the VGAE stage of KD-GAT (optionally distilled from a teacher VGAE) on preprocessed CAN graphs."""

import logging

from kdgat.training import vgae

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    vgae.run(
        train=snakemake.input.train,
        val=snakemake.input.val,
        metadata=snakemake.input.metadata,
        teacher=snakemake.input.get("teacher"),
        settings=snakemake.params.settings,
        checkpoint=snakemake.params.get("checkpoint"),
        outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_vgae").exception("VGAE training failed")
    raise
