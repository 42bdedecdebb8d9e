"""Writing CAN messages as a log file in a registered format that has a writer (kdgat.can.formats)."""

from __future__ import annotations

import itertools
from pathlib import Path

from kdgat.can.formats import REGISTRY, WRITE_FORMATS
from kdgat.can.messages import CanMessages
from kdgat.files import write_byte_chunks
from wrapper_rules import InputError

# Messages rendered as text at a time: a whole log's text, line by line, took about 12 bytes of memory per byte of
# the file (1.7 GB for 2.75 million messages; an HCRL-sized capture of 16 million, about 10 GB).
CHUNK_MESSAGES = 1 << 17

# Suffixes of compressed files (those kdgat.can.reader refuses by their leading bytes), with the compression.
_COMPRESSED_SUFFIXES = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".zst": "zstd", ".zip": "zip"}


class CanWriteError(ValueError, InputError):
    """A CAN log that cannot be written as asked (an unknown format, a compressed file's name); the message says
    which and what to do."""


def write_can_file(messages: CanMessages, path: str | Path, fmt: str) -> None:
    """Write ``messages`` as ``fmt`` (one of :data:`WRITE_FORMATS`) atomically, as plain text, rendered
    :data:`CHUNK_MESSAGES` at a time.

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
    spec = REGISTRY[fmt]
    chunks = (
        spec.write(_chunk(messages, start, start + CHUNK_MESSAGES)).encode("utf-8")
        for start in range(0, len(messages), CHUNK_MESSAGES)
    )
    write_byte_chunks(itertools.chain([spec.write_header.encode("utf-8")], chunks), path)


def _chunk(messages: CanMessages, start: int, stop: int) -> CanMessages:
    part = slice(start, stop)
    return CanMessages(
        messages.timestamp[part], messages.can_id[part], messages.dlc[part], messages.payload[part],
        messages.label[part],
    )  # fmt: skip
