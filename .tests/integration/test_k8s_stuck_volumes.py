"""Volumes that keep a Job's pod from ever starting, other than a missing Secret or ConfigMap (k8s6), against the
stand-in: a missing PersistentVolumeClaim (the pod stays unschedulable), a key a Secret or ConfigMap volume's
``items`` list that the object lacks, a CSI driver that fails to stage a volume (Azure File or Blob), and a volume the
attach/detach controller cannot attach to the node (Azure Disk); and a driver whose Role may not list events (the
check that reads the kubelet's FailedMount and the controller's FailedAttachVolume events is lost).

The messages are the real components' (see the stand-in's docstring for the upstream files): kube-scheduler's
volumebinding PreFilter error in the FitError, the kubelet's ``MountVolume.<operation> failed for volume "<v>" :
<error>`` FailedMount events, the attach/detach controller's ``AttachVolume.Attach failed for volume "<v>" : <error>``
FailedAttachVolume events, and the API server's 403 Status for a list the Role does not grant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import kubernetes.client
import pytest
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from testkit import role_grants

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
import test_k8s_api_failures as api_failures  # noqa: E402
from harness import profile_manifests  # noqa: E402
from test_k8s_api_failures import (  # noqa: E402
    NAMESPACE,
    check_for,
    job_body,
    rbac_request,
    run_until_settled,
    submit_with_volume,
)

# The same stand-in cluster and executor as the API-failure tests (pytest finds fixtures by these names).
cluster, executor = api_failures.cluster, api_failures.executor

# What the Azure File CSI driver answers NodeStageVolume when the storage account refuses the mount (a wrong key
# in the claim's Secret, or the account's firewall): a gRPC Internal error carrying mount.cifs' exit status.
AZURE_FILE_ERROR = (
    "rpc error: code = Internal desc = volume(mc_rg#acct#pvc-share###snakemake) mount "
    "//acct.file.core.windows.net/pvc-share on /var/lib/kubelet/plugins/kubernetes.io/csi/file.csi.azure.com/"
    "0c1d/globalmount failed with mount failed: exit status 32\nmount error(13): Permission denied"
)


def submit_with_claim(executor, name: str, claim: str, script: str = "true") -> SubmittedJobInfo:
    """A Job whose pod mounts a PersistentVolumeClaim (the kubernetes executor's kubernetes-persistent-volumes)."""
    body = job_body(name, script)
    source = kubernetes.client.V1PersistentVolumeClaimVolumeSource(claim_name=claim)
    body.spec.template.spec.volumes = [
        kubernetes.client.V1Volume(name="data", persistent_volume_claim=source)
    ]
    body.spec.template.spec.containers[0].volume_mounts = [
        kubernetes.client.V1VolumeMount(name="data", mount_path="/data")
    ]
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    return SubmittedJobInfo(job=executor.recorder.job(name), external_jobid=name)


def claim(name: str) -> dict:
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def cannot_start(executor) -> list[str]:
    return [message for message in executor.recorder.messages("warning") if "cannot start" in message]


def test_a_job_whose_claim_is_missing_is_reported_once_then_failed_and_deleted(
    cluster, executor, monkeypatch
):
    """A PersistentVolumeClaim the pod mounts does not exist: the scheduler cannot place the pod (no node or
    autoscaler can cure that), so it stays Pending, its Job active and its Kueue quota held, for ever. It was taken
    for a pod too big for the nodes: reported after 2 min with advice on resources, and failed only with
    kubernetes-kueue-unschedulable-timeout. Now it is reported once, with the scheduler's message and the fix, and
    the job fails after CONTAINER_START_GIVE_UP_S, its Job deleted; no events read is needed (the pod's condition
    carries the scheduler's message)."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import pending

    monkeypatch.setattr(pending, "UNSCHEDULABLE_REPORT_S", 0.0)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    job = submit_with_claim(executor, "claimless", "results")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and executor.recorder.failed == []
    pod = cluster.jobs["claimless"].pod.name
    scheduler = (
        '0/3 nodes are available: persistentvolumeclaim "results" not found. preemption: 0/3 nodes are available: '
        "3 Preemption is not helpful for scheduling."
    )
    assert cannot_start(executor) == [
        f"kubernetes-kueue: the container of Job {NAMESPACE}/claimless (pod {pod}) cannot start; its job fails if it "
        f"still cannot in {2.0 / 60:g} min (FailedScheduling: {scheduler}); a PersistentVolumeClaim the pod mounts "
        f"does not exist in namespace {NAMESPACE} (or is being deleted, or lost its volume), and no node can hold the "
        f"pod without it: create the claim (kubectl -n {NAMESPACE} get pvc), or correct its name in the rule's "
        "volumes (kubernetes-persistent-volumes in profiles/k8s/config.yaml)"
    ]
    assert not [m for m in executor.recorder.messages("warning") if "no node can hold its pod" in m]
    run_until_settled(executor, active)
    assert executor.recorder.failed == ["claimless"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["claimless"]
    assert "could not start for" in message and 'persistentvolumeclaim "results" not found' in message
    assert "the Job was deleted" in message and cluster.jobs["claimless"].deleted
    assert not [path for _, path, _ in cluster.requests if path.endswith("/events")]


def test_a_job_whose_claim_is_created_before_the_give_up_runs(cluster, executor, monkeypatch):
    """The scheduler tries again: a claim created while the pod waits lets it be placed, and the job finishes."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    job = submit_with_claim(executor, "late-claim", "results")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and len(cannot_start(executor)) == 1
    cluster.add_objects([claim("results")])
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["late-claim"] and executor.recorder.failed == []


@pytest.mark.parametrize(
    "storage_class, controller",
    [
        ("premium-zrs", 'ProvisioningFailed: storageclass.storage.k8s.io "premium-zrs" not found'),
        (None, "FailedBinding: no persistent volumes available for this claim and no storage class is set"),
    ],
)
def test_a_job_whose_claim_exists_but_is_not_bound_is_reported_naming_the_claim_and_its_class_then_failed(
    cluster, executor, monkeypatch, storage_class, controller
):
    """The claim exists but the PV controller cannot bind it (its StorageClass is missing; no volume matches a claim
    without one): the scheduler's volumebinding PreFilter leaves the pod unschedulable, "pod has unbound immediate
    PersistentVolumeClaims", which names no claim. That was taken for a pod too big for the nodes (reported after
    2 min with advice on resources, failed only with kubernetes-kueue-unschedulable-timeout). It is now held as a
    missing claim is: reported once, naming the claim, its phase, its storage class and the PV controller's event, and
    failed after CONTAINER_START_GIVE_UP_S, its Job deleted."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import pending

    monkeypatch.setattr(pending, "UNSCHEDULABLE_REPORT_S", 0.0)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    unbound = claim("results")
    if storage_class:
        unbound["spec"]["storageClassName"] = storage_class
    cluster.unbound_claims.add(f"{NAMESPACE}/results")
    cluster.add_objects([unbound])
    job = submit_with_claim(executor, "unbound", "results")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and executor.recorder.failed == []
    pod = cluster.jobs["unbound"].pod.name
    scheduler = (
        "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are "
        "available: 3 Preemption is not helpful for scheduling."
    )
    claimed = (
        f'storage class "{storage_class}"' if storage_class else "no storage class (storageClassName not set)"
    )
    assert cannot_start(executor) == [
        f"kubernetes-kueue: the container of Job {NAMESPACE}/unbound (pod {pod}) cannot start; its job fails if it "
        f'still cannot in {2.0 / 60:g} min (FailedScheduling: {scheduler} persistentvolumeclaim "results" is '
        f"Pending, {claimed}, {controller}); a PersistentVolumeClaim the pod mounts exists in namespace {NAMESPACE} but "
        "is not bound to a volume, and the scheduler places no pod whose claim of volumeBindingMode Immediate is "
        "unbound: check that its storage class exists (kubectl get storageclass) and can provision the size and access "
        "modes it asks, or that a PersistentVolume matches it; kubectl -n "
        f"{NAMESPACE} describe pvc lists the provisioner's events"
    ]
    assert not [m for m in executor.recorder.messages("warning") if "no node can hold its pod" in m]
    run_until_settled(executor, active)
    assert executor.recorder.failed == ["unbound"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["unbound"]
    assert "could not start for" in message and 'persistentvolumeclaim "results" is Pending' in message
    assert "the Job was deleted" in message and cluster.jobs["unbound"].deleted
    # The claim is read when the pod is first seen so, not at each status check (a dozen here), and once more when
    # the failed Job's pods are listed to delete it; rbac.yaml's Role grants the read.
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    made = [
        rbac_request(method, path)
        for method, path, _ in cluster.requests
        if "/persistentvolumeclaims/" in path
    ]
    assert len(made) <= 2 and set(made) == {("", "persistentvolumeclaims", "get")} <= role_grants(role)


@pytest.fixture
def two_unbound_claim_jobs(request, cluster, executor, monkeypatch) -> list[SubmittedJobInfo]:
    """Two Jobs, each mounting its own unbound claim (results-1, results-2), whose reads of ``request.param`` (the
    resource: persistentvolumeclaims or events) the Role refuses (403) from the start; both still active after a first
    second of status checks, none failed. Kept waiting: CONTAINER_START_GIVE_UP_S is a minute."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import pending

    monkeypatch.setattr(pending, "UNSCHEDULABLE_REPORT_S", 0.0)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    cluster.fail_next("GET", request.param, 403, times=1000)
    for name in ("results-1", "results-2"):
        cluster.unbound_claims.add(f"{NAMESPACE}/{name}")
        cluster.add_objects([claim(name)])
    jobs = [submit_with_claim(executor, f"unbound-{n}", f"results-{n}") for n in (1, 2)]
    active = check_for(executor, jobs, 1.0)
    assert active == jobs and executor.recorder.failed == []
    return jobs


@pytest.mark.parametrize("two_unbound_claim_jobs", ["persistentvolumeclaims"], indirect=True)
def test_a_role_without_get_on_claims_is_said_once_and_each_unbound_claims_pod_is_still_reported(
    cluster, executor, two_unbound_claim_jobs
):
    """A driver Role applied from an older rbac.yaml lacks get on persistentvolumeclaims: the API server answers the
    read of an unbound claim 403, which each pod's report carried in full (the Forbidden text, no rule to add), once
    per pod. Now one warning per run names the rule, the namespace and what is lost, as for events; each pod is still
    reported (the scheduler's message) and its claim named, and the jobs go on."""
    active = two_unbound_claim_jobs
    refused = [
        status for _, resource, status in cluster.answered_failures if resource == "persistentvolumeclaims"
    ]
    assert refused == [403, 403]  # one read per pod, not per status check
    warnings = [m for m in executor.recorder.messages("warning") if "the driver's Role lacks" in m]
    assert len(warnings) == 1, warnings
    first = 1 if f"{NAMESPACE}/results-1," in warnings[0] else 2  # whichever pod was read first
    pod = cluster.jobs[f"unbound-{first}"].pod.name
    assert warnings[0] == (
        f"kubernetes-kueue: reading persistentvolumeclaim {NAMESPACE}/results-{first}, which pod {pod} mounts, failed "
        f'with HTTP 403 Forbidden: persistentvolumeclaims "results-{first}" is forbidden: User "{cluster.user}" cannot get '
        f'resource "persistentvolumeclaims" in API group "" in the namespace "{NAMESPACE}": the driver\'s Role lacks '
        f"the rule for resource persistentvolumeclaims, verb get, in namespace {NAMESPACE} (profiles/k8s/rbac.yaml; "
        "kubectl apply -f it). Without it, a pod the scheduler leaves unschedulable because a claim it mounts is not "
        'bound ("pod has unbound immediate PersistentVolumeClaims") is reported without the claim\'s phase, storage '
        "class and the provisioner's event, which say why it is not bound; and a ReadWriteOnce disk another node holds "
        "is warned of by its volume's name, without the claim it belongs to. The run goes on; this is said once"
    )
    reports = cannot_start(executor)
    assert len(reports) == 2 and not [r for r in reports if "Forbidden" in r]
    for n, report in zip((1, 2), sorted(reports), strict=True):
        assert f"Job {NAMESPACE}/unbound-{n} " in report
        assert (
            f'persistentvolumeclaim "results-{n}" could not be read: the driver\'s Role does not allow it, as said '
            f"once); a PersistentVolumeClaim the pod mounts exists in namespace {NAMESPACE} but is not bound"
        ) in report
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    assert ("", "persistentvolumeclaims", "get") in role_grants(role)
    with cluster._lock:
        cluster.unbound_claims.clear()
    run_until_settled(executor, active)
    assert sorted(executor.recorder.finished) == ["unbound-1", "unbound-2"] and executor.recorder.failed == []


@pytest.mark.parametrize("two_unbound_claim_jobs", ["events"], indirect=True)
def test_a_role_without_list_on_events_is_said_once_also_when_an_unbound_claims_events_are_read(
    cluster, executor, two_unbound_claim_jobs
):
    """The events read of an unbound claim (the PV controller's ProvisioningFailed, FailedBinding), refused 403 by a
    Role from an older rbac.yaml, was swallowed: the report lacked the event without a word. Now it says once per run
    that the Role lacks list on events; each pod is still reported with its claim's phase and storage class."""
    assert [status for _, resource, status in cluster.answered_failures if resource == "events"] == [403, 403]
    warnings = [m for m in executor.recorder.messages("warning") if "the driver's Role lacks" in m]
    assert len(warnings) == 1, warnings
    first = 1 if f"{NAMESPACE}/results-1," in warnings[0] else 2
    pod = cluster.jobs[f"unbound-{first}"].pod.name
    assert warnings[0].startswith(
        f"kubernetes-kueue: listing the events of persistentvolumeclaim {NAMESPACE}/results-{first}, which pod {pod} "
        "mounts, failed with HTTP 403 Forbidden: events is forbidden: User "
    )
    assert (
        f": the driver's Role lacks the rule for resource events, verb list, in namespace {NAMESPACE} "
        "(profiles/k8s/rbac.yaml; kubectl apply -f it). Without it, a pod whose volume"
    ) in warnings[0]
    assert warnings[0].endswith(f"; {UNBOUND_CLAIM_EVENT_LOST}. The run goes on; this is said once")
    reports = sorted(cannot_start(executor))
    assert len(reports) == 2
    for n, report in zip((1, 2), reports, strict=True):
        assert (
            f'persistentvolumeclaim "results-{n}" is Pending, no storage class (storageClassName not set)); a '
            "PersistentVolumeClaim the pod mounts exists"
        ) in report


def test_a_job_whose_claim_is_bound_before_the_give_up_runs(cluster, executor, monkeypatch):
    """The PV controller binds the claim meanwhile (its StorageClass was created): the pod is placed and runs."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    cluster.unbound_claims.add(f"{NAMESPACE}/results")
    cluster.add_objects([claim("results")])
    job = submit_with_claim(executor, "late-bound", "results")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and len(cannot_start(executor)) == 1
    with cluster._lock:
        cluster.unbound_claims.clear()
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["late-bound"] and executor.recorder.failed == []


def submit_with_items(cluster, executor, name: str, kind: str, key: str) -> SubmittedJobInfo:
    """A Job whose Secret or ConfigMap volume projects one key of an object that exists without it."""
    data = {"ca.crt": "cGVt"}
    cluster_object = {
        "kind": "Secret" if kind == "secret" else "ConfigMap",
        "metadata": {"name": "cluster-ca"},
    }
    cluster.add_objects([{**cluster_object, "data": data}])
    body = job_body(name, "true")
    items = [kubernetes.client.V1KeyToPath(key=key, path="ca.pem")]
    volume = kubernetes.client.V1Volume(name="ca-bundle")
    if kind == "secret":
        volume.secret = kubernetes.client.V1SecretVolumeSource(secret_name="cluster-ca", items=items)
    else:
        volume.config_map = kubernetes.client.V1ConfigMapVolumeSource(name="cluster-ca", items=items)
    body.spec.template.spec.volumes = [volume]
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    return SubmittedJobInfo(job=executor.recorder.job(name), external_jobid=name)


KEY_ERRORS = {
    "secret": "references non-existent secret key: tls.crt",  # pkg/volume/secret/secret.go
    "configmap": "configmap references non-existent config key: tls.crt",  # pkg/volume/configmap/configmap.go
}
KEY_FIX = (
    "a Secret or ConfigMap volume of the pod lists in its items a key that the object in namespace {ns} lacks: add "
    "the key to the object, correct the item's key, or make the volume optional; kubectl -n {ns} describe pod {pod} "
    "lists the FailedMount events"
)
DRIVER_FIX = (
    "the volume's storage driver cannot mount it (a CSI driver: Azure File, Azure Blob, a disk): check that the "
    "storage it names exists (storage account, file share or blob container), that the Secret with its key is "
    "right, that the nodes may reach it (the storage account's firewall or private endpoint) and that the driver is "
    "enabled (az aks update -g <group> -n <cluster> --enable-file-driver or --enable-blob-driver); kubectl -n {ns} "
    "describe pod {pod} lists the FailedMount events"
)


@pytest.mark.parametrize("cause", ["secret-key", "configmap-key", "azure-file"])
def test_a_job_whose_volume_the_kubelet_cannot_mount_is_reported_once_then_failed_and_deleted(
    cluster, executor, monkeypatch, cause
):
    """A key a Secret or ConfigMap volume's items list that the object lacks, or a CSI driver (Azure File) failing to
    stage a claim's volume: the kubelet records FailedMount at each try and the container waits ContainerCreating for
    ever. Only a missing object was recognised (k8s6); these waited in silence, holding the quota. Now each is
    reported once, with the kubelet's message and its own fix, and the job fails after the give-up, its Job
    deleted."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    name = f"unmountable-{cause}"
    if cause == "azure-file":
        cluster.add_objects([claim("share")])
        cluster.mount_errors[f"{NAMESPACE}/share"] = AZURE_FILE_ERROR
        job = submit_with_claim(executor, name, "share")
        uid = cluster.persistent_volume_claims[f"{NAMESPACE}/share"]["metadata"]["uid"]
        kubelet = f'MountVolume.MountDevice failed for volume "pvc-{uid}" : {AZURE_FILE_ERROR}'
        fix = DRIVER_FIX
    else:
        kind = cause.split("-")[0]
        job = submit_with_items(cluster, executor, name, kind, "tls.crt")
        kubelet = f'MountVolume.SetUp failed for volume "ca-bundle" : {KEY_ERRORS[kind]}'
        fix = KEY_FIX
    active = check_for(executor, [job], 1.5)
    assert active == [job] and executor.recorder.failed == []
    (event,) = [e for e in cluster.events if e["involvedObject"]["name"] == cluster.jobs[name].pod.name]
    assert (event["reason"], event["type"], event["message"]) == ("FailedMount", "Warning", kubelet)
    pod = cluster.jobs[name].pod.name
    assert cannot_start(executor) == [
        f"kubernetes-kueue: the container of Job {NAMESPACE}/{name} (pod {pod}) cannot start; its job fails if it "
        f"still cannot in {2.0 / 60:g} min (FailedMount: {kubelet}); {fix.format(ns=NAMESPACE, pod=pod)}"
    ]
    run_until_settled(executor, active)
    assert executor.recorder.failed == [name] and executor.recorder.finished == []
    message = executor.recorder.job_errors[name]
    assert "could not start for" in message and kubelet in message
    assert "the Job was deleted" in message and cluster.jobs[name].deleted


# What the Azure Disk CSI driver answers ControllerPublishVolume when the node's VM holds no more data disks: the
# attach/detach controller's FailedAttachVolume carries it after "AttachVolume.Attach failed for volume ... : ".
AZURE_DISK_ERROR = (
    "rpc error: code = Internal desc = Attach volume /subscriptions/0000/resourceGroups/mc_rg/providers/"
    "Microsoft.Compute/disks/pvc-scratch to instance aks-gpu-12345678-vmss000000 failed with Retriable: false, "
    'RetryAfter: 0s, HTTPStatusCode: 409, RawError: {"error": {"code": "OperationNotAllowed", "message": "The maximum '
    'number of data disks allowed to be attached to a VM of this size is 4."}}'
)
ATTACH_FIX = (
    "the volume cannot be attached to the pod's node (a disk, e.g. Azure Disk): check that the disk exists and is in "
    "the node's zone, that no other node holds it (ReadWriteOnce), that the node's VM size allows one more data disk "
    "and that the cluster's identity may attach it (kubectl get volumeattachments); kubectl -n {ns} describe pod {pod} "
    "lists the FailedAttachVolume events"
)


def test_a_job_whose_volume_cannot_be_attached_is_reported_once_then_failed_and_deleted(
    cluster, executor, monkeypatch
):
    """A disk the attach/detach controller cannot attach to the pod's node (Azure Disk: the VM's data-disk limit): it
    records FailedAttachVolume on the pod at each try, the kubelet waits for the attachment with the container
    ContainerCreating, and records only its summary, a FailedMount that names no cause. Only FailedMount events were
    read, and the summary does not count: the job waited in silence, holding its quota, for ever. Now it is reported
    once, with the controller's message and the fix, and the job fails after the give-up, its Job deleted."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    name = "unattachable"
    cluster.add_objects([claim("scratch")])
    cluster.attach_errors[f"{NAMESPACE}/scratch"] = AZURE_DISK_ERROR
    job = submit_with_claim(executor, name, "scratch")
    active = check_for(executor, [job], 1.5)
    assert active == [job] and executor.recorder.failed == []
    pod = cluster.jobs[name].pod.name
    uid = cluster.persistent_volume_claims[f"{NAMESPACE}/scratch"]["metadata"]["uid"]
    controller = f'AttachVolume.Attach failed for volume "pvc-{uid}" : {AZURE_DISK_ERROR}'
    events = {e["reason"]: e for e in cluster.events if e["involvedObject"]["name"] == pod}
    attach = events["FailedAttachVolume"]
    assert (attach["type"], attach["message"], attach["source"]) == (
        "Warning",
        controller,
        {"component": "attachdetach-controller"},
    )
    assert events["FailedMount"]["message"].startswith(
        "Unable to attach or mount volumes: "
    )  # no cause named
    assert cannot_start(executor) == [
        f"kubernetes-kueue: the container of Job {NAMESPACE}/{name} (pod {pod}) cannot start; its job fails if it "
        f"still cannot in {2.0 / 60:g} min (FailedAttachVolume: {controller}); "
        + ATTACH_FIX.format(ns=NAMESPACE, pod=pod)
    ]
    run_until_settled(executor, active)
    assert executor.recorder.failed == [name] and executor.recorder.finished == []
    message = executor.recorder.job_errors[name]
    assert "could not start for" in message and controller in message
    assert "the Job was deleted" in message and cluster.jobs[name].deleted
    assert {
        rbac_request("GET", path) for method, path, _ in cluster.requests if path.endswith("/events")
    } == {("", "events", "list")}  # what rbac.yaml grants already


@pytest.mark.parametrize(
    ("errors", "volume", "name", "error"),
    [
        ("mount_errors", "share", "firewalled", AZURE_FILE_ERROR),
        ("attach_errors", "scratch", "attached-later", AZURE_DISK_ERROR),
    ],
    ids=["mounted-later", "attached-later"],
)
def test_a_volume_mounted_or_attached_after_a_few_tries_just_runs(
    cluster, executor, monkeypatch, errors, volume, name, error
):
    """A storage account's firewall opened (the kubelet's next try mounts the volume), or a data disk freed on the
    node (the attach/detach controller's next try attaches it), while the pod waits: the job finishes after the one
    warning (its FailedMount or FailedAttachVolume stops, so the give-up does not fail it)."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    cluster.add_objects([claim(volume)])
    getattr(cluster, errors)[f"{NAMESPACE}/{volume}"] = error
    job = submit_with_claim(executor, name, volume)
    active = check_for(executor, [job], 1.5)
    assert active == [job] and len(cannot_start(executor)) == 1
    del getattr(cluster, errors)[f"{NAMESPACE}/{volume}"]
    run_until_settled(executor, active)
    assert executor.recorder.finished == [name] and executor.recorder.failed == []


def test_a_role_without_list_on_events_is_said_once_and_the_run_goes_on(cluster, executor, monkeypatch):
    """A driver Role applied from an older rbac.yaml lacks list on events: the API server answers the events read
    403 (a Status, reason Forbidden), which was swallowed, so the mount check was lost without a word. Now one
    warning per run names the missing rule, the namespace and what is lost; the jobs go on, and one whose mount is
    fixed runs. The rbac.yaml the repository ships grants the rule."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    cluster.fail_next("GET", "events", 403, times=1000)
    jobs = [
        submit_with_volume(executor, name, "configmap", "cluster-ca") for name in ("unseen-1", "unseen-2")
    ]
    active = check_for(executor, jobs, 2.0)
    assert active == jobs and executor.recorder.failed == []
    refused = [status for method, resource, status in cluster.answered_failures if resource == "events"]
    assert len(refused) >= 4 and set(refused) == {403}  # read again later: a fixed Role lets it through
    warnings = [m for m in executor.recorder.messages("warning") if "events" in m]
    assert len(warnings) == 1, warnings  # once per run, not per pod or read
    assert warnings[0].startswith(f"kubernetes-kueue: listing the events of pod {NAMESPACE}/unseen-")
    refusal, rest = (
        warnings[0].split(", which waits ContainerCreating, ", 1)[1].split(": the driver's Role", 1)
    )
    assert refusal.startswith("failed with HTTP 403 Forbidden: events is forbidden: User ")
    assert refusal.endswith(f'cannot list resource "events" in API group "" in the namespace "{NAMESPACE}"')
    assert "the driver's Role" + rest == (
        f"the driver's Role lacks the rule for resource events, verb list, in namespace {NAMESPACE} "
        "(profiles/k8s/rbac.yaml; kubectl apply -f it). Without it, a pod whose volume the kubelet cannot mount (a "
        "missing Secret or ConfigMap, a key its items list that the object lacks, a CSI, Azure File or Blob mount "
        "failure) or that cannot be attached to the node (a disk) is not detected: its job waits ContainerCreating, holding its Kueue quota, until someone deletes "
        f"its Job; {UNBOUND_CLAIM_EVENT_LOST}. The run goes on; this is said once"
    )
    assert not cannot_start(executor)
    cluster.add_objects(
        [{"kind": "ConfigMap", "metadata": {"name": "cluster-ca"}, "data": {"ca.crt": "pem"}}]
    )
    run_until_settled(executor, active)
    assert sorted(executor.recorder.finished) == ["unseen-1", "unseen-2"] and executor.recorder.failed == []
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    assert ("", "events", "list") in role_grants(role)
    assert {
        rbac_request("GET", path) for method, path, _ in cluster.requests if path.endswith("/events")
    } == {("", "events", "list")}


UNBOUND_CLAIM_EVENT_LOST = "and an unbound claim is reported without the provisioner's event that says why"


def test_a_role_without_get_on_claims_is_said_once_when_a_held_disk_is_warned_of_by_its_volume(
    cluster, executor, monkeypatch
):
    """The Multi-Attach warning reads the pod's claims to tell which one the held volume is; a Role from an older
    rbac.yaml refuses that read (403), which was swallowed: the warning named the volume alone, without a word on
    why. Now one warning per run names the missing rule too."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    executor.workflow.executor_settings.multi_attach_warning = 0.01  # minutes: 0.6 s
    disk = claim("scratch")
    disk["spec"]["accessModes"] = ["ReadWriteOnce"]
    cluster.add_objects([disk])
    cluster.multi_attach[f"{NAMESPACE}/scratch"] = ["results-writer-7f9c2"]
    cluster.fail_next("GET", "persistentvolumeclaims", 403, times=1000)
    job = submit_with_claim(executor, "second-writer", "scratch")
    active = check_for(executor, [job], 2.0)
    assert active == [job] and executor.recorder.failed == []
    pod = cluster.jobs["second-writer"].pod.name
    volume = f"pvc-{cluster.persistent_volume_claims[f'{NAMESPACE}/scratch']['metadata']['uid']}"
    (held,) = [w for w in executor.recorder.messages("warning") if "Multi-Attach" in w]
    assert f' min for volume "{volume}", a ReadWriteOnce volume attached to another node' in held
    (refused,) = [m for m in executor.recorder.messages("warning") if "the driver's Role lacks" in m]
    assert refused.startswith(
        f"kubernetes-kueue: reading persistentvolumeclaim {NAMESPACE}/scratch, which pod {pod} mounts, failed with "
        'HTTP 403 Forbidden: persistentvolumeclaims "scratch" is forbidden: '
    )
    assert refused.endswith(
        f"the driver's Role lacks the rule for resource persistentvolumeclaims, verb get, in namespace {NAMESPACE} "
        "(profiles/k8s/rbac.yaml; kubectl apply -f it). Without it, a pod the scheduler leaves unschedulable because a "
        'claim it mounts is not bound ("pod has unbound immediate PersistentVolumeClaims") is reported without the '
        "claim's phase, storage class and the provisioner's event, which say why it is not bound; and a ReadWriteOnce "
        "disk another node holds is warned of by its volume's name, without the claim it belongs to. The run goes on; "
        "this is said once"
    )
    with cluster._lock:
        cluster.multi_attach.clear()
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["second-writer"] and executor.recorder.failed == []


# Where the node is said: read from the holder pods of the waiting pod's namespace (the stand-in runs them on
# standin-node-1), else where to find it.
ON_THE_NODE = "on node standin-node-1, which holds {volume} (the spec.nodeName of pod(s) {pods}; the event names no node)"
NO_NODE = "the event names no node (`kubectl get volumeattachments` shows the node that holds {volume})"


@pytest.mark.parametrize(
    "holders, why, holder, where",
    [
        (
            ["results-writer-7f9c2"],
            "Volume is already used by pod(s) results-writer-7f9c2",
            f"pod(s) results-writer-7f9c2 of namespace {NAMESPACE} use it there",
            ON_THE_NODE,
        ),
        (
            ["results-writer-7f9c2", "results-writer-8d0a3"],
            "Volume is already used by pod(s) results-writer-7f9c2, results-writer-8d0a3",
            f"pod(s) results-writer-7f9c2, results-writer-8d0a3 of namespace {NAMESPACE} use it there",
            ON_THE_NODE,
        ),
        (
            ["results-writer-7f9c2", "lab/notebook-0", "lab/notebook-1"],
            "Volume is already used by pod(s) results-writer-7f9c2 and 2 pod(s) in different namespaces",
            f"pod(s) results-writer-7f9c2 of namespace {NAMESPACE}, and 2 pod(s) of other namespaces, use it there",
            ON_THE_NODE,
        ),
        (
            ["lab/notebook-0"],
            "Volume is already used by 1 pod(s) in different namespaces",
            "1 pod(s) of other namespaces use it there (the event names no pod of another namespace)",
            NO_NODE,
        ),
        (
            [],
            "Volume is already exclusively attached to one node and can't be attached to another",
            "no pod uses it there any more (the attachment outlived its pod, e.g. on a node that went down)",
            NO_NODE,
        ),
    ],
)
def test_a_disk_another_node_holds_is_warned_of_once_after_the_set_time_and_the_job_waits_then_runs(
    cluster, executor, monkeypatch, holders, why, holder, where
):
    """A ReadWriteOnce claim's disk is attached to another node (a pod there uses it, or its attachment outlived its
    pod): the attach/detach controller records its Multi-Attach FailedAttachVolume at each try. That resolves once the
    disk is detached there, so it is not a stuck pod (it does not fail at the give-up), but it waited in silence for as
    long as the disk was held. After kubernetes-kueue-multi-attach-warning minutes one warning names the pod, the
    claim, the pods holding it and the node: the event names none, so it is read from the spec.nodeName of the holder
    pods of the same namespace (one GET each, which the Role grants), or, without one, where to find it; the job keeps
    waiting and runs once the disk is free."""
    import dataclasses

    from snakemake_executor_plugin_kubernetes_kueue import KueueSettings, mounts
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    (setting,) = [f for f in dataclasses.fields(KueueSettings) if f.name == "multi_attach_warning"]
    assert setting.default == 10  # the README's "10 minutes"
    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(
        executor_module, "CONTAINER_START_GIVE_UP_S", 2.0
    )  # a stuck volume would fail by then
    executor.workflow.executor_settings.multi_attach_warning = 0.02  # minutes: 1.2 s
    disk = claim("scratch")
    disk["spec"]["accessModes"] = ["ReadWriteOnce"]
    cluster.add_objects([disk])
    cluster.multi_attach[f"{NAMESPACE}/scratch"] = holders
    job = submit_with_claim(executor, "second-writer", "scratch")
    active = check_for(executor, [job], 3.0)
    assert active == [job] and executor.recorder.failed == []
    pod = cluster.jobs["second-writer"].pod.name
    volume = f"pvc-{cluster.persistent_volume_claims[f'{NAMESPACE}/scratch']['metadata']['uid']}"
    controller = f'Multi-Attach error for volume "{volume}" {why}'
    local = [name for name in holders if "/" not in name]  # the holders of the waiting pod's namespace
    (event,) = [e for e in cluster.events if e["reason"] == "FailedAttachVolume"]
    assert (event["involvedObject"]["name"], event["message"], event["source"]) == (
        pod,
        controller,
        {"component": "attachdetach-controller"},
    )
    warnings = [w for w in executor.recorder.messages("warning") if "Multi-Attach" in w]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(
        f"kubernetes-kueue: the container of Job {NAMESPACE}/second-writer (pod {pod}) "
    )
    assert warnings[0].split(" min for ", 1)[1] == (
        f'persistentvolumeclaim "scratch" (volume {volume}), a ReadWriteOnce volume attached to another node, which '
        f"the attach/detach controller does not attach to a second one (FailedAttachVolume: {controller}). {holder}; "
        f"{where.format(volume=volume, pods=', '.join(local))}. The job keeps waiting, its Kueue quota held, and starts "
        "once the volume is detached from that node: end what holds it, or give the rule a claim of its own or a "
        "ReadWriteMany one. Said once per pod (kubernetes-kueue-multi-attach-warning: after how many minutes)"
    )
    pod_reads = [
        path
        for method, path, _ in cluster.requests
        if method == "GET" and "/pods/" in path and not path.endswith("/log")
    ]
    assert sorted(pod_reads) == [
        f"/api/v1/namespaces/{NAMESPACE}/pods/{name}" for name in local
    ]  # one GET each
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    assert {rbac_request("GET", path) for path in pod_reads} <= {("", "pods", "get")} <= role_grants(role)
    assert not cannot_start(executor)
    with cluster._lock:
        cluster.multi_attach.clear()  # the other pod ended, the disk was detached from its node
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["second-writer"] and executor.recorder.failed == []
    assert len([w for w in executor.recorder.messages("warning") if "Multi-Attach" in w]) == 1
