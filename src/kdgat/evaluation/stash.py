"""Finished evaluation results kept outside Snakemake's declared outputs, so a failed group job costs no rerun.

Snakemake deletes the outputs of every member of a group job when one member fails. A member that commits its
finished outputs here first restores them on the rerun instead of recomputing (see the evaluation module).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from kdgat.files import (
    copy_file,
    discard,
    file_sha256,
    first_difference,
    json_safe,
    load_json,
    new_directory,
    part_digest,
    publish_directory,
    source_digest,
    source_digests,
    write_json,
)
from wrapper_rules import user_name
from wrapper_rules.filesystem_clock import filesystem_now

log = logging.getLogger(__name__)

# What a commit makes beside the entries and removes however it ends, unless killed (SIGKILL: the OOM killer, a
# node failure): its staging folder ``.<key>.<hex>`` and an entry moved aside, ``.<key>.stale.<hex>``.
STAGING_NAME = re.compile(r"\..+\.(stale\.)?[0-9a-f]{12}")
# How long such a folder must have been left unchanged, by the stash filesystem's own clock, before a commit
# removes it: on NFS a flock on a folder is the node's alone, so a commit on another node may be under way in it.
LEFT_FOR_S = 3600.0
# An entry's name: its key (``stash_key``). ``prune`` touches nothing else in the folder.
ENTRY_NAME = re.compile(r"[0-9a-f]{32}")


def library_code_digest(package: str | os.PathLike | None = None) -> str:
    """A digest of the source of every module of ``package`` (the installed kdgat by default). An entry holds
    numbers the code computed: a release that changes how (a metric, a threshold, the fused score) must not be
    served the older release's entries from a stash it shares (``results/evaluation/.stash`` by default)."""
    package = Path(package) if package is not None else Path(__file__).parents[1]
    return source_digest(package, sorted(package.rglob("*.py")))


