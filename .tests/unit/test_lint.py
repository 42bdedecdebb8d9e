"""The checks the Snakemake workflow catalog and our CI apply: ruff, snakefmt (pinned), snakemake --lint."""

from __future__ import annotations

import subprocess

from testkit import REPO, run_snakemake, venv_bin

SNAKEFILE_DIRS = ["workflow", "wrappers", ".tests"]


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300
    )


def test_ruff_check_is_clean() -> None:
    proc = _run(venv_bin("ruff"), "check", ".")
    assert proc.returncode == 0, proc.stdout


def test_ruff_format_is_clean() -> None:
    proc = _run(venv_bin("ruff"), "format", "--check", "src", "wrappers", "bench", "scripts", ".tests")
    assert proc.returncode == 0, proc.stdout


def test_snakefmt_is_clean() -> None:
    proc = _run(venv_bin("snakefmt"), "--check", *SNAKEFILE_DIRS)
    assert proc.returncode == 0, proc.stdout


def test_snakemake_lint_from_the_repository_root_with_no_arguments_is_clean() -> None:
    # Exactly what the workflow catalog runs: `snakemake --lint` in the root, default config.
    proc = run_snakemake("--lint", check=False)
    assert proc.returncode == 0, proc.stdout
    assert "Congratulations, your workflow is in a good condition!" in proc.stdout, proc.stdout
