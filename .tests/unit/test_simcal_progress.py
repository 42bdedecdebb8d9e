"""Reading progress files: the state shown for sweeps whose process is gone or that stopped reporting."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from simcal.cli import main
from simcal.progress import Progress, find_progress_files, format_table, read_progress


def finished_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


def test_running_sweeps_whose_process_is_gone_or_silent_are_marked(tmp_path, capsys):
    progress = Progress(tmp_path / "a.parquet", "local", every_s=5)
    progress.plan(10, 4, 1)
    progress.advance(2, failed=1)
    progress.report(force=True)
    info = read_progress(tmp_path / "a.parquet.progress.json")
    assert (info["state"], info["done"], info["total"], info["failed"]) == ("running", 6, 10, 2)

    gone = json.loads((tmp_path / "a.parquet.progress.json").read_text()) | {"pid": finished_pid()}
    (tmp_path / "b.parquet.progress.json").write_text(json.dumps(gone))
    silent = gone | {"host": socket.gethostname() + "-elsewhere", "updated_epoch": time.time() - 3600}
    (tmp_path / "c.parquet.progress.json").write_text(json.dumps(silent))
    states = [read_progress(p)["state"] for p in find_progress_files([tmp_path])]
    assert states == ["running", "stopped", "stale"]

    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and [line.split()[0] for line in lines[1:]] == states
    assert format_table([]).startswith("STATE")
    (tmp_path / "d.parquet.progress.json").write_text('{"state": "running", "done": 1')  # cut short
    assert main(["status", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert (
        len(captured.out.splitlines()) == 4 and "cannot read" in captured.err and "d.parquet" in captured.err
    )
    with pytest.raises(FileNotFoundError, match="no sweep progress here"):
        find_progress_files([tmp_path / "nothing.parquet"])
