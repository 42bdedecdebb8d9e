"""Where a CAN dataset's logs are: the HCRL/KD-GAT directory layout (train_*/ and test_NN_<scenario>/ folders).

Kept free of heavy imports: the preprocess module calls it while Snakemake parses the workflow.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

LOG_SUFFIXES = (".csv", ".txt", ".log")
DEFAULT_EXCLUDE = ("suppress", "masquerade")


def scenario_name(directory: str) -> str:
    """``test_01_dos`` -> ``dos``; a name without the ``test_NN_`` prefix is kept as it is."""
    return re.sub(r"^test_\d+_", "", directory) or directory


def discover_layout(root: str | Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[list[Path], dict]:
    """Training files (``train_*/``) and test scenarios (``test_*/``) of a dataset laid out like HCRL/KD-GAT."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    exclude = tuple(exclude)

    def logs(directory: Path) -> list[Path]:
        return sorted(
            p
            for p in directory.rglob("*")
            if p.is_file()
            and p.suffix.lower() in LOG_SUFFIXES
            and not any(word in p.name for word in exclude)
        )

    train = [f for d in sorted(root.glob("train_*")) if d.is_dir() for f in logs(d)]
    test = {scenario_name(d.name): logs(d) for d in sorted(root.glob("test_*")) if d.is_dir()}
    test = {name: files for name, files in test.items() if files}
    if not train:
        raise FileNotFoundError(f"dataset directory {root} has no CAN logs under train_*/")
    return train, test
