"""The lock of an output file that one process writes at a time, shared by kdgat (training outputs and
checkpoints) and simcal (a sweep's output and its parts), and the temporary file an output is written to first: a second run writing the same output at once is refused
at its start, naming the output and the holder, instead of the two overwriting or deleting each other's files.
Standard library (and wrapper_rules, for the InputError its refusals are) only, so that neither library brings the
other in (.tests/unit/test_layers.py)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from wrapper_rules import InputError, user_name

log = logging.getLogger("output_locks")


class OutputInUse(BlockingIOError, InputError):
    """Another process holds the lock of an output (:func:`output_lock`): two jobs would write it at once."""


class LockOfAnotherUser(PermissionError, InputError):
    """The lock file of an output is another user's and not even readable to us (left under umask 077), so it can
    be neither locked nor told apart from a held one (:func:`output_lock`): the message names its owner and what to
    do."""


class LockIsALink(OSError, InputError):
    """The lock file's path holds a symbolic link (:func:`output_lock`): it is not followed, or the lock would be
    written (truncated) through it into whatever file it points at."""


def _link_refusal(target: str | os.PathLike, lock: Path, what: str) -> LockIsALink:
    try:
        owner = user_name(os.lstat(lock).st_uid)
        points_at = os.readlink(lock)
    except OSError:
        owner, points_at = "someone", "a file"
    return LockIsALink(
        f"{target}: the lock file of this {what}, {lock}, is a symbolic link (to {points_at}, {owner}'s), not a "
        f"lock file: it is not followed, since the lock written through it would overwrite {points_at}. Remove the "
        f"link (`rm {lock}`), and see who made it, then run again",
    )


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: hidden, beside it (``<folder>/.<name>.lock``)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(
    target: str | os.PathLike, what: str = "output", *, stale_temporaries: bool = False
) -> Iterator[Path]:
    """Hold the lock of ``target`` (a file about to be written) for the block, or raise :class:`OutputInUse` at
    once, naming ``target`` and, when the holder has written them, its PID and host.

    The lock is ``flock`` on :func:`lock_path`, so it dies with its holder (a SIGKILLed job leaves a stale file
    that the next run simply takes). The file is created with 0o666 minus the umask like every output, holds
    ``<pid> <host>``, and is removed on release (an exception, Ctrl-C or SIGTERM raised as an exception
    included) while still locked; a process that opened it before the removal sees another inode at the path and
    tries again, so two holders are impossible. A stale file another user left (not ours to write) is locked,
    then replaced by one of our own where the folder allows (:func:`_replace_stale_file`); one it may not even read
    (0600, its umask 077) is refused with :class:`LockOfAnotherUser` naming it, its owner and what to do, or with
    :class:`OutputInUse` when a process on this host holds it (:func:`_unopenable_lock`). A filesystem without
    ``flock`` (Lustre mounted ``noflock``) gives no lock: a warning, and the block runs unprotected.

    ``stale_temporaries``: once the lock is held, remove the temporary files of ``target`` (:func:`new_temporary`)
    that a killed holder left (SIGKILL: the OOM killer, a node failure), for a target that is only ever written
    under this lock: no live writer can own one then. Without a lock, none is removed."""
    lock = lock_path(target)
    # Folders made for the lock alone are removed with it when the job wrote nothing into them (a failed run
    # leaves no empty output folder behind).
    made = [folder for folder in (lock.parent, *lock.parent.parents) if not folder.exists()]
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            # O_NOFOLLOW: the name is known in advance, so anyone who may write the folder could put a link there
            # to a file of this user's, which the lock's truncate and write would overwrite.
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            writable = True
        except FileNotFoundError:  # a folder on the way was removed in between (by a job that wrote nothing)
            continue
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _link_refusal(target, lock, what) from None
            if not isinstance(error, PermissionError):
                raise
            if not lock.exists():
                raise  # a folder we may not write: the error names it
            try:  # left by another user of the group: lockable read-only
                descriptor = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW)
            except FileNotFoundError:  # its holder released it in between
                continue
            except PermissionError:  # not even readable (another user's umask 077): it cannot be locked
                refusal = _unopenable_lock(target, lock, what)
                if refusal is None:  # its holder released it in between
                    continue
                raise refusal from None
            except OSError as error:
                if error.errno != errno.ELOOP:
                    raise
                raise _link_refusal(target, lock, what) from None
            writable = False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 256, 0).decode("utf-8", "replace").split()
            os.close(descriptor)
            by = f" (pid {holder[0]} on host {holder[1]})" if len(holder) == 2 else ""
            raise OutputInUse(
                f"{target}: another process{by} is writing this {what} now (lock {lock}); two runs writing one "
                f"{what} at once overwrite or delete each other's files. Wait for it to finish, or stop it and run "
                "again"
            ) from None
        except OSError as error:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                lock.unlink()  # it locks nothing: leave no file beside the output
            log.warning(
                "%s: cannot lock %s (%s); a second run writing this %s at the same time is not detected",
                target, lock, error.strerror or error, what,
            )  # fmt: skip
            descriptor = None
            break
        try:
            current = os.stat(lock)
        except FileNotFoundError:
            current = None
        mine = os.fstat(descriptor)
        if current is not None and (current.st_dev, current.st_ino) == (mine.st_dev, mine.st_ino):
            break
        os.close(descriptor)  # the last holder removed the file after we opened it: lock the new one
    if descriptor is None:
        yield lock
        return
    if not writable:
        descriptor, writable = _replace_stale_file(lock, descriptor)
    try:
        if writable:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        if stale_temporaries:
            remove_temporaries(target)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # before the lock goes: nobody else can hold this inode now
        os.close(descriptor)
        with contextlib.suppress(OSError):
            for folder in made:  # deepest first; stops at the first that is not empty
                folder.rmdir()


class TemporaryReplaced(OSError, InputError):
    """The temporary file an output was being written to was replaced by another file (a symbolic link) before it
    was renamed into place (:func:`write_atomically`): someone else can write the output's folder."""


