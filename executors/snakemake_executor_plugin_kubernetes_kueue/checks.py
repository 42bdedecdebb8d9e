"""Checks of the executor's settings that need no cluster: names and formats, each failure naming the setting.

Pure Python (no kubernetes client), so the rules are unit-tested on their own.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# apimachinery's pkg/util/validation (IsDNS1123Label, IsDNS1123Subdomain, IsEnvVarName). Every pattern here is
# matched against the whole value (fullmatch: "$" would let a trailing newline through).
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_TEXT = "lowercase letters, digits and '-', starting and ending with a letter or digit"
_SUBDOMAIN_TEXT = (
    "lowercase letters, digits, '-' and '.', each part between dots starting and ending alphanumeric"
)
# The rule of each kind of name check_name is given, as Kubernetes and Kueue enforce it: (pattern, longest, words).
# A namespace is a DNS-1123 label (ValidateNamespaceName); a ServiceAccount a DNS-1123 subdomain
# (ValidateServiceAccountName); a LocalQueue, a custom resource, a DNS-1123 subdomain, which Kueue's Job webhook
# also requires of the label kueue.x-k8s.io/queue-name (jobframework.ValidateQueueName), whose value the API
# server caps at 63 characters as every label value.
NAME_RULES = {
    "namespace": (DNS_LABEL, 63, _LABEL_TEXT),
    "Kueue LocalQueue": (DNS_SUBDOMAIN, 63, _SUBDOMAIN_TEXT),
    "ServiceAccount": (DNS_SUBDOMAIN, 253, _SUBDOMAIN_TEXT),
}
# Azure: storage account names are 3-24 characters, lowercase letters and digits only.
STORAGE_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
# Azure: blob container names are 3-63 characters, lowercase letters, digits and single hyphens, starting and
# ending with a letter or digit ("Naming and Referencing Containers, Blobs, and Metadata").
STORAGE_CONTAINER = re.compile(r"(?=.{3,63}\Z)[a-z0-9]+(-[a-z0-9]+)*")
# The container's environment variable names the API server accepts (IsEnvVarName; a name need not suit a shell).
ENV_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")
WORKLOAD_IDENTITY_CLIENT_ID = "azure.workload.identity/client-id"
# The placeholder client id in profiles/k8s/serviceaccount.yaml: never a real identity.
PLACEHOLDER_CLIENT_ID = "00000000-0000-0000-0000-000000000000"
PROFILE = "profiles/k8s/config.yaml"
# The Kueue releases the manifests and this executor were checked against (by hand, against each release's
# CRDs: 0.15.0 to 0.19.2). Kueue serves v1beta2 from 0.15 on; the docs and manifests quote this same text.
SUPPORTED_KUEUE = "Kueue 0.15 to 0.19 (checked by hand; v1beta2)"


class SettingError(ValueError):
    """A setting of the executor is wrong; the message names the setting and the fix."""


@dataclass(frozen=True)
class SecretVolume:
    """A Kubernetes Secret mounted read-only into every Job's pod (by name: no key material in the run)."""

    secret: str
    path: str

    @classmethod
    def parse(cls, text: str) -> SecretVolume:
        secret, _, path = text.partition(":")
        if not DNS_SUBDOMAIN.fullmatch(secret) or len(secret) > 253 or not path.startswith("/"):
            raise SettingError(
                f"kubernetes-kueue-secret-volumes: {text!r} is not <secret-name>:<absolute mount path> "
                "(for example dask-tls:/etc/dask-tls)"
            )
        return cls(secret, path.rstrip("/") or "/")

    def unparse(self) -> str:
        return f"{self.secret}:{self.path}"


# Words of a variable name that say its value is a credential (AZURE_STORAGE_KEY, SIMCAL_API_KEY, *_SAS_TOKEN,
# AZURE_STORAGE_CONNECTION_STRING, AZURE_CLIENT_SECRET); an absolute path (a mounted key file) is no credential.
SECRET_WORDS = re.compile(
    r"(?:^|[-._])(?:KEYS?|TOKEN|SECRET|PASSWORD|PASSWD|SAS|CONNECTION[-._]STRING|CREDENTIALS?)(?:$|[-._])",
    re.I,
)


