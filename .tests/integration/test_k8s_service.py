"""The simulation service's Deployment, run on loopback from its own command, arguments and environment, against
the in-cluster Dask cluster of profiles/k8s/dask (TLS only, also run from its manifests: harness.dask_from_manifests).

Only what a cluster provides changes: 0.0.0.0:8000 becomes 127.0.0.1:<free port>, the scheduler's Service name
becomes its loopback address, the mounted Secrets (API keys, dask-tls) and the volume become local directories, and
the results go to a local directory instead of Azure Blob (tested against Azurite in test_service_workflow.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from servicekit import ServiceProcess, free_port, make_keys, service_available

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from harness import K8S_PROFILE, dask_from_manifests, manifest_container, mounted  # noqa: E402, F401

from simcal.service.client import SimulationClient  # noqa: E402

pytestmark = pytest.mark.integration


def test_the_deployments_command_serves_jobs_on_the_tls_dask_cluster(dask_from_manifests, tmp_path):  # noqa: F811
    service_available()
    container = manifest_container(K8S_PROFILE / "service" / "deployment.yaml", "simcal-service")
    mount_of = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    args = container["args"]
    keys_file = Path(args[args.index("--api-keys-file") + 1])
    keys = make_keys(tmp_path / keys_file.name, "operator")
    port = free_port()
    local = {
        "0.0.0.0": "127.0.0.1",
        str(args[args.index("--port") + 1]): str(port),
        args[args.index("--scheduler") + 1]: dask_from_manifests.address,
        args[args.index("--results") + 1]: str(tmp_path / "results"),
        str(keys_file): str(tmp_path / keys_file.name),
        mount_of["state"]: str(tmp_path / "state"),
    }
    command = [
        mounted(local.get(arg, arg), mount_of["dask-tls"], dask_from_manifests.certificates) for arg in args
    ]
    env = {
        item["name"]: mounted(item["value"], mount_of["dask-tls"], dask_from_manifests.certificates)
        for item in container["env"]
    }
    executable = [str(Path(sys.executable).with_name(container["command"][0])), *container["command"][1:]]
    service = ServiceProcess(
        tmp_path, tmp_path / keys_file.name, env=env, port=port, argv=[*executable, *command]
    )
    try:
        service.start()  # waits for /readyz: the TLS scheduler is reachable and has a worker
        with SimulationClient(service.url, keys["operator"]) as api:
            job = api.submit(
                "simcal.models.sir:simulate", [{"beta": 0.3, "gamma": 0.1, "days": 20}], n_replicates=2
            )
            assert job.wait(timeout=120, poll_interval=0.1)["progress"]["done"] == 2
            assert len(job.to_pandas()) == 2 * 20
        assert (tmp_path / "results" / f"{job.id}.parquet").is_file()
        assert (tmp_path / "state" / "jobs.sqlite").is_file()
        assert "connected to the existing Dask scheduler at tls://127.0.0.1" in service.log_text()
    finally:
        service.stop()
