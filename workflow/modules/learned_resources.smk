# Resources learned from benchmark history (config `learned_resources`, off by default): `learned(name, default)`
# is a resource function for `mem_mb` or `runtime` that, when enabled, returns the value the rule's earlier runs
# call for (their `benchmark:` files, read by the resource_history library), else `default` unchanged;
# `learned("gpu_mem_mb", default, record=<output name>)` does the same from the GPU peak earlier runs wrote into
# that output (resource_history.gpu_records). A run whose benchmark file has a `.resumed` mark (a job resumed
# from a checkpoint: resource_history.resumed) teaches no runtime. The log says where each value came from.
# Included by every module, so it works in a module imported on its own.
import os

from resource_history import LearnedResourceSettings, ResourceHistory, first_time
from snakemake.logging import logger

# A WorkflowError naming the key, as every config mistake a module refuses: only the main workflow's schema checks
# `learned_resources`, so in a module imported alone the library's SettingsError would be the message.
try:
    LEARNED_RESOURCES = ResourceHistory(
        LearnedResourceSettings.from_config(config.get("learned_resources"))
    )
except ValueError as error:
    raise config_error(str(error)) from None


def learned(resource, default, record=None):
    """A resource function for `resource` (mem_mb, runtime or gpu_mem_mb). `default`, a number or a function of
    (wildcards, attempt), is the value used without history. `record`: the name of the rule's output that is its
    GPU record (gpu_mem_mb only); else the history is the rule's `benchmark:` files."""

    def evaluate(wildcards, input, attempt, rulename):
        fallback = default(wildcards, attempt) if callable(default) else default
        if not LEARNED_RESOURCES.settings.enabled:
            return fallback
        # Checked here, not at parse time: every module's rules exist once a job's resources are computed.
        for warning in LEARNED_RESOURCES.settings.unmatched_wildcards(
            name for rule in workflow.rules for name in rule.wildcard_names
        ):
            report_learned_once(logger.warning, warning)
        definition = workflow.get_rule(rulename)
        pattern = definition.benchmark if record is None else definition.output.get(record)
        if pattern is None or callable(pattern):
            return fallback
        estimate = LEARNED_RESOURCES.estimate(
            resource,
            str(pattern),
            dict(wildcards.items()),
            fallback,
            attempt=attempt,
            input_size_mb=input_size_mb_of(input),
        )
        for warning in estimate.warnings:
            report_learned_once(logger.warning, f"learned resources: {warning}")
        shown = ", ".join(f"{name}={value}" for name, value in wildcards.items())
        job = f"{rulename} ({shown})" if shown else rulename
        report_learned_once(
            logger.info,
            f"learned resources: {job}, attempt {attempt}: {estimate.describe()}",
        )
        return estimate.value

    return evaluate


def benchmark_of(pattern):
    """The rule's benchmark file (``pattern``: its benchmark: line, placed behind the module's `prefix:` as
    Snakemake places that line, but not params), for the wrapper's resume mark (resource_history.resumed): the
    kd_gat training wrappers and the simulate and calibrate wrappers, and the evaluate_detector wrapper's restore
    mark. A function of ``output``, which Snakemake's
    params rerun trigger leaves out: adding it reruns nothing."""
    placed = workflow.modifier.path_modifier.replace_prefix(pattern)
    return lambda wildcards, output: placed.format(**wildcards)


def learned_gpu_memory(record):
    """`gpu_mem_mb` for a GPU rule's resources (`**learned_gpu_memory("metrics")`), learned from the GPU peak its
    earlier runs wrote into the output `record`; 0 (nothing known) until a run on a GPU recorded one. Nothing at
    all while learning is off: the rule then asks for no GPU memory."""
    if not LEARNED_RESOURCES.settings.enabled:
        return {}
    return {"gpu_mem_mb": learned("gpu_mem_mb", 0, record=record)}


def input_size_mb_of(input):
    """Total size of the job's input files in MB, or None while any of them does not exist yet."""
    try:
        return sum(os.path.getsize(path) for path in input) / 2**20
    except OSError:
        return None


def report_learned_once(log, message):
    # One log line per job, resource and value: Snakemake evaluates resources several times per job, and every
    # module includes this file (a set per module would say a workflow-wide warning once per module).
    if first_time(message):
        log(message)
