# Helpers of the calibration module (kept apart so that the Snakefile holds only rules). Where the simulations run
# decides none of their rows (each one's seed is its own): the backend params are not_a_rerun_trigger (rerun.smk),
# so moving a finished sweep or calibration to another backend, or resizing its workers, reruns nothing. What the
# user's code decides is a param: the `code` param holds the digest of the source file of each "module:function"
# its rule calls (simcal.model_code.code_digests), so editing a model, generator or loss function reruns its jobs.
import os

from simcal.calibrate import CalibrationSettings, check_refine_replicates
from simcal.analyze import KEY_COLUMNS
from simcal.backends import check_backend
from simcal.config_checks import (
    check_model,
    check_observed,
    check_parameters,
    check_sweep_columns,
    check_targets,
)
from simcal.design import parse_bounds
from simcal.model_code import code_digests
from simcal.settings import MONITORING, SimulationSettings, sweep_plan_record


def check_parameter_bounds():
    """calibration.parameters as the sample_design and calibrate jobs read them (low < high, finite, low > 0 on a
    log scale), refused here naming the parameter: the schema checks only that both are numbers."""
    try:
        parse_bounds(CAL["parameters"], "calibration.parameters")
    except ValueError as error:
        raise config_error(str(error)) from None


check_parameter_bounds()


def check_references_and_observed():
    """calibration.model, calibration.parameters with calibration.fixed, calibration.observed and
    calibration.targets, checked by the library (simcal.config_checks) as far as this process can: a misspelt
    function or loss function, an option its signature lacks, a true parameter its declared space lacks or a
    parameter both fixed and calibrated passed the dry run and failed only inside a job. A module that does not
    import here (it may live only in the jobs' environment) is left to the job, which names the key too.
    """
    try:
        check_model(CAL["model"])
        check_parameters(CAL["model"], CAL["parameters"], CAL["fixed"])
        check_observed(CAL["observed"])
        check_targets(CAL["targets"])
    except ValueError as error:
        raise config_error(str(error)) from None


check_references_and_observed()


def check_observed_path_behind_prefix():
    """A relative calibration.observed.path, in a module imported with a `prefix:` (or a `replace_prefix:` matching
    it): Snakemake looks for the calibrate and visualize rules' input behind the prefix, as for every relative
    path of the module's rules, while the file is in the working directory. Named here, not as a missing input
    behind the prefix; a file that is behind the prefix (or nowhere yet: a rule may make it there) is left be.
    """
    given = CAL["observed"]["path"]
    if given is None or "://" in OBSERVED:
        return
    moved = str(workflow.modifier.path_modifier.replace_prefix(OBSERVED))
    if moved != OBSERVED and os.path.exists(OBSERVED) and not os.path.exists(moved):
        raise config_error(
            f"calibration.observed.path: {given!r} is relative, and the calibration module is imported with a "
            f"`prefix:`, behind which Snakemake looks for it ({moved}), while the file is in the working "
            "directory: give an absolute path"
        )


check_observed_path_behind_prefix()


def check_job_settings():
    """calibration.simulation (the sweep's with its replicates) and calibration.calibrate as the simulate and
    calibrate jobs read them: the schema's integer takes 4.0, which the jobs refused only once the design jobs
    had run."""
    checks = [
        ("calibration.simulation", SimulationSettings.from_config, CAL["simulation"]),
        ("calibration.calibrate", CalibrationSettings.from_config, CAL["calibrate"]),
    ]
    if SWEEP["enabled"]:
        sweep = {**CAL["simulation"], "replicates": SWEEP["replicates"]}
        checks.append(("calibration.sweep.replicates", SimulationSettings.from_config, sweep))
    for key, read, options in checks:
        try:
            read(dict(options))
        except ValueError as error:
            message = str(error)
            raise config_error(
                message if message.startswith(key) else f"{key}: {message}"
            ) from None
    # settings the calibrate job checks against each other, which it met only after the sweep's jobs
    try:
        check_refine_replicates(
            CalibrationSettings.from_config(dict(CAL["calibrate"])),
            SimulationSettings.from_config(dict(CAL["simulation"])),
        )
    except ValueError as error:
        raise config_error(str(error)) from None


check_job_settings()


def check_slurm_backend():
    """calibration.backend.slurm as the simulate and calibrate jobs read it (simcal.backends.check_backend, which
    starts nothing and, for slurm, reads no environment): adaptive bounds with minimum_jobs above maximum_jobs, a
    walltime SLURM cannot read or a lifetime that outlasts it passed the schema and the dry run, and failed those
    jobs after the design and observed-data jobs had run (under a cluster profile, after their wait in the queue).
    The other backends read the environment of the jobs (an address, a service URL): left to them.
    """
    if BACKEND != "slurm":
        return
    try:
        check_backend(BACKEND, BACKEND_OPTIONS)
    except ValueError as error:
        raise config_error(str(error)) from None


