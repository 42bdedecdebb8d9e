# Helpers of the calibration module (kept apart so that the Snakefile holds only rules). Where the simulations run
# decides none of their rows (each one's seed is its own): the backend params are not_a_rerun_trigger (rerun.smk),
# so moving a finished sweep or calibration to another backend, or resizing its workers, reruns nothing.
import difflib
import importlib

from simcal.design import parse_bounds
from snakemake.exceptions import WorkflowError


def check_parameter_bounds():
    """calibration.parameters as the sample_design and calibrate jobs read them (low < high, finite, low > 0 on a
    log scale), refused here naming the parameter: the schema checks only that both are numbers."""
    try:
        parse_bounds(CAL["parameters"], "calibration.parameters")
    except ValueError as error:
        raise WorkflowError(str(error)) from None


check_parameter_bounds()


def check_model_function():
    """calibration.model's function, refused here naming the key (and the closest name) when its module
    imports in this process and lacks it: a misspelt name passed the dry run and failed only inside the job.
    The schema checks the form "package.module:function". A module that does not import here (it may live
    only in the jobs' environment) is left to the job, which names what it cannot import."""
    reference = CAL["model"]
    module_name, attribute = reference.split(":")
    try:
        target = importlib.import_module(module_name)
    except (Exception, SystemExit):
        return
    where, walked = f"module {module_name}", []
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [name for name in dir(target) if not name.startswith("_")]
            closest = difflib.get_close_matches(part, names, n=1)
            hint = f" (did you mean {closest[0]!r}?)" if closest else ""
            raise WorkflowError(f"calibration.model: {reference!r}: {where} has no {part!r}{hint}")
        target = getattr(target, part)
        walked.append(part)
        where = f"{module_name}:{'.'.join(walked)}"


check_model_function()


# Simulation settings that decide no row: how often progress is written and how long the rule waits for a worker
# (without one it fails and writes nothing).
MONITORING = ("progress_seconds", "no_worker_timeout_s")


def deciding_rows(simulation):
    """calibration.simulation less MONITORING: a plain params value, so changing it reruns the job."""
    return {key: value for key, value in simulation.items() if key not in MONITORING}


def monitoring(simulation):
    """The MONITORING settings of calibration.simulation, as the ``monitoring`` param the simulate and calibrate
    wrappers merge back: left out of the params rerun trigger (rerun.smk)."""
    return not_a_rerun_trigger({key: simulation[key] for key in MONITORING if key in simulation})
