"""profiles/k8s: every manifest validates, the Kueue objects fit together, the profile has what the
issue asks for, and the Containerfile installs only what pyproject.toml declares."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import jsonschema
import kubernetes_validate
import pytest
import yaml
from testkit import REPO, venv_bin

K8S = REPO / "profiles" / "k8s"
KUBERNETES_VERSION = "1.33.0"
KUEUE_SCHEMA = json.loads((K8S / "kueue" / "schema" / "kueue-v1beta1.schema.json").read_text())
GPU_RULE_PATTERN = re.compile(
    r"^(kd_gat_train_(vgae|gat|dqn)_(teacher|student_kd|student)|evaluation_evaluate_\w+)$"
)
SCHEDULER_ADDRESS = "tcp://dask-scheduler.snakemake.svc.cluster.local:8786"


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


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in MANIFESTS if doc["kind"] == kind]


def test_there_are_manifests_for_every_part():
    kinds = {doc["kind"] for _, doc in MANIFESTS}
    assert {"ResourceFlavor", "ClusterQueue", "LocalQueue", "Deployment", "Service", "Namespace"} <= kinds


@pytest.mark.parametrize("where, document", MANIFESTS, ids=[where for where, _ in MANIFESTS])
def test_manifest_validates_against_its_schema(where, document):
    if document["apiVersion"].startswith("kueue.x-k8s.io/"):
        jsonschema.validate(document, KUEUE_SCHEMA)
    else:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_kueue_schema_refuses_what_kueue_refuses():
    (queue,) = by_kind("ClusterQueue")
    broken = json.loads(json.dumps(queue))
    broken["spec"]["queueingStrategy"] = "FIFO"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KUEUE_SCHEMA)
    broken = json.loads(json.dumps(queue))
    broken["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["quota"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, KUEUE_SCHEMA)


def test_kueue_objects_fit_together():
    namespace = profile()["kubernetes-namespace"]
    flavors = {doc["metadata"]["name"]: doc for doc in by_kind("ResourceFlavor")}
    assert {"cpu-nodes", "gpu-nodes"} <= set(flavors)
    (queue,) = by_kind("ClusterQueue")
    (local,) = by_kind("LocalQueue")
    # "default" is what makes Kueue label the plugin's unlabelled Jobs (LocalQueueDefaulting).
    assert local["metadata"] == {"name": "default", "namespace": namespace}
    assert local["spec"]["clusterQueue"] == queue["metadata"]["name"]
    assert queue["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
    covered = set()
    for group in queue["spec"]["resourceGroups"]:
        covered |= set(group["coveredResources"])
        for flavor in group["flavors"]:
            assert flavor["name"] in flavors, f"ClusterQueue uses an undefined flavor {flavor['name']}"
            # Kueue: each flavor lists the group's resources in the same order.
            assert [r["name"] for r in flavor["resources"]] == group["coveredResources"]
    # Everything the plugin requests must be covered or the Job is never admitted.
    assert {"cpu", "memory", "ephemeral-storage", "nvidia.com/gpu"} <= covered
    quota = {
        (f["name"], r["name"]): r["nominalQuota"]
        for g in queue["spec"]["resourceGroups"]
        for f in g["flavors"]
        for r in f["resources"]
    }
    assert quota[("gpu-nodes", "nvidia.com/gpu")] > 0 and quota[("cpu-nodes", "nvidia.com/gpu")] == 0
    # GPU pods carry the plugin's toleration nvidia.com/gpu=present:NoSchedule; the flavor's taint matches it.
    taints = flavors["gpu-nodes"]["spec"]["nodeTaints"]
    assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints


def test_namespaced_objects_live_in_the_profile_namespace():
    namespace = profile()["kubernetes-namespace"]
    (ns,) = by_kind("Namespace")
    assert ns["metadata"]["name"] == namespace
    for where, doc in MANIFESTS:
        if doc["kind"] not in {"Namespace", "ResourceFlavor", "ClusterQueue"}:
            assert doc["metadata"].get("namespace") == namespace, where


def test_dask_cluster_matches_the_documented_scheduler_address():
    (service,) = by_kind("Service")
    host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "tcp-comm")
    assert SCHEDULER_ADDRESS == f"tcp://{host}:{port}"
    deployments = {doc["metadata"]["name"]: doc for doc in by_kind("Deployment")}
    workers = deployments["dask-workers"]["spec"]["template"]["spec"]["containers"][0]
    assert SCHEDULER_ADDRESS in workers["args"]
    scheduler = deployments["dask-scheduler"]
    assert service["spec"]["selector"] == scheduler["spec"]["template"]["metadata"]["labels"]
    for deployment in deployments.values():
        image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == profile()["container-image"], "Dask pods must run the workflow's dask/distributed"
    for document in (K8S / "README.md", K8S / "config.yaml"):
        assert SCHEDULER_ADDRESS in document.read_text(), f"{document.name} documents another address"
    assert "DASK_SCHEDULER_ADDRESS" in profile()["envvars"]


def test_profile_has_the_required_settings():
    settings = profile()
    assert settings["executor"] == "kubernetes"
    assert settings["default-storage-provider"] == "azure"
    assert re.fullmatch(r"az://[\w-]+/[\w./-]+", settings["default-storage-prefix"])
    assert {"mem_mb", "disk_mb"} <= set(settings["default-resources"])
    assert settings["retries"] >= 1
    import snakemake

    # The image is pinned to the Snakemake version that plans the jobs.
    assert settings["container-image"].endswith(f"snakemake-{snakemake.__version__}")
    assert not any("AZURITE" in name or "SECRET" in name for name in settings["envvars"])
    assert not any(key.startswith("storage-azure") for key in settings), (
        "use SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"
    )


def test_every_profile_key_is_commented():
    lines = (K8S / "config.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z][\w-]*:", line):
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") or "#" in line, (
                f"config.yaml:{number + 1} {line!r} has no comment"
            )


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


def _requirement_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_containerfile_installs_only_declared_packages_and_copies_the_workflow():
    text = (K8S / "Containerfile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    declared = {_requirement_name(r): r for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        declared.update({_requirement_name(r): r for r in extra})

    assert re.search(r"^FROM python:3\.11[-\w.]*$", text, re.M), "base image must be python 3.11"
    instructions = re.sub(r"\\\n", " ", text)
    installs = [m.group(1) for m in re.finditer(r"pip install ([^&\n]+)", instructions)]
    assert installs, "no pip install in the Containerfile"
    extras_installed = set()
    for command in installs:
        for word in command.split():
            word = word.strip("\"'")
            if word.startswith("-") or word.startswith("$") or word.startswith("http"):
                continue
            if word.startswith("."):
                extras_installed |= set(re.findall(r"[\w-]+", word.partition("[")[2]))
                continue
            name = _requirement_name(word)
            assert name in declared, f"Containerfile installs {word}, which pyproject.toml does not declare"
            if "==" in word:
                assert word.replace(" ", "") in declared[name].replace(" ", ""), f"{word} != {declared[name]}"
    assert {"workflow", "azure"} <= extras_installed
    assert "snakemake==9.27.1" in project["optional-dependencies"]["workflow"]
    assert "torch==2.13.0" in project["dependencies"]

    copied = set()
    for match in re.finditer(r"^COPY (.+) \S+$", text, re.M):
        for source in match.group(1).split():
            copied.add(source.rstrip("/"))
            assert (REPO / source).exists(), f"Containerfile copies {source}, which is not in the repository"
    assert {"pyproject.toml", "src", "workflow", "wrappers", "config"} <= copied
    if project.get("readme"):
        assert project["readme"] in copied, "pip install needs the readme named in pyproject.toml"
