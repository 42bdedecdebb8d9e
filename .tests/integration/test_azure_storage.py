"""Azure Blob as default storage, against a real Azurite emulator on 127.0.0.1.

The dedicated tiny pipeline proves: outputs land in the container under the prefix, a second run finds
nothing to do (the plugin's mtime inventory works), a deleted output blob is rebuilt from the intact blobs
upstream of it, and no credential reaches a file the run writes. The real preprocess module runs the same way.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from harness import (  # noqa: E402
    TINY_OUTPUTS,
    TINY_SNAKEFILE,
    assert_no_secrets_in_tree,
    azurite,  # noqa: F401 - fixture
    find_secrets,
    unique_container,
    workspace,  # noqa: F401 - fixture
)
from testkit import run_snakemake  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.azurite]


def test_tiny_pipeline_round_trip_through_azurite(azurite, workspace):  # noqa: F811
    container = unique_container("azure")
    prefix = "run"

    def snakemake(*extra: str):
        return run_snakemake(
            "--snakefile",
            TINY_SNAKEFILE,
            "--cores",
            "2",
            "--default-storage-provider",
            "azure",
            "--default-storage-prefix",
            f"az://{container}/{prefix}",
            *extra,
            cwd=workspace,
            env=azurite.env(),
            timeout=300,
        )

    first = snakemake()
    stored = azurite.blob_names(container, prefix)
    for output in TINY_OUTPUTS:
        assert f"{prefix}/{output}" in stored, (
            f"{output} missing from az://{container}; have {sorted(stored)}"
        )
    summary = json.loads(azurite.read(container, f"{prefix}/results/tiny/summary.json"))
    assert summary["rows"] == 10 and summary["sum_y"] == sum(x * x for x in range(10))
    # Outputs live in the container, not in the checkout.
    assert not (workspace / "results" / "tiny" / "summary.json").exists()

    second = snakemake()
    assert "Nothing to be done" in second.stdout, second.stdout[-3000:]

    # A missing final output is rebuilt; its intact inputs in the container are reused, not recomputed.
    azurite.container(container).delete_blob(f"{prefix}/results/tiny/summary.json")
    third = snakemake()
    assert "rule summarize" in third.stdout, third.stdout[-3000:]
    assert "rule make_table" not in third.stdout and "rule kd_gat_train_vgae_teacher" not in third.stdout
    assert json.loads(azurite.read(container, f"{prefix}/results/tiny/summary.json")) == summary

    secret_values = (
        azurite.connection_string,
        azurite.connection_string.split("AccountKey=")[1].split(";")[0],
    )
    for run in (first, second, third):
        assert not find_secrets(run.stdout, secret_values)
    assert_no_secrets_in_tree(workspace, secret_values)


PREPROCESS_SNAKEFILE = ".tests/integration/k8s/preprocess/Snakefile"
PREPROCESS_OUTPUTS = ["train.pt", "val.pt", "test.pt", "vocab.json", "metadata.json"]


def test_preprocess_module_round_trip_through_azurite(azurite, workspace):  # noqa: F811
    """The real preprocess module with Azure Blob as default storage (what the k8s profile does)."""
    container = unique_container("azure-pp")

    def snakemake():
        return run_snakemake(
            "--snakefile",
            PREPROCESS_SNAKEFILE,
            "--cores",
            "2",
            "--default-storage-provider",
            "azure",
            "--default-storage-prefix",
            f"az://{container}/run",
            cwd=workspace,
            env=azurite.env(),
            timeout=300,
            check=False,
        )

    first = snakemake()
    stored = azurite.blob_names(container, "run")
    assert first.returncode == 0, first.stdout[-5000:]
    for name in PREPROCESS_OUTPUTS:
        assert f"run/results/preprocess/tiny_azure/{name}" in stored, sorted(stored)
    assert "Nothing to be done" in snakemake().stdout
