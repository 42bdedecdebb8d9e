# Helpers of the calibration module (kept apart so that the Snakefile holds only rules).


def where_it_runs(value):
    """A params value of the backend: a function of ``output``, which Snakemake's params rerun trigger leaves out.
    Where the simulations run decides none of their rows (each one's seed is its own), so moving a finished sweep or
    calibration to another backend, or resizing its workers, reruns nothing."""
    return lambda wildcards, output: value
