# Helpers of the evaluation module: which datasets, variants and seeds to evaluate and where their inputs are.
import os
import re
import sys
from pathlib import Path

from kdgat.chain import STAGES, evaluation_rule
from kdgat.evaluation.targets import (
    configured_data_prefix,
    configured_datasets,
    configured_seeds,
    configured_variants,
    kd_gat_section,
)
from kdgat.tracking import TrackingSettings
from snakemake.resources import Resource
from snakemake_interface_executor_plugins.settings import ExecMode

EVALUATION = config["evaluation"]


include: "../learned_resources.smk"


# evaluation.mem_mb (scaled by the attempt) and evaluation.runtime; with learned_resources.enabled, what the
# rule's benchmarks call for.
evaluation_mem_mb = learned("mem_mb", lambda wildcards, attempt: EVALUATION["mem_mb"] * attempt)
evaluation_runtime = learned("runtime", EVALUATION["runtime"])


# Checked here, naming the config key: the preprocess and kd_gat schemas do not run when this module is used alone.
# A WorkflowError, as every config mistake a module refuses (the library raises ValueError: it knows no Snakemake).
try:
    DATASETS = configured_datasets(config)
    VARIANTS = configured_variants(config)
    SEEDS = configured_seeds(config)
    # The preprocess outputs (val.pt, test.pt) live where the kd_gat module reads them: kd_gat.data_prefix.
    DATA = configured_data_prefix(config)
except ValueError as error:
    raise config_error(str(error)) from None
# Experiment tracking of the training jobs (kd_gat.tracking): an evaluation attaches its metrics and figures to
# the runs of the models it evaluated. An object, so Snakemake leaves it out of the params rerun trigger.
TRACKING = TrackingSettings.from_config(kd_gat_section(config).get("tracking"))
# evaluation.gpu asks for GPUs that evaluation.device cpu never uses: the job would hold them for nothing (on SLURM,
# waiting in the GPU queue first).
if EVALUATION["device"] == "cpu" and EVALUATION["gpu"]:
    raise config_error(
        f"evaluation.gpu is {EVALUATION['gpu']}, but evaluation.device is cpu: the evaluation jobs would hold GPUs "
        "they never use; set evaluation.gpu to 0, or evaluation.device to auto or cuda to evaluate on them"
    )
REPORT = "../../report"
# The report's items of a module imported with a `prefix:` (or a `replace_prefix:` moving its results) carry its
# name as a label: two evaluation modules of one workflow evaluating datasets of the same names gave items of the
# same category, subcategory and labels, which nothing told apart. None for a module whose results stay put.
REPORT_LABELS = (
    {"module": workflow.modifier.namespace}
    if str(workflow.modifier.path_modifier.replace_prefix("results/evaluation/"))
    != "results/evaluation/"
    else {}
)
# The evaluation rules' names as the workflow knows them (behind the importing `use rule ... as` prefix).
EVALUATION_RULES = {
    workflow.modifier.modify_rulename(evaluation_rule(variant)) for variant in VARIANTS
}


# The notebook rule shells out to `papermill` (or `jupyter-nbconvert`); when Snakemake is started as
# `.venv/bin/snakemake` without activating the venv they are not on PATH. Put the running interpreter's bin first.
_interpreter_bin = str(Path(sys.executable).parent)
if _interpreter_bin not in os.environ.get("PATH", "").split(os.pathsep):
    # (sets PATH for this process's local subprocesses; not a required input, so no `envvars:` assertion)
    os.environ.update(PATH=os.pathsep.join([_interpreter_bin, os.environ.get("PATH", "")]))


# The resources the slurm jobstep reads for a job's `srun --gpus` (get_gpu_setting), in its order: the first it
# finds set decides.
SRUN_GPU_RESOURCES = ("gpus", "gpu", "nvidia_gpu")


def srun_gpu_request(member):
    """``(resource, value)`` when the jobs of rule ``member`` ask the slurm jobstep's srun for GPUs, after the
    profiles' set-resources (a value computed per job is taken to ask for some); None when they ask for none.
    """
    for key in SRUN_GPU_RESOURCES:
        resource = member.resources.get(key)
        if resource.is_evaluable():
            return key, "a value computed per job"
        if resource.value is not None:
            return (key, resource.value) if resource.value else None
    return None


