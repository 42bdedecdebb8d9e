"""testkit.once_across_workers: what lets several xdist workers share one trained pipeline (evaluation/pipeline_run.py)
builds it once, hands every worker the same folder, and passes a failure on instead of building again."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from testkit import once_across_workers


def workers(root: Path, build, count: int = 4) -> list:
    """``count`` concurrent callers, as xdist workers asking at the same moment: each result or raised error."""
    folders = iter(range(count))
    taken = threading.Lock()

    def new_folder() -> Path:
        with taken:
            folder = root / f"built-{next(folders)}"
        folder.mkdir()
        return folder

    def ask():
        try:
            return once_across_workers(root, "shared", new_folder, build)
        except BaseException as error:  # pytest.fail raises a BaseException
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda _: ask(), range(count)))


def test_one_build_and_every_worker_gets_its_folder(tmp_path):
    builds = []

    def build(folder: Path) -> Path:
        builds.append(folder)
        time.sleep(0.3)  # the others arrive while it runs
        (folder / "model.pt").write_text("trained")
        return folder

    results = workers(tmp_path, build)
    assert len(builds) == 1
    assert results == builds * 4 and (builds[0] / "model.pt").read_text() == "trained"


def test_a_failed_build_fails_the_others_with_its_message_without_building_again(tmp_path):
    builds = []

    def build(folder: Path) -> Path:
        builds.append(folder)
        time.sleep(0.3)
        raise AssertionError("snakemake failed (1): rule kd_gat_train_vgae_teacher")

    results = workers(tmp_path, build)
    assert len(builds) == 1
    raised = [error for error in results if isinstance(error, AssertionError)]
    told = [error for error in results if isinstance(error, pytest.fail.Exception)]
    assert len(raised) == 1 and len(told) == 3
    assert all("kd_gat_train_vgae_teacher" in str(error) for error in told)