def parse_env(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` items of kubernetes-kueue-env as a dict (values are plain text in the Job spec, readable by
    whoever may read Jobs in the namespace): a name that says its value is a credential is refused, unless the
    value is an absolute path (the file a Secret volume mounts). The value is never shown."""
    parsed = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not ENV_NAME.fullmatch(name):
            shown = item if not equals else f"{name}=..."
            raise SettingError(
                f"kubernetes-kueue-env: {shown!r} is not NAME=VALUE; secrets never go here "
                "(they would be readable in the Job spec): use envvars or workload identity"
            )
        if SECRET_WORDS.search(name) and value and not value.startswith("/"):
            raise SettingError(
                f"kubernetes-kueue-env: {name} looks like a credential, and this setting's values are plain text "
                "in every Job's spec, readable by whoever may read Jobs in the namespace: pass it with --envvars "
                f"{name} (Snakemake puts it into the run's Secret), mount a Secret with "
                "kubernetes-kueue-secret-volumes and give its file's path, or use workload identity"
            )
        parsed[name] = value
    return parsed


def check_name(value: str | None, setting: str, what: str, fix: str) -> str:
    """A name of ``what`` (a key of NAME_RULES: namespace, LocalQueue, ServiceAccount); a missing or malformed
    one stops the run."""
    if not value:
        raise SettingError(f"{setting} is not set: {fix}")
    pattern, longest, words = NAME_RULES[what]
    if len(value) > longest or not pattern.fullmatch(value):
        raise SettingError(
            f"{setting}: {value!r} is not a valid {what} name ({words}, at most {longest} characters): {fix}"
        )
    return value


def check_storage_account(value: str | None) -> str:
    """The Azure storage account of the default storage (SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME)."""
    if not value:
        raise SettingError(
            "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME is empty or not set: export it, or pass "
            "--storage-azure-account-name, with the name of the storage account that holds "
            "default-storage-prefix (Snakemake forwards either one to the jobs as "
            "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME)"
        )
    if not STORAGE_ACCOUNT.fullmatch(value):
        raise SettingError(
            f"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME: {value!r} is not an Azure storage account name "
            "(3-24 lowercase letters and digits; the name, not the URL): "
            "see `az storage account list --query [].name`"
        )
    return value


def check_storage_container(prefix: str | None) -> str | None:
    """The blob container of default-storage-prefix (az://<container>/<path>); Azure refuses a malformed one
    with HTTP 400 only when Snakemake first reads the storage, deep inside the SDK."""
    if not prefix or not prefix.startswith("az://"):
        return None  # Snakemake itself refuses a prefix without the az:// scheme
    container = prefix.removeprefix("az://").split("/", 1)[0]
    if not STORAGE_CONTAINER.fullmatch(container):
        raise SettingError(
            f"default-storage-prefix {prefix!r}: {container!r} is not an Azure blob container name (3-63 "
            "lowercase letters, digits and single hyphens, starting and ending with a letter or digit), "
            f"e.g. az://kd-gat/run1; set default-storage-prefix in {PROFILE} (or --default-storage-prefix)"
        )
    return container


# Fixes for the reasons Kueue gives a LocalQueue's Active=False condition (Kueue's LocalQueue controller).
# By the LocalQueue's Active reason (Kueue's localqueue_controller.go). ClusterQueueIsInactive covers each reason of
# the ClusterQueue's own Active condition (pkg/cache clusterQueue.inactiveReason), which a namespaced Role cannot read;
# Terminating: deleted, and kept by its finalizer kueue.x-k8s.io/resource-in-use while Workloads hold quota in it.
_INACTIVE_QUEUE_FIXES = {
    "ClusterQueueDoesNotExist": "its ClusterQueue {cluster_queue!r} does not exist: apply "
    "profiles/k8s/kueue/resourceflavors.yaml, then profiles/k8s/kueue/clusterqueue.yaml, or point the "
    "LocalQueue's spec.clusterQueue at an existing one (kubectl get clusterqueues)",
    "ClusterQueueIsInactive": "its ClusterQueue {cluster_queue!r} is inactive: `kubectl get clusterqueue "
    "{cluster_queue} -o yaml` says why under status.conditions (FlavorNotFound: apply "
    "profiles/k8s/kueue/resourceflavors.yaml; Stopped: remove its spec.stopPolicy; Terminating: it was deleted, and "
    "Kueue keeps it only until the Workloads it admitted have ended; apply profiles/k8s/kueue/clusterqueue.yaml again "
    "once it is gone)",
    "Stopped": "the LocalQueue is stopped: kubectl -n {namespace} patch localqueue {queue} --type merge "
    '-p \'{{"spec":{{"stopPolicy":"None"}}}}\'',
}


