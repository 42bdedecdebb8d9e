"""profiles/k8s: every manifest validates, the objects fit together and with the profile, the quotas fit the
node pools, the Dask cluster is TLS-only behind a NetworkPolicy, and the Containerfile matches the profile's
images and installs only what pyproject.toml declares."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from snakemake_executor_plugin_kubernetes_kueue.checks import SUPPORTED_KUEUE
from testkit import REPO, flat_text, role_grants, venv_bin

K8S = REPO / "profiles" / "k8s"
KUBERNETES_VERSION = "1.33.0"
GPU_RULE_PATTERN = re.compile(
    r"^(kd_gat_train_(vgae|gat|dqn)_(teacher|student_kd|student)|evaluation_evaluate_\w+)$"
)
SCHEDULER_ADDRESS = "tls://dask-scheduler.snakemake.svc.cluster.local:8786"


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "config.yaml" and path.parent == K8S:
            continue  # the Snakemake profile, not a manifest
        for index, document in enumerate(yaml.safe_load_all(path.read_text())):
            if document:
                found.append((f"{path.relative_to(REPO)}#{index}", document))
    return found


MANIFESTS = manifests()


def profile() -> dict:
    return yaml.safe_load((K8S / "config.yaml").read_text())


def by_kind(kind: str, folder: str | None = None) -> list[dict]:
    """Manifests of ``kind``, all or those under profiles/k8s/<folder>/ (dask, service, kueue)."""
    where = f"{K8S.relative_to(REPO)}/{folder}/" if folder else ""
    return [doc for path, doc in MANIFESTS if doc["kind"] == kind and path.startswith(where)]


# ---- Kueue ---------------------------------------------------------------------------------------------
# The Kueue API the manifests use and the fields Kueue serves in it: a schema WE wrote, from the facts of
# Kueue's Go types (apis/kueue/v1beta2/{clusterqueue,localqueue,resourceflavor}_types.go): field names,
# enums, required fields and list limits present in every release from 0.15.0 (the first serving v1beta2)
# to 0.19.2. It is not the upstream CRD: no package on PyPI, npm or Debian ships Kueue's CRDs and CI can
# reach nothing else (profiles/k8s/README.md, "What the tests prove"). Unknown fields are refused, as a
# server-side `kubectl apply` with field validation refuses them.
KUEUE_API_VERSION = "kueue.x-k8s.io/v1beta2"
# "Kueue 0.15 to 0.19 (...)": the executor's text, which the docs and manifests quote word for word.
SUPPORTED_KUEUE_RANGE = re.fullmatch(r"Kueue (\d+\.\d+) to (\d+\.\d+) \(.+\)", SUPPORTED_KUEUE).groups()
_NAME = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}
# A Kubernetes resource quantity (a non-negative quota): a number with an optional binary or decimal suffix.
_QUANTITY = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\d+(\.\d+)?([KMGTPE]i|[mkMGTPE])?$"},
    ]
}


def _object(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def _kueue_object(kind: str, spec: dict, namespaced: bool) -> dict:
    metadata = {"type": "object", "required": ["name", "namespace"] if namespaced else ["name"]}
    return _object(
        {
            "apiVersion": {"const": KUEUE_API_VERSION},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
        ("apiVersion", "kind", "metadata", "spec"),
    )


_STOP_POLICY = {"enum": ["None", "Hold", "HoldAndDrain"]}
KUEUE_SCHEMAS = {
    "ResourceFlavor": _kueue_object(
        "ResourceFlavor",
        _object(
            {
                "nodeLabels": {"type": "object", "maxProperties": 8, "additionalProperties": {"type": "string"}},
                "nodeTaints": {
                    "type": "array",
                    "maxItems": 8,
                    "items": _object(
                        {
                            "key": {"type": "string"},
                            "value": {"type": "string"},
                            "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
                            "timeAdded": {"type": "string"},
                        },
                        ("key", "effect"),
                    ),
                },
                "tolerations": {"type": "array", "maxItems": 8, "items": {"type": "object"}},
                "topologyName": _NAME,
            }
        ),
        namespaced=False,
    ),
    "LocalQueue": _kueue_object(
        "LocalQueue",
        _object({"clusterQueue": _NAME, "fairSharing": {"type": "object"}, "stopPolicy": _STOP_POLICY}),
        namespaced=True,
    ),
    "ClusterQueue": _kueue_object(
        "ClusterQueue",
        _object(
            {
                "admissionChecksStrategy": {"type": "object"},
                "admissionScope": {"type": "object"},
                "cohortName": _NAME,
                "fairSharing": {"type": "object"},
                "flavorFungibility": {"type": "object"},
                "namespaceSelector": _object(
                    {"matchLabels": {"type": "object"}, "matchExpressions": {"type": "array"}}
                ),
                "preemption": _object(
                    {
                        "borrowWithinCohort": {"type": "object"},
                        "reclaimWithinCohort": {"enum": ["Never", "LowerPriority", "Any"]},
                        "withinClusterQueue": {"enum": ["Never", "LowerPriority", "LowerOrNewerEqualPriority"]},
                    }
                ),
                "queueingStrategy": {"enum": ["StrictFIFO", "BestEffortFIFO"]},
                "resourceGroups": {
                    "type": "array",
                    "maxItems": 16,
                    "items": _object(
                        {
                            "coveredResources": {
                                "type": "array", "minItems": 1, "maxItems": 64, "items": {"type": "string"},
                            },
                            "flavors": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": 64,
                                "items": _object(
                                    {
                                        "name": _NAME,
                                        "resources": {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": 64,
                                            "items": _object(
                                                {
                                                    "name": {"type": "string"},
                                                    "nominalQuota": _QUANTITY,
                                                    "borrowingLimit": _QUANTITY,
                                                    "lendingLimit": _QUANTITY,
                                                },
                                                ("name", "nominalQuota"),
                                            ),
                                        },
                                    },
                                    ("name", "resources"),
                                ),
                            },
                        },
                        ("coveredResources", "flavors"),
                    ),
                },
                "stopPolicy": _STOP_POLICY,
            }
        ),
        namespaced=False,
    ),
}  # fmt: skip


def test_readme_names_the_supported_kueue_range_and_installs_a_release_in_it():
    readme = (K8S / "README.md").read_text()
    low, high = SUPPORTED_KUEUE_RANGE
    assert f"**{SUPPORTED_KUEUE}.**" in readme
    (installed,) = set(re.findall(r"kueue/releases/download/v(\d+\.\d+)\.\d+/manifests\.yaml", readme))
    assert (
        tuple(map(int, low.split(".")))
        <= tuple(map(int, installed.split(".")))
        <= tuple(map(int, high.split(".")))
    )


def test_every_place_that_names_the_supported_kueue_releases_names_the_same_range():
    # The executor's refusal of a cluster without v1beta2 says SUPPORTED_KUEUE; so do these, word for word.
    quoting = [K8S / "README.md", REPO / "README.md", *sorted((K8S / "kueue").glob("*.yaml"))]
    for path in quoting:
        assert SUPPORTED_KUEUE in path.read_text(), path
    # ... and nothing promises an open-ended range ("Kueue 0.15 or newer") any more.
    for path in [*quoting, *sorted((REPO / "executors").rglob("*.py")), K8S / "config.yaml"]:
        assert not re.search(r"Kueue \d+\.\d+\+|Kueue \d+\.\d+ or (newer|later)", path.read_text()), path


def test_there_are_manifests_for_every_part():
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"ResourceFlavor", "ClusterQueue", "LocalQueue", "Deployment", "Service", "Namespace"} <= kinds
    assert {"ServiceAccount", "Role", "RoleBinding", "NetworkPolicy"} <= kinds
    assert not (K8S / "kueue" / "schema").exists(), "the hand-written v1beta1 schema is gone"


@pytest.mark.parametrize("where, document", MANIFESTS, ids=[where for where, _ in MANIFESTS])
def test_manifest_validates_against_its_schema(where, document):
    if document["apiVersion"].startswith("kueue.x-k8s.io/"):
        assert document["apiVersion"] == KUEUE_API_VERSION, "Kueue 0.20 no longer serves v1beta1"
        jsonschema.validate(document, KUEUE_SCHEMAS[document["kind"]])
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    "change",
    [
        "apiVersion v1beta1",
        "cohort (v1beta1's name)",
        "queueingStrategy FIFO",
        "quota instead of nominalQuota",
        "nominalQuota not a quantity",
        "taint effect NoEffect",
        "LocalQueue without namespace",
    ],
)
def test_the_kueue_check_refuses_what_kueue_refuses(change):
    (queue,) = by_kind("ClusterQueue")
    document = copy.deepcopy(queue)
    if change == "apiVersion v1beta1":
        document["apiVersion"] = "kueue.x-k8s.io/v1beta1"
    elif change == "cohort (v1beta1's name)":
        document["spec"]["cohort"] = "team"
    elif change == "queueingStrategy FIFO":
        document["spec"]["queueingStrategy"] = "FIFO"
    elif change == "quota instead of nominalQuota":
        resource = document["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]
        resource["quota"] = resource.pop("nominalQuota")
    elif change == "nominalQuota not a quantity":
        document["spec"]["resourceGroups"][0]["flavors"][0]["resources"][1]["nominalQuota"] = "lots"
    elif change == "taint effect NoEffect":
        document = copy.deepcopy(by_kind("ResourceFlavor")[-1])
        document["spec"]["nodeTaints"][0]["effect"] = "NoEffect"
    else:
        (local,) = by_kind("LocalQueue")
        document = copy.deepcopy(local)
        del document["metadata"]["namespace"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, KUEUE_SCHEMAS[document["kind"]])


def test_kueue_objects_fit_together_and_with_the_profile():
    settings = profile()
    namespace = settings["kubernetes-kueue-namespace"]
    flavors = {doc["metadata"]["name"]: doc for doc in by_kind("ResourceFlavor")}
    assert {"cpu-nodes", "gpu-nodes"} <= set(flavors)
    (queue,) = by_kind("ClusterQueue")
    (local,) = by_kind("LocalQueue")
    # The executor labels every Job with this queue: no reliance on a LocalQueue named "default".
    assert local["metadata"] == {"name": settings["kubernetes-kueue-queue-name"], "namespace": namespace}
    assert local["metadata"]["name"] != "default"
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]
    assert queue["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
    covered = set()
    for group in queue["spec"]["resourceGroups"]:
        covered |= set(group["coveredResources"])
        for flavor in group["flavors"]:
            assert flavor["name"] in flavors, f"ClusterQueue uses an undefined flavor {flavor['name']}"
            # Kueue: each flavor lists the group's resources in the same order.
            assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
    # Everything the executor requests must be covered or the Job is never admitted.
    assert {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"} <= covered
    # GPU pods carry the executor's toleration nvidia.com/gpu=present:NoSchedule; the flavor's taint matches it.
    taints = flavors["gpu-nodes"]["spec"]["nodeTaints"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints


# Facts behind the quotas, as cited in kueue/clusterqueue.yaml (Microsoft Learn: VM size pages and "Node
# resource reservations in AKS", AKS 1.29+).
VM_SIZES = {  # vCPUs, memory GiB, NVIDIA GPUs
    "Standard_D16ads_v5": (16, 64, 0),
    "Standard_NC40ads_H100_v5": (40, 320, 1),
}
AKS_CPU_RESERVED_M = {1: 60, 2: 100, 4: 140, 8: 180, 16: 260, 32: 420, 64: 740}
MAX_PODS = 110
EVICTION_MI = 100


def aks_allocatable(size: str) -> tuple[float, float, int]:
    """CPU cores and memory GiB a pod can get on one node of ``size``, and its GPUs."""
    cores, memory_gib, gpus = VM_SIZES[size]
    below = max(c for c in AKS_CPU_RESERVED_M if c <= cores)
    reserved_m = AKS_CPU_RESERVED_M[below] + 10 * (cores - below)  # 10m per core above 8 (table slope)
    kube_reserved_gib = min((20 * MAX_PODS + 50) * 1e6 / 2**30, 0.25 * memory_gib)
    return cores - reserved_m / 1000, memory_gib - kube_reserved_gib - EVICTION_MI / 1024, gpus


def _quantity_gib(value) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Gi|Ti|)", str(value)).groups()
    return float(number) * {"Gi": 1, "Ti": 1024, "": 2**-30}[unit]


def _requests(deployment: dict) -> tuple[float, float]:
    spec = deployment["spec"]
    requests = spec["template"]["spec"]["containers"][0]["resources"]["requests"]
    return spec["replicas"] * float(requests["cpu"]), spec["replicas"] * _quantity_gib(requests["memory"])


def test_aks_reservation_formula_matches_the_documented_table():
    # The documented examples: 32 cores reserve 420m, 64 reserve 740m; 8 GB with 30 pods reserves 650 MB.
    assert AKS_CPU_RESERVED_M[16] + 10 * 16 == AKS_CPU_RESERVED_M[32]
    assert AKS_CPU_RESERVED_M[32] + 10 * 32 == AKS_CPU_RESERVED_M[64]
    assert 20 * 30 + 50 == 650


def test_quotas_fit_the_allocatable_resources_of_the_node_pools():
    (queue,) = by_kind("ClusterQueue")
    flavors = {doc["metadata"]["name"]: doc for doc in by_kind("ResourceFlavor")}
    dask_cpu, dask_memory = map(sum, zip(*(_requests(d) for d in by_kind("Deployment")), strict=True))
    for flavor in queue["spec"]["resourceGroups"][0]["flavors"]:
        labels = flavors[flavor["name"]]["spec"]["nodeLabels"]
        nodes = int(flavors[flavor["name"]]["metadata"]["annotations"]["catalog.kd-gat/nodes"])
        cpu, memory, gpus = (nodes * x for x in aks_allocatable(labels["node.kubernetes.io/instance-type"]))
        if gpus == 0:  # the Dask Deployments run on the CPU pool, outside Kueue's count
            cpu, memory = cpu - dask_cpu, memory - dask_memory
        quota = {r["name"]: r["nominalQuota"] for r in flavor["resources"]}
        assert 0.8 * cpu <= float(quota["cpu"]) <= cpu, (flavor["name"], cpu)
        assert 0.8 * memory <= _quantity_gib(quota["memory"]) <= memory, (flavor["name"], memory)
        assert int(quota["nvidia.com/gpu"]) == gpus, flavor["name"]
        assert math.isfinite(_quantity_gib(quota["ephemeral-storage"]))
    retired = "NC6s_v3"
    assert retired not in (K8S / "kueue" / "clusterqueue.yaml").read_text().replace("NC6s_v3, the V100", "")


# ---- namespace, identity, RBAC -----------------------------------------------------------------------------
def test_namespaced_objects_live_in_the_profile_namespace():
    namespace = profile()["kubernetes-kueue-namespace"]
    (ns,) = by_kind("Namespace")
    assert ns["metadata"]["name"] == namespace
    for where, doc in MANIFESTS:
        if doc["kind"] not in {"Namespace", "ResourceFlavor", "ClusterQueue"}:
            assert doc["metadata"].get("namespace") == namespace, where


def test_job_pods_run_as_a_workload_identity_service_account_with_no_secret():
    settings = profile()
    assert settings["kubernetes-kueue-workload-identity"] is True
    accounts = {doc["metadata"]["name"]: doc for doc in by_kind("ServiceAccount")}
    jobs_account = accounts[settings["kubernetes-kueue-service-account-name"]]
    assert "azure.workload.identity/client-id" in jobs_account["metadata"]["annotations"]
    assert not by_kind("Secret"), "no Secret is shipped: certificates and credentials never live here"
    forwarded = " ".join(settings["envvars"]).upper()
    for word in ("SECRET", "KEY", "CONNECTION", "SAS", "TOKEN", "PASSWORD", "AZURITE"):
        assert word not in forwarded, f"the profile forwards a credential-like variable ({word})"
    assert not any(key.startswith("storage-azure") for key in settings)


def test_the_driver_role_allows_exactly_what_the_executor_checks_and_does():
    (role,) = by_kind("Role")
    allowed = role_grants(role)
    needed = {
        ("kueue.x-k8s.io", "localqueues", "list"),
        ("", "serviceaccounts", "get"),
        ("", "secrets", "create"),
        ("", "secrets", "delete"),
        ("batch", "jobs", "create"),
        ("batch", "jobs", "get"),
        ("batch", "jobs", "delete"),
        ("", "pods", "list"),
        ("", "pods", "delete"),
        ("", "pods/log", "get"),
    }
    assert needed <= allowed, needed - allowed
    assert ("", "secrets", "get") not in allowed and ("", "secrets", "list") not in allowed


# ---- Dask: TLS and network policy ---------------------------------------------------------------------------
def _dask_containers() -> dict[str, tuple[dict, dict]]:
    return {
        doc["metadata"]["name"]: (
            doc["spec"]["template"]["spec"],
            doc["spec"]["template"]["spec"]["containers"][0],
        )
        for doc in by_kind("Deployment", "dask")
    }


def test_dask_scheduler_and_workers_speak_tls_only_with_the_mounted_secret():
    settings = profile()
    (volume,) = settings["kubernetes-kueue-secret-volumes"]
    secret_name, mount_path = volume.split(":")
    for name, (pod, container) in _dask_containers().items():
        (mount,) = container["volumeMounts"]
        (pod_volume,) = pod["volumes"]
        assert mount["mountPath"] == mount_path and mount["readOnly"] is True, name
        assert pod_volume == {"name": mount["name"], "secret": {"secretName": secret_name}}, name
        args = container["args"]
        for flag, file in (("--tls-ca-file", "ca.crt"), ("--tls-cert", "tls.crt"), ("--tls-key", "tls.key")):
            assert args[args.index(flag) + 1] == f"{mount_path}/{file}", (name, flag)
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true", name
    scheduler_args = _dask_containers()["dask-scheduler"][1]["args"]
    assert scheduler_args[scheduler_args.index("--protocol") + 1] == "tls"
    assert SCHEDULER_ADDRESS in _dask_containers()["dask-workers"][1]["args"]
    # The Job pods: the same Secret at the same path, and distributed's client settings pointing into it.
    env = dict(item.split("=", 1) for item in settings["kubernetes-kueue-env"])
    assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "true"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] == f"{mount_path}/ca.crt"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT"] == f"{mount_path}/tls.crt"
    assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == f"{mount_path}/tls.key"


def test_dask_cluster_matches_the_documented_scheduler_address():
    (service,) = by_kind("Service", "dask")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "tls-comm")
    assert SCHEDULER_ADDRESS == f"tls://{host}:{port}"
    deployments = {doc["metadata"]["name"]: doc for doc in by_kind("Deployment", "dask")}
    assert (
        service["spec"]["selector"] == deployments["dask-scheduler"]["spec"]["template"]["metadata"]["labels"]
    )
    for document in (K8S / "README.md", K8S / "config.yaml"):
        assert SCHEDULER_ADDRESS in document.read_text(), f"{document.name} documents another address"
    assert "DASK_SCHEDULER_ADDRESS" in profile()["envvars"]


def test_network_policy_admits_only_pods_of_the_namespace_to_the_dask_pods():
    (policy,) = by_kind("NetworkPolicy", "dask")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    for name in _dask_containers():
        labels = next(
            d["spec"]["template"]["metadata"]["labels"]
            for d in by_kind("Deployment", "dask")
            if d["metadata"]["name"] == name
        )
        assert selector.items() <= labels.items(), f"the NetworkPolicy does not select {name}"
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # podSelector {} alone (no namespaceSelector, no ipBlock) means: pods of the policy's own namespace.
    assert policy["spec"]["ingress"] == [{"from": [{"podSelector": {}}]}]
    assert policy["metadata"]["namespace"] == profile()["kubernetes-kueue-namespace"]


def _pod_specs(document: dict) -> list[dict]:
    """The pod specs a manifest runs: a Pod's own, a workload's template, a CronJob's Job template."""
    if document["kind"] == "Pod":
        return [document["spec"]]
    spec = document.get("spec") or {}
    template = (spec.get("jobTemplate") or {}).get("spec", spec).get("template")
    return [template["spec"]] if template else []


