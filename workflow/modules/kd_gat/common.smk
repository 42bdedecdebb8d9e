# Helpers of the kd_gat module: config access, paths, per-stage settings, resources and the sweep table.
# Included by the module's Snakefile (kept apart so that the Snakefile holds only rules).
import re
from pathlib import Path

import pandas as pd
from kdgat.chain import (
    GPU_TRAINING_RULES,
    STAGES,
    SWEEP_RULE,
    VARIANTS as ALL_VARIANTS,
    training_rule,
)
from kdgat.evaluation.targets import configured_data_prefix, configured_datasets
from kdgat.layout import in_the_working_directory
from kdgat.tracking import TrackingSettings, ensure_invocation_environment
from kdgat.training.settings import SettingPrefix, StageSettings
from snakemake.io import apply_wildcards
from snakemake.utils import Paramspace

KD = config["kd_gat"]
# A WorkflowError, as every config mistake a module refuses (not a ValueError).
if not config.get("datasets"):
    raise config_error(
        "config key 'datasets' is missing or empty: kd_gat trains one chain per dataset named there"
    )
try:  # the names only (no schema checks them here): a string would be the datasets 't', 'i', 'n', 'y'
    DATASETS = configured_datasets(config)
    # normalized: ./results/preprocess would match no output of the preprocess module (results/preprocess/...)
    DATA = configured_data_prefix(config)
except ValueError as error:
    raise config_error(str(error)) from None
VARIANTS = [variant for variant in ALL_VARIANTS if variant in KD["variants"]]
# Every variant is trained once per seed: the {seed} level of the paths (a student_kd distils from the teacher of
# its own seed).
SEEDS = [int(seed) for seed in KD["seeds"]]
RESOURCES = KD["resources"]


def check_dqn_splits():
    """A misspelt kd_gat.dqn.fit_split or stop_split is named here, not later as a missing <split>.pt input."""
    held_out = (config.get("preprocess") or {}).get("held_out")
    if held_out is None or DATA != "results/preprocess":
        return  # graphs made elsewhere (another data_prefix): which splits they hold is not known here
    known = ["val", *(name for name, share in held_out.items() if share is not None)]
    for key in ("fit_split", "stop_split"):
        split = KD["dqn"][key]
        if split and split not in known:
            raise config_error(
                f"kd_gat.dqn.{key}: the preprocess module writes no split {split!r}; it writes {known} "
                "besides train (preprocess.held_out names further splits)"
            )


check_dqn_splits()


def graphs():
    """The preprocess outputs a training job reads."""
    return {
        "train": f"{DATA}/{{dataset}}/train.pt",
        "val": f"{DATA}/{{dataset}}/val.pt",
        "metadata": f"{DATA}/{{dataset}}/metadata.json",
    }


def dqn_graphs():
    """What the DQN stage reads: graphs its VGAE and GAT did not train on, <kd_gat.dqn.fit_split>.pt (default: the
    validation block held out of the training captures) and, when kd_gat.dqn.stop_split names one, a second file
    for its early stopping (else it holds kd_gat.dqn.early_stop_share of the fit graphs out again).
    """
    files = {
        "fit": f"{DATA}/{{dataset}}/{KD['dqn']['fit_split']}.pt",
        "metadata": f"{DATA}/{{dataset}}/metadata.json",
    }
    if KD["dqn"]["stop_split"]:
        files["stop"] = f"{DATA}/{{dataset}}/{KD['dqn']['stop_split']}.pt"
    return files


def result(variant, stage, name="model.pt"):
    return f"results/kd_gat/{{dataset}}/seed_{{seed}}/{variant}/{stage}/{name}"


def outputs(variant, stage):
    return {name: result(variant, stage, f"{name}.{ext}") for name, ext in OUTPUT_FILES.items()}


OUTPUT_FILES = {"model": "pt", "metrics": "json", "history": "csv"}


def stage_settings(stage, variant, seed, overrides=None):
    """What a training job gets: only the settings of this stage and variant at one seed, typed and checked by the
    library (kd_gat.seeds is the workflow's: the job sees its own seed as `seed`)."""
    section = {key: value for key, value in KD.items() if key != "seeds"} | {"seed": seed}
    return StageSettings.from_config(section, stage, variant, overrides).as_dict()


# A training job's messages name its settings by their config keys (kd_gat.dqn.keep_folds, kd_gat.tracking.backend),
# not as a training wrapper's params.settings: an object, left out of Snakemake's params rerun trigger.
CONFIG_KEYS = SettingPrefix("kd_gat")


def settings(stage, variant):
    """The params function of a training rule: the settings for the job's {seed}. Checked here, at parse time."""
    stage_settings(stage, variant, SEEDS[0])
    return lambda wildcards: stage_settings(stage, variant, int(wildcards.seed))


