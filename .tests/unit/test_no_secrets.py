"""No credential is ever committed into profiles, scripts, docs or configs.

The patterns (account keys, connection strings, SAS tokens, bearer tokens, JWTs, client secrets,
kubeconfig tokens, private keys) are shared with the Azure/Kubernetes integration tests, which also scan
every file and log their runs write.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from testkit import REPO

sys.path.insert(0, str(REPO / ".tests" / "integration" / "k8s"))
from secretscan import find_secrets  # noqa: E402

SCANNED = [
    "profiles",
    "executors",
    "scripts",
    "docs",
    "config",
    "README.md",
    "CONTRIBUTING.md",
    ".tests/integration/k8s",
]


def scanned_files() -> list[Path]:
    files = []
    for entry in SCANNED:
        path = REPO / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in sorted(path.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    return files


def test_the_scan_covers_the_profiles_and_scripts():
    names = {p.relative_to(REPO).as_posix() for p in scanned_files()}
    assert "profiles/k8s/config.yaml" in names and "scripts/azurite-up.sh" in names
    assert "profiles/k8s/serviceaccount.yaml" in names and "profiles/k8s/dask/scheduler.yaml" in names
    assert any(name.startswith("executors/") for name in names)


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_file_holds_no_secret(path):
    found = find_secrets(path.read_text(errors="ignore"))
    assert not found, f"{path.relative_to(REPO)} contains: {', '.join(found)}"


# Samples are assembled at run time so that this file itself holds none of them.
KEY = "Q" * 43 + "w=="
SAMPLES = {
    "account key": "DefaultEndpointsProtocol=https;AccountName=acct;Account" + "Key=" + KEY,
    "SAS URL": "https://acct.blob.core.windows.net/c/b?sv=2024-05-04&se=2030-01-01&s"
    + "ig="
    + "a1B2c3D4e5F6g7H8i9J0k%3D",
    "bearer header": "Authorization: Bear" + "er " + "x" * 40,
    "JWT": "ey" + "J" + "h" * 20 + "." + "b" * 20 + "." + "c" * 20,
    "client secret": "AZURE_CLIENT_" + "SECRET=" + "abc~DEF.ghi_JKL-mno123",
    "kubeconfig token": "users:\n- name: u\n  user:\n    to" + "ken: " + "k" * 40,
}


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_the_scan_finds_each_kind_of_secret(kind):
    assert find_secrets(SAMPLES[kind]), f"the scan misses a {kind}"


def test_the_scan_leaves_ordinary_text_alone():
    text = (REPO / "profiles" / "k8s" / "README.md").read_text()
    assert "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME" in text and find_secrets(text) == []
    assert find_secrets("the Bearer of good news; sig=short") == []