# The volume types Pod Security "restricted" admits (kubernetes.io/docs/concepts/security/pod-security-standards).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}  # fmt: skip


def restricted_violations(pod: dict) -> list[str]:
    """What of a pod spec the Pod Security Standards' "restricted" profile refuses (each of its controls), plus a
    container without CPU and memory limits and a pod given a Kubernetes API token it has no use for."""
    found = []
    context = pod.get("securityContext") or {}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            found.append(f"{key}: true")
    found += [f"volume {v['name']} is not of a restricted type" for v in pod.get("volumes") or []
              if not set(v) - {"name"} <= RESTRICTED_VOLUMES]  # fmt: skip
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        own = container.get("securityContext") or {}
        name = container["name"]
        if own.get("privileged"):
            found.append(f"{name}: privileged")
        if own.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = own.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []) or set(capabilities.get("add") or []) - {
            "NET_BIND_SERVICE"
        }:
            found.append(f"{name}: capabilities do not drop ALL (or add more than NET_BIND_SERVICE)")
        if own.get("runAsNonRoot", context.get("runAsNonRoot")) is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if own.get("runAsUser", context.get("runAsUser")) == 0:
            found.append(f"{name}: runAsUser 0")
        seccomp = (own.get("seccompProfile") or context.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f"{name}: seccompProfile is {seccomp}")
        limits = (container.get("resources") or {}).get("limits") or {}
        if not {"cpu", "memory"} <= set(limits):
            found.append(f"{name}: no cpu and memory limits")
    if pod.get("automountServiceAccountToken") is not False:
        found.append("automountServiceAccountToken is not false")
    return found


