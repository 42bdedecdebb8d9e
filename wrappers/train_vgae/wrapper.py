"""Train the VGAE stage of KD-GAT (optionally distilled from a teacher VGAE) on preprocessed CAN graphs."""

import logging
from pathlib import Path

from kdgat.training import vgae

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    vgae.run(
        graph_dir=Path(snakemake.input.train).parent,
        outputs={
            "model": snakemake.output.model,
            "metrics": snakemake.output.metrics,
            "history": snakemake.output.history,
            "checkpoint": snakemake.params.get("checkpoint"),
        },
        settings=snakemake.params.settings,
        teacher_model=snakemake.input.get("teacher"),
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_vgae").exception("VGAE training failed")
    raise
