# Jobs that run on the CPU by the config (kd_gat.device or evaluation.device: cpu) ask for no GPU. A profile's
# set-resources gives rules a GPU by name (profiles/slurm the kd_gat training rules, for the GPU type;
# profiles/k8s the evaluations too), and Snakemake puts it over the rule's own request: the job would hold a GPU
# it never uses and, on SLURM, wait in the GPU queue for it. Included by the modules whose rules ask for GPUs.
# A GPU job whose resources the importing workflow replaced (`with: resources:` of its `use` statement), leaving it
# without the GPU the config gives it, is warned of (warn_of_a_gpu_request_replaced).
from snakemake.logging import logger


def ask_no_gpu(rule_names):
    """Set the GPU request of the rules ``rule_names`` (as the module names them) to none, whatever a profile set.
    Called after the rules are defined, since that is when Snakemake applies a profile's set-resources.
    """
    for name in rule_names:
        name = workflow.modifier.modify_rulename(name)
        # a rule the importing workflow left out (`use rule ... exclude`) is not there
        if not workflow.is_rule(name):
            continue
        resources = workflow.get_rule(name).resources
        resources["gpu"] = 0
        # the slurm plugin asks for --gpus=<model>:<gpu> whenever gpu_model is set; a resource of None is left out
        # of the job's resources
        for key in ("gpu_model", "gpu_mem_mb"):
            if key in resources:
                resources[key] = None


def warn_of_a_gpu_request_replaced(rule_names, setting, module_resources):
    """A rule of ``rule_names`` (as the module names them) that asks for no GPU although ``setting`` (a config key
    and its value, named as the config files name it) asks for one: the `with: resources:` of a `use` statement
    in the importing workflow replaces all of the module's resources of the rule (``module_resources``, the names it
    sets), so one given there only a memory lost its GPU and runtime, and its job waited in no GPU queue and ran
    on the CPU without a word. Warned of, naming the rule; called after the rules are defined, as ask_no_gpu,
    so that a profile's set-resources giving the GPU counts."""
    # a `use` statement of one rule, `as <name>`, maps every name of the module to <name>; each name once
    for name in dict.fromkeys(workflow.modifier.modify_rulename(name) for name in rule_names):
        if not workflow.is_rule(name):
            continue
        resources = workflow.get_rule(name).resources
        if "gpu" in resources:
            continue
        kept = ", ".join(
            sorted(key for key in resources if not key.startswith("_") and key != "tmpdir")
        )
        warning = config_error(
            f"rule {name} asks for no GPU, "
            f"although {setting}: the `with: resources:` of a `use rule` statement "
            f"replaces all of the resources the module gives the rule ({', '.join(module_resources)}), and it "
            f"has only {kept or 'none'}; name the others there too (gpu=1), or change only what you mean to "
            "with --set-resources (or a profile's set-resources), which keeps the module's others"
        )
        logger.warning(str(warning))
