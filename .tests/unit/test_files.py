"""kdgat writes every output through kdgat.files: atomically and readable as the umask allows (0644 under umask 022,
0640 under 027), so a project group on a shared HPC directory can read the results."""

from __future__ import annotations

import ast
import errno
import fcntl
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from testkit import REPO

from kdgat import files
from kdgat.can.writer import write_can_file
from kdgat.evaluation.plots import plot_size_f1
from kdgat.evaluation.stash import ResultStash
from kdgat.graph_store import save_graph_sets, save_graphs
from kdgat.model_store import save_model
from kdgat.models import QNetwork
from kdgat.preprocess import preprocess_dataset
from kdgat.synthetic import generate_file
from kdgat.testing import TinyStage, toy_graphs
from kdgat.training.loop import LoopSettings, fit
from kdgat.training.settings import StageSettings
from kdgat.training.stage import write_outputs

SYNTHETIC = {
    "seed": 3,
    "num_ids": 25,
    "burst_s": [0.05, 0.1],
    "gap_s": [0.1, 0.2],
    "files": [{"split": "train_01", "name": "dos", "attack": "dos", "duration_s": 0.5}],
}


@pytest.fixture(params=[0o022, 0o027, 0o002], ids=["umask022", "umask027", "umask002"])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def write_every_kind_of_output(root: Path) -> list[Path]:
    """One output of each kind kdgat writes, through the functions the pipeline uses."""
    written = []
    log = root / "can" / "train_01" / "dos.csv"
    generate_file(SYNTHETIC, 0, log)  # a CAN log (synthetic generator -> can.writer)
    messages_4col = root / "can" / "log_4col.csv"
    from kdgat.can.reader import read_can_file

    write_can_file(read_can_file(log), messages_4col, "can_4col")
    written += [log, messages_4col]
    outputs = {key: root / "pre" / name for key, name in [("train", "train.pt"), ("val", "val.pt"),
               ("test", "test.pt"), ("vocab", "vocab.json"), ("metadata", "metadata.json")]}  # fmt: skip
    # The test log is the can_4col copy: one file cannot be both a training and a test log.
    preprocess_dataset(
        "d", [log], {"dos": [messages_4col]}, root / "pre", window_size=20, stride=20, outputs=outputs
    )
    written += list(outputs.values())  # graphs, vocabulary, metadata
    graphs = toy_graphs(4, num_ids=20, seed=0)
    save_graphs(graphs, root / "graphs" / "train.pt")
    save_graph_sets({"dos": graphs}, root / "graphs" / "test.pt")
    written += [root / "graphs" / "train.pt", root / "graphs" / "test.pt"]
    checkpoint = root / "checkpoints" / "last.pt"
    result = fit(TinyStage(), LoopSettings(epochs=1, patience=1, checkpoint=checkpoint), "fingerprint")
    written.append(checkpoint)  # the training resume checkpoint
    settings = StageSettings.from_config({}, "dqn", "teacher")
    training = {name: root / "train" / f"{name}.{ext}" for name, ext in [("model", "pt"), ("metrics", "json"),
                ("history", "csv")]}  # fmt: skip
    write_outputs(training, settings, QNetwork(), {}, result, {"stage": "dqn"})
    written += list(training.values())  # model.pt, metrics.json, history.csv
    save_model(QNetwork(), "dqn", {}, root / "models" / "dqn.pt")
    written.append(root / "models" / "dqn.pt")
    table = pd.DataFrame({"dataset": ["d"], "variant": ["teacher"], "params_total": [3], "f1_fusion": [0.5],
                          "latency_ms_fusion": [1.0]})  # fmt: skip
    files.write_table(table, root / "eval" / "scores.parquet")
    files.write_table(table, root / "eval" / "summary.csv")
    files.write_text("| a |\n", root / "eval" / "summary.md")
    files.write_json({"f1": np.float64(0.5)}, root / "eval" / "metrics.json")
    plot_size_f1(table, root / "eval" / "size_f1.svg")
    written += [
        root / "eval" / name for name in ("scores.parquet", "summary.csv", "summary.md", "metrics.json")
    ]
    written.append(root / "eval" / "size_f1.svg")  # a figure
    stash = ResultStash(root / "stash")
    entry = stash.commit("key", {"metrics.json": root / "eval" / "metrics.json"})
    restored = root / "restored" / "metrics.json"
    assert stash.restore("key", {"metrics.json": restored})
    written += [entry / "metrics.json", entry / "COMPLETE", restored]
    return written