check_slurm_backend()


# The simulate rule's name and the sweep's tables as the workflow knows them (behind the importing `use rule ... as`
# and the module's prefix), taken while this module is parsed: when the DAG is built workflow.modifier is the
# importing workflow's.
SWEEP_CHECK = {
    "simulate": workflow.modifier.modify_rulename("simulate"),
    "simulations": str(
        workflow.modifier.path_modifier.replace_prefix(f"{RESULTS}/sweep/simulations.parquet")
    ),
    "design": str(
        workflow.modifier.path_modifier.replace_prefix(
            f"resources/calibration/{NAME}/sweep_design.csv"
        )
    ),
    "sample_design": workflow.modifier.modify_rulename("sample_design"),
}


def simulate_forced(settings):
    """Whether Snakemake runs the sweep's simulate job again whatever its output's state: --forceall, or the
    simulate or sample_design rule or its output named by --forcerun, or as a target with --forcetargets (a
    file named as Snakemake takes it: relative to the working directory)."""
    if settings is None:
        return False
    forced = set(settings.forcerun or ())
    if settings.forcetargets:
        forced |= set(settings.targets or ())
    files = {os.path.normpath(os.path.relpath(name)) for name in forced}
    ours = {SWEEP_CHECK["simulations"], SWEEP_CHECK["design"]}
    return (
        settings.forceall
        or bool(forced & {SWEEP_CHECK["simulate"], SWEEP_CHECK["sample_design"]})
        or bool(files & {os.path.normpath(path) for path in ours})
    )


def check_sweep_columns_against_an_earlier_sweep():
    """calibration.sweep.columns against the header of the sweep's simulations an earlier run wrote, the file
    analyze_sweep reads (simcal.config_checks.check_sweep_columns): a misspelt column passed the dry run and failed
    only in that job. Left to the job when the simulations are not there yet (the simulate rule writes them) or are
    to be simulated again: a newer design, parameters the table lacks, a table of another calibration.model (or
    one that records none), of other calibration.fixed values or simulation settings (or one that records none:
    the params of simulate changed, so Snakemake runs it again and its model may write other columns), or simulate
    forced (simulate_forced: --forceall, --forcerun, --forcetargets, which
    Snakemake's DAG settings hold only once the DAG is built: hence AfterTheSweepColumnCheck).
    """
    if simulate_forced(workflow.dag_settings):
        return
    try:
        check_sweep_columns(
            SWEEP["columns"],
            SWEEP_CHECK["simulations"],
            SWEEP_CHECK["design"],
            required=[*KEY_COLUMNS, *map(str, CAL["parameters"]), *map(str, CAL["fixed"])],
            model=CAL["model"],
            plan=sweep_plan_record(
                CAL["fixed"], SimulationSettings.from_config(sweep_settings(CAL["simulation"]))
            ),
        )
    except ValueError as error:
        raise config_error(str(error)) from None


class AfterTheSweepColumnCheck:
    """The simulations input of analyze_sweep: ``pattern`` (Snakemake adds the module's prefix, as for a string),
    given once check_sweep_columns_against_an_earlier_sweep has passed. A callable, so that Snakemake calls it
    while it builds the DAG (also in a dry run), when --forcerun and --forceall are known; written as its pattern,
    so that a listing of the rules' inputs shows the path."""

    def __init__(self, pattern):
        self.pattern = pattern
        self.checked = False

    def __call__(self, wildcards):
        if not self.checked:
            check_sweep_columns_against_an_earlier_sweep()
            self.checked = True
        return self.pattern

    def __str__(self):
        return self.pattern


# Simulation settings that decide no row (simcal.settings.MONITORING): how often progress is written and how long
# the rule waits for a worker (without one it fails and writes nothing).


def deciding_rows(simulation):
    """calibration.simulation less MONITORING: a plain params value, so changing it reruns the job."""
    return {key: value for key, value in simulation.items() if key not in MONITORING}


def sweep_settings(simulation):
    """The settings param of the sweep's simulate job: calibration.simulation less MONITORING, with the sweep's
    replicates."""
    return {**deciding_rows(simulation), "replicates": SWEEP["replicates"]}


def monitoring(simulation):
    """The MONITORING settings of calibration.simulation, as the ``monitoring`` param the simulate and calibrate
    wrappers merge back: left out of the params rerun trigger (rerun.smk)."""
    return not_a_rerun_trigger({key: simulation[key] for key in MONITORING if key in simulation})
