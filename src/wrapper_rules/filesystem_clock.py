"""The time by the clock of the file system that holds a folder, shared by kdgat's result stash and ``simcal
status``: both age files another host wrote, and a shared file system (NFS) stamps modification times by its
server's clock, which any node's clock may be minutes off."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

# A probe's name: a dot, a word, a dot and 12 hex digits, the shape of the stash's staging folders, so that a probe
# left by a kill goes with them.
PROBE_PREFIX = ".clock."


def filesystem_now(folder: str | os.PathLike) -> float | None:
    """The modification time of a folder made in ``folder`` and removed at once; None where none can be made (a
    folder this user may not write, or one that is gone)."""
    probe = Path(folder) / f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    try:
        probe.mkdir()
    except OSError:
        return None
    try:
        return probe.stat().st_mtime
    except OSError:
        return None
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
