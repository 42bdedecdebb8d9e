# Helpers shared by the main workflow: config validation and the final targets.
from snakemake.exceptions import WorkflowError
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


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    targets = []
    if CAN_IDS_TARGETS:
        # kd_gat's own targets too: the models the evaluations read, and the GAT sweep when kd_gat.sweep.enabled
        # (which no evaluation reads, so evaluation_all alone left it out).
        targets += rules.kd_gat_all.input
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
