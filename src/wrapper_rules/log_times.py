"""The one format of every log line kdgat and simcal write (wrappers, the ``kdgat`` command, ``simcal serve``):
its time is ISO 8601 with the UTC offset, ``2026-11-01T01:30:00.000-04:00``.

``logging``'s default ``2026-11-01 01:30:00,000`` is local time without an offset: in the hour a DST change repeats,
two lines an hour apart read the same, and a job on a cluster node in UTC and the driver on a login node in local
time wrote the same moment as two different times, with nothing in the lines to tell them apart."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class OffsetFormatter(logging.Formatter):
    """``logging.Formatter`` whose ``%(asctime)s`` is the record's local time in ISO 8601 with its UTC offset,
    to the millisecond."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802 (logging's)
        when = datetime.fromtimestamp(record.created, UTC).astimezone()
        return when.strftime(datefmt) if datefmt else when.isoformat(timespec="milliseconds")


def log_formatter() -> logging.Formatter:
    """The formatter of every handler the libraries set up."""
    return OffsetFormatter(LOG_FORMAT)
