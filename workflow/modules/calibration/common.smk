# Helpers of the calibration module (kept apart so that the Snakefile holds only rules).


def where_it_runs(value):
    """A params value of the backend: a function of ``output``, which Snakemake's params rerun trigger leaves out.
    Where the simulations run decides none of their rows (each one's seed is its own), so moving a finished sweep or
    calibration to another backend, or resizing its workers, reruns nothing."""
    return lambda wildcards, output: value


# Simulation settings that decide no row: how often progress is written and how long the rule waits for a worker
# (without one it fails and writes nothing).
MONITORING = ("progress_seconds", "no_worker_timeout_s")


def deciding_rows(simulation):
    """calibration.simulation less MONITORING: a plain params value, so changing it reruns the job."""
    return {key: value for key, value in simulation.items() if key not in MONITORING}


def monitoring(simulation):
    """The MONITORING settings of calibration.simulation, as the ``monitoring`` param the simulate and calibrate
    wrappers merge back: like where_it_runs, left out of the params rerun trigger."""
    return where_it_runs({key: simulation[key] for key in MONITORING if key in simulation})
