"""Train the DQN fusion stage of KD-GAT (optionally distilling a teacher agent's Q-values)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure_wrapper, failure_logged
from kdgat.training import dqn
from resource_history import mark_if_resumed

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("fit", "stop", "metadata", "vgae", "gat", "teacher_dqn", "teacher_vgae", "teacher_gat"),
    "output": ("model", "metrics", "history"),
    "params": ("settings", "checkpoint", "tracking", "setting_prefix", "benchmark"),
}
OPTIONAL = {
    "input": ("stop", "teacher_dqn", "teacher_vgae", "teacher_gat"),
    "output": (),
    "params": ("checkpoint", "tracking", "setting_prefix", "benchmark"),
}

configure_wrapper(
    "train_dqn",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
# A SIGTERM's log line says a rerun resumes from the checkpoint only where the rule gives one.
with failure_logged(
    "train_dqn",
    checkpoint=snakemake.params.get("checkpoint"),
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    # Snakemake's benchmark of a resumed job covers only the epochs run now: a mark next to it keeps that time
    # out of the learned runtime (resource_history.resumed); a job that started afresh drops an old mark.
    mark_if_resumed(
        snakemake.params.get("benchmark"),
        dqn.run(
            fit=snakemake.input.fit,
            stop=snakemake.input.get("stop"),
            metadata=snakemake.input.metadata,
            vgae=snakemake.input.vgae,
            gat=snakemake.input.gat,
            teacher_dqn=snakemake.input.get("teacher_dqn"),
            teacher_vgae=snakemake.input.get("teacher_vgae"),
            teacher_gat=snakemake.input.get("teacher_gat"),
            settings=snakemake.params.settings,
            checkpoint=snakemake.params.get("checkpoint"),
            tracking=snakemake.params.get("tracking"),
            # how a message names a setting: params.settings.<key>, or the config key the kd_gat module's came from
            setting_prefix=snakemake.params.get("setting_prefix", "params"),
            outputs={name: snakemake.output[name] for name in ("model", "metrics", "history")},
            threads=snakemake.threads,
        ),
        key="resumed_from_epoch",
    )
