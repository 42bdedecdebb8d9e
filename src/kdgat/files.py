"""kdgat's one way to write an output file: atomically, with the permissions the umask allows, durably.

Every writer here fills a temporary file in the target's directory, flushes it to disk and renames it over the
target, so a reader (or a job killed half-way) never sees half a file. The temporary file is created with mode
0o666 through ``os.open``, so the kernel applies the umask exactly as for a plain ``open()``: under umask 022 an
output is 0644, under 027 it is 0640 (a project group on a shared HPC directory can read it). ``mkstemp`` would
make every output 0600.

Nothing else in kdgat writes output files; .tests/unit/test_files.py checks both the modes and that rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any


def _fsync(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. a directory on a platform that cannot open one
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _new_temporary(path: Path) -> Path:
    """An empty file next to ``path``, created with 0o666 minus the umask (never an existing file)."""
    while True:
        candidate = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary_path)``, flush the result to disk and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _new_temporary(path)
    try:
        write(temporary)
        _fsync(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync(path.parent)
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_digest(package: Path, files: Iterable[Path]) -> str:
    """A digest of ``files`` (under ``package``) by their paths relative to it and their bytes: what a cache key
    holds of the code that computed an entry."""
    digest = hashlib.blake2b(digest_size=16)
    for file in files:
        digest.update(file.relative_to(package).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda temporary: temporary.write_bytes(data))


def write_text(text: str, path: str | os.PathLike) -> Path:
    """UTF-8 text, written as given (no newline translation)."""
    return write_bytes(text.encode("utf-8"), path)


def json_safe(value: Any) -> Any:
    """Plain JSON: numpy/torch scalars become Python numbers, NaN/inf become null, keys become strings."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(document: Any, path: str | os.PathLike, *, indent: int = 2, sort_keys: bool = False) -> Path:
    return write_text(json.dumps(json_safe(document), indent=indent, sort_keys=sort_keys) + "\n", path)


def load_json(path: str | os.PathLike) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text: {error.reason})") from error


def write_table(frame, path: str | os.PathLike) -> Path:
    """A pandas DataFrame as Parquet (``.parquet``) or CSV (anything else), without the index."""
    if Path(path).suffix == ".parquet":
        return atomic_write(path, lambda temporary: frame.to_parquet(temporary, index=False))
    return atomic_write(path, lambda temporary: frame.to_csv(temporary, index=False))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))


def load_torch(path: str | os.PathLike, what: str) -> Any:
    """A file written by :func:`save_torch` (tensors and plain containers only), loaded on the CPU. A file torch
    cannot read (truncated, corrupted, not a torch file) raises ValueError naming it and ``what`` it should be:
    torch's own message names no file."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as error:
        raise ValueError(f"{path}: not {what} ({type(error).__name__}: {error})") from error


def save_figure(figure, path: str | os.PathLike) -> Path:
    """A matplotlib figure in the format of the suffix (SVG by default), then closed."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        # metadata Date=None keeps SVGs byte-stable across reruns
        return atomic_write(
            path,
            lambda temporary: figure.savefig(
                temporary,
                format=path.suffix.lstrip(".") or "svg",
                bbox_inches="tight",
                metadata={"Date": None},
            ),
        )
    finally:
        plt.close(figure)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda temporary: shutil.copyfile(source, temporary))


def new_directory(parent: str | os.PathLike, prefix: str) -> Path:
    """A fresh, empty directory under ``parent`` with 0o777 minus the umask (``mkdtemp`` would make it 0700)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        candidate = parent / f"{prefix}{secrets.token_hex(6)}"
        try:
            candidate.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return candidate


def publish_directory(staging: str | os.PathLike, target: str | os.PathLike) -> bool:
    """Rename a finished ``staging`` directory (from :func:`new_directory`) to ``target`` in one step.

    Returns False, and removes ``staging``, when ``target`` already exists (another writer published first).
    """
    try:
        os.replace(staging, target)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    _fsync(Path(target).parent)
    return True


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an advisory lock on ``path`` (created empty if missing) across processes, e.g. a shared store's
    find-or-create; the lock file holds no data."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class OutputInUse(BlockingIOError):
    """Another process holds the lock of an output (:func:`output_lock`): two jobs would write it at once."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output: hidden, beside it (``<folder>/.<name>.lock``)."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def output_lock(target: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Hold the lock of ``target`` (a file about to be written) for the block, or raise :class:`OutputInUse` at
    once, naming ``target`` and, when the holder has written them, its PID and host.

    The lock is ``flock`` on :func:`lock_path`, so it dies with its holder (a SIGKILLed job leaves a stale file
    that the next run simply takes). The file is created with 0o666 minus the umask like every output, holds
    ``<pid> <host>``, and is removed on release (an exception, Ctrl-C or SIGTERM raised as an exception
    included) while still locked; a process that opened it before the removal sees another inode at the path and
    tries again, so two holders are impossible. A filesystem without ``flock`` (Lustre mounted ``noflock``)
    gives no lock: a warning, and the block runs unprotected."""
    lock = lock_path(target)
    # Folders made for the lock alone are removed with it when the job wrote nothing into them (a failed run
    # leaves no empty output folder behind).
    made = [folder for folder in (lock.parent, *lock.parent.parents) if not folder.exists()]
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
            writable = True
        except FileNotFoundError:  # a folder on the way was removed in between (by a job that wrote nothing)
            continue
        except PermissionError:
            if not lock.exists():
                raise  # a folder we may not write: the error names it
            descriptor = os.open(lock, os.O_RDONLY)  # left by another user of the group: lockable read-only
            writable = False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 256, 0).decode("utf-8", "replace").split()
            os.close(descriptor)
            by = f" (pid {holder[0]} on host {holder[1]})" if len(holder) == 2 else ""
            raise OutputInUse(
                f"{target}: another process{by} is writing this {what} now (lock {lock}); two runs writing one "
                "output overwrite each other's checkpoint and files. Wait for it to finish, or stop it and run "
                "again"
            ) from None
        except OSError as error:
            os.close(descriptor)
            with contextlib.suppress(OSError):
                lock.unlink()  # it locks nothing: leave no file beside the output
            logging.getLogger("kdgat.files").warning(
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
    try:
        if writable:
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield lock
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # before the lock goes: nobody else can hold this inode now
        os.close(descriptor)
        with contextlib.suppress(OSError):
            for folder in made:  # deepest first; stops at the first that is not empty
                folder.rmdir()
