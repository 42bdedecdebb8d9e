"""Train the DQN fusion stage of KD-GAT (optionally distilling a teacher agent's Q-values)."""

import logging
from pathlib import Path

from kdgat.training import dqn

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
teachers = {name: snakemake.input.get(f"teacher_{name}") for name in ("dqn", "vgae", "gat")}
try:
    dqn.run(
        graph_dir=Path(snakemake.input.train).parent,
        outputs={
            "model": snakemake.output.model,
            "metrics": snakemake.output.metrics,
            "history": snakemake.output.history,
            "checkpoint": snakemake.params.get("checkpoint"),
        },
        settings=snakemake.params.settings,
        vgae_model=snakemake.input.vgae,
        gat_model=snakemake.input.gat,
        teacher_models=teachers if teachers["dqn"] else None,
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_dqn").exception("DQN fusion training failed")
    raise
