# Helpers shared by the main workflow: config validation and the final targets.
import difflib
import inspect
from pathlib import Path

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


def dag_settings_of_this_run():
    """The DAG settings of this run (targets, --omit-from, --batch ...). Snakemake sets workflow.dag_settings only
    after it has parsed the Snakefile; while it parses, they are held by the snakemake.api.DAGApi whose
    construction parses it (Snakemake 9: DAGApi.__post_init__ reads workflow_api._workflow, which parses), found
    up the stack. None when neither is there (a parse for --lint or --list-rules builds no DAG)."""
    if workflow.dag_settings is not None:
        return workflow.dag_settings
    from snakemake.api import DAGApi

    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, DAGApi):
                return owner.dag_settings
            frame = frame.f_back
        return None
    finally:
        del frame


def refuse_unknown_omit_from_and_batch():
    """--omit-from and --batch name rules (or, --omit-from, files), yet Snakemake passes over a name that is neither
    without a word, running everything (--forcerun and --until refuse it): refuse it here, with the name the main
    workflow gives a module's rule. Called once every module is imported (the end of workflow/Snakefile), so that a
    run given targets of its own, which never builds `rule all`, is checked too; and again from the input function
    of the `all` rule, where Snakemake holds the DAG settings (dag_settings_of_this_run)."""
    settings = dag_settings_of_this_run()
    if settings is None:
        return
    names = {name: "--omit-from" for name in settings.omit_from or ()}
    if settings.batch is not None:
        names[settings.batch.rulename] = "--batch"
    rule_names = sorted(each.name for each in workflow.rules)
    for name, flag in names.items():
        # A path (a / or a suffix) is left to Snakemake: with a default storage it matches the outputs as stored.
        if workflow.is_rule(name) or (
            flag == "--omit-from"
            and (
                len(Path(name).parts) > 1
                or "." in name
                or any(each.is_producer(name) for each in workflow.rules)
            )
        ):
            continue
        close = [
            known for known in rule_names if known.endswith(f"_{name}")
        ] or difflib.get_close_matches(name, rule_names, n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        raise WorkflowError(
            f"{flag} {name}: no rule{'' if flag == '--batch' else ' or output file'} of this workflow is named so, "
            f"and Snakemake would ignore it and run every job; the main workflow names a module's rule "
            f"<module>_<rule>{hint}"
        )


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    refuse_unknown_omit_from_and_batch()
    targets = []
    if CAN_IDS_TARGETS:
        # kd_gat's own targets too: the models the evaluations read, and the GAT sweep when kd_gat.sweep.enabled
        # (which no evaluation reads, so evaluation_all alone left it out).
        targets += rules.kd_gat_all.input
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