def gres_of(rule):
    """The gres the jobs of ``rule`` ask for after the profiles' set-resources; None when none is given or it is
    computed per job (Snakemake compares those itself when it forms the group job). A profile's or the command
    line's text is an expression Snakemake evaluates per job (gpu:1 is not Python, so it stays that text; 'gpu:1'
    quoted is the same): evaluated here as Snakemake does, one that needs a job's wildcards or input is left out.
    """
    resource = rule.resources.get("gres")
    if not resource.is_evaluable():
        return resource.value
    if not isinstance(resource.raw, str):
        return None
    try:
        return Resource.cli_evaluator(
            "gres", resource.raw, wildcards=None, input=None, attempt=1, async_run=None
        )
    except Exception:
        return None


def refuse_a_gpu_gres_the_group_does_not_share(member, others):
    """Rule ``member`` (an evaluation rule in a group job with the rules ``others``) asking for a gres naming a GPU
    that not every member of its group asks for the same. Snakemake asks SLURM for a group job's gres only when all
    its members give the same text (else it stops, naming neither the rule nor the setting), and the slurm
    jobstep's srun of each member passes no gres (it reads only gpus, gpu and nvidia_gpu: plugin 2.8.0 /
    jobstep 0.6.1), so that one member never gets a GPU of its own. The same gres on every member is accepted (the
    group job asks sbatch for it once and each member's job step gets the job's GRES, srun's default).
    """
    gres = gres_of(member)
    if not gres or "gpu" not in str(gres):
        return
    asked = {name: gres_of(workflow.get_rule(name)) for name in others}
    theirs = ", ".join(
        f"{name} ({f'gres={value}' if value else 'no gres'})"
        for name, value in asked.items()
        if value != gres
    )
    if not theirs:
        return
    given = (
        f"set-resources gives rule {member.name} gres={gres} (a profile's set-resources or --set-resources)"
        if "gres" in workflow.resource_settings.overwrite_resources.get(member.name, {})
        else f"rule {member.name} asks for gres={gres} (default-resources)"
    )
    raise config_error(
        f"{given}, but under "
        f"profiles/slurm the rule is in the group job {member.group!r} with {', '.join(others)}, and {theirs} "
        f"do not ask for the same gres. A group job asks SLURM for a gres only when every member asks for the "
        f"same (else Snakemake stops: 'Resource gres is a string but not all jobs in group require the same "
        f"value'), and the slurm jobstep's srun of each member passes no gres (it reads gpus, gpu and "
        f"nvidia_gpu only), so {member.name} would never get a GPU of its own. set-resources is per rule, and a "
        f"group job has no resources of its own: this profile's group_slot makes it ask for its largest "
        f"member's CPUs and memory and the sum of their runtimes, and for a text resource such as gres only "
        f"when all members give the same. To evaluate on a GPU, give every rule of the group "
        f"({', '.join(sorted([member.name, *others]))}) gres={gres} in your later profile's set-resources (the "
        f"group job then asks sbatch for --gres={gres} once and SLURM gives each member's job step the job's "
        f"GPU), or give the evaluation rules their own jobs (profiles/slurm/README.md, Evaluation group); else "
        f"remove gres from {member.name}'s set-resources (the evaluation runs on CPUs)"
    )


def refuse_gpu_evaluations_in_group_jobs():
    """An evaluation rule asking for a GPU (evaluation.gpu > 0, or a profile's set-resources giving it gpu, gpus or
    nvidia_gpu, or a gres naming a GPU that the other rules of its group do not ask for the same:
    refuse_a_gpu_gres_the_group_does_not_share) is refused under profiles/slurm (it sets SNAKEMAKE_SLURM_PROFILE; a dry run's executor is
    Snakemake's dryrun, not slurm) while it shares its group with other rules, because inside a group job the
    slurm jobstep asks srun for the sum of the members' GPUs, more than the job holds: the jobs' resources decide
    that, set-resources included (Snakemake passes them on to the job), not where they came from. Called while
    the DAG is built, by every evaluation job's input (AfterTheGroupCheck), so for any target that needs one, in
    the main workflow or wherever this module is imported: a later profile's `groups` and `set-resources` have
    taken effect then (Rule.group and Rule.resources read them), and no job is submitted yet; only on the driver
    (the jobs inherit the variable)."""
    if not (os.environ.get("SNAKEMAKE_SLURM_PROFILE") and workflow.exec_mode == ExecMode.DEFAULT):
        return
    for member in workflow.rules:
        if member.name not in EVALUATION_RULES or member.group is None:
            continue
        others = sorted(
            other.name
            for other in workflow.rules
            if other.group == member.group and other.name != member.name
        )
        if not others:
            continue
        refuse_a_gpu_gres_the_group_does_not_share(member, others)
        request = srun_gpu_request(member)
        if request is None:
            continue
        why = (
            "inside a group job the slurm plugin asks srun for a GPU per member, more than the job holds, and "
            "SLURM refuses the job"
        )
        own_jobs = (
            "give the evaluation rules their own jobs with a later profile (profiles/slurm/README.md, "
            "Evaluation group)"
        )
        key, value = request
        if key in workflow.resource_settings.overwrite_resources.get(member.name, {}):
            raise config_error(
                f"set-resources gives rule {member.name} {key}={value} (a profile's set-resources or "
                f"--set-resources), but under profiles/slurm the rule is in the group job {member.group!r} with "
                f"{', '.join(others)}: {why}. Remove {key} from {member.name}'s set-resources (the evaluation "
                f"runs on CPUs; evaluation.gpu is {EVALUATION['gpu']}), or {own_jobs}"
            )
        raise config_error(
            f"evaluation.gpu is {EVALUATION['gpu']}, but under profiles/slurm rule {member.name} is in the "
            f"group job {member.group!r} with {', '.join(others)}: {why}. Set evaluation.gpu to 0 (the "
            f"evaluation runs on CPUs), or {own_jobs}"
        )


