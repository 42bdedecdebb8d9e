# Helpers shared by the main workflow: config validation and the final targets.
from snakemake.utils import validate
from snakemake_executor_plugin_kubernetes_kueue.storage_account import check_default_storage_account

# Snakemake uses an Azure default storage (profiles/k8s) before any executor starts: check it now.
check_default_storage_account(workflow)
validate(config, schema="../schemas/config.schema.yaml")


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    targets = []
    if config["targets"]["can_ids"]:
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
