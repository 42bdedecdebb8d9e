# Helpers shared by the main workflow: config validation and the final targets.
from jsonschema.exceptions import ValidationError
from snakemake.exceptions import WorkflowError
from pathlib import Path

import yaml
from snakemake.utils import validate
from snakemake_executor_plugin_kubernetes_kueue.storage_account import check_default_storage_account


def config_problem(problem, configfiles, overrides):
    """One line for a config that fails the schema: the dotted key, the config file(s) or --config that set it
    (none: a default) and what was expected."""
    path = list(problem.absolute_path)
    expected = problem.message
    if problem.validator == "additionalProperties":
        known = sorted(problem.schema.get("properties", {}))
        keys = [path + [name] for name in sorted(set(problem.instance) - set(known))]
        expected = f"an unknown key; {'.'.join(map(str, path)) or 'the top level'} takes {known}"
    elif "propertyNames" in problem.relative_schema_path:  # a name, judged as the instance
        keys = [path + [problem.instance]]
        expected = f"{problem.message} (a name not allowed there)"
    else:
        keys = [path]
    lines = []
    for key in keys:
        dotted = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in key
        ).lstrip(".")
        # the files that gave the refused value (a name refused: every file naming it)
        culprit = (
            (lambda value: value is not _MISSING)
            if key != path
            else (lambda value: value == problem.instance)
        )
        sources = [
            str(file) for file in _unique_files(configfiles) if culprit(_value(_load(file), key))
        ]
        from_cli = culprit(_value(overrides, key))
        if from_cli:
            sources.append("--config")
        where = ", ".join(sources) or "no config file (a default)"
        hint = ""
        if (
            from_cli
            and len(key) > 1
            and isinstance(problem.instance, str)
            and problem.validator == "type"
        ):
            hint = (
                "; --config reads every value inside a mapping as text (kd_gat='{seeds: [1]}' gives '1'): set "
                "nested numbers and booleans in a --configfile"
            )
        lines.append(
            f"config key {dotted or '(the whole config)'} (set in {where}): {expected}{hint}"
        )
    return "\n".join(lines)


_MISSING = object()


def _unique_files(files):
    seen = set()
    for file in files:
        resolved = Path(file).resolve()
        if resolved not in seen:
            seen.add(resolved)
            yield file


def _load(file):
    try:
        return yaml.safe_load(Path(file).read_text())
    except (OSError, yaml.YAMLError):
        return None


def _value(data, key):
    """The value at ``key`` (a list of names and indexes) in ``data``, or _MISSING."""
    for part in key:
        if isinstance(part, int) and isinstance(data, list) and part < len(data):
            data = data[part]
        elif isinstance(data, dict) and part in data:
            data = data[part]
        else:
            return _MISSING
    return data


# Snakemake uses an Azure default storage (profiles/k8s) before any executor starts: check it now.
check_default_storage_account(workflow)
try:
    validate(config, schema="../schemas/config.schema.yaml")
except WorkflowError as error:
    problem = (
        error.__context__
    )  # Snakemake raises its WorkflowError while handling jsonschema's error
    if not isinstance(problem, ValidationError):
        raise
    # Snakemake's message names the key as On instance['a']['b'] after a dump of the schema: first, one line
    # naming the dotted key, the file that set it and what was expected.
    raise WorkflowError(
        config_problem(problem, workflow.configfiles, dict(workflow.config_settings.config)),
        error,
    ) from None


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


def get_final_targets(wildcards):
    """Everything `rule all` asks for, chosen by the `targets` switches in the config."""
    targets = []
    if CAN_IDS_TARGETS:
        # kd_gat's own targets too: the models the evaluations read, and the GAT sweep when kd_gat.sweep.enabled
        # (which no evaluation reads, so evaluation_all alone left it out).
        targets += rules.kd_gat_all.input
        targets += rules.evaluation_all.input
    if config["targets"]["calibration"]:
        targets += rules.calibration_all.input
    return targets