def open_temporary(path: str | os.PathLike) -> tuple[Path, int]:
    """An empty file beside ``path`` (hidden, never an existing one) that an output is written to before it is
    renamed into place, and the descriptor it was created with (``O_CREAT|O_EXCL|O_NOFOLLOW``, write-only): the
    content goes through that descriptor, never through the name, so a file put at that name after it was made (a
    symbolic link, by anyone else who may write the folder) is never written through. Created with mode 0666 as
    ``open()`` creates files, so the kernel applies the umask or the folder's default ACL (mkstemp's 0600 would
    not). kdgat's and simcal's atomic writes share it. An error creating it (a read-only folder, a full disk)
    names ``path``: it named the hidden temporary, a file the user never asked for."""
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return candidate, os.open(candidate, flags, 0o666)
        except FileExistsError:
            continue
        except OSError as error:
            named = named_write_error(path, candidate, error)
            if named is None:
                raise
            raise named from error


def new_temporary(path: str | os.PathLike) -> Path:
    """:func:`open_temporary`'s file, closed (a name that stays taken)."""
    temporary, descriptor = open_temporary(path)
    os.close(descriptor)
    return temporary


def write_atomically(path: str | os.PathLike, write: Callable[[BinaryIO], Any], durable: bool = True) -> Path:
    """Call ``write(handle)`` with a binary file open on a new :func:`open_temporary` beside ``path`` (its folder
    made if need be), fsync it through its own descriptor, then rename it over ``path``: a reader sees the old file
    or the whole new one, never a half one, even after a power loss, and the file gets 0666 minus the umask (or
    the folder's default ACL). The temporary is never reopened by its name, so nobody who may write the folder can
    have the output written into a file of their choice by swapping it for a link; a name that no longer holds
    the file written when it is to be renamed is refused (:class:`TemporaryReplaced`), never renamed into place.
    ``durable=False`` skips the fsyncs (files rewritten often and worthless after a crash). A failed write (a full
    disk, a quota, an fsync that fails) leaves the old file and no temporary one, and its ``OSError`` names
    ``path`` (:func:`named_write_error`). ``write`` may close the handle."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary, descriptor = open_temporary(path)
    try:
        try:
            with os.fdopen(os.dup(descriptor), "wb") as handle:
                write(handle)
            if durable:  # the file's own fsync must succeed: a full disk on NFS is often reported only here
                os.fsync(descriptor)
            written, found = os.fstat(descriptor), os.lstat(temporary)
        finally:
            os.close(descriptor)
        if (found.st_dev, found.st_ino) != (written.st_dev, written.st_ino):
            raise TemporaryReplaced(
                f"{path}: its temporary file {temporary} was replaced by another file (a link?) while it was "
                f"written, so it was not renamed into place; someone else can write {path.parent}: make the "
                "folder writable only by you (or set its sticky bit, chmod +t) and rerun"
            )
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        named = named_write_error(path, temporary, error) if isinstance(error, OSError) else None
        if named is None:
            raise
        raise named from error
    if durable:
        fsync_directory(path.parent)
    return path


def fsync_directory(directory: str | os.PathLike) -> None:
    """Make a rename in ``directory`` durable (best-effort: some filesystems refuse fsync on a folder)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def named_write_error(path: str | os.PathLike, temporary: Path, error: OSError) -> OSError | None:
    """The error to raise for ``error``, met while ``path`` was written through ``temporary``: an ``OSError`` (of
    the class its errno gives) naming ``path``, for one that names ``temporary`` or no file at all (a full disk in
    pyarrow's writer or a plain ``write()`` names none, so a job's log said ``No space left on device`` and not
    where). None, to raise ``error`` as it is, for one naming another file (``copy_file``'s source) or without an
    errno, and for a library's own error class (its message already says what it means)."""
    if type(error).__module__ != "builtins" or error.errno is None:
        return None
    if error.filename is not None and os.fspath(error.filename) != os.fspath(temporary):
        return None
    return OSError(error.errno, os.strerror(error.errno), os.fspath(path))


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Make ``text`` the whole of ``path`` (UTF-8) with :func:`write_atomically`. The writer of the small files of
    the packages beside the libraries (resource_history's marks); kdgat and simcal write theirs with their own
    writers, built on :func:`write_atomically` too."""
    return write_atomically(path, lambda handle: handle.write(text.encode()))


def remove_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files :func:`new_temporary` made for ``path`` (``.<name>.<12 hex>.tmp`` beside it),
    which a writer killed before its rename left (a sweep's is as big as its output); the removed ones are logged
    and returned. Only for a caller that holds the lock of ``path`` (``output_lock(..., stale_temporaries=True)``),
    or another writer's file under way would go."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        middle = entry.name[len(prefix) : -len(".tmp")]
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp") and _is_token(middle)):
            continue
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
            log.info("removed %s, the temporary file of %s that a killed run left", entry.path, path)
    return removed


def _is_token(text: str) -> bool:
    """Whether ``text`` is what ``secrets.token_hex(6)`` gives: 12 lowercase hex digits."""
    return len(text) == 12 and all(character in "0123456789abcdef" for character in text)


def _replace_stale_file(lock: Path, stale: int) -> tuple[int, bool]:
    """Put a lock file of our own, locked and ours to write, in the place of the stale one another user left
    (``stale``: its descriptor, locked by us, read-only), so that a second job is told of this holder and not of
    the dead one, whose PID may be another process by now. Renamed over it in one step: a process that opened the
    stale file meanwhile finds another inode at the path once it has the lock, and tries again. Where the folder
    forbids it (no write permission, or the sticky bit), the read-only lock is kept: returns ``(descriptor,
    writable)``."""
    fresh = lock.with_name(f"{lock.name}.{secrets.token_hex(6)}.tmp")
    try:
        descriptor = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError:
        return stale, False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows this file yet
        # Whole before it is seen
        os.pwrite(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        os.replace(fresh, lock)
    except OSError:
        os.close(descriptor)
        with contextlib.suppress(OSError):
            fresh.unlink()
        return stale, False
    os.close(stale)
    return descriptor, True


def _unopenable_lock(target: str | os.PathLike, lock: Path, what: str) -> OSError | None:
    """The error for a lock file this user may not even open (another user's, 0600): :class:`OutputInUse` when a
    process on this host holds its ``flock``, else :class:`LockOfAnotherUser` (stale unless a job on another node
    holds it, which cannot be told from here); ``None`` when it is gone (released in between)."""
    try:
        found = os.stat(lock)
    except FileNotFoundError:
        return None
    owner = user_name(found.st_uid)
    holders = _holders_on_this_host(found)
    if holders:
        return OutputInUse(
            f"{target}: another process (pid {holders[0]} on this host, of user {owner}) is writing this {what} now "
            f"(lock {lock}); two runs writing one {what} at once overwrite or delete each other's files. Wait for it "
            f"to finish, or ask {owner} to stop it, and run again"
        )
    if holders is None:
        state = (
            "Whether a job of theirs holds it cannot be told from here (this host does not list its locks): "
            f"if none writes this {what} now, it is stale, left by a job that was killed."
        )
    else:
        state = (
            "No process on this host holds it: most likely it is stale, left by a job of theirs that was killed "
            f"(unless a job of theirs on another node writes this {what} now)."
        )
    return LockOfAnotherUser(
        f"{target}: its lock file {lock} belongs to user {owner} (uid {found.st_uid}), mode "
        f"{found.st_mode & 0o7777:04o}, which this user may not open, so this {what} cannot be locked. {state} "
        f"Ask {owner} whether such a job runs; if none does, remove it (rm {lock}) and run again. Lock files, like "
        "outputs, are only as readable as their writer's umask allows: 027 or 002 lets the group take a stale one"
    )


def _holders_on_this_host(found: os.stat_result) -> list[int] | None:
    """The PIDs of the processes on this host that hold a lock on the file ``found`` (from Linux's
    ``/proc/locks``, which lists every process's locks whoever owns them), or ``None`` where that cannot be read.
    A network filesystem's locks taken on other nodes are not listed."""
    wanted = f"{os.major(found.st_dev):02x}:{os.minor(found.st_dev):02x}:{found.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as table:
            lines = table.readlines()
    except OSError:
        return None
    holders = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4647 fe:00:2165400 0 EOF"; a waiter's line has "->" after the number
        fields = line.split()
        if len(fields) >= 6 and fields[1] != "->" and fields[5] == wanted and fields[4].lstrip("-").isdigit():
            holders.append(int(fields[4]))
    return holders
