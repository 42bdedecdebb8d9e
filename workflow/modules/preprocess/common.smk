# Helpers of the preprocess module: where each dataset's logs come from.
from kdgat.layout import discover_layout, held_out_captures, scenario_name
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


def held_out_of(split):
    """The held-out split (preprocess.held_out) a folder like fusion_01_dos gives whole captures to, or None."""
    return next((name for name in HELD_OUT if split.startswith(f"{name}_")), None)


def dataset_layout(dataset):
    """(training logs, {scenario: test logs}) of a dataset, from its synthetic, path or files entry."""
    return _layout(dataset)[:2]


def whole_captures(dataset):
    """{held-out split: whole captures} of a dataset: synthetic files or folders named <split>_NN_<what>, or
    files.<split>; only for the splits preprocess.held_out names."""
    return _layout(dataset)[2]


def whole_captures_of(name):
    """Input function: the whole captures of held-out split ``name`` of the rule's dataset."""
    return lambda wildcards: whole_captures(wildcards.dataset).get(name, [])


def _layout(dataset):
    spec = DATASETS[dataset]
    held_out = {}
    if (spec.get("synthetic") or {}).get("files"):
        train, test = [], {}
        for split, path in synthetic_files(dataset):
            if split.startswith("train_"):
                train.append(path)
            elif name := held_out_of(split):
                held_out.setdefault(name, []).append(path)
            elif split.startswith("test_"):
                test.setdefault(scenario_name(split), []).append(path)
            else:
                raise WorkflowError(
                    f"datasets.{dataset}.synthetic.files: split {split!r} is neither train_*, test_* nor a "
                    f"held-out split of preprocess.held_out ({sorted(HELD_OUT)})"
                )
    elif spec.get("path"):
        train, test = directory_layout(dataset, spec["path"])
        held_out = {
            name: [str(f) for f in files]
            for name, files in held_out_captures(
                spec["path"], HELD_OUT, PREPROCESS["exclude"]
            ).items()
        }
    else:
        files = spec.get("files") or {}
        train, test = list(files.get("train", [])), dict(files.get("test", {}))
        held_out = {name: list(files[name]) for name in HELD_OUT if files.get(name)}
    if not train:
        raise WorkflowError(
            f"datasets.{dataset}: no training logs; give `synthetic.files`, a `path` with train_*/ folders, "
            "or `files.train`"
        )
    return train, test, held_out


def synthetic_entry_index(wildcards):
    entries = (DATASETS[wildcards.dataset].get("synthetic") or {}).get("files", [])
    for index, entry in enumerate(entries):
        if entry["split"] == wildcards.split and entry["name"] == wildcards.name:
            return index
    raise WorkflowError(
        f"datasets.{wildcards.dataset}.synthetic.files has no entry with split {wildcards.split!r} "
        f"and name {wildcards.name!r}"
    )
