"""Fixtures and helpers shared by the Azure and Kubernetes integration tests.

Import the fixtures into a test module with ``from harness import azurite, workspace  # noqa: F401``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from secretscan import assert_no_secrets_in_tree, find_secrets  # noqa: F401
from testkit import REPO, require

HERE = Path(__file__).resolve().parent
AZURITE_DIR = REPO / ".azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
K8S_PROFILE = REPO / "profiles" / "k8s"
# What a source checkout of the catalog needs to run (the k8s jobs receive these as the source archive).
WORKSPACE_PATHS = ["workflow", "wrappers", "src", "config", ".tests/integration/k8s", "pyproject.toml"]
TINY_SNAKEFILE = ".tests/integration/k8s/Snakefile"
TINY_OUTPUTS = ["results/tiny/table.csv", "results/tiny/fit.json", "results/tiny/summary.json"]


@dataclass
class Azurite:
    connection_string: str
    account_name: str

    def env(self) -> dict[str, str]:
        return {
            "AZURITE_CONNECTION_STRING": self.connection_string,
            "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": self.account_name,
        }

    def container(self, name: str):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string).get_container_client(name)

    def blob_names(self, container: str, prefix: str = "") -> set[str]:
        client = self.container(container)
        if not client.exists():
            return set()
        return {blob.name for blob in client.list_blobs(name_starts_with=prefix)}

    def read(self, container: str, name: str) -> bytes:
        return self.container(container).download_blob(name).readall()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def azurite():
    """Azurite on 127.0.0.1 (started here when installed but not running, and stopped again)."""
    port = int(os.environ.get("AZURITE_BLOB_PORT", "10000"))
    running = (AZURITE_DIR / "azurite.pid").exists() and _port_open(port)
    require(running or AZURITE_BIN.exists(), "Azurite", "run scripts/ci-setup-azurite.sh")
    proc = subprocess.run(
        [str(REPO / "scripts" / "azurite-up.sh"), "--env"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/azurite-up.sh failed:\n{proc.stderr}")
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in proc.stdout.splitlines()
        if line.startswith("export ")
    )
    yield Azurite(exported["AZURITE_CONNECTION_STRING"], exported["SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"])
    if not running:
        subprocess.run([str(REPO / "scripts" / "azurite-down.sh")], check=False)


def unique_container(label: str) -> str:
    # Container names: 3-63 lowercase letters, digits and hyphens.
    return f"{label}-{uuid.uuid4().hex[:12]}"


def make_workspace(target: Path) -> Path:
    """A fresh git checkout-like copy of the catalog: Snakemake archives git-tracked files for the jobs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *WORKSPACE_PATHS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for relative in listed:
        source = REPO / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    return target


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "checkout")


def k8s_profile() -> dict:
    return yaml.safe_load((K8S_PROFILE / "config.yaml").read_text())
