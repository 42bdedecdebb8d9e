"""Writing CAN messages as a log file in a registered format that has a writer (kdgat.can.formats)."""

from __future__ import annotations

from pathlib import Path

from kdgat.can.formats import REGISTRY, WRITE_FORMATS
from kdgat.can.messages import CanMessages
from kdgat.files import write_text


def write_can_file(messages: CanMessages, path: str | Path, fmt: str) -> None:
    """Write ``messages`` as ``fmt`` (one of :data:`WRITE_FORMATS`) atomically."""
    if fmt not in WRITE_FORMATS:
        raise ValueError(f"synthetic.format must be one of {WRITE_FORMATS}, got {fmt!r}")
    write_text(REGISTRY[fmt].write(messages), path)