def test_every_output_is_readable_as_the_umask_allows(umask, tmp_path):
    written = write_every_kind_of_output(tmp_path)
    expected = 0o666 & ~umask
    wrong = {str(path.relative_to(tmp_path)): oct(mode(path)) for path in written if mode(path) != expected}
    assert not wrong, f"expected {oct(expected)} under umask {oct(umask)}: {wrong}"
    assert mode(tmp_path / "stash" / "key") == 0o777 & ~umask  # the stash entry directory
    assert not list(tmp_path.rglob("*.tmp")), "temporary files left behind"
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == {"f1": 0.5}


@pytest.mark.parametrize("failure", [RuntimeError("disk full"), KeyboardInterrupt("disk full")])
def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, failure):
    target = tmp_path / "metrics.json"
    files.write_json({"version": 1}, target)

    def broken(handle):
        handle.write(b"half")
        raise failure

    with pytest.raises(type(failure), match="disk full"):
        files.atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_file_is_on_disk_before_it_is_renamed_into_place_and_the_rename_after(tmp_path, monkeypatch):
    """What atomic_write and publish_directory flush, by inode: the file's data before the rename makes it visible
    (a crash then leaves the old file or the whole new one), the directory holding the name after it."""
    events = []
    fsync, replace = os.fsync, os.replace

    def recorded_fsync(descriptor):
        events.append(("fsync", os.fstat(descriptor).st_ino))
        fsync(descriptor)

    def recorded_replace(source, target):
        events.append(("replace", Path(target)))
        replace(source, target)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(os, "replace", recorded_replace)
    target = files.write_text("new", tmp_path / "out" / "metrics.json")
    written = [("fsync", target.stat().st_ino), ("replace", target), ("fsync", target.parent.stat().st_ino)]
    assert events == written

    events.clear()
    staging = files.new_directory(tmp_path / "stash", prefix=".key.")
    entry = tmp_path / "stash" / "key"
    assert files.publish_directory(staging, entry)
    assert events == [("replace", entry), ("fsync", entry.parent.stat().st_ino)]


def test_a_temporary_file_of_another_writer_is_never_taken(tmp_path, monkeypatch):
    # Another writer's temporary file for the same target, in the middle of being written: a new name is drawn.
    target = tmp_path / "metrics.json"
    theirs = tmp_path / ".metrics.json.aaaaaaaaaaaa.tmp"
    theirs.write_text("another writer's half")
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda size: next(names))
    files.write_text("mine", target)
    assert target.read_text() == "mine" and theirs.read_text() == "another writer's half"


def test_publish_directory_moves_the_first_writers_entry_in_and_drops_a_later_one(tmp_path):
    entry = tmp_path / "stash" / "key"
    staged = []
    for text in ("first", "second"):
        staging = files.new_directory(entry.parent, prefix=".key.")
        (staging / "metrics.json").write_text(text)
        staged.append(staging)
    assert files.publish_directory(staged[0], entry) is True
    # The entry exists: another writer published first.
    assert files.publish_directory(staged[1], entry) is False
    assert (entry / "metrics.json").read_text() == "first"
    assert not staged[0].exists() and not staged[1].exists()
    assert [p.name for p in entry.parent.iterdir()] == ["key"]


def test_exclusive_lock_keeps_out_every_other_holder_until_released(tmp_path):
    lock = tmp_path / ".kdgat.lock"

    def can_take() -> bool:
        with open(lock) as other:  # another open file: to flock, another process
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

    with files.exclusive_lock(lock):
        assert lock.exists() and not can_take()
    assert can_take()


