"""The walk of a folder tree that simcal (``simcal status``: the progress files of sweeps) and resource_history (the
benchmark files of earlier runs) share, beside the libraries so that neither imports the other: through symbolic
links, each folder once, and every folder that cannot be listed handed to the caller to name (os.walk skips it
without a word, and the files under it with it). Standard library only."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator


def walk_once(top: str | os.PathLike, onerror: Callable[[OSError], None]) -> Iterator[tuple[str, list[str]]]:
    """``(folder, names of its files)`` for ``top`` and every folder below it, links followed, each folder once.

    A folder is known by its ``(st_dev, st_ino)``, not its path: one reached again, through a link back up the tree
    (which would loop) or under another real path (a bind mount, which ``os.path.realpath`` cannot see), is not
    walked again. ``onerror`` gets the ``OSError`` of a folder that cannot be listed, or that is gone or closed to
    this user since it was listed (its ``filename`` names it); it may raise, and the walk goes on when it returns."""
    seen: set[tuple[int, int]] = set()
    for folder, folders, files in os.walk(top, onerror=onerror, followlinks=True):
        try:
            info = os.stat(folder)
        except OSError as error:
            onerror(error)
            folders.clear()
            continue
        if (info.st_dev, info.st_ino) in seen:
            folders.clear()
            continue
        seen.add((info.st_dev, info.st_ino))
        yield folder, files
