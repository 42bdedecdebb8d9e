"""Azure Blob as default storage, against a real Azurite emulator on 127.0.0.1.

The dedicated tiny pipeline proves: outputs land in the container under the prefix, a second run finds
nothing to do (the plugin's mtime inventory works), a deleted output blob is rebuilt from the intact blobs
upstream of it, and no credential reaches a file the run writes. The real preprocess module runs the same way.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from harness import (  # noqa: E402
    TINY_OUTPUTS,
    TINY_SNAKEFILE,
    assert_no_secrets_in_tree,
    azurite,  # noqa: F401 - fixture
    find_secrets,
    k8s_profile,
    unique_container,
    workspace,  # noqa: F401 - fixture
)
from testkit import REPO, run_snakemake  # noqa: E402

from kdgat.synthetic import generate_dataset  # noqa: E402

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


def test_the_k8s_readmes_upload_puts_a_local_dataset_where_the_jobs_read_it(azurite, tmp_path):  # noqa: F811
    """profiles/k8s/README.md, "A dataset in a local folder": under a default storage prefix a
    datasets.<name>.path folder on the driver's disk is missing input (Snakemake uploads job outputs only) until
    the README's upload-batch puts it under the prefix; then the preprocess module's DAG is built. The upload is
    done as upload-batch does it (each file under --source as <destination-path>/<its path below --source>), into
    Azurite; the container is this test's own, the key prefix the profile's."""
    readme = REPO / "profiles" / "k8s" / "README.md"
    text = " ".join(readme.read_text().split())
    (command,) = re.findall(r"az storage blob upload-batch [^\n`]*", readme.read_text())
    option = dict(re.findall(r"--([a-z-]+) (\S+)", command))
    prefix = k8s_profile()["default-storage-prefix"]
    container_name, key_prefix = prefix.removeprefix("az://").split("/", 1)
    assert (option["destination"], option["destination-path"]) == (
        container_name,
        f"{key_prefix}/{option['source']}",
    ), command
    assert f"datasets.mine.path: {option['source']}" in text
    assert f"`{prefix}/{option['source']}/...`" in text

    tiny = yaml.safe_load((REPO / ".tests/integration/preprocess/config.yaml").read_text())
    generate_dataset(tiny["datasets"]["tiny_hcrl"]["synthetic"], tmp_path / option["source"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**tiny, "datasets": {"mine": {"path": option["source"]}}}))
    container = unique_container("azure-local")
    azurite.container(container).create_container()

    def dry_run():
        return run_snakemake(
            "--snakefile", str(REPO / ".tests/integration/preprocess/Snakefile"), "--configfile", str(config),
            "--dry-run", "--cores", "1", "--default-storage-provider", "azure",
            "--default-storage-prefix", f"az://{container}/{key_prefix}",
            cwd=tmp_path, env=azurite.env(), timeout=300, check=False,
        )  # fmt: skip

    before = dry_run()
    assert before.returncode != 0, before.stdout[-3000:]
    assert "Missing input files for rule preprocess_build_graphs" in before.stdout, before.stdout[-3000:]
    assert (
        f"az://{container}/{key_prefix}/{option['source']}/train_01_attack_free/normal.csv" in before.stdout
    )

    source = tmp_path / option["source"]
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        blob = f"{option['destination-path']}/{path.relative_to(source).as_posix()}"
        azurite.container(container).upload_blob(blob, path.read_bytes())
    after = dry_run()
    assert after.returncode == 0, after.stdout[-3000:]
    assert "preprocess_build_graphs" in after.stdout
