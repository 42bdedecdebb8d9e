"""Snakemake wrapper: CAN logs of one dataset -> ID vocabulary, window graphs, train/val/test files, metadata."""

__author__ = "snakemake-gpu-catalog"
__license__ = "MIT"

import logging
from pathlib import Path

from kdgat.preprocess import preprocess_dataset

logging.basicConfig(
    filename=snakemake.log[0] if snakemake.log else None,
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    force=True,
)
params = snakemake.params
outputs = {key: snakemake.output.get(key) for key in ("train", "val", "test", "vocab", "metadata")}
test_files: dict[str, list[str]] = {}
for scenario, path in zip(
    params.get("test_scenario_of_file", []), snakemake.input.get("test", []), strict=True
):
    test_files.setdefault(scenario, []).append(path)
try:
    preprocess_dataset(
        dataset=params.get("dataset", "dataset"),
        train_files=list(snakemake.input.get("train", [])),
        test_files=test_files,
        out_dir=Path(outputs["train"]).parent,
        fmt=params.get("format", "auto"),
        bad_rows=params.get("bad_rows", "error"),
        window_size=int(params.get("window_size", 100)),
        stride=int(params.get("stride", 100)),
        val_fraction=float(params.get("val_fraction", 0.2)),
        seed=int(params.get("seed", 42)),
        outputs=outputs,
    )
except Exception:
    logging.getLogger("build_graphs").exception("preprocessing %s failed", params.get("dataset"))
    raise