def check_local_queue_active(local_queue: dict, namespace: str) -> None:
    """A LocalQueue Kueue reports inactive admits no Job: every Job would wait suspended for ever.

    Reads the ``Active`` condition Kueue's LocalQueue controller writes into ``status.conditions``. A queue
    without that condition (created a moment ago, not yet reconciled) cannot be judged and passes.
    """
    queue = local_queue["metadata"]["name"]
    conditions = (local_queue.get("status") or {}).get("conditions") or []
    active = next((c for c in conditions if c.get("type") == "Active"), None)
    if active is None or active.get("status") == "True":
        return
    reason = active.get("reason") or "no reason given"
    cluster_queue = (local_queue.get("spec") or {}).get("clusterQueue", "")
    fix = _INACTIVE_QUEUE_FIXES.get(reason, "see `kubectl -n {namespace} describe localqueue {queue}`")
    raise SettingError(
        f"kubernetes-kueue-queue-name: Kueue LocalQueue {namespace}/{queue} is inactive (Active="
        f"{active.get('status')}, reason {reason}: {active.get('message', '')!r}), so Kueue would leave "
        "every Job suspended; "
        + fix.format(cluster_queue=cluster_queue, namespace=namespace, queue=queue)
        + f", or set kubernetes-kueue-queue-name in {PROFILE} to an active LocalQueue"
    )


def check_workload_identity_annotations(
    annotations: dict[str, str] | None, account: str, namespace: str
) -> str:
    """The client id a workload-identity ServiceAccount carries; the placeholder or none stops the run."""
    client_id = (annotations or {}).get(WORKLOAD_IDENTITY_CLIENT_ID, "")
    fix = (
        f"kubectl -n {namespace} annotate serviceaccount {account} --overwrite "
        f"{WORKLOAD_IDENTITY_CLIENT_ID}=$(az identity show -g <group> -n <identity> --query clientId -o tsv) "
        "(profiles/k8s/README.md, 'Azure without secrets')"
    )
    if not client_id:
        raise SettingError(
            f"kubernetes-kueue-service-account-name: ServiceAccount {namespace}/{account} has no "
            f"{WORKLOAD_IDENTITY_CLIENT_ID} annotation, so its pods get no Azure token: {fix}"
        )
    if client_id == PLACEHOLDER_CLIENT_ID:
        raise SettingError(
            f"kubernetes-kueue-service-account-name: ServiceAccount {namespace}/{account} still carries the "
            f"placeholder {WORKLOAD_IDENTITY_CLIENT_ID} of profiles/k8s/serviceaccount.yaml: {fix}"
        )
    return client_id


def unpinned_image_warning(setting: str, image: str | None) -> str | None:
    """An image without a tag or digest (or tagged latest) runs whatever was pushed last: the pods' Snakemake
    and library may then differ from the driver's, which plans the DAG the pods execute."""
    if not image:
        return None
    last = image.rsplit("/", 1)[-1]  # a registry's :port is not a tag
    name, colon, tag = last.partition(":")
    if "@" in last or (colon and tag and tag != "latest"):
        return None
    return (
        f"{setting} {image!r} has no tag (or is :latest): each pod runs whatever image was pushed last, whose "
        "Snakemake and library may not be the driver's; pin it, as profiles/k8s/config.yaml does "
        "(:snakemake-<version>-<variant>) or by digest (@sha256:...)"
    )


# Resources the kubernetes executor (0.5.1, run_job) turns into the Job, and those Snakemake itself sets or derives.
READ_RESOURCES = ("mem_mb", "disk_mb", "gpu", "gpu_manufacturer", "scale", "machine_type")
SNAKEMAKE_RESOURCES = ("_cores", "_nodes", "tmpdir", "mem", "mem_mib", "disk", "disk_mib", "runtime")
# Other words for a CPU count: on Kubernetes the Job's CPU request is the rule's threads.
CPU_WORDS = frozenset({"cpu", "cpus", "cores", "ncpus", "ncores", "num_cpus", "cpus_per_task"})
GPU_MANUFACTURERS = ("nvidia", "amd")


