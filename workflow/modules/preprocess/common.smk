# Helpers of the preprocess module: where each dataset's logs come from.
import os

from kdgat.can.metadata_files import metadata_of_logs, metadata_roles
from kdgat.layout import (
    VAL,
    LayoutError,
    dataset_logs,
    held_out_blocks,
    log_roles,
    preprocess_code_digests,
    synthetic_code_digests,
)


include: "../learned_resources.smk"


def check_held_out_shares():
    """Shares of validation and the held-out splits that leave no block of a capture for training are named here,
    with build_graphs' own check, not when the first build_graphs job fails."""
    try:
        held_out_blocks({VAL: PREPROCESS["val_fraction"], **HELD_OUT}, PREPROCESS["time_blocks"])
    except ValueError as error:
        raise config_error(str(error)) from None


check_held_out_shares()


def check_log_paths_behind_prefix():
    """A relative datasets.<name>.path or files entry, in a module imported with a `prefix:`: the logs are read in
    the working directory here, while Snakemake looks for the rule's inputs behind the prefix (as for every
    relative path of the module's rules), so it is named here, not as a missing input behind the prefix.
    """
    for dataset, spec in DATASETS.items():
        files = spec.get("files") or {}
        given = [(f"datasets.{dataset}.path", spec.get("path") or "")]
        given += [
            (f"datasets.{dataset}.files.{split}[{index}]", path)
            for split, paths in files.items()
            if split != "test"
            for index, path in enumerate(paths)
        ]
        given += [
            (f"datasets.{dataset}.files.test.{scenario}[{index}]", path)
            for scenario, paths in (files.get("test") or {}).items()
            for index, path in enumerate(paths)
        ]
        for key, path in given:
            # ~/data is the home folder (kdgat.layout reads it so), not a relative path behind the prefix
            path = os.path.expanduser(path)
            moved = workflow.modifier.path_modifier.replace_prefix(path) if path else path
            if moved != path:
                raise config_error(
                    f"{key}: {path!r} is relative, and the preprocess module is imported with a `prefix:`, behind "
                    f"which Snakemake looks for it ({moved}): give an absolute path"
                )


check_log_paths_behind_prefix()


def dataset_layout(dataset):
    """(training logs, {scenario: test logs}) of a dataset, from its synthetic, path or files entry."""
    return _layout(dataset)[:2]


def roles_of_logs(wildcards):
    """Param of build_graphs (part of the between-workflow cache's key): which log is training, test or a
    held-out capture, by its path relative to the dataset's folder, and recorded logs' fingerprints
    (kdgat.layout.log_roles); synthetic logs are generate_can's outputs, keyed by those jobs. With the paths of
    the capture_metadata.json files that label candump logs (input.capture_metadata, whose contents the cache
    hashes, not which logs each labels): kdgat.can.metadata_files."""
    recorded = not (DATASETS[wildcards.dataset].get("synthetic") or {}).get("files")
    layout = _layout(wildcards.dataset)
    roles = log_roles(*layout, contents=recorded)
    metadata = metadata_roles(_logs(layout)) if recorded else []
    return {**roles, "capture_metadata": metadata} if metadata else roles


def capture_metadata(wildcards):
    """Input of build_graphs: the capture_metadata.json files that label a recorded dataset's candump logs
    (beside a log or in the folder above it), so that Snakemake retrieves them from remote storage with the
    logs and reruns the job when one is edited; none for other datasets, whose inputs stay as they were.
    """
    if (DATASETS[wildcards.dataset].get("synthetic") or {}).get("files"):
        return []
    return metadata_of_logs(_logs(_layout(wildcards.dataset)))


def _logs(layout):
    # every log of a layout (training logs, {scenario: test logs}, {split: whole captures})
    return [*layout[0], *(f for files in [*layout[1].values(), *layout[2].values()] for f in files)]


def whole_captures(dataset):
    """{held-out split: whole captures} of a dataset: synthetic files or folders named <split>_NN_<what>, or
    files.<split>; only for the splits preprocess.held_out names."""
    return _layout(dataset)[2]


def whole_captures_of(name):
    """Input function: the whole captures of held-out split ``name`` of the rule's dataset."""
    return lambda wildcards: whole_captures(wildcards.dataset).get(name, [])


def _layout(dataset):
    # The library reads a dataset's logs for the workflow and the kdgat command alike.
    try:
        return dataset_logs(dataset, DATASETS[dataset], HELD_OUT, PREPROCESS["exclude"])
    except LayoutError as error:
        raise config_error(str(error)) from None


def synthetic_options(wildcards):
    # Each generate_can job's parameters leave out the other files: adding one regenerates no other.
    block = DATASETS[wildcards.dataset]["synthetic"]
    return {key: value for key, value in block.items() if key != "files"}


def synthetic_entry(wildcards):
    return DATASETS[wildcards.dataset]["synthetic"]["files"][synthetic_entry_index(wildcards)]


def synthetic_entry_index(wildcards):
    entries = (DATASETS[wildcards.dataset].get("synthetic") or {}).get("files", [])
    for index, entry in enumerate(entries):
        if entry["split"] == wildcards.split and entry["name"] == wildcards.name:
            return index
    raise config_error(
        f"datasets.{wildcards.dataset}.synthetic.files has no entry with split {wildcards.split!r} "
        f"and name {wildcards.name!r}"
    )
