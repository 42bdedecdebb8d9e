# Helpers shared by the main workflow: config validation and the final targets.
import os

from kdgat.chain import VARIANTS, evaluation_rule
from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode
from snakemake_executor_plugin_kubernetes_kueue.storage_account import check_default_storage_account

# Snakemake uses an Azure default storage (profiles/k8s) before any executor starts: check it now.
check_default_storage_account(workflow)


include: "../modules/config_check.smk"


validate_config("../schemas/config.schema.yaml")


# The preprocess, kd_gat and evaluation modules read config["datasets"]: loaded only when it names any.
CAN_IDS_MODULES = bool(config.get("datasets"))


def can_ids_wanted():
    """targets.can_ids, where null (its default) means: when datasets names any. True without datasets is refused
    here rather than by the kd_gat module, naming both keys and how to run the calibration alone."""
    wanted = config["targets"]["can_ids"]
    if wanted and not CAN_IDS_MODULES:
        raise WorkflowError(
            "targets.can_ids is true, but config key 'datasets' is missing or empty: name the datasets to train "
            "and evaluate on, or set targets.can_ids to false (or leave it out) to run the calibration alone"
        )
    return CAN_IDS_MODULES if wanted is None else wanted


CAN_IDS_TARGETS = can_ids_wanted()


def refuse_gpu_evaluations_in_group_jobs():
    """evaluation.gpu > 0 is refused under profiles/slurm (it sets SNAKEMAKE_SLURM_PROFILE; a dry run's executor
    is Snakemake's dryrun, not slurm) while an evaluation rule shares its group with other rules, because inside
    a group job the slurm jobstep asks srun for the sum of the members' GPUs, more than the job holds. Called
    while the DAG is built (the input of `all`), when a later profile's `groups` have taken effect and before
    any job is submitted; only on the driver (the jobs inherit the variable)."""
    gpus = (config.get("evaluation") or {}).get("gpu", 0)
    if not (
        gpus
        and os.environ.get("SNAKEMAKE_SLURM_PROFILE")
        and workflow.exec_mode == ExecMode.DEFAULT
    ):
        return
    names = {f"evaluation_{evaluation_rule(variant)}" for variant in VARIANTS}
    for member in workflow.rules:
        if member.name not in names or member.group is None:
            continue
        others = sorted(
            other.name
            for other in workflow.rules
            if other.group == member.group and other.name != member.name
        )
        if others:
            raise WorkflowError(
                f"evaluation.gpu is {gpus}, but under profiles/slurm rule {member.name} is in the group job "
                f"{member.group!r} with {', '.join(others)}: inside a group job the slurm plugin asks srun for a "
                f"GPU per member, more than the job holds, and SLURM refuses the job. Set evaluation.gpu to 0 "
                f"(the evaluation runs on CPUs), or give the evaluation rules their own jobs with a later "
                f"profile (profiles/slurm/README.md, Evaluation group)"
            )


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    targets = []
    if CAN_IDS_TARGETS:
        refuse_gpu_evaluations_in_group_jobs()
        # kd_gat's own targets too: the models the evaluations read, and the GAT sweep when kd_gat.sweep.enabled
        # (which no evaluation reads, so evaluation_all alone left it out).
        targets += rules.kd_gat_all.input
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