def test_output_lock_refuses_a_second_holder_naming_the_output_pid_and_host_then_is_gone(umask, tmp_path):
    target = tmp_path / "out" / "model.pt"
    lock = files.lock_path(target)
    with files.output_lock(target, "training output"):
        assert lock.parent == target.parent and lock.name == ".model.pt.lock"
        assert mode(lock) == 0o666 & ~umask  # as readable by the group as the outputs beside it
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        # Another open file description is, to flock, another process.
        expected = f"{target}: another process (pid {os.getpid()} on host {socket.gethostname()}) is writing "
        with pytest.raises(files.OutputInUse, match=re.escape(expected)), files.output_lock(target):
            pass
        assert lock.exists()  # the refused one leaves the holder's lock alone
    assert not lock.exists() and not target.parent.exists()  # a job that wrote nothing leaves no folder
    with pytest.raises(RuntimeError), files.output_lock(target):
        files.write_text("half", target)
        raise RuntimeError("the job failed")
    assert not lock.exists() and target.exists()  # released on failure; the folder keeps what was written


def test_output_lock_never_writes_through_a_symbolic_link_planted_at_the_lock_path(tmp_path):
    """The lock's name is known in advance (``.<output>.lock``): anyone who may write a shared results folder
    could put a link there to a file of the user who runs the job (their ``~/.bashrc``), and the lock was opened
    through it, truncated and overwritten with ``<pid> <host>``. Now a link is not followed: the job is refused
    (an InputError, one line in the wrapper's log) naming the link, where it points and what to do, and the file
    it points at is untouched."""
    from output_locks import LockIsALink
    from wrapper_rules import InputError

    victim = tmp_path / "home" / ".bashrc"
    victim.parent.mkdir()
    victim.write_text("export PATH=$HOME/bin:$PATH\n")
    target = tmp_path / "shared" / "model.pt"
    target.parent.mkdir()
    lock = files.lock_path(target)
    for points_at in (victim, tmp_path / "home" / "not-there-yet"):  # a dangling link would create its file
        lock.unlink(missing_ok=True)
        lock.symlink_to(points_at)
        with pytest.raises(LockIsALink) as refused, files.output_lock(target, "training output"):
            files.write_text("written", target)
        assert isinstance(refused.value, InputError)
        assert str(refused.value).startswith(
            f"{target}: the lock file of this training output, {lock}, is a symbolic link (to {points_at}, "
        )
        assert f"Remove the link (`rm {lock}`)" in str(refused.value)
        assert victim.read_text() == "export PATH=$HOME/bin:$PATH\n" and not target.exists()
        assert not (tmp_path / "home" / "not-there-yet").exists() and lock.is_symlink()


def _simcal(name):
    import simcal.tables

    return getattr(simcal.tables, name)


# Each atomic writer, replacing an output of ``b"old"`` in a shared folder.
SWAPPED_WRITERS = {
    "kdgat bytes": lambda target: files.write_bytes(b"new", target),
    "kdgat table": lambda target: files.write_table(pd.DataFrame({"a": [1]}), target),
    "kdgat torch": lambda target: files.save_torch({"w": torch.zeros(2)}, target),
    "kdgat copy": lambda target: files.copy_file(
        files.write_bytes(b"new", target.with_name("source")), target
    ),
    "simcal text": lambda target: _simcal("write_text")("new", target),
    "simcal parquet": lambda target: _simcal("write_parquet")(pd.DataFrame({"a": [1]}), target),
    "output_locks": lambda target: __import__("output_locks").write_text_atomically(target, "new"),
}


