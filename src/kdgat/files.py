"""kdgat's one way to write an output file: atomically, with the permissions the umask allows, durably.

Every writer here fills a temporary file in the target's directory, flushes it to disk and renames it over the
target, so a reader (or a job killed half-way) never sees half a file. The temporary file is created with mode
0o666 through ``os.open``, so the kernel applies the umask exactly as for a plain ``open()``: under umask 022 an
output is 0644, under 027 it is 0640 (a project group on a shared HPC directory can read it). ``mkstemp`` would
make every output 0600. It is written through the descriptor that created it (``O_EXCL|O_NOFOLLOW``), never
reopened by its name, so a link put in its place by anyone who may write the folder is never written through.

Nothing else in kdgat writes output files; .tests/unit/test_files.py checks both the modes and that rule.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from output_locks import (  # noqa: F401 - kdgat.files.output_lock, as before
    LockOfAnotherUser,
    OutputInUse,
    TemporaryReplaced,
    fsync_directory,
    lock_path,
    named_write_error,
    new_temporary,
    output_lock,
    write_atomically,
)
from wrapper_rules import InputError


class FileContentError(ValueError, InputError):
    """A file given as input that is not what it is given as: unreadable as JSON or torch, of another kind or format
    (a graph file where a model is expected), or content that does not fit the other inputs; the message names the
    file and what it should be."""


class MissingInputError(FileNotFoundError, InputError):
    """An input file of a job (training, evaluation, baselines) that does not exist; the message names the input
    and its path."""


def _fsync(path: Path) -> None:
    fsync_directory(path)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(handle)`` with a binary file open on a new temporary file beside ``path``, flush it to disk
    and rename it to ``path`` (``output_locks.write_atomically``: the temporary is written through the descriptor
    that created it, never reopened by its name). A failed write (a full disk, a quota, a failed fsync) leaves the
    old file and no temporary one, and its ``OSError`` names ``path`` (``output_locks.named_write_error``)."""
    return write_atomically(path, write)


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


def source_digests(package: Path, files: Iterable[Path], size: int = 6) -> dict[str, str]:
    """``{path relative to package: digest of its bytes}`` of ``files``, sorted by path: a param whose value
    Snakemake shows before and now when it changed, so that its reason names the files that changed. ``size``:
    bytes of BLAKE2b (6: 12 hex digits, short enough to read, and a changed file changes its entry)."""
    names = {file.relative_to(package).as_posix(): file for file in files}
    return {
        name: hashlib.blake2b(names[name].read_bytes(), digest_size=size).hexdigest()
        for name in sorted(names)
    }


def part_digest(value: Any) -> str:
    """One part of a record of what a result came from (``first_difference``): a short value as its JSON text
    (a seed, a device, a format), anything longer as 12 hex digits of its digest."""
    text = json.dumps(json_safe(value), sort_keys=True, default=str)
    return text if len(text) <= 40 else hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def first_difference(recorded: Any, now: dict[str, str]) -> str:
    """What differs between two records of what a result came from (``{part: digest}``: an input, a setting, a
    library file): the first part, in sorted order, with its recorded and present digests shortened to 12 hex
    digits, or ``absent``; a phrase starting with ": " for the end of a message, or "" when none can be named (a
    record from before parts were kept, or the same parts)."""
    if not isinstance(recorded, dict):
        return ""

    def shown(digest: Any) -> str:
        if digest is None:
            return "absent"
        text = str(digest)
        return text[:12] if len(text) > 12 and all(c in "0123456789abcdef" for c in text) else text

    for part in sorted(set(recorded) | set(now), key=str):
        if recorded.get(part) != now.get(part):
            return f": {part} differs (recorded {shown(recorded.get(part))}, now {shown(now.get(part))})"
    return ""


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def write_byte_chunks(chunks: Iterable[bytes], path: str | os.PathLike) -> Path:
    """The chunks one after the other, each made only when the one before is written: a large file's content is
    never held whole."""

    def write(handle: BinaryIO) -> None:
        for chunk in chunks:
            handle.write(chunk)

    return atomic_write(path, write)


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
        raise FileContentError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    except UnicodeDecodeError as error:
        raise FileContentError(f"{path}: not valid JSON (not UTF-8 text: {error.reason})") from error


TAB_SEPARATED = (".tsv", ".tab")


