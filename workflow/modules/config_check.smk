# Config validation shared by the main workflow and every module: the module's schema, and on a refusal one line
# per bad key before Snakemake's own message (its dotted name, the config file or --config that set it and what
# was expected). Snakemake names the key only as On instance['a']['b'] after a dump of the schema.
from config_messages import config_problem, duplicate_keys
from jsonschema.exceptions import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


def validate_config(schema):
    """snakemake.utils.validate(config, schema), with ``schema`` relative to the including Snakefile; first a key
    given twice in a config file, whose earlier value YAML drops without a word."""
    repeated = duplicate_keys(workflow.configfiles)
    if repeated:
        raise WorkflowError("\n".join(repeated))
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
        raise WorkflowError(config_problem(problem, configfiles, overrides), error) from None
