"""Whether an error is a full disk (or a quota), and whether the disk takes a write again: what a job a full
disk paused waits for. Split from ``simcal.service.jobs``, from which every public name here is still
importable."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

FULL_DISK = (errno.ENOSPC, errno.EDQUOT)


def disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from, is a disk that is full (or over quota)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) and error.errno in FULL_DISK:
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


PROBE_BYTES = 64 * 1024  # more than the blocks a stopped try frees as it ends (its output's lock file, say)


def disk_takes_a_write(directory: Path) -> None:
    """Write PROBE_BYTES to a file under ``directory`` and remove it: raises the disk's OSError (ENOSPC, EDQUOT)
    when it is full. One byte was not enough: the block a stopped try freed as it ended took it, and each try
    planned the job again."""
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / ".disk-probe"
    try:
        descriptor = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            written = os.write(descriptor, bytes(PROBE_BYTES))
            if written < PROBE_BYTES:  # a short write: the disk had room for no more
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(probe))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