def in_module(path):
    """``path`` where this module's files go: behind the `prefix:` (or `replace_prefix:`) of the `module` statement
    that imported it, as Snakemake places the rules' outputs, logs and benchmarks (but not their params), else
    ``path`` itself. Two instances under different prefixes so keep their checkpoints (params, not outputs) apart.
    """
    return workflow.modifier.path_modifier.replace_prefix(path)


def tracking(stage, variant, sweep=False):
    """The params function of a training rule's experiment tracking: kd_gat.tracking plus the job's tags. A
    TrackingSettings object, which Snakemake leaves out of its params rerun trigger: tracking never retrains.
    The job is tagged by its rule's name in the workflow (a_train_gat_teacher where the module's rules are used
    as a_*), and a module whose outputs a `prefix:` (or `replace_prefix:`) moves by its module name (kdgat.module),
    which the run name leads with: two kd_gat modules training the same datasets keep their runs apart.
    """
    rule_name = workflow.modifier.modify_rulename(
        SWEEP_RULE if sweep else training_rule(stage, variant)
    )
    results = "results/kd_gat/"
    moved = str(in_module(results)) != results
    instance = {"kdgat.module": workflow.modifier.namespace} if moved else {}

    def job_tracking(wildcards):
        tags = {"kdgat.dataset": wildcards.dataset, "snakemake.rule": rule_name, **instance}
        if sweep:
            tags["kdgat.sweep_instance"] = SWEEP.wildcard_pattern.format(**wildcards)
        return TrackingSettings.from_config(KD["tracking"], tags=tags)

    return job_tracking


include: "../learned_resources.smk"


# kd_gat.resources, scaled by the attempt; with learned_resources.enabled, what the rule's benchmarks call for.
mem_mb = learned("mem_mb", lambda wildcards, attempt: RESOURCES["mem_mb"] * attempt)
runtime = learned("runtime", lambda wildcards, attempt: RESOURCES["runtime"] * attempt)
# One GPU per training job, none with kd_gat.device cpu (the job trains on the CPU wherever it runs). With
# learned_resources.enabled, GPU jobs also get gpu_mem_mb: from the GPU peak the stage records in its metrics.json.
TRAINING_GPUS = 0 if KD["device"] == "cpu" else 1
GPU_MEMORY = learned_gpu_memory("metrics") if TRAINING_GPUS else {}


# The hyper-parameter sweep: one GAT per row of the table (optionally a pandas query of it).
def read_sweep_table(path):
    """The sweep table, refused naming the file and line where pandas would shift or merge rows silently: a row
    with more or fewer tab-separated fields than the header (pandas takes the first of one too many as its index,
    so every value lands in the column before its own), a column named twice or a row given twice (one
    instance, one GAT, where two were meant)."""
    where = f"kd_gat.sweep.table: {path}"
    if not path.is_file():
        raise config_error(
            f"{where} is not a file (expected a tab-separated table, one row per GAT)"
            if path.exists()
            else f"{where} does not exist (a tab-separated table){in_the_working_directory(path)}"
        )
    numbered = [
        (number, line.split("\t"))
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip()
    ]
    if not numbered:
        raise config_error(f"{where} is empty (expected a header line of column names, then rows)")
    header = numbered[0][1]
    named_twice = sorted({name for name in header if header.count(name) > 1})
    if named_twice:
        raise config_error(f"{where} line {numbered[0][0]}: column {named_twice} named twice")
    for number, fields in numbered[1:]:
        if len(fields) != len(header):
            raise config_error(
                f"{where} line {number}: {len(fields)} tab-separated fields, but the header (line "
                f"{numbered[0][0]}) names {len(header)}: {header}"
            )
    table = pd.read_csv(path, sep="\t")
    table.index = [number for number, _ in numbered[1:]]  # each row's line in the file
    return table


def check_sweep_rows(table, path):
    """Every row's settings, checked as the row's training job will get them, naming its line."""
    seen = {}
    # itertuples, as Paramspace names the instances: iterrows would make a row of ints and floats all floats
    rows = table.itertuples(index=True)
    for instance, (number, *values) in zip(SWEEP.instance_patterns, rows):
        if instance in seen:
            raise config_error(
                f"kd_gat.sweep.table: {path} line {number} repeats line {seen[instance]} ({instance}): one GAT "
                "would be trained where two were meant; remove it or change a value"
            )
        seen[instance] = number
        wildcards = {
            name: "NA" if pd.isna(value) else str(value)
            for name, value in zip(table.columns, values)
        }
        try:
            stage_settings(
                "gat", KD["sweep"]["variant"], SEEDS[0], overrides=SWEEP.instance(wildcards)
            )
        except ValueError as error:
            raise config_error(f"kd_gat.sweep.table: {path} line {number}: {error}") from None