def test_every_pod_under_profiles_k8s_meets_the_restricted_pod_security_standard():
    """The Dask scheduler and workers ran with the runtime's defaults: no seccomp profile, privilege escalation
    allowed, every default capability and a Kubernetes API token mounted (a namespace labelled
    pod-security.kubernetes.io/enforce: restricted refused them). Every pod of the profile now passes."""
    pods = [(where, pod) for where, document in MANIFESTS for pod in _pod_specs(document)]
    files = {where.split("#")[0].removeprefix("profiles/k8s/") for where, _ in pods}
    assert files >= {"dask/scheduler.yaml", "dask/workers.yaml", "service/deployment.yaml"}
    assert {where: restricted_violations(pod) for where, pod in pods} == {where: [] for where, _ in pods}


def test_the_restricted_check_finds_each_thing_the_standard_refuses():
    (pod,) = _pod_specs(next(document for where, document in MANIFESTS if "dask/workers.yaml" in where))
    assert restricted_violations(pod) == []
    for change, words in [
        (lambda p: p.update(hostNetwork=True), "hostNetwork: true"),
        (lambda p: p["volumes"].append({"name": "node", "hostPath": {"path": "/"}}), "volume node is not"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "worker: privileged"),
        (
            lambda p: p["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"),
            "allowPrivilegeEscalation",
        ),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(add=["SYS_ADMIN"]),
            "capabilities",
        ),
        (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot is not true"),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser 0"),
        (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile is None"),
        (lambda p: p["containers"][0]["resources"].pop("limits"), "no cpu and memory limits"),
        (lambda p: p.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
    ]:
        changed = copy.deepcopy(pod)
        change(changed)
        assert any(words in line for line in restricted_violations(changed)), words


def test_every_pod_under_profiles_k8s_runs_the_profiles_cpu_image_and_the_readme_says_where():
    """Scheduler, workers and the simulation service run the workflow's dask/distributed and simcal: the
    profile's container-image. Install step 6 of the README names every file that carries that image."""
    image = profile()["container-image"]
    readme = flat_text(K8S / "README.md")
    step = readme[readme.index("6. **Images.**") : readme.index("7. **Dask over TLS:**")]
    carriers = set()
    for where, document in MANIFESTS:
        for pod in _pod_specs(document):
            for container in [*pod.get("initContainers", []), *pod["containers"]]:
                assert container["image"] == image, f"{where} {container['name']} runs {container['image']}"
                carriers.add(where.split("#")[0])
    assert len(carriers) >= 3, carriers  # dask/scheduler.yaml, dask/workers.yaml, service/deployment.yaml
    for path in sorted(carriers):
        folder_glob = f"`{Path(path).parent.name}/*.yaml`"
        named = f"`{Path(path).relative_to(K8S.relative_to(REPO))}`"
        assert named in step or folder_glob in step, f"README install step 6 does not name {path}"


# ---- the profile --------------------------------------------------------------------------------------------
def test_profile_has_the_required_settings():
    settings = profile()
    assert settings["executor"] == "kubernetes-kueue"
    assert settings["default-storage-provider"] == "azure"
    assert re.fullmatch(r"az://[\w-]+/[\w./-]+", settings["default-storage-prefix"])
    assert {"mem_mb", "disk_mb"} <= set(settings["default-resources"])
    assert settings["retries"] >= 1
    # The README states the value (section "Run", **Failures.**).
    readme = flat_text(K8S / "README.md")
    stated = {int(n) for n in re.findall(r"\(`retries: (\d+)`\)", readme)}
    assert stated == {settings["retries"]}, f"README says retries {stated}, config.yaml {settings['retries']}"
    assert not [
        key for key in settings if key.startswith("kubernetes-") and not key.startswith("kubernetes-kueue-")
    ]


def test_every_profile_key_is_commented():
    lines = (K8S / "config.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z][\w-]*:", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") or "#" in line, (
                f"config.yaml:{number + 1} {line!r} has no comment"
            )


NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "six": 6, "nine": 9, "ten": 10, "twelve": 12}
TRAINING_RULE = re.compile(r"^kd_gat_train_(vgae|gat|dqn)_(teacher|student_kd|student)$")