@pytest.mark.parametrize("writer", list(SWAPPED_WRITERS))
def test_a_temporary_file_swapped_for_a_link_after_it_was_made_is_never_written_through(
    tmp_path, monkeypatch, writer
):
    """An output's temporary file (``.<name>.<12 hex>.tmp``, created with O_EXCL) was closed and reopened by its
    name to be written (``open(temporary, "wb")``, pandas, pyarrow): anyone else who may write a shared results
    folder could, in between, replace it with a link to a file of the user who runs the job (their ``~/.bashrc``),
    which was then overwritten with the output, and the link renamed into the output's place. Now the content goes
    through the descriptor that created the file, and a temporary that is no longer the file written is refused
    naming the output and the folder, never renamed into place."""
    victim = tmp_path / "home" / ".bashrc"
    victim.parent.mkdir()
    victim.write_bytes(b"export PATH=$HOME/bin:$PATH\n")
    target = tmp_path / "shared" / "result.parquet"
    target.parent.mkdir()
    target.write_bytes(b"old")
    temporary = re.compile(rf"\.{re.escape(target.name)}\.[0-9a-f]{{12}}\.tmp")
    real_open, swapped = os.open, []

    def open_then_swapped(name, flags, *args, **kwargs):  # the other group member acts right after it is made
        descriptor = real_open(name, flags, *args, **kwargs)
        if flags & os.O_CREAT and temporary.fullmatch(Path(name).name):
            os.unlink(name)
            os.symlink(victim, name)
            swapped.append(Path(name))
        return descriptor

    monkeypatch.setattr(os, "open", open_then_swapped)
    try:
        SWAPPED_WRITERS[writer](target)
        error = None
    except OSError as raised:
        error = raised
    monkeypatch.undo()
    assert swapped, "the writer made no temporary file"
    assert victim.read_bytes() == b"export PATH=$HOME/bin:$PATH\n", "the output was written through the link"
    assert not target.is_symlink() and target.read_bytes() == b"old"
    assert error is not None, "the swapped temporary was renamed into place"
    assert str(error).startswith(f"{target}: its temporary file {swapped[0]} was replaced by another file"), (
        error
    )
    assert f"someone else can write {target.parent}" in str(error)
    assert sorted(p.name for p in target.parent.iterdir() if p.name != "source") == ["result.parquet"]


def test_output_lock_removes_only_the_folders_it_made_for_the_lock(tmp_path):
    """An output folder that was there before the job (empty, made by Snakemake or the user) stays; the folders the
    lock alone made below it go when the job wrote nothing."""
    given = tmp_path / "given"
    given.mkdir()
    with files.output_lock(given / "a" / "b" / "model.pt"):
        assert (given / "a" / "b").is_dir()
    assert given.is_dir() and list(given.iterdir()) == []


def test_output_lock_takes_a_stale_lock_file_and_never_an_unlinked_one(tmp_path, monkeypatch):
    target = tmp_path / "model.pt"
    lock = files.lock_path(target)
    lock.write_text("4242 node-that-died\n")  # left by a SIGKILLed job: flock died with it
    with files.output_lock(target):
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"

    # The race a removed-on-release lock file must survive: between this process's open() and its flock(), the
    # holder releases (removing the file) and a third process creates a new one. Locking the opened, unlinked
    # inode would let the third in beside it: the path's inode is checked and the new file locked instead.
    real_flock = fcntl.flock
    raced = []

    def flock_after_a_release(descriptor, operation):
        if not raced:
            raced.append(True)
            lock.unlink()
            lock.write_text("")
        return real_flock(descriptor, operation)

    monkeypatch.setattr(files.fcntl, "flock", flock_after_a_release)
    with files.output_lock(target):
        monkeypatch.setattr(files.fcntl, "flock", real_flock)
        assert raced and lock.read_text().startswith(f"{os.getpid()} ")
        with pytest.raises(files.OutputInUse), files.output_lock(target):
            pass


def test_output_lock_goes_on_when_a_folder_on_its_way_is_removed_meanwhile(tmp_path, monkeypatch):
    """Another job that made a folder for its lock alone removes it when it ends: between this job's mkdir and its
    open, the folder can be gone. Stand-in for that moment: the first mkdir finds a parent removed."""
    target = tmp_path / "a" / "b" / "model.pt"
    real_mkdir, calls = Path.mkdir, []

    def mkdir_during_a_removal(self, *args, **kwargs):
        if self == target.parent:
            calls.append(self)
            if len(calls) == 1:
                raise FileNotFoundError(2, "No such file or directory", str(self.parent))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir_during_a_removal)
    with files.output_lock(target) as lock:
        assert lock.exists() and len(calls) >= 2  # tried again, and then it went on


