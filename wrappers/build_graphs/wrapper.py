"""Snakemake wrapper: CAN logs of one dataset -> time-block split, ID vocabulary, window graphs, split files, metadata."""

__author__ = "snakemake-gpu-catalog maintainers"
__license__ = "MIT"

from kdgat.logs import ALL, configure_wrapper, failure_logged
from kdgat.preprocess import preprocess_dataset
from kdgat.rule_items import integer, listed, number, paired

# What this wrapper takes, as its meta.yaml names it (0: it reads the first item), and what of it a rule may
# leave out (meta.yaml's optional; .tests/unit/test_wrapper_files.py checks both): a name a rule gives that is
# not in TAKES is logged as a warning; a rule that lacks a name of TAKES not in OPTIONAL is refused before
# anything runs.
TAKES = {
    "input": ("train", "test", "held_out_fusion", "capture_metadata"),
    "output": ("train", "val", "test", "vocab", "metadata", "fusion"),
    "params": (
        "dataset",
        "test_scenario_of_file",
        "format",
        "bad_rows",
        "window_size",
        "stride",
        "val_fraction",
        "time_blocks",
        "held_out",
        "seed",
        "setting_prefix",
        "roles_of_logs",
        "library_code",
    ),
}
OPTIONAL = {
    "input": ("held_out_fusion", "capture_metadata"),
    "output": ("fusion",),
    "params": ALL,
}  # ALL: every param of TAKES

configure_wrapper(
    "build_graphs",
    snakemake.log,
    {"input": snakemake.input, "output": snakemake.output, "params": snakemake.params},
    TAKES,
    OPTIONAL,
)
with failure_logged(
    "build_graphs",
    mem_mb=snakemake.resources.get("mem_mb"),
    rule=snakemake.rule,
):
    preprocess_dataset(
        dataset=snakemake.params.get("dataset", "dataset"),
        # listed/paired: a named input or param of one value is that value, not a list of one
        train_files=listed(snakemake.input.get("train", [])),
        test_files=paired(
            snakemake.params.get("test_scenario_of_file", []),
            snakemake.input.get("test", []),
            names_key="params.test_scenario_of_file",
            files_key="input.test",
        ),
        fmt=snakemake.params.get("format", "auto"),
        bad_rows=snakemake.params.get("bad_rows", "error"),
        window_size=integer(snakemake.params.get("window_size", 100), "params.window_size"),
        stride=integer(snakemake.params.get("stride", 100), "params.stride"),
        val_fraction=number(snakemake.params.get("val_fraction", 0.2), "params.val_fraction"),
        time_blocks=integer(snakemake.params.get("time_blocks", 10), "params.time_blocks"),
        held_out=snakemake.params.get("held_out", {}),  # not dict(): the library names a wrong type
        held_out_files={"fusion": listed(snakemake.input.get("held_out_fusion", []))},
        seed=integer(snakemake.params.get("seed", 42), "params.seed"),
        # the files that label candump logs, retrieved with them; a rule without the input: looked for on disk
        metadata_files=None
        if (metadata := snakemake.input.get("capture_metadata")) is None
        else listed(metadata),
        outputs={key: snakemake.output[key] for key in ("train", "val", "test", "vocab", "metadata")}
        | {"fusion": snakemake.output.get("fusion")},
        # how a message names a setting: params.window_size, or the config key the preprocess module's came from
        setting_prefix=snakemake.params.get("setting_prefix", "params"),
    )