def test_the_readme_counts_the_gpu_rules_of_the_profile():
    resources = profile()["set-resources"]
    readme = flat_text(K8S / "README.md")
    training = re.search(r"The (\w+) training rules \(`kd_gat_train_\{([\w,]+)\}_\{([\w,]+)\}`\)", readme)
    assert training, "README 'GPUs.' no longer names the training rules"
    count, stages, variants = NUMBER_WORDS[training.group(1)], training.group(2), training.group(3)
    named = {f"kd_gat_train_{s}_{v}" for s in stages.split(",") for v in variants.split(",")}
    assert named == {rule for rule in resources if TRAINING_RULE.match(rule)}
    assert count == len(named) == 9
    evaluations = re.search(r"the (\w+) `evaluation_evaluate_\*` rules", readme)
    assert NUMBER_WORDS[evaluations.group(1)] == len(
        [rule for rule in resources if rule.startswith("evaluation_evaluate_")]
    )


def test_the_evaluation_group_size_stated_matches_the_config():
    """config.yaml and the README: a dataset's group holds one evaluation per variant and seed, plus the
    baselines and the summary; the Job still asks for one GPU."""
    kd_gat = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["kd_gat"]
    variants, seeds = len(kd_gat["variants"]), len(kd_gat["seeds"])
    module = (REPO / "workflow" / "modules" / "evaluation" / "Snakefile").read_text()
    assert len(re.findall(r'group:\s+"evaluation"', module)) == 3  # evaluations, baselines, summary
    assert re.search(r'rule baselines:(?:(?!\nrule ).)*group:\s+"evaluation"', module, re.S)
    for document in (K8S / "config.yaml", K8S / "README.md"):
        text = re.sub(r"[\s#]+", " ", document.read_text())
        stated = re.search(r"one (?:job )?per variant and seed: (\d+) x (\d+) = (\d+)", text)
        assert stated, f"{document.name} no longer states the group's evaluations"
        assert tuple(map(int, stated.groups())) == (variants, seeds, variants * seeds), document.name
        assert "evaluation_baselines" in text, f"{document.name} leaves the baselines out of the group"
        assert re.search(rf"1 GPU, not {variants * seeds}\b|one GPU, not {variants * seeds}\b", text)
    assert profile()["resources"] == {"gpu": 1} and profile()["set-resource-scopes"] == {"gpu": "local"}