def test_output_lock_on_a_filesystem_without_flock_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    """Lustre mounted without `flock` answers flock() with ENOSYS: the job runs unprotected, and says so."""
    import errno
    import logging

    def no_flock(descriptor, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(files.fcntl, "flock", no_flock)
    target = tmp_path / "model.pt"
    with caplog.at_level(logging.WARNING, logger="output_locks"), files.output_lock(target):
        files.write_text("whole", target)
    assert f"{target}: cannot lock {files.lock_path(target)} (Function not implemented)" in caplog.text
    assert target.read_text() == "whole" and not files.lock_path(target).exists()


def test_the_holder_of_an_output_lock_removes_the_temporary_files_a_killed_writer_left_and_no_others(
    tmp_path,
):
    """A writer killed by SIGKILL (the OOM killer, a node failure) before its rename leaves ``.<name>.<hex>.tmp``
    beside the output for good: a sweep's is as big as the output. The next holder of the output's lock removes the
    output's own, and nothing else that looks alike."""
    from output_locks import new_temporary, output_lock

    target = tmp_path / "sweep.parquet"
    left = new_temporary(target)
    left.write_bytes(b"half an output")
    others = [
        new_temporary(tmp_path / "other.parquet"),  # another output's
        tmp_path / ".sweep.parquet.notatoken00.tmp",
        tmp_path / ".sweep.parquet.0123456789ab.tmp.keep",
        tmp_path / "sweep.parquet.0123456789ab.tmp",
    ]
    for other in others[1:]:
        other.write_bytes(b"")
    with output_lock(target, "sweep output"):
        assert left.exists()  # only on request: a target written without its lock somewhere keeps them
    with output_lock(target, "sweep output", stale_temporaries=True):
        assert not left.exists()
    assert all(other.exists() for other in others)


def test_a_run_refused_by_the_output_lock_or_without_one_removes_no_temporary_file(tmp_path, monkeypatch):
    """The lock is what makes a temporary file stale: while another run holds it, the file may be that run's write
    under way; on a filesystem without flock nothing tells, so nothing is removed."""
    import errno

    from output_locks import OutputInUse, new_temporary, output_lock

    target = tmp_path / "sweep.parquet"
    with output_lock(target, "sweep output"):
        under_way = new_temporary(target)
        with pytest.raises(OutputInUse), output_lock(target, "sweep output", stale_temporaries=True):
            pass
        assert under_way.exists()

    def no_flock(descriptor, operation):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(files.fcntl, "flock", no_flock)
    with output_lock(target, "sweep output", stale_temporaries=True):
        assert under_way.exists()


def refuse_writing(monkeypatch) -> None:
    """os.open as for a user who may not write the folder (the tests may run as root, who may write anything):
    opening to write or create fails as open(2) does, with the path named; reading an existing file works."""
    import errno

    real_open = os.open

    def open_read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", open_read_only)


def test_output_lock_takes_a_lock_file_another_user_left_read_only_and_keeps_its_holder_out(
    tmp_path, monkeypatch
):
    """A stale lock file of another user of the group (0644: readable, not writable) is locked through a read-only
    descriptor: the job goes on, and a second job writing the output is still refused."""
    target = tmp_path / "model.pt"
    lock = files.lock_path(target)
    lock.write_text("4242 node-of-another-user\n")
    refuse_writing(monkeypatch)
    with files.output_lock(target) as held:
        assert held == lock and lock.read_text() == "4242 node-of-another-user\n"  # not its file to write
        with pytest.raises(files.OutputInUse, match=re.escape(f"{target}: another process")):
            with files.output_lock(target):
                pass


def test_a_job_taking_another_users_stale_lock_file_is_the_holder_a_second_job_is_told_of(
    tmp_path, monkeypatch
):
    """A lock file another user of the group left when SIGKILLed (0644: only readable to us) in a folder we may
    write: the job takes the lock and puts its own PID and host in the lock's place, so a second job is told of
    the holder, not of the dead job (whose PID may be another process by now)."""
    import errno

    target = tmp_path / "model.pt"
    lock = files.lock_path(target)
    lock.write_text("4242 node-of-another-user\n")
    real_open = os.open

    def open_as_another_user(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR) and Path(path) == lock and lock.read_text().startswith("4242 "):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", open_as_another_user)
    holder = f"(pid {os.getpid()} on host {socket.gethostname()})"
    with files.output_lock(target):
        assert lock.read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        with pytest.raises(
            files.OutputInUse, match=re.escape(f"{target}: another process {holder} is writing")
        ):
            with files.output_lock(target):
                pass
    assert not lock.exists() and [p.name for p in tmp_path.iterdir()] == []


def test_output_lock_in_a_folder_it_may_not_write_names_the_lock_it_cannot_create(tmp_path, monkeypatch):
    """An unwritable output folder without a lock file: open(2)'s PermissionError, naming the lock path, not a
    FileNotFoundError of a lock that was never there."""
    target = tmp_path / "model.pt"
    refuse_writing(monkeypatch)
    with pytest.raises(PermissionError, match=re.escape(str(files.lock_path(target)))):
        with files.output_lock(target):
            pass


def open_as_another_users_private_file(monkeypatch, lock: Path) -> None:
    """os.open as for a lock file another user left under umask 077 (0600: neither writable nor readable to us);
    the tests may run as root, who may open anything, so open(2)'s refusal is given here."""
    import errno

    real_open = os.open

    def refuse_the_lock(path, flags, *args, **kwargs):
        if Path(path) == lock:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(files.os, "open", refuse_the_lock)


def test_a_stale_lock_file_another_user_left_unreadable_is_named_with_its_owner_and_what_to_do(
    tmp_path, monkeypatch
):
    """A lock file of another user's killed job, left under umask 077 (0600): it can be neither locked nor read,
    so the job stops before it writes anything, naming the lock, its owner, that no process on this host holds it,
    and what to do; not a bare "Permission denied"."""
    import pwd

    target = tmp_path / "model.pt"
    lock = files.lock_path(target)
    lock.write_text("4242 node-that-died\n")
    lock.chmod(0o600)
    owner = pwd.getpwuid(lock.stat().st_uid).pw_name
    open_as_another_users_private_file(monkeypatch, lock)
    expected = (
        f"{target}: its lock file {lock} belongs to user {owner} (uid {lock.stat().st_uid}), mode 0600, which this "
        "user may not open, so this training output cannot be locked. No process on this host holds it: most "
        "likely it is stale, left by a job of theirs that was killed (unless a job of theirs on another node writes "
        f"this training output now). Ask {owner} whether such a job runs; if none does, remove it (rm {lock}) and "
        "run again"
    )
    with pytest.raises(files.LockOfAnotherUser, match=f"^{re.escape(expected)}"):
        with files.output_lock(target, "training output"):
            target.write_text("written")
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.name]  # nothing written, the lock left alone


