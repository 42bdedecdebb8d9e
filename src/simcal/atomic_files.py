"""Writing files atomically: a temporary file beside the target, fsynced, renamed over it, with the
permissions the umask gives (Parquet, JSON, text, CSV). Split from ``simcal.tables``, from which every
public name here is still importable."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from output_locks import fsync_directory, write_atomically  # noqa: F401 - simcal.tables.fsync_directory


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (os.umask can only set it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # not thread-safe, hence only the fallback
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], Any], durable: bool = True) -> Path:
    """Call ``write(handle)`` with a binary file open on a temporary file in the same directory, fsync it, then
    move it into place (``output_locks.write_atomically``).

    Readers see the old file or the complete new one, never a partial one, even after a power loss; the file
    gets the permissions a plain ``open()`` would (0666 less the umask, or what a folder's default ACL gives), not
    mkstemp's 0600: it is created with mode 0666 and the kernel applies the umask or the ACL, as for ``open()``.
    It is written through the descriptor that created it (``O_EXCL|O_NOFOLLOW``), never reopened by its name, so
    a link put in its place by anyone who may write the folder is never written through.
    ``durable=False`` skips the fsyncs for files that are rewritten often and worthless after a crash (progress
    reports). A failed write (a full disk, a quota) leaves the old file and no temporary one, and its ``OSError``
    names ``path`` (``output_locks.named_write_error``).
    """
    return write_atomically(path, write, durable)


def write_parquet(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))


def plain_json(value: Any) -> Any:
    """``value`` as strict JSON holds it: numpy scalars as Python numbers, NaN and infinities as null (Python's
    bare ``NaN`` is no JSON: jq, JavaScript and most other readers refuse the whole file), keys as strings."""
    if isinstance(value, Mapping):
        return {str(key): plain_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | Path, durable: bool = True) -> Path:
    text = json.dumps(plain_json(data), indent=2, sort_keys=True, default=str, allow_nan=False) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()), durable)


def write_text(text: str, path: str | Path) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    return atomic_write(path, lambda handle: frame.to_csv(handle, index=False))
