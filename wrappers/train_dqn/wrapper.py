"""Train the DQN fusion stage of KD-GAT (optionally distilling a teacher agent's Q-values)."""

import logging

from kdgat.training import dqn

logging.basicConfig(
    filename=snakemake.log[0], level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", force=True
)
try:
    dqn.run(
        train=snakemake.input.train,
        val=snakemake.input.val,
        metadata=snakemake.input.metadata,
        vgae=snakemake.input.vgae,
        gat=snakemake.input.gat,
        teacher_dqn=snakemake.input.get("teacher_dqn"),
        teacher_vgae=snakemake.input.get("teacher_vgae"),
        teacher_gat=snakemake.input.get("teacher_gat"),
        settings=snakemake.params.settings,
        checkpoint=snakemake.params.get("checkpoint"),
        outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
        threads=snakemake.threads,
    )
except Exception:
    logging.getLogger("train_dqn").exception("DQN fusion training failed")
    raise