def test_an_unreadable_lock_file_of_another_user_held_on_this_host_is_refused_naming_the_holder(
    tmp_path, monkeypatch
):
    """The same 0600 lock file of another user, held now by a process on this host (its flock is listed in
    /proc/locks): the output is in use, and the holder's PID is named."""
    import pwd

    target = tmp_path / "model.pt"
    lock = files.lock_path(target)
    lock.write_text("")
    lock.chmod(0o600)
    owner = pwd.getpwuid(lock.stat().st_uid).pw_name
    with open(lock) as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        open_as_another_users_private_file(monkeypatch, lock)
        expected = (
            f"{target}: another process (pid {os.getpid()} on this host, of user {owner}) is writing this output "
            f"now (lock {lock})"
        )
        with pytest.raises(files.OutputInUse, match=f"^{re.escape(expected)}"):
            with files.output_lock(target):
                target.write_text("written")
    assert sorted(p.name for p in tmp_path.iterdir()) == [lock.name]


HOLDER = """
import sys, time
from kdgat import files
from kdgat.logs import failure_logged
with failure_logged("holder"), files.output_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_holder_ended_by_a_signal_leaves_the_output_free(signum, tmp_path):
    """SIGTERM (a walltime, scancel; a wrapper's failure_logged turns it into an exception) removes the lock file;
    SIGKILL (the OOM killer, a node failure) leaves it, stale but free: flock died with the process."""
    target = tmp_path / "model.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(files.OutputInUse, match=f"pid {holder.pid} on host"), files.output_lock(target):
            pass
        holder.send_signal(signum)
        assert holder.wait(timeout=30) == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    finally:
        holder.kill()
        holder.wait()
    assert files.lock_path(target).exists() == (signum == signal.SIGKILL)
    with files.output_lock(target):
        assert files.lock_path(target).read_text().startswith(f"{os.getpid()} ")


def test_load_torch_names_the_file_it_cannot_load_and_runs_no_code_from_it(tmp_path):
    with pytest.raises(FileNotFoundError):
        files.load_torch(tmp_path / "missing.pt", "a graph file")
    truncated = tmp_path / "truncated.pt"
    files.save_torch({"x": torch.ones(3)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:40])
    # Beyond tensors and plain containers a file could make torch.load run code: refused like a broken file.
    pickled = files.save_torch({"x": Fraction(1, 3)}, tmp_path / "pickled.pt")
    for path in (truncated, pickled):
        with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}: not a graph file \("):
            files.load_torch(path, "a graph file")


def test_the_same_figure_gives_the_same_svg_bytes_at_every_run(tmp_path):
    """save_figure said its SVGs were byte-stable across reruns, but matplotlib named every clip path and glyph
    from a random UUID: the same figure of the same numbers gave other bytes each time (a stash entry, a report
    or a diff of two runs' outputs told apart by names alone)."""
    table = pd.DataFrame({"dataset": ["d", "d"], "variant": ["teacher", "student"], "params_total": [30, 3],
                          "f1_fusion": [0.9, 0.5], "latency_ms_fusion": [2.0, 1.0]})  # fmt: skip
    plot_size_f1(table, tmp_path / "first.svg")
    plot_size_f1(table, tmp_path / "second.svg")
    first = (tmp_path / "first.svg").read_bytes()
    assert b"clip-path" in first  # named clip paths are what a random salt told apart
    assert first == (tmp_path / "second.svg").read_bytes()


def test_json_outputs_hold_no_nan_or_infinity_only_null_and_plain_numbers(tmp_path):
    # json.dumps would write NaN and Infinity, which no strict JSON reader (jq, JavaScript, ...) accepts.
    metrics = {"f1": np.float32(0.5), "auc": float("nan"), "loss": float("inf"), 3: [np.float64("-inf"), 1]}
    path = files.write_json(metrics, tmp_path / "metrics.json")

    def refuse(constant):
        raise AssertionError(f"{constant} in {path.read_text()!r}")

    expected = {"f1": 0.5, "auc": None, "loss": None, "3": [None, 1]}
    assert json.loads(path.read_text(), parse_constant=refuse) == expected


# Calls that write a file or move one into place: only kdgat/files.py may make them.
WRITING_ATTRIBUTES = {"savefig", "to_parquet", "to_csv", "write_text", "write_bytes", "replace", "rename",
                      "mkstemp", "mkdtemp", "NamedTemporaryFile", "copyfile", "save", "dump"}  # fmt: skip


def _moves_a_file(call: ast.Call, name: str, owner: str) -> bool:
    """replace()/rename() move files only as os.replace/os.rename(src, dst) or Path.replace/rename(target); not
    str.replace(old, new), dataclasses.replace(obj, ...) or pandas' rename("label")."""
    if name not in {"replace", "rename"}:
        return True
    if owner == "os":
        return True
    if owner == "dataclasses" or len(call.args) != 1 or call.keywords:
        return False
    return not (isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str))


def test_the_file_move_check_tells_moves_from_look_alikes():
    calls = {
        "os.replace(a, b)": True, "path.replace(target)": True, "tmp.rename(final)": True,
        "text.replace('_', '-')": False, "dataclasses.replace(settings, tags={})": False,
        "series.rename('best_f1')": False,
    }  # fmt: skip
    for source, moves in calls.items():
        call = ast.parse(source).body[0].value
        owner = call.func.value.id
        assert _moves_a_file(call, call.func.attr, owner) is moves, source


def test_nothing_but_kdgat_files_writes_output_files():
    offenders = []
    for path in sorted((REPO / "src" / "kdgat").rglob("*.py")):
        if path.name == "files.py" and path.parent.name == "kdgat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            owner = (
                func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            )
            if isinstance(func, ast.Attribute) and name in WRITING_ATTRIBUTES and owner != "files":
                if not _moves_a_file(node, name, owner):
                    continue
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} {name}()")
            if name == "open" and any(
                isinstance(arg, ast.Constant) and isinstance(arg.value, str) and set(arg.value) & set("wax")
                for arg in node.args[1:2]
            ):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} open() for writing")
    assert not offenders, offenders