# The executors that send a job to another machine, which holds a GPU only where the job asks for one.
CLUSTER_EXECUTORS = ("slurm", "kubernetes-kueue", "kubernetes")


def cluster_executor():
    """The cluster this run sends its jobs to, as the messages name it: slurm under profiles/slurm (it sets
    SNAKEMAKE_SLURM_PROFILE; a dry run's executor is Snakemake's dryrun), else the executor of CLUSTER_EXECUTORS
    the run uses (--executor, a profile's executor:); None for a local run and inside a job (the driver checked).
    """
    if workflow.exec_mode != ExecMode.DEFAULT:
        return None
    if os.environ.get("SNAKEMAKE_SLURM_PROFILE"):
        return "slurm (profiles/slurm)"
    plugin = workflow.executor_plugin
    name = plugin.cli_prefix if plugin is not None else None
    return f"the {name} executor" if name in CLUSTER_EXECUTORS else None


def asks_for_no_gpu(member):
    """Whether the jobs of rule ``member`` ask their cluster for no GPU (neither a gpu resource nor a gres
    naming one), after the profiles' set-resources; a value computed per job is taken to ask for one.
    """
    gpu, gres = member.resources.get("gpu"), member.resources.get("gres")
    if gpu.is_evaluable() or gres.is_evaluable():
        return False
    return not gpu.value and "gpu" not in str(gres.value or "")


def refuse_cuda_evaluations_without_a_gpu():
    """evaluation.device cuda (or cuda:N) while an evaluation rule asks for no GPU (evaluation.gpu 0, and no profile's
    set-resources gives one) is refused when the run goes to a cluster (cluster_executor): the job lands on a node
    without a GPU and stops where CUDA is missing. On a laptop or workstation the job sees the machine's GPU
    whatever it asks for, and that combination is how it runs there. Called while the DAG is built, like
    refuse_gpu_evaluations_in_group_jobs, so that an executor given on the command line counts too.
    """
    if not EVALUATION["device"].startswith("cuda"):
        return
    cluster = cluster_executor()
    if cluster is None:
        return
    for member in workflow.rules:
        if member.name in EVALUATION_RULES and asks_for_no_gpu(member):
            raise config_error(
                f"evaluation.device is {EVALUATION['device']}, but evaluation.gpu is {EVALUATION['gpu']}: on "
                f"{cluster} rule "
                f"{member.name} asks for no GPU (nor does a profile's set-resources), so its jobs run on a node "
                f"without one, where CUDA fails. Set evaluation.device to auto (CUDA where the job holds a GPU, "
                f"else the CPU) or cpu, or evaluation.gpu to 1 (under profiles/slurm only once the evaluation "
                f"rules have their own jobs: profiles/slurm/README.md, Evaluation group)"
            )


class AfterTheGroupCheck:
    """An input of the evaluation rules: ``pattern`` (Snakemake fills in its wildcards and the module's prefix, as
    for a string), given once refuse_gpu_evaluations_in_group_jobs and refuse_cuda_evaluations_without_a_gpu have
    passed. A callable, so that Snakemake calls it while it builds the DAG, for every evaluation job any target
    needs; written as its pattern, so that a listing of the rules' inputs shows the path."""

    def __init__(self, pattern):
        self.pattern = pattern

    def __call__(self, wildcards):
        refuse_gpu_evaluations_in_group_jobs()
        refuse_cuda_evaluations_without_a_gpu()
        return self.pattern

    def __str__(self):
        return self.pattern
