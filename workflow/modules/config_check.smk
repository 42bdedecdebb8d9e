# Config validation shared by the main workflow and every module: the module's schema, and on a refusal one line
# per bad key before Snakemake's own message (its dotted name, the config file or --config that set it and what
# was expected). Snakemake names the key only as On instance['a']['b'] after a dump of the schema.
from config_messages import (
    config_location,
    config_place,
    config_problem,
    duplicate_keys,
    non_finite_numbers,
    overridden_values,
    placed_message,
)
from jsonschema.exceptions import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.logging import logger
from snakemake.utils import validate


def validate_config(schema):
    """snakemake.utils.validate(config, schema), with ``schema`` relative to the including Snakefile; first a key
    given twice in a config file, whose earlier value YAML drops without a word; then a warning for each value of a
    --configfile that --config (a profile's config: too) replaces."""
    repeated = duplicate_keys(workflow.configfiles)
    if repeated:
        raise WorkflowError("\n".join(repeated))
    # a --configfile's value that --config or a profile's config: replaces, said once (every module validates
    # too); not the workflow's own config/config.yaml, whose values the profiles' READMEs say they replace: a
    # warning on every run of a profile would be noise
    if not getattr(workflow, "catalog_overrides_named", False):
        workflow.catalog_overrides_named = True
        given = workflow.config_settings.configfiles
        for line in overridden_values(given, dict(workflow.config_settings.config)):
            logger.warning(line)
    try:
        validate(config, schema=schema)
    except WorkflowError as error:
        problem = (
            error.__context__
        )  # Snakemake raises its WorkflowError while handling jsonschema's error
        if not isinstance(problem, ValidationError):
            raise
        configfiles = workflow.configfiles
        overrides = dict(workflow.config_settings.config)
        # A module imported with `config: config["lab"]` validates that mapping: its keys are named from the
        # workflow's config (the outermost one, which the config files and --config fill), lab.kd_gat.epochs; one
        # given a mapping an intermediate module built of parts of it, from the part holding the key.
        place = config_place(
            workflow.modifier_stack[0].globals["config"], config, list(problem.absolute_path)
        )
        prefix, depth = place or (None, 0)
        lines = config_problem(
            problem,
            configfiles,
            overrides,
            prefix,
            workflow.modifier.namespace,
            depth,
            importing_module(),
        )
        raise WorkflowError(lines, error) from None
    for key, value in non_finite_numbers(config):
        raise config_error(
            f"{key}: {value} is not a finite number (YAML's .inf or .nan), which no bound of the schema "
            "can refuse; give a finite value"
        )


def importing_module():
    """The name of the module that imports this one, None where the workflow itself does."""
    stack = workflow.modifier_stack
    return stack[-2].namespace if len(stack) > 2 else None


def config_error(message):
    """The WorkflowError of the module's own refusal of a config key (not the schema's), the key in ``message``
    named as the workflow's config files name it: lab.kd_gat.sweep.table for a module imported with
    `config: config["lab"]` (config_messages.placed_message)."""
    workflow_config = workflow.modifier_stack[0].globals["config"]
    prefix = config_location(workflow_config, config)
    return WorkflowError(placed_message(message, prefix, config, workflow_config))
