"""Files in a dataset folder's split folders that are not read as CAN logs (``dos.parquet``, ``dos.tsv``,
``dos.log.1``): one warning per dataset names them, so that a capture saved in another format is not left out of
training or testing without a word. kdgat.layout.dataset_logs calls warn_unread for a dataset's ``path``.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("kdgat.layout")

# Files that are obviously no CAN log, never warned of (names in any case): READMEs, licences, Markdown notes and
# the metadata JSON that describes captures (metadata.json, capture_metadata.json). Hidden files (.DS_Store) and
# paths with a word of preprocess.exclude are left out as the logs are.
NOT_LOGS = ("readme*", "license*", "licence*", "*.md", "*metadata.json")
# How many of the files the warning names; the rest are counted.
SHOWN = 5
_warned: set[tuple[str, tuple[str, ...]]] = set()


def unread_files(
    root: str | Path, splits: Iterable[str], suffixes: Iterable[str], exclude: Iterable[str] = ()
) -> list[Path]:
    """The files under ``root``'s ``train_*/``, ``test_*/`` and ``<split>_*/`` folders (for each of ``splits``, the
    held-out splits) whose suffix is not one of ``suffixes`` (the logs', kdgat.layout.LOG_SUFFIXES; in any case),
    less NOT_LOGS, hidden files and paths containing a word of ``exclude``; sorted, relative to ``root``."""
    root, words, suffixes = Path(root), tuple(word.lower() for word in exclude), tuple(suffixes)
    found = set()
    for split in dict.fromkeys(("train", "test", *splits)):
        for folder in (d for d in root.glob(f"{split}_*") if d.is_dir()):
            for path in folder.rglob("*"):
                relative = path.relative_to(root)
                if (
                    path.is_file()
                    and path.suffix.lower() not in suffixes
                    and not any(part.startswith(".") for part in relative.parts)
                    and not any(fnmatch.fnmatch(path.name.lower(), pattern) for pattern in NOT_LOGS)
                    and not any(word in relative.as_posix().lower() for word in words)
                ):
                    found.add(relative)
    return sorted(found)


def warn_unread(
    root: str | Path, splits: Iterable[str], suffixes: Iterable[str], exclude: Iterable[str], name: str
) -> list[Path]:
    """Warn once per dataset folder (and set of such files) of its unread_files, naming the folder's config key
    ``name``; returns them. kdgat.layout passes its own LOG_SUFFIXES and held-out splits (this module imports no
    kdgat module: layout imports it)."""
    suffixes = tuple(suffixes)
    files = unread_files(root, splits, suffixes, exclude)
    key = (str(Path(root).resolve()), tuple(map(str, files)))
    if files and key not in _warned:
        _warned.add(key)
        shown = ", ".join(str(f) for f in files[:SHOWN])
        more = f" ... ({len(files) - SHOWN} more)" if len(files) > SHOWN else ""
        read = ", ".join(f"*{suffix}" for suffix in suffixes)
        log.warning(
            f"{name}: {len(files)} file(s) in its split folders are not read, since only {read} files are "
            f"read as CAN logs: {shown}{more}; to use a capture, save it as one of those (e.g. CSV), else move "
            f"the files out of the split folders ({', '.join(NOT_LOGS)} files are not warned of)"
        )
    return files