@pytest.mark.parametrize(("name", "read"), [
    ("scenario_metrics.tsv", lambda path: pd.read_csv(path, sep="\t")),
    ("scenario_metrics.tab", lambda path: pd.read_csv(path, sep="\t")),
    ("scores.PARQUET", pd.read_parquet),
    ("summary.csv", pd.read_csv),
])  # fmt: skip
def test_a_kdgat_table_holds_the_format_its_name_says(tmp_path, name, read):
    """summarize_evaluation's scenarios or csv output (and evaluate_detector's scores) named .tsv held commas,
    and one named .PARQUET held CSV: a reader of that format got one column, or failed."""
    from kdgat.evaluation.plots import read_history
    from kdgat.files import write_table

    table = pd.DataFrame({"epoch": [1, 2], "model": ["gat, jk", "vgae"], "loss": [0.5, 0.25]})
    write_table(table, tmp_path / name)
    pd.testing.assert_frame_equal(read(tmp_path / name), table)
    if not name.lower().endswith(".parquet"):  # a history.csv written under that name is read back as written
        pd.testing.assert_frame_equal(read_history(tmp_path / name), table)


# Each atomic writer, in a process whose files may not grow past FILE_LIMIT bytes (RLIMIT_FSIZE, the kernel's
# EFBIG: what a full disk or a quota gives as ENOSPC/EDQUOT, without filling one), asked to replace a small file
# with a larger one.
FILE_LIMIT = 64 * 1024
WRITERS_PAST_THE_LIMIT = {
    "kdgat": "from kdgat.files import write_text as write\nwrite(big, target)",
    "kdgat table": "from kdgat.files import write_table\nwrite_table(frame, target)",
    "simcal": "from simcal.tables import write_text\nwrite_text(big, target)",
    "simcal parquet": "from simcal.tables import write_parquet\nwrite_parquet(frame, target)",
    "simcal part": "import pyarrow as pa, pyarrow.parquet as pq\nfrom simcal.tables import atomic_write\n"
    "atomic_write(target, lambda handle: pq.write_table(pa.Table.from_pandas(frame), handle))",
    "output_locks": "from output_locks import write_text_atomically\nwrite_text_atomically(target, big)",
}


