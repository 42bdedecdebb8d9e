"""API keys: the keys file holds only salted hashes; a presented key is checked against all of them in constant time.

Keys file, one key a line (``#`` starts a comment)::

    <name> sha256$<salt, 32 hex>$<SHA-256 of salt + key, 64 hex>

Why salted SHA-256 and not a slow KDF (scrypt, PBKDF2): a slow KDF protects *low-entropy* secrets (passwords)
against guessing after the hashes leak. The keys here are 256 random bits from ``secrets``; guessing one from its
hash takes ~2^255 SHA-256 evaluations whatever the hash costs, so a KDF would add no protection, only a CPU cost
on every request (a lever for denial of service). The per-key salt keeps equal keys from having equal hashes and
rules out precomputed tables. Every entry is compared, with ``hmac.compare_digest``, before the answer is known,
so the time taken does not tell which entry (if any) matched.

The file is re-read when it changes (a Kubernetes Secret is updated in place), so keys are added or revoked
without a restart; a file that turns unreadable or malformed keeps the keys already loaded and logs why.

Jobs belong to a key, not to its name (``KeyEntry.owner``: ``<name>#<key id>``): revoking a key deletes its line,
and a key added later under the same name, perhaps for another person, sees none of the revoked key's jobs. The
name stays what logs, traces and the rate limit go by.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from output_locks import OutputInUse, output_lock
from simcal.tables import atomic_write

log = logging.getLogger(__name__)

SCHEME = "sha256"
KEY_PREFIX = "sc_"  # marks a simcal key, so secret scanners and people recognise one in the wrong place
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
LINE = re.compile(rf"(?P<name>\S+)\s+{SCHEME}\$(?P<salt>[0-9a-f]{{32}})\$(?P<digest>[0-9a-f]{{64}})")
RELOAD_EVERY_S = 1.0
WAIT_FOR_ADD_S = 30.0  # how long ``add_key`` waits for another ``simcal keys add`` on the same file
KEY_ID_LABEL = b"simcal key id\0"  # hashed before the salt: a key id is no hash of the key itself


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class KeyEntry:
    name: str
    salt: bytes
    digest: bytes

    @property
    def key_id(self) -> str:
        """16 hex digits that tell this key from any other, a revoked one of the same name included: a hash of its
        line's random salt, so neither the salt nor the key's hash can be read from it."""
        return hashlib.sha256(KEY_ID_LABEL + self.salt).hexdigest()[:16]

    @property
    def owner(self) -> str:
        """Who owns the jobs this key submits, in the job registry: ``<name>#<key id>``."""
        return f"{self.name}#{self.key_id}"


def name_of(owner: str) -> str:
    """The key name of a job's owner (``KeyEntry.owner``), which logs and messages show; a registry's owner of
    before owners were keys (a bare name) is that name."""
    return owner.partition("#")[0]


def hash_key(key: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + key.encode()).digest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def format_entry(name: str, key: str) -> str:
    salt = secrets.token_bytes(16)
    return f"{name} {SCHEME}${salt.hex()}${hash_key(key, salt).hex()}"


def parse_keys(text: str, where: str) -> list[KeyEntry]:
    entries, names = [], set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = LINE.fullmatch(line)
        if not match:
            raise KeysFileError(
                f"{where}, line {number}: expected '<name> {SCHEME}$<salt>$<hash>' (made by `simcal keys add`); "
                "a plain key never belongs in this file"
            )
        name = match["name"]
        if not NAME.fullmatch(name):
            raise KeysFileError(f"{where}, line {number}: key name {name!r} must match {NAME.pattern}")
        if name in names:
            raise KeysFileError(f"{where}, line {number}: key name {name!r} appears twice")
        names.add(name)
        entries.append(KeyEntry(name, bytes.fromhex(match["salt"]), bytes.fromhex(match["digest"])))
    return entries


def read_keys(path: str | Path) -> list[KeyEntry]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise KeysFileError(f"{path}: cannot read the keys file ({error.strerror or error})") from error
    return parse_keys(text, str(path))


def add_key(path: str | Path, name: str, wait_s: float = WAIT_FOR_ADD_S) -> str:
    """Append a new key's hash to the keys file (created if missing) and return the key, which is stored nowhere.

    The file is read and rewritten under the lock of the keys file (``output_locks``: ``.<file>.lock`` beside it),
    so two ``simcal keys add`` on one file at once both keep their key: without it each rewrote the file it had
    read, and the key the other was shown was lost, refused by the service. One waits for the other, up to
    ``wait_s`` seconds."""
    path = Path(path)
    if not NAME.fullmatch(name):
        raise KeysFileError(f"key name {name!r} must match {NAME.pattern}")
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with output_lock(path, "keys file"):
                return _add_key(path, name)
        except OutputInUse as error:
            if time.monotonic() >= deadline:
                raise KeysFileError(f"{error} (waited {wait_s:g} s)") from None
            time.sleep(0.05)
        except OSError as error:  # no lock can be made or taken (a read-only folder, another's lock file)
            raise KeysFileError(f"{path}: cannot lock the keys file ({error.strerror or error})") from error


def _add_key(path: Path, name: str) -> str:
    """``add_key``'s read and rewrite, under the keys file's lock."""
    try:
        existing = path.read_text() if path.exists() else ""
    except OSError as error:  # a directory, or no permission
        raise KeysFileError(f"{path}: cannot read the keys file ({error.strerror or error})") from error
    if any(entry.name == name for entry in parse_keys(existing, str(path))):
        raise KeysFileError(f"{path}: a key named {name!r} exists already; choose another name")
    key = new_key()
    text = existing if not existing or existing.endswith("\n") else existing + "\n"
    try:
        atomic_write(path, lambda handle: handle.write(f"{text}{format_entry(name, key)}\n".encode()))
    except OSError as error:
        raise KeysFileError(f"{path}: cannot write the keys file ({error.strerror or error})") from error
    return key


class KeyRing:
    """The keys of a keys file, reloaded when the file changes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._entries = read_keys(self.path)  # a bad file at start is an error, not an empty key ring
        if not self._entries:
            log.warning(
                "%s holds no key: every /v1 request will be refused (add one with `simcal keys add`)", path
            )
        self._stamp = self._file_stamp()
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_EVERY_S:
            return
        with self._lock:
            if now - self._checked < RELOAD_EVERY_S:
                return
            self._checked = now
            stamp = self._file_stamp()
            if stamp == self._stamp:
                return
            try:
                entries = read_keys(self.path)
            except KeysFileError as error:
                log.error("keeping the %d keys loaded before: %s", len(self._entries), error)
                return
            self._entries, self._stamp = entries, stamp
            log.info("reloaded %s: %d keys", self.path, len(entries))

    def names(self) -> list[str]:
        self._reload_if_changed()
        return [entry.name for entry in self._entries]

    def entries(self) -> list[KeyEntry]:
        self._reload_if_changed()
        return list(self._entries)

    def identify(self, presented: str) -> str | None:
        """The name of the key ``presented`` is, or None; compares against every entry whatever matches."""
        entry = self.entry_of(presented)
        return None if entry is None else entry.name

    def entry_of(self, presented: str) -> KeyEntry | None:
        """The entry of the key ``presented`` (its name and the owner of its jobs), or None; compares against every
        entry whatever matches."""
        self._reload_if_changed()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(hash_key(presented, entry.salt), entry.digest) and found is None:
                found = entry
        return found
