"""The real calibration module through the k8s profile: Jobs via the API stand-in, data in Azurite, and
simulations on the in-cluster Dask cluster of profiles/k8s/dask (its scheduler and worker commands run on
loopback, TLS-only), reached through DASK_SCHEDULER_ADDRESS as the profile's `scheduler` backend prescribes.
The Job pods connect over TLS with the Secret dask-tls mounted by the executor and the profile's pod
environment; their Azure credential comes from the stand-in's workload identity, not from a Secret.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import ApiStandIn  # noqa: E402
from harness import (  # noqa: E402
    K8S_PROFILE,
    KUEUE_MANIFESTS,
    assert_no_secrets_in_tree,
    azurite,  # noqa: F401 - fixture
    dask_from_manifests,  # noqa: F401 - fixture
    find_secrets,
    k8s_profile,
    pod_path,
    profile_manifests,
    unique_container,
    workspace,  # noqa: F401 - fixture
)
from testkit import run_snakemake  # noqa: E402

TINY_CALIBRATION = {
    "targets": {"can_ids": False, "calibration": True},
    "calibration": {
        "name": "sir_k8s",
        "fixed": {"population": 2000, "initial_infected": 5, "days": 40},
        "calibrate": {
            "initial_points": 6,
            "rounds": 1,
            "proposals_per_round": 4,
            "seed": 3,
            "refine": {"top_k": 2, "replicates": 3},
        },
        "simulation": {"replicates": 2, "batch_size": 4},
        "sweep": {"enabled": False},
        "analyze": {"top_k": 3},
        "threads": 1,
    },
}


@pytest.mark.integration
@pytest.mark.azurite
def test_calibration_module_runs_on_k8s_profile_with_in_cluster_dask(
    tmp_path,
    azurite,  # noqa: F811
    workspace,  # noqa: F811
    dask_from_manifests,  # noqa: F811
):
    profile = k8s_profile()
    (workspace / "config" / "k8s-test.yaml").write_text(yaml.safe_dump(TINY_CALIBRATION))
    api = ApiStandIn(
        pods_root=tmp_path / "pods",
        pod_path=pod_path(),
        identity_env={"AZURITE_CONNECTION_STRING": azurite.connection_string},
    ).start()
    objects = profile_manifests(*KUEUE_MANIFESTS, "serviceaccount.yaml")
    for document in objects:  # the identity's client id, as the README tells the user to set it
        document["metadata"].get("annotations", {}).update({"azure.workload.identity/client-id": "test-id"})
    api.add_objects([*objects, dask_from_manifests.secret()])
    try:
        kubeconfig = api.write_kubeconfig(tmp_path / "kubeconfig.yaml", profile["kubernetes-kueue-namespace"])
        container = unique_container("k8s-cal")
        proc = run_snakemake(
            "--profile",
            str(K8S_PROFILE),
            "--configfile",
            "config/k8s-test.yaml",
            "--default-storage-prefix",
            f"az://{container}/k8s",
            "--latency-wait",
            "5",
            "--seconds-between-status-checks",
            "1",
            cwd=workspace,
            env={
                **azurite.env(),
                "KUBECONFIG": str(kubeconfig),
                "DASK_SCHEDULER_ADDRESS": dask_from_manifests.address,
            },
            timeout=600,
            check=False,
        )
        pod_logs = api.pod_logs()
        assert not api.rejected, api.rejected
    finally:
        api.stop()

    stored = azurite.blob_names(container, "k8s")
    # The Dask work ran on the manifests' scheduler, never on a LocalCluster inside a pod.
    dask_logs = {
        name: azurite.read(container, name).decode()
        for name in stored
        if name.startswith("k8s/logs/calibration/") and name.endswith(".log")
    }
    assert f"connected to the existing Dask scheduler at {dask_from_manifests.address}" in dask_logs.get(
        "k8s/logs/calibration/sir_k8s/calibrate.log", ""
    ), proc.stdout[-5000:] + "\n".join(log[-2500:] for log in pod_logs.values())
    assert not any("started a LocalCluster" in log for log in dask_logs.values())

    secret_values = (
        azurite.connection_string,
        azurite.connection_string.split("AccountKey=")[1].split(";")[0],
    )
    assert not find_secrets(proc.stdout, secret_values)
    assert_no_secrets_in_tree(workspace, secret_values)
    for name, log in pod_logs.items():
        assert not find_secrets(log, secret_values), f"pod log of {name} holds a secret"

    assert proc.returncode == 0, proc.stdout[-5000:]
    assert "k8s/results/calibration/sir_k8s/calibration.html" in stored, sorted(stored)
