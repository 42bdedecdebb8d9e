"""Train the GAT stage of KD-GAT (VGAE-driven curriculum, optional distillation from a teacher GAT)."""

import logging
from pathlib import Path

from kdgat.training import gat

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    gat.run(
        graph_dir=Path(snakemake.input.train).parent,
        outputs={
            "model": snakemake.output.model,
            "metrics": snakemake.output.metrics,
            "history": snakemake.output.history,
            "checkpoint": snakemake.params.get("checkpoint"),
        },
        settings=snakemake.params.settings,
        vgae_model=snakemake.input.get("vgae"),
        teacher_model=snakemake.input.get("teacher"),
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_gat").exception("GAT training failed")
    raise
