# Downstream workflow for the evaluation tests: the CAN-IDS modules only (preprocess → kd_gat → evaluation), as a
# user who does not want the calibration part would write it.
from pathlib import Path

CATALOG = Path(workflow.basedir).parents[2]
MODULES = CATALOG / "workflow" / "modules"


report: str(CATALOG / "workflow" / "report" / "workflow.rst")


module preprocess:
    snakefile:
        str(MODULES / "preprocess" / "Snakefile")
    config:
        config


use rule * from preprocess as preprocess_*


module kd_gat:
    snakefile:
        str(MODULES / "kd_gat" / "Snakefile")
    config:
        config


use rule * from kd_gat as kd_gat_*


module evaluation:
    snakefile:
        str(MODULES / "evaluation" / "Snakefile")
    config:
        config


use rule * from evaluation as evaluation_*


rule all:
    default_target: True
    input:
        rules.evaluation_all.input,
