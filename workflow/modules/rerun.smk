# Params that decide no result of a job. Included by the modules whose rules have such params.


def not_a_rerun_trigger(value):
    """``value`` as a params function of ``output``, which Snakemake's params rerun trigger leaves out: for settings
    that change no result of the job (where it runs, how often it reports, where it stashes), so that changing one
    reruns nothing."""
    return lambda wildcards, output: value
