"""Where a capture's ``capture_metadata.json`` is (beside its log, else in the folder above), and the fingerprints
of the metadata files of a dataset's logs: part of build_graphs' cache key (its ``roles_of_logs`` param), since the
file labels the frames of a candump log but is no input of the rule. Light (no numpy, no pyarrow): the preprocess
module calls it while Snakemake parses the workflow."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from kdgat.layout import log_fingerprint

METADATA_FILE = "capture_metadata.json"


def metadata_places(log: str | Path) -> list[Path]:
    """Where the metadata file of ``log`` is looked for, in order: beside it, then in the folder above."""
    log = Path(log)
    return [log.parent / METADATA_FILE, log.parent.parent / METADATA_FILE]


def metadata_file(log: str | Path) -> Path | None:
    """The metadata file that labels ``log`` (the first of :func:`metadata_places` that is a file), or None."""
    return next((place for place in metadata_places(log) if place.is_file()), None)


def metadata_fingerprints(logs: Iterable[str | Path]) -> dict[str, str]:
    """``{path: size and digest}`` (:func:`kdgat.layout.log_fingerprint`) of every metadata file that labels one of
    ``logs``, each path relative to the folder that holds all the logs; ``{}`` where there is none (so a dataset
    without one keeps its cache key). A log of a format with labels (a CSV) may sit beside such a file too: its
    fingerprint is taken all the same (reading the logs to tell would cost the planning of every run)."""
    logs = [os.path.abspath(log) for log in logs]
    found = sorted({str(place) for log in logs if (place := metadata_file(log)) is not None})
    if not found:
        return {}
    base = os.path.commonpath([os.path.dirname(os.path.dirname(log)) for log in logs])
    return {os.path.relpath(place, base): log_fingerprint(place) for place in found}
