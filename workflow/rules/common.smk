# Helpers shared by the main workflow: config validation and the final targets.
from snakemake.utils import validate

validate(config, schema="../schemas/config.schema.yaml")


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    targets = []
    if config["targets"]["can_ids"]:
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
