"""Snakemake wrapper: observed data from a generator function ("module:function"(params, seed, **options)) at known parameters."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from simcal.contract import resolve_callable
from simcal.logs import configure
from simcal.tables import write_csv, write_parquet

configure(snakemake.log[0] if snakemake.log else None)
params = snakemake.params
try:
    generator = resolve_callable(params.generator, what="observed-data generator")
    observed = generator(
        dict(params.true_params), int(params.get("seed", 0)), **dict(params.get("options", {}) or {})
    )
    output = snakemake.output[0]
    (write_parquet if output.endswith(".parquet") else write_csv)(observed, output)
    logging.getLogger("simcal").info(
        "wrote %d observed rows from %s to %s", len(observed), params.generator, output
    )
except BaseException:
    logging.getLogger("simcal").exception("generate_observed failed")
    raise
