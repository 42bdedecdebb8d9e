# Jobs that run on the CPU by the config (kd_gat.device or evaluation.device: cpu) ask for no GPU. A profile's
# set-resources gives rules a GPU by name (profiles/slurm the kd_gat training rules, for the GPU type;
# profiles/k8s the evaluations too), and Snakemake puts it over the rule's own request: the job would hold a GPU
# it never uses and, on SLURM, wait in the GPU queue for it. Included by the modules whose rules ask for GPUs.


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
