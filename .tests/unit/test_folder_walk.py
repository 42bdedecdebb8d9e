"""folder_walk.walk_once, the walk that simcal.progress (sweeps' progress files) and resource_history (benchmark
files) share: links followed, each folder once however it is reached, a folder that cannot be listed handed to the
caller."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from folder_walk import walk_once


def walked(top: Path, errors: list[OSError] | None = None) -> list[tuple[str, list[str]]]:
    """(folder relative to top, its files sorted), in walk order; errors collected in ``errors``."""
    refused = (errors if errors is not None else []).append
    return [(os.path.relpath(folder, top), sorted(files)) for folder, files in walk_once(top, refused)]


def test_a_folder_reached_through_two_links_is_walked_once(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "run.tsv").write_text("")
    (tmp_path / "one").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "two").symlink_to(tmp_path / "data", target_is_directory=True)
    assert [files for _, files in walked(tmp_path)] == [[], ["run.tsv"]]


def test_a_folder_shown_under_another_real_path_is_walked_once(tmp_path, monkeypatch):
    """A bind mount gives a folder a second real path, which os.path.realpath cannot tell from another folder:
    the walk knows a folder by its (st_dev, st_ino). The mount is simulated: os.stat gives the mount point the
    identity of the folder it shows."""
    for name in ("data", "mount"):
        (tmp_path / name / "deeper").mkdir(parents=True)
        (tmp_path / name / "deeper" / "run.tsv").write_text("")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        shown = tmp_path / "data" if os.fspath(path) == str(tmp_path / "mount") else path
        return real_stat(shown, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    folders = [folder for folder, _ in walked(tmp_path)]
    # Whichever of the two the listing gives first is walked, with what is below it; the other is not entered
    assert sorted(folders) in (
        [".", "data", os.path.join("data", "deeper")],
        [".", "mount", os.path.join("mount", "deeper")],
    )


def test_a_link_back_up_the_tree_ends(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path, target_is_directory=True)
    assert walked(tmp_path) == [(".", []), ("a", []), (os.path.join("a", "b"), [])]


def test_a_folder_that_cannot_be_listed_is_handed_to_onerror_and_the_others_are_walked(tmp_path, monkeypatch):
    """os.walk skips such a folder without a word; the caller names it. The refusal is simulated (root lists
    every folder): os.scandir refuses the locked one."""
    for name in ("locked", "open"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.tsv").write_text("")
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(tmp_path / "locked"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list[OSError] = []
    assert sorted(walked(tmp_path, errors)) == [(".", []), ("open", ["run.tsv"])]
    assert [(type(error), error.filename) for error in errors] == [
        (PermissionError, str(tmp_path / "locked"))
    ]


def test_a_folder_gone_since_it_was_listed_is_handed_to_onerror_and_not_entered(tmp_path, monkeypatch):
    (tmp_path / "gone" / "below").mkdir(parents=True)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if os.fspath(path) == str(tmp_path / "gone"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", os.fspath(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    errors: list[OSError] = []
    assert walked(tmp_path, errors) == [(".", [])]
    assert [(type(error), error.filename) for error in errors] == [
        (FileNotFoundError, str(tmp_path / "gone"))
    ]
