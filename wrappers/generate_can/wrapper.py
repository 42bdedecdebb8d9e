"""Snakemake wrapper: write one synthetic CAN log (HCRL-style traffic with injected attacks)."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import configure_wrapper, failure_logged
from kdgat.rule_items import integer
from kdgat.synthetic import generate_file

# The params this wrapper takes, as its meta.yaml names them (.tests/unit/test_wrapper_files.py): any other
# name a rule gives is logged as a warning.
PARAMS = ("options", "file_index", "entry")

configure_wrapper("generate_can", snakemake.log, snakemake.params, PARAMS)
with failure_logged("generate_can"):
    generate_file(
        options=snakemake.params.options,
        file_index=integer(snakemake.params.get("file_index", 0), "params.file_index"),
        path=snakemake.output[0],
        entry=snakemake.params.get("entry"),
    )
