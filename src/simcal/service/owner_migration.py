"""The job registry's move from names to keys as the owners of jobs (schema 1 → 2), made once, at a start.

Up to schema 1 a job's owner was its key's name, so a key added under the name of a revoked one (its line deleted
from the keys file) saw, downloaded and cancelled the revoked key's jobs. From schema 2 the owner is the key
(``KeyEntry.owner``, ``<name>#<key id>``). A registry of schema 1 gives each job of a bare name to the key of that
name in the keys file when the service starts; the jobs of a name no key has then go to nobody: they keep the bare
name, which no key's owner is, whatever key is added later. The moves and the new schema number are one
transaction, so it is made once: a start that cannot write it (a full disk) changes nothing, says so, and the next
start makes it with the keys of that time.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping
from pathlib import Path

log = logging.getLogger(__name__)

BARE = "instr(owner, '#') = 0"  # a schema-1 owner: a key's name alone


def move_bare_owners(
    db: sqlite3.Connection, path: Path, owners: Mapping[str, str], keys_file: str, version: int
) -> None:
    """Give each job of a bare-name owner to ``owners[name]`` (name -> owner of the key of that name now) and set the
    registry's schema to ``version``, in one transaction; nothing when the registry has that schema already."""
    if db.execute("PRAGMA user_version").fetchone()[0] >= version:
        return
    counts = dict(db.execute(f"SELECT owner, COUNT(*) FROM jobs WHERE {BARE} GROUP BY owner").fetchall())
    try:
        db.execute("BEGIN IMMEDIATE")
        for name in counts.keys() & owners.keys():
            # An Idempotency-Key the key used since a start that could not move its name's jobs stays the newer job's.
            db.execute(
                "UPDATE jobs SET idempotency_key = NULL WHERE owner = ? AND idempotency_key IN "
                "(SELECT idempotency_key FROM jobs WHERE owner = ?)",
                (name, owners[name]),
            )
            db.execute(f"UPDATE jobs SET owner = ? WHERE owner = ? AND {BARE}", (owners[name], name))
        db.execute(f"PRAGMA user_version = {int(version)}")
        db.execute("COMMIT")
    except sqlite3.OperationalError as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        log.warning(
            "%s: the job registry could not be moved to keys as the owners of jobs (%s): the jobs of %s are seen "
            "by no key until a start of the service that can write it moves them to the keys of those names in "
            "the keys file then", path, error, ", ".join(map(repr, sorted(counts))) or "no key",
        )  # fmt: skip
        return
    for name, count in sorted(counts.items()):
        if name in owners:
            log.warning(
                "%s: %d job(s) of key name %r now belong to the key of that name in %s (key id %s): jobs belong "
                "to a key, not to its name, from registry schema %d on; a key added later under a revoked key's "
                "name sees none of its jobs",
                path, count, name, keys_file, owners[name].partition("#")[2], version,
            )  # fmt: skip
        else:
            log.warning(
                "%s: %d job(s) of key name %r belong to no key: %s has no key of that name now, so no key, nor "
                "one added later under that name, sees them (jobs belong to a key from registry schema %d on)",
                path, count, name, keys_file, version,
            )  # fmt: skip
