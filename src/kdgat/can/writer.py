"""Writing CAN messages as a log file in a registered format that has a writer (kdgat.can.formats)."""

from __future__ import annotations

from pathlib import Path

from kdgat.can.formats import REGISTRY, WRITE_FORMATS
from kdgat.can.messages import CanMessages
from kdgat.files import write_text
from wrapper_rules import InputError

# Suffixes of compressed files (those kdgat.can.reader refuses by their leading bytes), with the compression.
_COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}


class CanWriteError(ValueError, InputError):
    """A CAN log that cannot be written as asked (an unknown format, a compressed file's name); the message says
    which and what to do."""


def write_can_file(messages: CanMessages, path: str | Path, fmt: str) -> None:
    """Write ``messages`` as ``fmt`` (one of :data:`WRITE_FORMATS`) atomically, as plain text.

    A ``path`` whose name ends in a compressed file's suffix (``.gz``, ``.bz2``, ``.xz``, ``.zst``, ``.zip``) is
    refused: the text would sit under a compressed file's name, and the readers take plain text only. Both
    refusals are :class:`CanWriteError`."""
    if fmt not in WRITE_FORMATS:
        raise CanWriteError(f"synthetic.format must be one of {WRITE_FORMATS}, got {fmt!r}")
    path = Path(path)
    kind = _COMPRESSED_SUFFIXES.get(path.suffix.lower())
    if kind is not None:
        raise CanWriteError(
            f"{path}: a synthetic CAN log is written as plain text, but the name ends in {path.suffix!r}, a "
            f"{kind}-compressed file's suffix (the CAN log readers refuse compressed logs): name it "
            f"{path.with_suffix('')}"
        )
    write_text(REGISTRY[fmt].write(messages), path)
