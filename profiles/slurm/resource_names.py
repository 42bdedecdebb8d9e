"""Warn about a job resource that looks like a misspelt one the slurm plugin reads (`slurm_partiton`, `gpus`).

Snakemake accepts any resource name and snakemake-executor-plugin-slurm (2.8.0) reads only its own, so a typo
in a rule or in `set-resources` is ignored without a word: `slurm_partiton: gpu-exp` sends a job that needs a
32 GB V100 to `gpu`'s 16 GB cards. profile.yaml installs `install()` in the Snakemake process; each job is
checked once when it is submitted (the plugin's `run_job_pre`, single and array jobs alike), each warning said
once per rule and name. Names far from every resource read (a workflow's own) are not mentioned.

`install()` also corrects one request of the plugin's: a job given `gpu: 0` that still carries a `gpu_model`
(the profile's GPU type on a rule moved to the CPU) is sent `--gpus=<model>:0`, while `gpu: 0` without a model
sends no `--gpus` at all and both choose a CPU partition. SLURM (22.05) accepts the zero count, but the job then
holds a GPU-typed GRES request (`TresPerJob=gres:gpu:v100:0`) and its steps inherit `SLURM_GPUS=v100:0`; such a
job gets no `--gpus`, as it would without the model.

`install()` also refuses, before it is submitted, a job that asks for a GPU (`gpu` > 0, or a `gres` of GPUs) and
names no partition while the partition file the plugin chooses from has no partition with GPUs (`max_gpu` > 0):
the plugin would find no partition for it, say so in one warning, and send it to the cluster's default partition
(a CPU one), where SLURM refuses or holds it. The profile cannot see at load time which rules ask for a GPU (a
later profile or the command line may add or remove them); here every job's resources are final.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

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


def asks_for_no_gpu(count) -> bool:
    """`gpu: 0` (Snakemake gives YAML's and the command line's 0 as an int)."""
    return isinstance(count, int) and not isinstance(count, bool) and count == 0


class _WithoutGpuModel:
    """A job's resources with `gpu_model` left out; everything else read through."""

    def __init__(self, resources) -> None:
        self._resources = resources

    def get(self, name, default=None):
        return default if name == "gpu_model" else self._resources.get(name, default)

    def __getattr__(self, name):
        if name == "gpu_model":
            raise AttributeError(name)
        return getattr(self._resources, name)


def no_gpus_without_gpu_count(set_gres_string):
    """The plugin's ``set_gres_string``, except that a job asking for 0 GPUs gets no GPU model either."""

    def wrapped(job) -> str:
        if asks_for_no_gpu(job.resources.get("gpu")) and job.resources.get("gpu_model"):
            job = SimpleNamespace(name=getattr(job, "name", None), resources=_WithoutGpuModel(job.resources))
        return set_gres_string(job)

    wrapped.drops_the_model_of_0_gpus = True
    wrapped.__wrapped__ = set_gres_string
    return wrapped


def no_gpu_partition(
    rule: str, gpus: int, named_partition, partitions: Sequence, partition_file
) -> str | None:
    """The refusal of a job of ``rule`` asking for ``gpus`` GPUs when ``partitions`` (the plugin's, read from
    ``partition_file``) has none with GPUs and the job names no partition itself; None when it may go."""
    if gpus <= 0 or named_partition or not partitions:
        return None
    if any(partition.limits.max_gpu > 0 for partition in partitions):
        return None
    names = ", ".join(partition.name for partition in partitions)
    return (
        f"profiles/slurm: rule {rule} asks for {gpus} GPU(s), but the partition file {partition_file} has no "
        f"partition with GPUs (max_gpu > 0 under partitions:; it has {names}), so the slurm plugin would send "
        f"the job to the cluster's default partition, where SLURM refuses or holds it. Nothing was submitted for "
        f"it. Set SNAKEMAKE_SLURM_PARTITIONS to a partition file with a GPU partition (the profile's "
        f"partitions.yaml, or generate-slurm-partition-config's output with max_gpu filled in), name one for the "
        f"rule (set-resources: {rule}: {{slurm_partition: <a GPU partition>}}), or give it gpu: 0 to run it on CPUs."
    )


def partition_file_of(executor):
    """The partition file the plugin read (its __post_init__: $SNAKEMAKE_SLURM_PARTITIONS unless the
    slurm-partition-config setting is given)."""
    settings = getattr(getattr(executor, "workflow", None), "executor_settings", None)
    configured = getattr(settings, "partition_config", None)
    return configured or os.environ.get("SNAKEMAKE_SLURM_PARTITIONS") or "(the partition file)"


def install() -> None:
    """Make the slurm plugin's ``Executor.run_job_pre`` warn about misspelt resources first, refuse a GPU job that no
    partition of the partition file can take (``no_gpu_partition``, a WorkflowError that stops the run), then run as
    before, and
    its GPU request leave out the model of a job given 0 GPUs (``set_gres_string``, as the plugin's ``run_job``
    and array submission call it)."""
    import snakemake_executor_plugin_slurm as plugin
    from snakemake_executor_plugin_slurm.partitions import parse_gpu_requirements
    from snakemake_interface_common.exceptions import WorkflowError

    if not getattr(plugin.set_gres_string, "drops_the_model_of_0_gpus", False):
        plugin.set_gres_string = no_gpus_without_gpu_count(plugin.set_gres_string)
    original = plugin.Executor.run_job_pre
    if getattr(original, "warns_about_resource_names", False):
        return

    def run_job_pre(self, job):
        said = self.__dict__.setdefault("_resource_name_warnings", set())
        for warning in warnings_for(job.name, dict(job.resources)):
            if warning not in said:
                said.add(warning)
                self.logger.warning(warning)
        gpus, _ = parse_gpu_requirements(job)
        refusal = no_gpu_partition(
            job.name,
            gpus,
            job.resources.get("slurm_partition"),
            getattr(self, "_partitions", None),
            partition_file_of(self),
        )
        if refusal:
            raise WorkflowError(refusal)
        return original(self, job)

    run_job_pre.warns_about_resource_names = True
    plugin.Executor.run_job_pre = run_job_pre