def test_every_member_of_the_evaluation_group_names_the_gpu_manufacturer_of_its_evaluations():
    """Snakemake refuses a group job whose jobs of one layer differ in a text resource, a missing one counting as 0
    ("Resource gpu_manufacturer is a string but not all jobs in group require the same value"): the baselines run
    in the evaluations' layer, the summary after them, so both name the evaluations' manufacturer (no GPU)."""
    resources = profile()["set-resources"]
    module = (REPO / "workflow" / "modules" / "evaluation" / "Snakefile").read_text()
    others = {"baselines": "evaluation_baselines", "summarize_dataset": "evaluation_summarize_dataset"}
    for rule in others:
        assert re.search(rf'rule {rule}:(?:(?!\nrule ).)*group:\s+"evaluation"', module, re.S), rule
    evaluations = [rule for rule in resources if rule.startswith("evaluation_evaluate_")]
    assert evaluations and {resources[rule]["gpu_manufacturer"] for rule in evaluations} == {"nvidia"}
    for rule in others.values():
        assert resources.get(rule) == {"gpu_manufacturer": "nvidia"}, rule


def test_gpu_rules_request_a_limited_nvidia_gpu():
    resources = profile()["set-resources"]
    for rule, settings in resources.items():
        if GPU_RULE_PATTERN.match(rule):
            assert settings == {"gpu": 1, "gpu_manufacturer": "nvidia", "scale": 0}, rule
    listed = subprocess.run(
        [venv_bin("snakemake"), "--list-rules"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    rules = set(listed.stdout.split())
    gpu_rules = {rule for rule in rules if GPU_RULE_PATTERN.match(rule)}
    missing = gpu_rules - set(resources)
    assert not missing, (
        f"GPU rules of the workflow without GPU settings in profiles/k8s/config.yaml: {missing}"
    )
    if any(rule.startswith("kd_gat_train_") for rule in rules):
        unknown = {rule for rule in resources if GPU_RULE_PATTERN.match(rule)} - rules
        assert not unknown, f"profiles/k8s/config.yaml sets resources of rules that do not exist: {unknown}"


# ---- the Containerfile ----------------------------------------------------------------------------------------
def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


CONTAINERFILE = (K8S / "Containerfile").read_text()
# The torch variants the Containerfile builds: three of torch 2.13.0's wheel indexes. torch's own table
# (torch.cuda.PYTORCH_RELEASES_CODE_CC) lists CUDA 12.6, 12.9, 13.0 and 13.2; cu129 and cu132 are not built.
TORCH_VARIANTS = {"cpu", "cu126", "cu130"}


def test_only_torchs_cuda_12_6_build_has_volta_kernels_and_there_is_no_12_8():
    """The READMEs' "cu126 only" for V100 and "no cu128 build", against the installed torch's own table."""
    import torch

    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (torch_pin,) = [r for r in pyproject["project"]["dependencies"] if r.startswith("torch==")]
    assert torch.__version__.split("+")[0] == torch_pin.removeprefix("torch=="), "the table of another torch"
    table = torch.cuda.PYTORCH_RELEASES_CODE_CC
    volta = 70  # compute capability 7.0, sm_70
    with_volta = {
        (cuda, arch) for cuda, archs in table.items() for arch, ccs in archs.items() if volta in ccs
    }
    assert with_volta == {("12.6", "x86_64")}, with_volta
    assert "12.8" not in table
    assert {f"cu{cuda.replace('.', '')}" for cuda in table} >= TORCH_VARIANTS - {"cpu"}
    readme = flat_text(K8S / "README.md")
    assert "`cu126`, the only torch 2.13 build that still runs on Volta" in readme
    assert "There is no cu128 build of torch 2.13" in readme
    listed = re.search(
        r"`torch\.cuda\.PYTORCH_RELEASES_CODE_CC`, lists CUDA ([\d., and]+); only ([\d.]+) has", readme
    )
    assert listed and re.findall(r"\d+\.\d+", listed.group(1)) == sorted(
        table, key=lambda v: tuple(map(int, v.split(".")))
    )
    assert listed.group(2) == "12.6"
    slurm = flat_text(REPO / "profiles" / "slurm" / "README.md")
    assert "| V100 (7.0, `sm_70`), every GPU node | **cu126 only** |" in slurm


def test_containerfile_installs_only_declared_packages_and_copies_the_workflow():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    declared = {_requirement_name(r): r for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared.update({_requirement_name(r): r for r in extra})

    assert re.search(r"^FROM python:3\.11[-\w.]*$", CONTAINERFILE, re.M), "base image must be python 3.11"
    instructions = re.sub(r"\\\n", " ", CONTAINERFILE)
    installs = [m.group(1) for m in re.finditer(r"pip install ([^&\n]+)", instructions)]
    assert installs, "no pip install in the Containerfile"
    extras_installed, constraint_files = set(), []
    for command in installs:
        words = [word.strip("\"'") for word in command.split()]
        for before, word in zip([None, *words], words, strict=False):
            if before == "-c":
                constraint_files.append(word)
                continue
            if word.startswith("-") or word.startswith("$") or word.startswith("http"):
                continue
            if word.startswith("."):
                extras_installed |= set(re.findall(r"[\w-]+", word.partition("[")[2]))
                continue
            name = _requirement_name(word)
            assert name in declared, f"Containerfile installs {word}, which pyproject.toml does not declare"
            if "==" in word:
                assert word.replace(" ", "") in declared[name].replace(" ", ""), f"{word} != {declared[name]}"
    # azure: pods find the storage plugin in the image (no pip at start); k8s: a driver in the cluster.
    assert {"workflow", "azure", "k8s"} <= extras_installed
    # The project's packages at the versions CI tested (the lock make venv installs too).
    assert constraint_files == ["constraints.txt"], constraint_files
    assert "snakemake==9.27.1" in project["optional-dependencies"]["workflow"]

    copied = set()
    for match in re.finditer(r"^COPY (.+) \S+$", CONTAINERFILE, re.M):
        for source in match.group(1).split():
            copied.add(source.rstrip("/"))
            assert (REPO / source).exists(), f"Containerfile copies {source}, which is not in the repository"
    assert set("pyproject.toml constraints.txt src executors workflow wrappers config".split()) <= copied
    if project.get("readme"):
        assert project["readme"] in copied, "pip install needs the readme named in pyproject.toml"


def test_containerfile_variants_match_the_profiles_images():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (torch_pin,) = [r for r in pyproject["project"]["dependencies"] if r.startswith("torch==")]
    default = re.search(r"^ARG TORCH_VARIANT=(\S+)$", CONTAINERFILE, re.M).group(1)
    index = re.search(
        r'--index-url "https://download\.pytorch\.org/whl/\$\{TORCH_VARIANT\}" (\S+)', CONTAINERFILE
    )
    assert index and index.group(1) == torch_pin, "torch comes from the variant's index, at the project's pin"
    documented = set(
        re.findall(r"--build-arg TORCH_VARIANT=(\w+)\s+-t \S+:snakemake-[\d.]+-(\w+) ", CONTAINERFILE)
    )
    assert {a for a, b in documented if a == b} == TORCH_VARIANTS, "each variant's build command tags it"
    import snakemake

    settings = profile()
    tag = f"snakemake-{snakemake.__version__}"
    assert settings["container-image"].endswith(f":{tag}-cpu"), "CPU Jobs run the CPU build"
    assert settings["kubernetes-kueue-gpu-container-image"].endswith(f":{tag}-{default}"), (
        "GPU Jobs run the Containerfile's default CUDA build"
    )
    assert default in TORCH_VARIANTS - {"cpu"} and default != "cu128"
    repository = settings["container-image"].rsplit(":", 1)[0]
    assert settings["kubernetes-kueue-gpu-container-image"].rsplit(":", 1)[0] == repository


def test_containerfile_runs_as_a_numeric_non_root_user():
    users = re.findall(r"^USER (\S+)$", CONTAINERFILE, re.M)
    assert users and users[-1].isdigit() and int(users[-1]) != 0
    assert f"--uid {users[-1]}" in CONTAINERFILE
    uid = int(users[-1])
    readme = flat_text(K8S / "README.md")
    assert re.findall(r"non-root user (\d+)", readme) == [str(uid)], "README names another user"
    # A pod that sets its user runs as the image's (who owns the image's home directory).
    for where, document in MANIFESTS:
        for pod in _pod_specs(document):
            assert (pod.get("securityContext") or {}).get("runAsUser", uid) == uid, where
