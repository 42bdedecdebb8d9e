"""profiles/k8s/service: the simulation service's Deployment, Service, NetworkPolicy and PersistentVolumeClaim fit
together, with the `simcal serve` command line, and with the Dask cluster and profile they sit next to. (Each
document is also validated against the Kubernetes schema by test_k8s_manifests.py.)"""

from __future__ import annotations

import re

import yaml
from test_k8s_manifests import K8S, SCHEDULER_ADDRESS, by_kind, profile

from simcal.cli import parser

SERVICE_URL = "http://simcal-service.snakemake.svc.cluster.local:8000"


def deployment() -> dict:
    (found,) = by_kind("Deployment", "service")
    return found


def container() -> dict:
    (found,) = deployment()["spec"]["template"]["spec"]["containers"]
    return found


def serve_arguments():
    """The container's command line as `simcal` itself parses it: a misspelt flag fails here."""
    assert container()["command"] == ["simcal", "serve"]
    return parser().parse_args(["serve", *container()["args"]])


def mounts() -> dict[str, dict]:
    return {mount["name"]: mount for mount in container()["volumeMounts"]}


def volumes() -> dict[str, dict]:
    return {volume["name"]: volume for volume in deployment()["spec"]["template"]["spec"]["volumes"]}


def test_there_is_a_deployment_service_network_policy_and_claim_and_no_secret():
    kinds = sorted(doc["kind"] for path, doc in _service_documents())
    assert kinds == ["Deployment", "NetworkPolicy", "PersistentVolumeClaim", "Service"]
    assert not by_kind("Secret"), "the API keys' Secret is made by the operator (README), never shipped"


def _service_documents():
    for path in sorted((K8S / "service").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def test_service_runs_simcal_serve_on_the_in_cluster_scheduler_with_its_volumes():
    args = serve_arguments()
    assert args.host == "0.0.0.0" and args.scheduler == SCHEDULER_ADDRESS
    assert args.allow_models == "simcal.models" and args.results.startswith("az://")
    keys_mount = mounts()["api-keys"]
    assert keys_mount["readOnly"] is True
    (item,) = volumes()["api-keys"]["secret"]["items"]
    assert args.api_keys_file == f"{keys_mount['mountPath']}/{item['path']}"
    state = mounts()["state"]
    assert args.state_dir == state["mountPath"] and not state.get("readOnly", False)
    (claim,) = by_kind("PersistentVolumeClaim", "service")
    assert volumes()["state"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    # One SQLite registry on a ReadWriteOnce volume: one pod at a time, never two during a rollout.
    assert deployment()["spec"]["replicas"] == 1 and deployment()["spec"]["strategy"] == {"type": "Recreate"}


def test_dask_client_uses_tls_from_the_mounted_secret_like_the_workflows_jobs():
    settings = profile()
    (volume,) = settings["kubernetes-kueue-secret-volumes"]
    secret_name, mount_path = volume.split(":")
    assert mounts()["dask-tls"] == {"name": "dask-tls", "mountPath": mount_path, "readOnly": True}
    assert volumes()["dask-tls"]["secret"] == {"secretName": secret_name}
    env = {item["name"]: item["value"] for item in container()["env"]}
    for line in settings["kubernetes-kueue-env"]:
        name, value = line.split("=", 1)
        if name.startswith("DASK_"):
            assert env[name] == value, name
    assert container()["image"] == settings["container-image"], (
        "the service runs the Dask pods' dask/distributed"
    )
    assert not any(
        re.search(r"KEY|SECRET|CONNECTION|TOKEN|PASSWORD", name) for name in env if "TLS" not in name
    )


def test_probes_resources_and_a_non_root_locked_down_container():
    port = serve_arguments().port
    (container_port,) = container()["ports"]
    assert container_port == {"name": "http", "containerPort": port}
    assert container()["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container()["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    resources = container()["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    pod = deployment()["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["automountServiceAccountToken"] is False  # it never talks to the Kubernetes API
    security = container()["securityContext"]
    assert security == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert "/tmp" in {mount["mountPath"] for mount in container()["volumeMounts"]}  # the only scratch space
    # The image installs the service (the Containerfile's pip install names the extra), at the locked versions.
    assert re.search(
        r'pip install -c constraints\.txt "\.\[[^\]]*\bservice\b[^\]]*\]"',
        (K8S / "Containerfile").read_text(),
    )


def test_service_and_network_policy_select_the_pods_and_open_only_the_http_port():
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"
    accounts = {doc["metadata"]["name"] for doc in by_kind("ServiceAccount")}
    assert deployment()["spec"]["template"]["spec"]["serviceAccountName"] in accounts
    (service,) = by_kind("Service", "service")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    url = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port['port']}"
    assert url == SERVICE_URL
    for document in (K8S / "README.md", K8S / "service" / "service.yaml"):
        assert SERVICE_URL in document.read_text(), f"{document.name} documents another address"
    (policy,) = by_kind("NetworkPolicy", "service")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": serve_arguments().port}]}
    ]
