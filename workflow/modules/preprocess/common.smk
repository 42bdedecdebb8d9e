# Helpers of the preprocess module: where each dataset's logs come from.
from kdgat.layout import discover_layout, scenario_name
from snakemake.exceptions import WorkflowError


include: "../learned_resources.smk"


def synthetic_files(dataset):
    spec = DATASETS[dataset].get("synthetic") or {}
    return [
        (entry["split"], f"resources/preprocess/{dataset}/{entry['split']}/{entry['name']}.csv")
        for entry in spec.get("files", [])
    ]


def directory_layout(dataset, root):
    try:
        train, test = discover_layout(root, exclude=PREPROCESS["exclude"])
    except FileNotFoundError as error:
        raise WorkflowError(
            f"datasets.{dataset}.path: {error} (expected train_*/ and test_NN_<scenario>/ folders)"
        ) from None
    return [str(f) for f in train], {name: [str(f) for f in files] for name, files in test.items()}


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
