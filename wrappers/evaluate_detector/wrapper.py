"""Evaluate one trained KD-GAT detector (VGAE, GAT, DQN fusion) on validation and every test scenario."""

import logging

from kdgat.evaluation import EVALUATION_OUTPUTS, evaluate_files

logging.basicConfig(
    filename=snakemake.log[0],
    filemode="w",
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
try:
    evaluate_files(
        vgae=snakemake.input.vgae,
        gat=snakemake.input.gat,
        dqn=snakemake.input.dqn,
        val=snakemake.input.val,
        test=snakemake.input.test,
        outputs={name: snakemake.output[name] for name in EVALUATION_OUTPUTS},
        threads=snakemake.threads,
        **dict(snakemake.params.items()),
    )
except Exception:
    logging.getLogger("evaluate_detector").exception("evaluation failed")
    raise