@pytest.mark.parametrize("writer", list(WRITERS_PAST_THE_LIMIT))
def test_a_write_the_disk_refuses_names_the_output_and_keeps_the_old_file(tmp_path, writer):
    """A full disk met in pyarrow's writer or a plain write() raised ``[Errno 28] No space left on device`` naming
    no file (pyarrow's: ``Error writing bytes to file``), so a sweep's or training's log did not say which output,
    or which disk, was full: the error now names the output, keeps its errno (simcal's service tells a full disk
    by it), and the old file stays with no temporary file beside it."""
    target = tmp_path / "out" / "table.parquet"
    target.parent.mkdir()
    target.write_bytes(b"old")
    script = (
        "import json, resource, signal, sys\nimport numpy as np, pandas as pd\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # a write past the limit fails with EFBIG, not a signal
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({FILE_LIMIT}, {FILE_LIMIT}))\n"
        f"target = {str(target)!r}\nbig = 'x' * {4 * FILE_LIMIT}\n"
        "frame = pd.DataFrame({'y': np.random.default_rng(0).random(" + str(FILE_LIMIT) + ")})\n"
        "try:\n" + "".join(f"    {line}\n" for line in WRITERS_PAST_THE_LIMIT[writer].splitlines()) + ""
        "except OSError as error:\n"
        "    print(json.dumps([type(error).__name__, error.errno, str(error)]))\n"
    )  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / p) for p in ("src", ".tests"))}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stderr
    assert run.stdout, f"{writer}: the write past the limit did not fail"
    kind, number, message = json.loads(run.stdout)
    assert (kind, number) == ("OSError", errno.EFBIG), message
    assert str(target) in message and "File too large" in message, message
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["table.parquet"]


def test_a_file_whose_fsync_fails_is_not_renamed_into_place(tmp_path, monkeypatch):
    """kdgat's atomic_write ignored an error of the temporary file's fsync and renamed it over the old file: where
    a full disk or quota (NFS) or an I/O error is reported only at fsync, a file that never reached the disk
    replaced a good one with no error. Now the write fails naming the output, and the old file stays."""
    target = files.write_text("old", tmp_path / "model.pt")
    fsync = os.fsync

    def full_disk_on_files(descriptor):
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", full_disk_on_files)
    with pytest.raises(OSError, match=re.escape(str(target))) as raised:
        files.write_text("new", target)
    assert raised.value.errno == errno.EDQUOT
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
