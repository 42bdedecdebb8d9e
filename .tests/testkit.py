"""Helpers shared by the tests (importable as ``testkit`` because pytest puts ``.tests/`` on sys.path).

Components that CI installs (SLURM, Azurite, ...) are *required* when ``CI`` is set: a test that
cannot find them fails there instead of silently skipping. On a developer machine it skips with a
message saying which script brings the component up.
"""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(available: bool, what: str, how: str) -> None:
    """Skip locally, fail in CI, when a component the test needs is missing."""
    if available:
        return
    message = f"{what} is not available ({how})"
    if IN_CI:
        pytest.fail(f"CI must provide it: {message}")
    pytest.skip(message)


def import_required(module: str, how: str):
    """Import a module a test needs: skip locally, fail in CI, when it is missing (see ``require``)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        if IN_CI:
            raise
        pytest.skip(f"{module} is not available ({how}): {error}", allow_module_level=True)


def venv_bin(name: str) -> str:
    """A console script from the running interpreter's environment (the project venv)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else (shutil.which(name) or name)


def run_snakemake(
    *args: str,
    cwd: Path | str = REPO,
    env: dict | None = None,
    timeout: int = 1200,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run the real ``snakemake`` CLI; stdout and stderr are merged into ``.stdout``."""
    proc = subprocess.run(
        [venv_bin("snakemake"), *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-8000:]}")
    return proc
