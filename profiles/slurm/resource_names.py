"""Warn about a job resource that looks like a misspelt one the slurm plugin reads (`slurm_partiton`, `gpus`).

Snakemake accepts any resource name and snakemake-executor-plugin-slurm (2.8.0) reads only its own, so a typo
in a rule or in `set-resources` is ignored without a word: `slurm_partiton: gpu-exp` sends a job that needs a
32 GB V100 to `gpu`'s 16 GB cards. profile.yaml installs `install()` in the Snakemake process; each job is
checked once when it is submitted (the plugin's `run_job_pre`, single and array jobs alike), each warning said
once per rule and name. Names far from every resource read (a workflow's own) are not mentioned.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping

# What the plugin reads from a job's resources (snakemake_executor_plugin_slurm 2.8.0: job.resources.get(...)),
# and what Snakemake itself sets or derives.
SLURM_RESOURCES = (
    "cluster",
    "clusters",
    "constraint",
    "cpus_per_gpu",
    "cpus_per_task",
    "gpu",
    "gpu_model",
    "gres",
    "mem_mb",
    "mem_mb_per_cpu",
    "mpi",
    "nodes",
    "qos",
    "runtime",
    "slurm_account",
    "slurm_cluster",
    "slurm_extra",
    "slurm_partition",
    "tasks",
    "tasks_per_gpu",
    "tasks_per_node",
)
SNAKEMAKE_RESOURCES = ("_cores", "_nodes", "tmpdir", "mem", "mem_mib", "disk", "disk_mb", "disk_mib")
# Other words for a CPU count: the plugin asks SLURM for the rule's threads.
CPU_WORDS = frozenset({"cpu", "cpus", "cores", "ncpus", "ncores", "num_cpus"})


def warnings_for(rule: str, resources: Mapping) -> list[str]:
    known = SLURM_RESOURCES + SNAKEMAKE_RESOURCES
    warnings = []
    for name in resources:
        if name in known:
            continue
        if name.lower() in CPU_WORDS:
            meant = "the rule's threads (threads: or --set-threads), which the plugin asks SLURM for"
        else:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            if not close:
                continue
            meant = repr(close[0])
        warnings.append(
            f"profiles/slurm: rule {rule}: resource {name!r} is not read by the slurm plugin, so no job asks "
            f"SLURM for it; did you mean {meant}?"
        )
    return warnings


def install() -> None:
    """Make the slurm plugin's ``Executor.run_job_pre`` warn about misspelt resources first, then as before."""
    import snakemake_executor_plugin_slurm as plugin

    original = plugin.Executor.run_job_pre
    if getattr(original, "warns_about_resource_names", False):
        return

    def run_job_pre(self, job):
        said = self.__dict__.setdefault("_resource_name_warnings", set())
        for warning in warnings_for(job.name, dict(job.resources)):
            if warning not in said:
                said.add(warning)
                self.logger.warning(warning)
        return original(self, job)

    run_job_pre.warns_about_resource_names = True
    plugin.Executor.run_job_pre = run_job_pre
