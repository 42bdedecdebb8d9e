"""Evaluate one trained KD-GAT detector (VGAE, GAT, DQN fusion) on validation and every test scenario."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.evaluation.run import EVALUATION_OUTPUTS, evaluate_files
from kdgat.logs import configure_wrapper, failure_logged
from resource_history import mark_restored

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("vgae", "gat", "dqn", "val", "test"),
    "output": ("metrics", "scores", "roc", "pr", "confusion"),
    "params": (
        "dataset",
        "variant",
        "seed",
        "batch_size",
        "device",
        "fpr_targets",
        "speed",
        "stash_dir",
        "tracking",
        "benchmark",
    ),
}
OPTIONAL = {
    "input": (),
    "output": (),
    "params": ("seed", "batch_size", "device", "fpr_targets", "speed", "stash_dir", "tracking", "benchmark"),
}

configure_wrapper(
    "evaluate_detector",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "evaluate_detector",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    # Snakemake's benchmark of a job restored from the result stash measures a copy of five files, no evaluation:
    # a mark next to it keeps it out of learned resources (resource_history.resumed); a computed run drops it.
    evaluate_files(
        vgae=snakemake.input.vgae,
        gat=snakemake.input.gat,
        dqn=snakemake.input.dqn,
        val=snakemake.input.val,
        test=snakemake.input.test,
        outputs={name: snakemake.output[name] for name in EVALUATION_OUTPUTS},
        threads=snakemake.threads,
        record_restore=lambda entry: mark_restored(
            snakemake.params.get("benchmark"), entry and f"restored from the result stash entry {entry}"
        ),
        **{
            key: value
            for key, value in snakemake.params.items()
            if key in TAKES["params"] and key != "benchmark"
        },
    )
