"""Where a CAN dataset's logs are: the HCRL/KD-GAT directory layout (train_*/ and test_NN_<scenario>/ folders, and
<split>_*/ folders of whole captures for a held-out split such as fusion).

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


def _logs(directory: Path, exclude: tuple[str, ...]) -> list[Path]:
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and p.suffix.lower() in LOG_SUFFIXES and not any(word in p.name for word in exclude)
    )


def held_out_captures(
    root: str | Path, names: Iterable[str], exclude: Iterable[str] = DEFAULT_EXCLUDE
) -> dict[str, list[Path]]:
    """Whole captures for held-out splits: the logs under ``<name>_*/`` folders (``fusion_01_dos/``) for each
    split name; a name without such folders is left out."""
    root, exclude = Path(root), tuple(exclude)
    found = {
        name: [f for d in sorted(root.glob(f"{name}_*")) if d.is_dir() for f in _logs(d, exclude)]
        for name in names
    }
    return {name: files for name, files in found.items() if files}


def discover_layout(root: str | Path, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> tuple[list[Path], dict]:
    """Training files (``train_*/``) and test scenarios (``test_*/``) of a dataset laid out like HCRL/KD-GAT."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory {root} does not exist")
    exclude = tuple(exclude)
    train = [f for d in sorted(root.glob("train_*")) if d.is_dir() for f in _logs(d, exclude)]
    test = {scenario_name(d.name): _logs(d, exclude) for d in sorted(root.glob("test_*")) if d.is_dir()}
    test = {name: files for name, files in test.items() if files}
    # What counts as a log, for the messages below.
    logs = f"CAN logs ({', '.join('*' + suffix for suffix in LOG_SUFFIXES)}"
    logs += f"; names containing {list(exclude)} are left out)" if exclude else ")"
    if not train:
        raise FileNotFoundError(f"dataset directory {root} has no {logs} under train_*/")
    if not test:
        # Without test scenarios every model would be trained and evaluated, and only the summary would fail.
        raise FileNotFoundError(f"dataset directory {root} has no {logs} under test_NN_<scenario>/ folders")
    return train, test