def text_separator(path: str | os.PathLike) -> str:
    """The separator of a text table named ``path``: a tab for ``.tsv`` and ``.tab``, else a comma."""
    return "\t" if Path(path).suffix.lower() in TAB_SEPARATED else ","


def write_table(frame, path: str | os.PathLike) -> Path:
    """A pandas DataFrame as Parquet (``.parquet``, any case), tab-separated text (``.tsv``, ``.tab``) or CSV
    (anything else), without the index."""
    if Path(path).suffix.lower() == ".parquet":
        return atomic_write(path, lambda handle: frame.to_parquet(handle, index=False))
    separator = text_separator(path)
    return atomic_write(path, lambda handle: frame.to_csv(handle, index=False, sep=separator))


def save_torch(obj: Any, path: str | os.PathLike) -> Path:
    """``obj`` in torch's zip format, written through an open file: torch names the archive's folder inside the
    zip after the file it is given by name (here the random temporary name), so the same tensors gave other bytes
    at every run, and every SHA-256 of a graph or model file (a model's ``trained_on``, the result stash's key)
    changed with them. Written through a file object the folder is ``archive``: the same content, the same bytes."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def load_torch(path: str | os.PathLike, what: str, mmap: bool = False) -> Any:
    """A file written by :func:`save_torch` (tensors and plain containers only), loaded on the CPU. A file torch
    cannot read (truncated, corrupted, not a torch file) raises :class:`FileContentError` (a ValueError) naming it
    and ``what`` it should be: torch's own message names no file. ``mmap``: tensors are mapped, not read, so that
    reading a header of a large file costs no more than the header (a tensor is read when it is used)."""
    import torch

    # torch maps only its zip format; anything else (a legacy torch file, a JSON given as graphs) is read, so that
    # its refusal gives the reason rather than advice to save with the zip format
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as error:
        why = str(error)
        # torch's refusal of a file that is no torch file (JSON, CSV) is a page of advice on weights_only, written
        # for code that loads pickles, and asks to file an issue: the unpickler's own reason is the line after it.
        _, marker, reason = why.partition("WeightsUnpickler error:")
        if marker:
            why = next((line for line in reason.splitlines() if line.strip()), "")
        why = " ".join(why.split())  # one line: the job's failure is one line in the log
        raise FileContentError(f"{path}: not {what} ({type(error).__name__}: {why})") from error


def save_figure(figure, path: str | os.PathLike) -> Path:
    """A matplotlib figure in the format of the suffix (SVG by default), then closed. The same figure gives the
    same bytes at every run: an SVG holds no date (metadata Date=None) and its clip paths and glyphs are named from
    a fixed salt (``svg.hashsalt``; without it matplotlib names them from a random UUID)."""
    import matplotlib as mpl
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with mpl.rc_context({"svg.hashsalt": "kdgat"}):
            return atomic_write(
                path,
                lambda handle: figure.savefig(
                    handle,
                    format=path.suffix.lstrip(".") or "svg",
                    bbox_inches="tight",
                    metadata={"Date": None},
                ),
            )
    finally:
        plt.close(figure)


def copy_file(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    def write(handle: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, handle)

    return atomic_write(path, write)


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


def discard(path: str | os.PathLike, prefix: str) -> None:
    """Remove ``path``, whatever it is (a folder, a file, a link: a link's target is kept), by renaming it first to
    a fresh name beginning with ``prefix`` in its folder, so no reader sees a half-removed folder at ``path``;
    nothing happens when it is gone already (another writer discarded it first)."""
    path = Path(path)
    aside = path.parent / f"{prefix}{secrets.token_hex(6)}"
    try:
        os.replace(path, aside)
    except OSError:
        return
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:  # rmtree removes folders only
        aside.unlink(missing_ok=True)


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


def locking_outputs(name: str, what: str) -> Callable[[Callable], Callable]:
    """Decorate a function given ``outputs=`` (a mapping of names to paths): each call holds the
    :func:`output_lock` of ``outputs[name]`` (the file it writes last), so a second call writing the same outputs
    at once stops before it reads anything, raising :class:`OutputInUse` naming them; a call without that output
    runs as it is, for the function to refuse."""

    def decorate(function: Callable) -> Callable:
        @functools.wraps(function)
        def locked(*args: Any, **kwargs: Any) -> Any:
            target = (kwargs.get("outputs") or {}).get(name)
            if not target:
                return function(*args, **kwargs)
            with output_lock(target, what):
                return function(*args, **kwargs)

        return locked

    return decorate