def check_gpu_request(rule: str, resources: Mapping) -> None:
    """A job's `gpu` must be a whole number (Kubernetes counts devices) and needs `gpu_manufacturer` nvidia or
    amd; the kubernetes executor refuses a missing manufacturer in words that name neither the rule nor where to
    set it, and sends any count on to an API server that refuses it."""
    if "gpu" not in resources:
        return
    count = resources["gpu"]
    whole = isinstance(count, int) and not isinstance(count, bool) and count >= 0
    if not (whole or (isinstance(count, str) and count.strip().isdigit())):
        raise SettingError(
            f"rule {rule}: resource gpu={count!r} is not a whole number of GPUs (0 or more): Kubernetes requests "
            f"whole devices, e.g. set-resources in {PROFILE}: {rule}: {{gpu: 1, gpu_manufacturer: nvidia, scale: 0}}"
        )
    manufacturer = resources.get("gpu_manufacturer")
    if isinstance(manufacturer, str) and manufacturer.lower() in GPU_MANUFACTURERS:
        return
    given = "is not set" if not manufacturer else f"is {manufacturer!r}, not nvidia or amd"
    raise SettingError(
        f"rule {rule}: resource gpu={resources['gpu']} but gpu_manufacturer {given}: the Job would not know "
        f"which GPU to request. Set them together, e.g. under set-resources in {PROFILE}: "
        f"{rule}: {{gpu: 1, gpu_manufacturer: nvidia, scale: 0}}"
    )


# Resources the kubernetes executor turns into a request of this Kubernetes resource ("{value}M").
SIZE_RESOURCES = {"mem_mb": "memory", "disk_mb": "ephemeral-storage"}


def check_size_requests(rule: str, resources: Mapping) -> None:
    """A job's `mem_mb` and `disk_mb` must be numbers above 0. The kubernetes executor writes any value as the
    request ("0M", "-5M"): the API server refuses a negative quantity (422, naming the container, not the rule),
    and accepts 0, which Kueue counts as 0 against the ClusterQueue's quota, so the Job is admitted outside it
    and the scheduler places the pod as if it needed no memory. No floor is guessed for it: the rule is named."""
    for name, kind in SIZE_RESOURCES.items():
        if name not in resources:
            continue
        value = resources[name]
        size = _size(value)
        if size is not None and size > 0:
            continue
        why = (
            f"requests no {kind}, so Kueue counts nothing of it against the ClusterQueue's quota and the pod is "
            "placed as if it needed none"
            if size == 0
            else f"is not a {kind} size in MB above 0 (the API server refuses a negative quantity)"
        )
        raise SettingError(
            f"rule {rule}: resource {name}={value!r} {why}. Set what the job needs, e.g. under set-resources in "
            f"{PROFILE}: {rule}: {{{name}: 4096}}"
        )


def _size(value) -> float | None:
    """A finite number of MB (a quoted one too, as YAML may give it), or None."""
    if isinstance(value, bool):
        return None
    try:
        size = float(value)
    except (TypeError, ValueError):
        return None
    return size if math.isfinite(size) else None


def unread_resource_warnings(rule: str, resources: Mapping) -> list[str]:
    """Resources of a job that look like a misspelt one the executor reads (`gpus` for `gpu`, `mem_gb` for
    `mem_mb`): Snakemake accepts any name, and the Job would silently ask for nothing of it. Names far from
    every resource read (a workflow's own, another executor's) are not mentioned."""
    warnings = []
    for name in resources:
        if name in READ_RESOURCES or name in SNAKEMAKE_RESOURCES:
            continue
        if name.lower() in CPU_WORDS:
            meant = "the rule's threads (threads: or --set-threads), which set the Job's CPU request"
        else:
            close = difflib.get_close_matches(name, READ_RESOURCES + SNAKEMAKE_RESOURCES, n=1, cutoff=0.8)
            if not close:
                continue
            meant = f"{close[0]!r}"
            if close[0].endswith("_mb"):
                meant += f" (in MB; or {close[0][:-3]!r} with its unit, e.g. '16G')"
        warnings.append(
            f"rule {rule}: resource {name!r} is not read by the kubernetes-kueue executor, so its Jobs ask for "
            f"nothing of it; did you mean {meant}?"
        )
    return warnings