SWEEP = None
if KD["sweep"]["enabled"]:
    table_path = Path(KD["sweep"]["table"]).expanduser()  # ~/params.tsv: the home folder's
    table = read_sweep_table(table_path)
    if KD["sweep"]["query"]:
        try:
            table = table.query(KD["sweep"]["query"])
        except Exception as error:
            raise config_error(
                f"kd_gat.sweep.query {KD['sweep']['query']!r} failed on {table_path}: {error}"
            ) from None
    if table.empty:
        raise config_error(
            f"kd_gat.sweep: no rows of {table_path} left after query {KD['sweep']['query']!r}"
        )
    SWEEP = Paramspace(table, filename_params="*")
    check_sweep_rows(table, table_path)


def sweep_targets():
    """The sweep runs at the first seed (any other can be asked for by path)."""
    if SWEEP is None:
        return []
    return expand(
        f"results/kd_gat/{{dataset}}/seed_{{seed}}/sweep/{{instance}}/gat/{{name}}",
        dataset=DATASETS,
        seed=SEEDS[:1],
        instance=SWEEP.instance_patterns,
        name=["model.pt", "metrics.json"],
    )


# Experiment tracking: every job of one invocation carries the main process's key (and the catalog's commit) in
# its environment, so that its run finds the invocation's parent run (kdgat.tracking).
if KD["tracking"]["backend"] != "none":
    try:
        TRACKING_ENVVARS = ensure_invocation_environment(workflow.current_basedir)
    # an exported KDGAT_TRACKING_INVOCATION that the tracking searches could not match
    except ValueError as error:
        raise config_error(f"kd_gat.tracking: {error}") from None

    envvars:
        *TRACKING_ENVVARS,


def warn_of_copied_rules_sharing_checkpoints():
    """A training rule copied by the importing workflow with outputs of its own (`use rule train_vgae_teacher from
    kd_gat as wide_vgae with: output: ...`, beside the module's rule) keeps the module rule's params: its resume
    checkpoint and, unless `benchmark:` is given too, its benchmark file. Both jobs then took the same checkpoint
    (the second stopped at its lock, or one resumed from the other's epochs) and wrote one benchmark file. Warned
    of, naming the rule and what to give it; called after the rules are defined."""
    for variant in ALL_VARIANTS:
        for stage in STAGES:
            module_rule = training_rule(stage, variant)
            # the rules this statement makes (a `use rule <one rule> ... as <name>` makes only that one)
            if workflow.modifier.avail_rulename(module_rule) is None:
                continue
            name = workflow.modifier.modify_rulename(module_rule)
            if not workflow.is_rule(name):
                continue
            definition = workflow.get_rule(name)
            place = f"kd_gat/{{dataset}}/seed_{{seed}}/{variant}/{stage}"
            model = in_module(f"results/{place}/model.pt")
            resume_file = in_module(f"checkpoints/{place}/last.pt")
            benchmark = in_module(f"benchmarks/{place}.tsv")
            given = definition.output.get("model")
            if given is None or filled(given) == filled(model):
                continue
            if str(definition.params.get("checkpoint")) != resume_file:
                continue
            # who writes the module's model: the module's own rule (or a copy keeping its outputs); none where
            # this statement replaced it (`use rule train_vgae_teacher from kd_gat as kd_gat_train_vgae_teacher`)
            siblings = [
                other.name
                for other in workflow.rules
                if other.name != name and filled(other.output.get("model")) == filled(model)
            ]
            if not siblings:
                continue
            shared = definition.benchmark is not None
            shared = shared and filled(definition.benchmark) == filled(benchmark)
            # shown less its wildcard constraints
            shown = re.sub(r"\{(\w+),[^{}]*\}", r"{\1}", str(given))
            logger.warning(
                f"rule {name} writes {shown}, not the kd_gat module's {model}, but keeps the resume checkpoint "
                f"of rule {siblings[0]}, which writes that "
                f"(params: checkpoint={resume_file!r})"
                + (f", and its benchmark file ({benchmark!r})" if shared else "")
                + ": the jobs of both rules for one dataset and seed take the same checkpoint (the second stops at "
                "its lock, or resumes from the other's epochs)"
                + (" and write one benchmark file" if shared else "")
                + ". Give it a checkpoint of its own in the `with:` of its `use rule` statement (params: "
                "checkpoint=...)"
                + (
                    ", and a benchmark: of its own, with params: benchmark= the same file"
                    if shared
                    else ""
                )
            )


def filled(pattern):
    """A path pattern of a training rule (a rule's, with its wildcard constraints, or the module's) for one job;
    None for none."""
    if pattern is None:
        return None
    try:
        return str(apply_wildcards(str(pattern), {"dataset": "d", "seed": "1"}))
    except Exception:  # a wildcard of the rule's own: not a path of the module's
        return None