def stash_key(
    inputs: Mapping[str, str | os.PathLike], params: Mapping[str, Any], parts: Mapping[str, str] | None = None
) -> str:
    """A key that changes whenever an input's content or a parameter changes (not on mtime or path moves).
    ``parts``: ``stash_parts``, whose ``inputs.<name>`` are the inputs' SHA-256, read once."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        sha = parts[f"inputs.{name}"] if parts else file_sha256(inputs[name])
        digest.update(f"{name}={sha}\n".encode())
    digest.update(json.dumps(json_safe(dict(params)), sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


# The parts of an entry's record that say which evaluation it is: a miss names what differs from the latest entry
# of the same evaluation (``ResultStash.restore``).
SAME_EVALUATION = ("params.dataset", "params.variant", "params.seed", "params.outputs")


def stash_parts(inputs: Mapping[str, str | os.PathLike], params: Mapping[str, Any]) -> dict[str, str]:
    """What an entry was computed from, part by part: ``inputs.<name>`` (SHA-256 of its content), ``params.<key>``
    (``files.part_digest``) and ``library/<file>`` (each file of the installed kdgat, which ``library_code``
    digests as one), kept in its COMPLETE mark so that a miss names the part that changed."""
    package = Path(__file__).parents[1]
    return {
        **{f"inputs.{name}": file_sha256(path) for name, path in inputs.items()},
        **{f"params.{key}": part_digest(value) for key, value in params.items()},
        **{
            f"library/{name}": digest
            for name, digest in source_digests(package, package.rglob("*.py")).items()
        },
    }


def _sharing_advice(root: Path) -> str:
    """What makes a stash folder another researcher made writable for this one (docs/evaluation.md): its owner and
    mode, and the commands that share it with the project group."""
    try:
        found = root.stat()
    except OSError:
        return ""
    return (
        f": it is {user_name(found.st_uid)}'s, mode {found.st_mode & 0o7777:04o}. A stash shared between researchers needs a folder "
        f"the project group may write: its owner runs `chgrp <group> {root} && chmod 2775 {root}`, and every "
        "researcher runs the workflow under a umask that lets the group read (002 or 022), so that the others may "
        "read the entries (each commit makes its entry group-writable there)"
    )


class ResultStash:
    """Finished results kept outside Snakemake's declared outputs, keyed by a hash of inputs and parameters.

    Snakemake deletes the outputs of every member of a group job when one member fails. A member that commits
    its finished outputs here first can restore them on the rerun instead of recomputing. Entries are
    written to a temporary directory and renamed into place, so a half-written entry is never visible.
    """

    def __init__(self, root: str | os.PathLike):
        # ~/stash is the home folder's (as kd_gat.tracking.uri's ~), not a folder named "~" in the working directory
        self.root = Path(root).expanduser()

    def prepare(self) -> ResultStash:
        """Create the stash directory now (the stash returned); a ValueError naming it when it cannot hold entries (a
        file is in the way, no permission): found before minutes of evaluating, not when the finished results are
        committed, where the failure would fail the job and, in a group job, cost every sibling its outputs."""
        shared = ""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            problem = error.strerror or type(error).__name__
        else:
            if os.access(self.root, os.W_OK | os.X_OK):
                return self
            problem = "not writable"
            shared = _sharing_advice(self.root)
        raise ValueError(
            f"stash_dir {self.root}: cannot hold the result stash ({problem}){shared}; point evaluation.stash_dir "
            'at a directory the jobs can write, or set it to "" to switch the stash off'
        )

    def entry(self, key: str) -> Path:
        return self.root / key

    def restore(
        self, key: str, outputs: Mapping[str, str | os.PathLike], parts: Mapping[str, str] | None = None
    ) -> bool:
        """Copy the entry ``key``'s files to ``outputs``, every one from the same entry: each copy must have the
        digest the entry's COMPLETE mark recorded, so an entry replaced between two copies (a commit for other
        outputs, a stash cleaned and refilled) is seen; the restore is then made again from the new entry once,
        else the caller recomputes. False when nothing was restored. With no entry ``key``, the latest entry of
        the same evaluation (``parts``' ``SAME_EVALUATION``: ``stash_parts``) is logged with the part that differs,
        so that a researcher knows why the evaluation runs again."""
        entry = self.entry(key)
        with self._locked(fcntl.LOCK_SH):  # ``prune`` waits for it
            if parts and not (entry.exists() or entry.is_symlink()):
                self._say_what_differs(entry, parts)
            return self._restore(entry, outputs)

    def _say_what_differs(self, entry: Path, parts: Mapping[str, str]) -> None:
        """Log the latest used entry of the same evaluation as ``parts`` (an INFO line) and the first of its parts
        that differs from ``parts``; nothing when the stash holds none (a first evaluation)."""
        latest = None
        with contextlib.suppress(OSError):
            for other in self.root.iterdir():
                if not ENTRY_NAME.fullmatch(other.name):
                    continue
                with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                    recorded = load_json(other / "COMPLETE")["parts"]
                    used = other.stat().st_mtime
                    same = all(recorded.get(part) == parts.get(part) for part in SAME_EVALUATION)
                    if same and (latest is None or used > latest[0]):
                        latest = (used, other, recorded)
        if latest is not None:
            differs = first_difference(latest[2], dict(parts)) or ": the parts it records are the same"
            log.info(
                "no result stash entry %s: the latest entry of this evaluation, %s, was computed from other "
                "inputs, params or library code%s; computing", entry, latest[1], differs,
            )  # fmt: skip

    def _restore(self, entry: Path, outputs: Mapping[str, str | os.PathLike]) -> bool:
        mark = self._mark(entry, outputs, warn=True)
        for again in (True, False):
            if mark is None:
                return False
            problem = self._copy_checked(entry, mark["sha256"], outputs)
            if problem is None:
                self._used(entry)
                return True
            replaced = self._mark(entry, outputs)
            # the same entry (one id per commit): a file changed since its commit, or the target's side failed
            if replaced is not None and replaced["id"] == mark["id"]:
                log.warning("stash entry %s cannot be restored; recomputing (%s)", entry, problem)
                return False
            if again and replaced is not None:
                log.info(
                    "stash entry %s was replaced while it was restored; restoring again (%s)", entry, problem
                )
                mark = replaced
                continue
            log.warning("stash entry %s was replaced while it was restored; recomputing (%s)", entry, problem)
        return False

    @staticmethod
    def _copy_checked(entry: Path, digests: Mapping[str, str], outputs: Mapping[str, str | os.PathLike]):
        """Copy each of ``outputs``, in their order, from ``entry`` and check it against ``digests``: None when all
        match, else what went wrong, with the copies made removed (no output of a restore that failed is left for
        a finished one: the caller lists its completion mark, metrics.json, last)."""
        for done, (name, target) in enumerate(outputs.items()):
            try:
                copy_file(entry / name, target)
                if file_sha256(target) == digests[name]:
                    continue
                problem = f"{name} is not the one its entry recorded"
            except OSError as error:  # a file gone with the entry moved aside
                problem = f"{name}: {type(error).__name__}: {error}"
            for copied in list(outputs.values())[: done + 1]:
                with contextlib.suppress(OSError):
                    Path(copied).unlink(missing_ok=True)
            return problem
        return None

    @staticmethod
    def _mark(entry: Path, outputs: Mapping[str, str | os.PathLike], warn: bool = False) -> dict | None:
        """The complete ``entry``'s mark: its ``id`` (one per commit) and the ``sha256`` of each of its files; None
        when it is not complete, cannot be read (another user's entry that the umask 077 kept from the group: a
        recompute, never the failure of the job) or lacks one of ``outputs``."""
        try:
            mark = load_json(entry / "COMPLETE")
            digests, _ = mark["sha256"], mark["id"]
            if all(isinstance(digests.get(name), str) and (entry / name).is_file() for name in outputs):
                return mark
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            if warn and not isinstance(error, FileNotFoundError | NotADirectoryError):
                log.warning(
                    "stash entry %s cannot be read (%s: %s); recomputing", entry, type(error).__name__, error
                )
            return None
        if warn:
            log.warning("stash entry %s lacks some outputs; recomputing", entry)
        return None

    @classmethod
    def _holds(cls, entry: Path, outputs: Mapping[str, str | os.PathLike], verify: bool = False) -> bool:
        """Whether ``entry`` is complete and holds every one of ``outputs`` (``verify``: each with the digest its
        mark recorded, not a file cut short or changed since, which no restore would take)."""
        mark = cls._mark(entry, outputs)
        if mark is None or not verify:
            return mark is not None
        try:
            return all(file_sha256(entry / name) == mark["sha256"][name] for name in outputs)
        except OSError:
            return False

    def commit(
        self, key: str, outputs: Mapping[str, str | os.PathLike], parts: Mapping[str, str] | None = None
    ) -> Path | None:
        """Copy ``outputs`` into the entry ``key``: the entry, or None (with a warning) when none could be published.

        An entry without its COMPLETE mark (a folder a writer was killed in or made by hand, a plain file, a
        dangling link), or a complete one lacking one of ``outputs`` (committed with another output suffix, a file
        purged from it) or holding one that differs from its recorded digest (cut short, changed by hand), would
        block the rename forever and restore nothing: it is moved aside in one step and removed, whatever it is,
        first.

        The stash is only a copy for a rerun: a copy that fails (the quota or the disk full) is a warning and None,
        never the failure of the finished job whose outputs are written; the staging folder goes however the
        commit ends (SIGTERM included)."""
        entry = self.entry(key)
        if self._holds(entry, outputs, verify=True):
            self._used(entry)
            return entry
        with self._committing():
            return self._commit(key, entry, outputs, parts)

    def _commit(
        self, key: str, entry: Path, outputs: Mapping[str, str | os.PathLike], parts: Mapping[str, str] | None
    ) -> Path | None:
        staging = None
        try:
            staging = new_directory(self.root, prefix=f".{key}.")
            self._share_with_the_stash_group(staging)  # and so what a kill leaves of it
            digests = {}
            for name, source in outputs.items():
                copy_file(source, staging / name)
                digests[name] = file_sha256(staging / name)
            mark = {"id": staging.name.rpartition(".")[2], "outputs": sorted(outputs), "sha256": digests}
            mark["parts"] = dict(parts or {})  # what it was computed from, for a miss to name what changed
            write_json(mark, staging / "COMPLETE", indent=None)
        except BaseException as error:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if not isinstance(error, OSError):
                raise
            log.warning(
                "could not commit to the result stash %s (%s: %s); the outputs are written, a rerun recomputes",
                entry, type(error).__name__, error,
            )  # fmt: skip
            return None
        if (entry.exists() or entry.is_symlink()) and not self._holds(entry, outputs, verify=True):
            with contextlib.suppress(OSError):  # an entry this user cannot search is replaced too
                if (entry / "COMPLETE").is_file():
                    log.info("replacing the result stash entry %s, which lacks some outputs or holds one "
                             "changed since its commit", entry)  # fmt: skip
            discard(entry, prefix=f".{key}.stale.")  # nothing when a racing commit moved it first
        # False with the outputs in place: a concurrent writer won; its entry holds the same results
        if publish_directory(staging, entry) or self._holds(entry, outputs):
            return entry
        log.warning(
            "could not commit to the result stash %s (something is in the way); a rerun recomputes", entry
        )
        return None

    @staticmethod
    def _used(entry: Path) -> None:
        """Record that ``entry`` was used now (restored, or found by a commit): its folder's mtime, which ``prune``
        reads as its last use (a commit's folder has the time of its last file). Another user's entry this user
        may not touch keeps the time of its last use by one who may."""
        with contextlib.suppress(OSError):
            os.utime(entry)

    @contextlib.contextmanager
    def _locked(self, operation: int) -> Iterator[bool]:
        """Hold ``flock(operation)`` on the stash folder for the block: shared by each restore and commit, exclusive
        by ``prune``, so that an entry is never removed while a job on this node copies from it. Yields whether
        the lock is held (False where the folder cannot be opened or the filesystem takes no ``flock``)."""
        try:
            folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(folder, operation)
            except OSError:
                yield False
            else:
                yield True
        finally:
            os.close(folder)

    def prune(self, older_than_s: float, dry_run: bool = False) -> list[tuple[Path, float, int]]:
        """Remove the entries not used (committed or restored, ``_used``) for ``older_than_s`` seconds, measured
        on the stash filesystem's clock, and the staging folders killed commits left (``_remove_left_staging``):
        the ``(entry, seconds since its last use, bytes)`` of each, oldest first; ``dry_run`` removes nothing.

        It holds the stash folder's lock exclusively, waiting for the restores and commits under way on this node
        to end, and those that start meanwhile wait for it. An entry is removed in one step (moved aside, then
        deleted: ``files.discard``), so a restore on another node of an NFS stash (whose ``flock`` is the node's
        alone) fails its digest check and recomputes, never restoring a part. Only folders named as a key (32 hex
        digits) are entries: nothing else in the folder is touched. A ValueError naming the folder when it is not
        one, or when its lock cannot be taken."""
        if not self.root.is_dir():
            raise ValueError(f"stash folder {self.root}: not a folder (evaluation.stash_dir names it)")
        with self._locked(fcntl.LOCK_EX) as locked:
            if not locked:
                raise ValueError(
                    f"stash folder {self.root}: cannot lock it (no flock on its filesystem, or it cannot be read), "
                    "so an evaluation restoring from an entry could lose it midway: prune it where it can be "
                    "locked, or when no evaluation runs"
                )
            now = filesystem_now(self.root) or time.time()
            old = []
            for entry in self.root.iterdir():
                if not (ENTRY_NAME.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()):
                    continue
                with contextlib.suppress(OSError):
                    # An mtime ahead of the filesystem's clock (copied with cp -a or rsync -a from a stash whose
                    # clock ran ahead): used now, not a negative age that even --older-than 0 left for good
                    unused_s = max(0.0, now - entry.lstat().st_mtime)
                    if unused_s >= older_than_s:
                        size = sum(path.lstat().st_size for path in entry.iterdir())
                        old.append((entry, unused_s, size))
            old.sort(key=lambda found: -found[1])
            if not dry_run:
                for entry, _, _ in old:
                    discard(entry, prefix=f".{entry.name}.stale.")
                self._remove_left_staging()
        return old

    def _share_with_the_stash_group(self, staging: Path) -> None:
        """Make the entry folder group-writable in a stash folder the group may write (a shared stash, 2775), when
        the committer's umask lets the group read it: under umask 022 it was 0755, so another researcher's commit
        replacing it could move it aside but not empty it, and it stayed behind as ``.<key>.stale.<hex>`` (as a
        staging folder a killed commit left stayed for good)."""
        shared = stat.S_IRGRP | stat.S_IXGRP
        with contextlib.suppress(OSError):
            mode = staging.stat().st_mode
            if self.root.stat().st_mode & stat.S_IWGRP and mode & shared == shared:
                staging.chmod(stat.S_IMODE(mode) | stat.S_IWGRP)

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        """Every commit holds a shared ``flock`` on the stash folder while its staging folder exists. One that
        finds no other commit under way (the exclusive lock is free) first removes the staging folders that killed
        commits left, which no live commit on this node can own then (and, for other nodes, only those left
        unchanged for long: see ``_remove_left_staging``). Where the folder cannot be locked (no ``flock`` on the
        filesystem), nothing is removed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            folder = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            yield
            return
        try:
            try:
                fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # another commit stages now, or no flock here: every folder stays
                pass
            else:
                self._remove_left_staging()
            with contextlib.suppress(OSError):
                fcntl.flock(folder, fcntl.LOCK_SH)  # waits only for a commit removing left folders
            yield
        finally:
            os.close(folder)

    def _remove_left_staging(self) -> None:
        """Remove the staging folders that killed commits left, those unchanged for ``LEFT_FOR_S`` seconds: the
        flock that says no commit is under way is the node's alone on NFS (the Linux client takes a flock on a
        folder locally), and a live commit touches its folder with every file it copies. Ages are measured on the
        filesystem's clock (a fresh folder's mtime), which a node's clock may be minutes off."""
        now = filesystem_now(self.root)
        for path in self.root.iterdir():
            if not (STAGING_NAME.fullmatch(path.name) and path.is_dir() and not path.is_symlink()):
                continue
            try:
                changed = max([path.lstat().st_mtime] + [child.lstat().st_mtime for child in path.iterdir()])
            except OSError:  # removed meanwhile
                continue
            if now is not None and now - changed >= LEFT_FOR_S:
                shutil.rmtree(path, ignore_errors=True)
                log.info("removed %s, the staging folder of a killed commit to the result stash", path)
