"""Where a capture's ``capture_metadata.json`` is (beside its log, else in the folder above), and which such files
label a dataset's logs: the preprocess module makes them inputs of build_graphs (``input.capture_metadata``), so
that Snakemake retrieves them from remote storage with the logs, reruns the job when one is edited and hashes their
contents into the between-workflow cache key. Light (no numpy, no pyarrow): the module calls it while Snakemake
parses the workflow."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

METADATA_FILE = "capture_metadata.json"


def metadata_places(log: str | Path) -> list[Path]:
    """Where the metadata file of ``log`` is looked for, in order: beside it, then in the folder above."""
    log = Path(log)
    return [log.parent / METADATA_FILE, log.parent.parent / METADATA_FILE]


def metadata_file(log: str | Path, given: Iterable[str | Path] | None = None) -> Path | None:
    """The metadata file that labels ``log``: the first of :func:`metadata_places` that is a file, or, with
    ``given`` (the metadata files a rule hands over, retrieved with the logs), the first that is one of them;
    None if there is none."""
    places = metadata_places(log)
    if given is None:
        return next((place for place in places if place.is_file()), None)
    given = {os.path.abspath(path) for path in given}
    return next((place for place in places if os.path.abspath(place) in given), None)


def metadata_of_logs(logs: Iterable[str | Path]) -> list[str]:
    """The metadata files that label ``logs`` (each once, in the order of the logs, written as the logs are:
    relative stays relative, so that a storage provider maps both alike); ``[]`` where there is none, so that a
    dataset without one keeps its inputs and cache key. A log of a format with labels (a CSV) may sit beside such
    a file too: it is taken all the same (reading the logs to tell would cost the planning of every run)."""
    found: dict[str, None] = {}
    for log in logs:
        place = metadata_file(log)
        if place is not None:
            found.setdefault(str(place))
    return list(found)


def metadata_roles(logs: Iterable[str | Path]) -> list[str]:
    """The paths of :func:`metadata_of_logs`, sorted, relative to the folder that holds all the logs' folders: part
    of build_graphs' cache key (which file labels which logs; the cache hashes the inputs' contents, not their
    paths)."""
    logs = [os.path.abspath(log) for log in logs]
    found = metadata_of_logs(logs)
    if not found:
        return []
    base = os.path.commonpath([os.path.dirname(os.path.dirname(log)) for log in logs])
    return sorted(os.path.relpath(place, base) for place in found)
