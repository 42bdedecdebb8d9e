"""Snakemake wrapper: write one synthetic CAN log (HCRL-style traffic with injected attacks)."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging

from kdgat.synthetic import generate_file

logging.basicConfig(
    filename=snakemake.log[0] if snakemake.log else None,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
try:
    generate_file(
        options=snakemake.params.options,
        file_index=int(snakemake.params.get("file_index", 0)),
        path=snakemake.output[0],
    )
except Exception:
    logging.getLogger("generate_can").exception("generating %s failed", snakemake.output[0])
    raise
