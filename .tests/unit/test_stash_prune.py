"""`kdgat stash prune`: the evaluation stash's entries that no evaluation used for a while are removed, on the
stash's lock, so that a restore under way keeps its entry (docs/evaluation.md, "Cleaning the stash")."""

from __future__ import annotations

import os
import threading
import time

import kdgat.evaluation.stash as stash_module
from kdgat.cli import main
from kdgat.evaluation.stash import ResultStash, stash_key
from kdgat.files import write_json

DAY_S = 86400


def outputs(folder, f1: float) -> dict:
    found = {"metrics.json": folder / "metrics.json", "scores.csv": folder / "scores.csv"}
    write_json({"f1": f1}, found["metrics.json"])
    found["scores.csv"].write_text(f"label,f1\n1,{f1}\n")
    return found


def committed(stash: ResultStash, tmp_path, name: str, days_unused: float):
    """An entry committed with outputs of its own, then left unused for ``days_unused`` days."""
    key = stash_key({}, {"model": name})
    entry = stash.commit(key, outputs(tmp_path / name, len(name) / 10))
    assert entry is not None
    then = time.time() - days_unused * DAY_S
    os.utime(entry, (then, then))
    return key, entry


def test_stash_prune_removes_the_entries_unused_for_longer_than_asked_and_a_restore_counts_as_a_use(
    tmp_path, capsys
):
    """Old entries stayed for good (docs/upgrading.md said to delete them by hand). An entry restored counts as
    used however old its commit; a folder not named as a key is never touched; --dry-run removes nothing."""
    stash = ResultStash(tmp_path / "stash")
    _, old = committed(stash, tmp_path, "old", 40)
    restored_key, restored = committed(stash, tmp_path, "restored", 40)
    _, recent = committed(stash, tmp_path, "recent", 10)
    other = tmp_path / "stash" / "notes of mine"
    other.mkdir()
    os.utime(other, (time.time() - 90 * DAY_S,) * 2)
    target = {name: tmp_path / "out" / name for name in ("metrics.json", "scores.csv")}
    assert stash.restore(restored_key, target)  # an evaluation rerun 40 days after the commit

    assert main(["stash", "prune", "--older-than", "30", "--dry-run", str(stash.root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in listed[:-1]] == [f"would remove {old}"], listed
    assert listed[-1].startswith("would remove 1 entries unused for 30 days or more (")
    assert old.is_dir() and restored.is_dir() and recent.is_dir()

    assert main(["stash", "prune", "--older-than", "30", str(stash.root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith(f"removed {old} (unused for 40.0 days, "), listed
    assert sorted(path.name for path in stash.root.iterdir()) == sorted(
        [restored.name, recent.name, other.name]
    )
    assert main(["stash", "prune", "--older-than", "5", str(stash.root)]) == 0
    assert sorted(path.name for path in stash.root.iterdir()) == sorted([restored.name, other.name])


def test_stash_prune_older_than_0_removes_an_entry_whose_mtime_is_in_the_future(tmp_path, capsys):
    """An entry copied (cp -a, rsync -a) from a stash whose clock ran an hour ahead: its age was negative, so
    --older-than 0, "every entry", left it, and --dry-run named every entry but it. It counts as used now."""
    stash = ResultStash(tmp_path / "stash")
    _, ahead = committed(stash, tmp_path, "ahead", -1 / 24)
    _, old = committed(stash, tmp_path, "old", 40)
    assert main(["stash", "prune", "--older-than", "0", str(stash.root)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0].startswith(f"removed {old} (unused for 40.0 days, "), listed
    assert listed[1].startswith(f"removed {ahead} (unused for 0.0 days, "), listed
    assert listed[2].startswith("removed 2 entries unused for 0 days or more ("), listed
    assert list(stash.root.iterdir()) == []


def test_stash_prune_waits_for_a_restore_under_way_which_restores_the_whole_entry(tmp_path, monkeypatch):
    """A prune while an evaluation copies an old entry back: it waits on the stash's lock until the restore has
    copied and checked every file, then finds the entry used and keeps it."""
    stash = ResultStash(tmp_path / "stash")
    key, entry = committed(stash, tmp_path, "evaluation", 40)
    copying, go_on = threading.Event(), threading.Event()
    copy_file = stash_module.copy_file

    def slow_copy(source, destination):
        copying.set()
        assert go_on.wait(30)
        copy_file(source, destination)

    monkeypatch.setattr(stash_module, "copy_file", slow_copy)
    target = {name: tmp_path / "out" / name for name in ("metrics.json", "scores.csv")}
    restored = []
    restore = threading.Thread(target=lambda: restored.append(stash.restore(key, target)))
    restore.start()
    assert copying.wait(30)
    pruned = []
    prune = threading.Thread(target=lambda: pruned.append(stash.prune(30 * DAY_S)))
    prune.start()
    prune.join(1.0)
    assert prune.is_alive() and entry.is_dir()  # waiting for the restore, the entry whole
    go_on.set()
    restore.join(30)
    prune.join(30)
    assert restored == [True] and pruned == [[]] and entry.is_dir()
    assert (tmp_path / "out" / "scores.csv").read_text() == (
        tmp_path / "evaluation" / "scores.csv"
    ).read_text()
