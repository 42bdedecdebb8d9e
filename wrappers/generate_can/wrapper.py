"""Snakemake wrapper: write one synthetic CAN log (HCRL-style traffic with injected attacks)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure, failure_logged
from kdgat.synthetic import generate_file

configure(snakemake.log[0])
with failure_logged("generate_can"):
    generate_file(
        options=snakemake.params.options,
        file_index=int(snakemake.params.get("file_index", 0)),
        path=snakemake.output[0],
        entry=snakemake.params.get("entry"),
    )
