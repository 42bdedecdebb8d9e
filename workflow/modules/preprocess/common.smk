# Helpers of the preprocess module: where each dataset's logs come from.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

LOG_SUFFIXES = (".csv", ".txt", ".log")


def scenario_name(folder):
    """test_01_dos -> dos (the same rule as kdgat.preprocess.scenario_name)."""
    return re.sub(r"^test_\d+_", "", folder) or folder


def synthetic_files(dataset):
    spec = DATASETS[dataset].get("synthetic") or {}
    return [
        (entry["split"], f"resources/preprocess/{dataset}/{entry['split']}/{entry['name']}.csv")
        for entry in spec.get("files", [])
    ]


def directory_layout(dataset, root):
    root = Path(root)
    if not root.is_dir():
        raise WorkflowError(
            f"datasets.{dataset}.path: {root} is not a directory (expected train_*/ and test_*/ folders)"
        )
    excluded = tuple(PREPROCESS["exclude"])

    def logs(folder):
        return sorted(
            str(p)
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in LOG_SUFFIXES
            and not any(word in p.name for word in excluded)
        )

    train = [f for d in sorted(root.glob("train_*")) if d.is_dir() for f in logs(d)]
    test = {scenario_name(d.name): logs(d) for d in sorted(root.glob("test_*")) if d.is_dir()}
    return train, {name: files for name, files in test.items() if files}


def dataset_layout(dataset):
    """(training logs, {scenario: test logs}) of a dataset, from its synthetic, path or files entry."""
    spec = DATASETS[dataset]
    if (spec.get("synthetic") or {}).get("files"):
        train, test = [], {}
        for split, path in synthetic_files(dataset):
            if split.startswith("train_"):
                train.append(path)
            else:
                test.setdefault(scenario_name(split), []).append(path)
    elif spec.get("path"):
        train, test = directory_layout(dataset, spec["path"])
    else:
        files = spec.get("files") or {}
        train, test = list(files.get("train", [])), dict(files.get("test", {}))
    if not train:
        raise WorkflowError(
            f"datasets.{dataset}: no training logs; give `synthetic.files`, a `path` with train_*/ folders, "
            "or `files.train`"
        )
    return train, test


def synthetic_entry_index(wildcards):
    entries = (DATASETS[wildcards.dataset].get("synthetic") or {}).get("files", [])
    for index, entry in enumerate(entries):
        if entry["split"] == wildcards.split and entry["name"] == wildcards.name:
            return index
    raise WorkflowError(
        f"datasets.{wildcards.dataset}.synthetic.files has no entry with split {wildcards.split!r} "
        f"and name {wildcards.name!r}"
    )
