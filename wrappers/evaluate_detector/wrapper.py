"""Evaluate one trained KD-GAT detector (VGAE, GAT, DQN fusion) on validation and every test scenario."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.run import EVALUATION_OUTPUTS, evaluate_files
from kdgat.logs import configure, failure_logged

configure(snakemake.log[0])
with failure_logged("evaluate_detector"):
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
