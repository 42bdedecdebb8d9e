"""What this executor adds to the Job the kubernetes executor builds, and how it reads a failed pod's log.

The kubernetes executor (snakemake-executor-plugin-kubernetes 0.5.1) builds each Job and calls
``BatchV1Api.create_namespaced_job``; it reads failed pods' logs with ``CoreV1Api.read_namespaced_pod_log``.
This executor hands it API objects that complete the Job on its way out and read logs safely on the way in,
so none of the plugin's code is repeated here.
"""

from __future__ import annotations

import datetime
import json
import time
from dataclasses import dataclass, field

import kubernetes.client
import urllib3
from kubernetes.client.rest import ApiException
from kubernetes.utils import parse_quantity
from snakemake_interface_common.exceptions import WorkflowError

from .checks import PROFILE, SecretVolume, SettingError
from .mounts import FAILED_ATTACH, FAILED_MOUNT, MountWatch, mount_failure_kind, volume_failure_reason
from .pending import FAILED_SCHEDULING, UNBOUND_CLAIM, UnschedulableWatch, missing_claim, unbound_claims
from .pod_security import restrict

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")
# Answers of a busy or restarting API server (priority and fairness, etcd leader changes, a restart, a
# timeout): the same request may be sent again. Any other error will not go away by asking again.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
# What a refused create means for this executor's Jobs, by HTTP status.
CREATE_REFUSAL_FIXES = {
    400: "the Job is malformed",
    403: "the driver needs create on jobs in namespace {namespace} (profiles/k8s/rbac.yaml)",
    404: "does namespace {namespace} exist? (kubectl get namespace {namespace}; profiles/k8s/namespace.yaml)",
    409: "a Job of that name exists and this run did not create it: kubectl -n {namespace} describe job {name}",
    422: "the Job is invalid, or an admission webhook (Kueue's) refused it",
}


# Why the kubelet keeps a container waiting when it cannot start without someone's help (the reasons of
# pkg/kubelet/images/types.go, pkg/kubelet/container/sync_result.go and kuberuntime_container.go that leave a
# container of a restartPolicy Never pod waiting): its image cannot be pulled or read, its configuration names a
# missing Secret or key, or the container runtime or the node's resource managers refuse it. The kubelet tries again
# for ever; the pod stays Pending, its Job active and its Kueue quota held. (RunContainerError and StartError end a
# restartPolicy Never container, which fails its Job; ContainerCreating and PodInitializing are progress, except
# ContainerCreating with FailedMount Events of a volume the kubelet cannot mount: mounts.MountWatch, fixes "mount...",
# or FailedAttachVolume Events of one the attach/detach controller cannot attach to the node: fix "attach"; and a pod the scheduler cannot place for its missing PersistentVolumeClaim, FailedScheduling: fix "claim".)
STUCK_CONTAINER_FIXES = {
    "ErrImagePull": "image",
    "ImagePullBackOff": "image",
    "InvalidImageName": "image",
    "ErrImageNeverPull": "image",
    "RegistryUnavailable": "registry",
    "ImageInspectError": "inspect",
    "SignatureValidationFailed": "signature",
    "CreateContainerConfigError": "config",
    "CreateContainerError": "create",
    "PreCreateHookError": "node",
    "PreStartHookError": "node",
}
# Of those, the reasons no further try can cure.
HOPELESS_CONTAINER_REASONS = frozenset({"InvalidImageName", "ErrImageNeverPull"})
STUCK_CONTAINER_FIX_TEXT = {
    "image": "check that the image and its tag exist in the registry (container-image and "
    f"kubernetes-kueue-gpu-container-image in {PROFILE}) and that the cluster may pull from it "
    "(az aks update -g <group> -n <cluster> --attach-acr <registry>)",
    "registry": "the nodes cannot reach the image's registry (its host name in container-image or "
    f"kubernetes-kueue-gpu-container-image in {PROFILE}, the cluster's egress, DNS or firewall, a private "
    "endpoint): kubectl -n {namespace} describe pod {pod}",
    "inspect": "the node's container runtime cannot read the image it pulled (a damaged image, or one built for "
    "another platform: build it for linux/amd64 from profiles/k8s/Containerfile and push it again)",
    "signature": "the node's image policy refuses the image's signature: sign the image, or use one the policy "
    "accepts",
    "config": "a Secret or key the pod needs is missing: kubectl -n {namespace} describe pod {pod}",
    "create": "the container runtime cannot create the container; the events of `kubectl -n {namespace} describe "
    "pod {pod}` say why (a command the image lacks, a mount it cannot make, a runtime that times out)",
    "mount": "a Secret or ConfigMap volume of the pod is not optional and the object it names does not exist in "
    "namespace {namespace} (the Job's own volumes, or ones a cluster policy adds to every pod): create it, or make the "
    "volume optional; kubectl -n {namespace} describe pod {pod} lists the FailedMount events",
    "mount-key": "a Secret or ConfigMap volume of the pod lists in its items a key that the object in namespace "
    "{namespace} lacks: add the key to the object, correct the item's key, or make the volume optional; kubectl -n "
    "{namespace} describe pod {pod} lists the FailedMount events",
    "mount-driver": "the volume's storage driver cannot mount it (a CSI driver: Azure File, Azure Blob, a disk): check "
    "that the storage it names exists (storage account, file share or blob container), that the Secret with its key "
    "is right, that the nodes may reach it (the storage account's firewall or private endpoint) and that the driver "
    "is enabled (az aks update -g <group> -n <cluster> --enable-file-driver or --enable-blob-driver); kubectl -n "
    "{namespace} describe pod {pod} lists the FailedMount events",
    "attach": "the volume cannot be attached to the pod's node (a disk, e.g. Azure Disk): check that the disk exists "
    "and is in the node's zone, that no other node holds it (ReadWriteOnce), that the node's VM size allows one more "
    "data disk and that the cluster's identity may attach it (kubectl get volumeattachments); kubectl -n {namespace} "
    "describe pod {pod} lists the FailedAttachVolume events",
    "claim": "a PersistentVolumeClaim the pod mounts does not exist in namespace {namespace} (or is being deleted, or "
    "lost its volume), and no node can hold the pod without it: create the claim (kubectl -n {namespace} get pvc), or "
    "correct its name in the rule's volumes (kubernetes-persistent-volumes in " + PROFILE + ")",
    "claim-unbound": "a PersistentVolumeClaim the pod mounts exists in namespace {namespace} but is not bound to a "
    "volume, and the scheduler places no pod whose claim of volumeBindingMode Immediate is unbound: check that its "
    "storage class exists (kubectl get storageclass) and can provision the size and access modes it asks, or that a "
    "PersistentVolume matches it; kubectl -n {namespace} describe pvc lists the provisioner's events",
    "node": "the node's kubelet cannot give the container the CPUs, memory or devices (GPUs) it asks (its CPU, "
    "memory, topology or device manager): kubectl -n {namespace} describe pod {pod}, and the node's GPU "
    "device plugin",
}


@dataclass
class StuckContainer:
    """The container of a Job's pod that the kubelet keeps waiting, and since when (time.monotonic())."""

    pod: str
    reason: str
    message: str
    since: float
    detail: str = ""  # what the scheduler's message does not say (unbound claims: pending.unbound_claims)

    def hopeless(self, give_up_s: float) -> bool:
        return self.reason in HOPELESS_CONTAINER_REASONS or time.monotonic() - self.since >= give_up_s

    def describe(self, namespace: str, job: str, how: str) -> str:
        kind = {
            FAILED_MOUNT: mount_failure_kind(self.message),
            FAILED_ATTACH: "attach",
            FAILED_SCHEDULING: "claim-unbound" if UNBOUND_CLAIM in self.message else "claim",
        }
        kind = kind.get(self.reason)
        kind = kind or STUCK_CONTAINER_FIXES[self.reason]
        fix = STUCK_CONTAINER_FIX_TEXT[kind].format(namespace=namespace, pod=self.pod)
        detail = f" {self.detail}" if self.detail else ""
        return (
            f"kubernetes-kueue: the container of Job {namespace}/{job} (pod {self.pod}) {how} "
            f"({self.reason}: {self.message}{detail}); {fix}"
        )


def describe_api_error(error: Exception) -> str:
    """``HTTP 403 Forbidden: <the API server's message>``, or the connection error, for messages."""
    if not isinstance(error, ApiException):
        return f"{type(error).__name__}: {error}"
    try:
        message = json.loads(error.body)["message"]
    except (TypeError, ValueError, KeyError):
        message = (error.body or "").strip()[:500]
    return f"HTTP {error.status} {error.reason}: {message}"


def is_transient(error: Exception) -> bool:
    """True for errors that asking again may cure: busy or restarting server, lost connection."""
    if isinstance(error, ApiException):
        return error.status in TRANSIENT_STATUSES
    return isinstance(error, urllib3.exceptions.HTTPError)


def refusal_fix(error: Exception, permission: str, reloaded: bool = False) -> str:
    """What to do about a call the API server answered with ``error``: grant ``permission`` (403, RBAC), renew the
    credentials (401: an expired token, another cluster's kubeconfig; ``reloaded``: they were loaded again and still
    refused), wait (busy or restarting), or read the server's message."""
    status = getattr(error, "status", None)
    if status == 403:
        return f"the driver needs {permission} (profiles/k8s/rbac.yaml)"
    if status == 401:
        again = ", also after loading them again" if reloaded else ""
        return (
            f"the cluster refused the kubeconfig's credentials{again}: renew them "
            "(`az aks get-credentials -g <group> -n <cluster>`, `kubectl config current-context`)"
        )
    if is_transient(error):
        return "the API server is busy or restarting: run again later"
    return "see the API server's message"


def status_read_failure(namespace: str, name: str, error: Exception) -> str:
    """What to say of Job ``name`` whose status read failed with ``error``: a transient error is read again at the next
    status check (its job stays active), a 404 (the Job was deleted) or a refusal fails its job."""
    where = f"Job {namespace}/{name}"
    if is_transient(error):
        return (
            f"kubernetes-kueue: the status of {where} could not be read ({describe_api_error(error)}); it is read "
            "again at the next status check"
        )
    if isinstance(error, ApiException) and error.status == 404:
        return (
            f"kubernetes-kueue: {where} no longer exists (HTTP 404): it was deleted before it finished (kubectl "
            "delete, a cleanup or the TTL controller); the job fails, and Snakemake runs it again if it has retries left"
        )
    # 403 (RBAC), 401 after re-authenticating, another refusal: no later read would succeed.
    fix = refusal_fix(error, f"get on jobs/status in namespace {namespace!r}", reloaded=True)
    return (
        f"kubernetes-kueue: reading the status of {where} failed with {describe_api_error(error)}; {fix}. The Job "
        f"may still run: kubectl -n {namespace} delete job {name}"
    )


def read_refused(error: ApiException, resource: str, verbs: str, namespace: str) -> SettingError:
    """The setting error of a read of ``resource`` before the run that the API server refused with ``error``."""
    return SettingError(
        f"kubernetes-kueue: reading {resource} in namespace {namespace!r} failed with "
        f"{describe_api_error(error)}; {refusal_fix(error, f'{verbs} on {resource}')}"
    )


@dataclass
class JobCompletion:
    """Labels, image, environment and volumes every Job of the run gets before it is submitted."""

    queue_name: str
    workload_identity: bool = False
    gpu_container_image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_volumes: list[SecretVolume] = field(default_factory=list)

    def apply(self, job: kubernetes.client.V1Job) -> kubernetes.client.V1Job:
        # Kueue manages (suspends, queues, admits) exactly the Jobs labelled with an existing LocalQueue.
        job.metadata.labels = {**(job.metadata.labels or {}), QUEUE_LABEL: self.queue_name}
        template = job.spec.template
        pod_labels = {"app": "snakemake"}
        if self.workload_identity:
            # The AKS workload-identity webhook injects the token file and AZURE_* variables only into pods
            # carrying this label (a pod label, not a Job label) whose ServiceAccount names a client id.
            pod_labels[WORKLOAD_IDENTITY_LABEL] = "true"
        template.metadata = template.metadata or kubernetes.client.V1ObjectMeta()
        template.metadata.labels = {**(template.metadata.labels or {}), **pod_labels}
        container = template.spec.containers[0]
        requests = (container.resources.requests or {}) if container.resources else {}
        gpus = {name: requests[name] for name in GPU_RESOURCES if name in requests}
        if gpus:
            # The API server refuses an extended resource requested without an equal limit ("Limit must be set
            # for non overcommitable resources"); the kubernetes executor writes limits only with `scale: 0`.
            container.resources.limits = {**(container.resources.limits or {}), **gpus}
        # `gpu: 0` (a rule moved to the CPU in a later profile) still writes a request, of 0 GPUs: a CPU Job.
        if self.gpu_container_image and any(_positive(count) for count in gpus.values()):
            container.image = self.gpu_container_image
        restrict(template.spec, container)
        # No workflow job calls the Kubernetes API (a sweep connects to the running Dask scheduler, storage and
        # tracking use their own credentials), so the pod gets no API token of its ServiceAccount. Workload
        # identity is unaffected: its webhook projects its own token volume (azure-identity-token).
        if template.spec.automount_service_account_token is None:
            template.spec.automount_service_account_token = False
        # Idempotent: the kubernetes executor sends the same body again after re-authenticating, and this
        # executor after a transient error; a second copy of a variable or volume would be refused (422).
        container.env = [
            *(variable for variable in container.env or [] if variable.name not in self.env),
            *(kubernetes.client.V1EnvVar(name=name, value=value) for name, value in self.env.items()),
        ]
        names = {f"secret-{index}": volume for index, volume in enumerate(self.secret_volumes)}
        template.spec.volumes = [
            *(volume for volume in template.spec.volumes or [] if volume.name not in names),
            # Optional: a run that never needs the Secret (no calibration) still starts without it.
            *(
                kubernetes.client.V1Volume(
                    name=name,
                    secret=kubernetes.client.V1SecretVolumeSource(secret_name=volume.secret, optional=True),
                )
                for name, volume in names.items()
            ),
        ] or None
        container.volume_mounts = [
            *(mount for mount in container.volume_mounts or [] if mount.name not in names),
            *(
                kubernetes.client.V1VolumeMount(name=name, mount_path=volume.path, read_only=True)
                for name, volume in names.items()
            ),
        ] or None
        return job


def _positive(quantity) -> bool:
    """A GPU count above 0; one that is no quantity at all counts as a request (the API server refuses it)."""
    try:
        return parse_quantity(quantity) > 0
    except ValueError:
        return True


class CompletingBatchApi:
    """``BatchV1Api`` whose ``create_namespaced_job`` completes the Job first and says why a refused one was
    refused, and which remembers why a Job's status could not be read; everything else passes through."""

    def __init__(self, api: kubernetes.client.BatchV1Api, completion: JobCompletion) -> None:
        self._api = api
        self._completion = completion
        self._sent: set[str] = set()
        # The error of the last failed status read, by Job name, until a read succeeds (see the executor's
        # check_active_jobs: the kubernetes executor drops such a job from its active list).
        self.status_errors: dict[str, Exception] = {}
        # Since when (time.monotonic()) each Job has been read suspended, i.e. waiting for Kueue's admission,
        # and when the executor last said so.
        self.suspended_since: dict[str, float] = {}
        self.admission_reported: dict[str, float] = {}
        # Jobs read running (admitted) since they were last read suspended; a Job read suspended again after
        # that was taken back by Kueue (an eviction or preemption), which the executor reports once.
        self.job_uids: dict[str, str] = {}
        self.admitted: set[str] = set()
        # The status.startTime of each Job's last read while not suspended. The Job controller sets it anew
        # each time the Job is resumed, so another one means that Kueue took the Job back and admitted it
        # again between two reads, which then never saw it suspended.
        self.start_times: dict[str, datetime.datetime] = {}
        # Jobs taken back since the executor last reported them: True when only the new startTime showed it.
        self.taken_back: dict[str, bool] = {}
        self._started_seen: set[str] = set()  # Jobs read with a start time at least once
        # Jobs whose first start time the last read was the first to see: no read saw their first admission run, so
        # an eviction of it (Kueue admitted the Job, took it back and admitted it again between two reads) left no
        # other start time to compare with; their Workload says (evictions.WorkloadReview: ``review`` reads it in
        # the status check's one Workloads list while they run, ``finished`` by their uid when that read finds them
        # finished).
        self.started_unseen: set[str] = set()

    def use(self, api: kubernetes.client.BatchV1Api) -> None:
        """Send through ``api`` from now on (the kubernetes executor makes a new ``BatchV1Api`` when it
        re-authenticates after a 401); what this wrapper knows of the run's Jobs stays."""
        self._api = api

    def create_namespaced_job(self, namespace, body, **kwargs):
        job = self._completion.apply(body)
        name = job.metadata.name
        sent_before = name in self._sent
        self._sent.add(name)
        try:
            return self._api.create_namespaced_job(namespace, job, **kwargs)
        except ApiException as error:
            if error.status == 409 and sent_before:
                # An earlier try of this very create reached the server (its answer was a 504 or got lost).
                # Names are unique to the run (the kubernetes executor hashes a per-run uuid4 into them).
                return self._api.read_namespaced_job(name, namespace)
            if error.status not in CREATE_REFUSAL_FIXES:
                raise  # 401: the kubernetes executor re-authenticates; transient ones are tried again
            fix = CREATE_REFUSAL_FIXES[error.status].format(namespace=namespace, name=name)
            raise WorkflowError(
                f"kubernetes-kueue: the API server refused Job {namespace}/{name} (Kueue LocalQueue "
                f"{self._completion.queue_name}) with {describe_api_error(error)}; {fix}"
            ) from None

    def read_namespaced_job_status(self, name, namespace, **kwargs):
        try:
            status = self._api.read_namespaced_job_status(name, namespace, **kwargs)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            self.status_errors[name] = error
            raise
        self.status_errors.pop(name, None)
        if status.metadata is not None and status.metadata.uid:
            self.job_uids[name] = status.metadata.uid
        if status.spec is not None and status.spec.suspend:
            self.suspended_since.setdefault(name, time.monotonic())
            self.start_times.pop(name, None)  # Kueue clears it; the resume sets a new one
            if name in self.admitted:
                self.admitted.discard(name)
                self.taken_back[name] = False
        else:
            self.suspended_since.pop(name, None)
            self.admitted.add(name)
            self._note_start(name, status.status.start_time if status.status is not None else None)
        return status

    def _note_start(self, name: str, started: datetime.datetime | None) -> None:
        if started is None:  # resumed a moment ago: the Job controller has not set it yet
            return
        previous = self.start_times.get(name)
        self.start_times[name] = started
        if previous is None and name not in self._started_seen:
            self.started_unseen.add(name)
        else:
            self.started_unseen.discard(name)
        self._started_seen.add(name)
        if previous is not None and started != previous:
            # Suspended and resumed since the last read. The API gives whole seconds: a readmission within
            # the second of the previous start goes unseen.
            self.taken_back.setdefault(name, True)

    def __getattr__(self, name):
        return getattr(self._api, name)


def _gone_is_deleted(delete):
    """A delete whose object is already gone (404) has done what it was sent for."""
    try:
        return delete()
    except ApiException as error:
        if error.status != 404:
            raise
        return None


class SafeLogCoreApi:
    """``CoreV1Api`` that reads a failed pod's own log instead of its previous container's, and does not
    list pods being deleted.

    When Kueue evicts or preempts a Job it suspends it, and the Job controller deletes its pod: the pod stays
    listed (``deletionTimestamp`` set) while it stops, its container ends with 143 (SIGTERM), and once the
    Job is admitted again its new pod is listed next to it. The kubernetes executor would fail the job on
    that exit code, or stop the whole run on its ``assert len(pods.items) <= 1``. A pod being deleted is
    not counted as the Job's failure by the Job controller when the suspension deleted it (it removes the
    pod's tracking finalizer first), and is counted in the Job's ``status.failed`` when anything else
    deleted it, which the kubernetes executor reads: either way the Job's status says what happened.

    The kubernetes executor asks for ``previous=True``. Its Jobs run with ``restartPolicy: Never``, so no
    container ever restarts, and the API server answers HTTP 400 "previous terminated container ... not
    found"; the executor turns that into an error that stops the whole run instead of failing (and retrying)
    the one job. Here the current container's log is read; if even that is gone (an evicted or deleted pod),
    the log says why, and the job still fails normally, so Snakemake retries it.
    """

    def __init__(self, api: kubernetes.client.CoreV1Api) -> None:
        self._api = api
        # By Job name: the container the kubelet keeps waiting (STUCK_CONTAINER_FIXES), as last listed.
        self.stuck_containers: dict[str, StuckContainer] = {}
        # By Job name: its pod the scheduler cannot place on any node (PodScheduled=False, Unschedulable).
        self.unschedulable = UnschedulableWatch()
        # By Job name: its pod waiting ContainerCreating, and a volume the kubelet cannot mount.
        self.mounts = MountWatch()

    def list_namespaced_pod(self, namespace, **kwargs):
        pods = self._api.list_namespaced_pod(namespace, **kwargs)
        pods.items = [
            pod for pod in pods.items if pod.metadata is None or pod.metadata.deletion_timestamp is None
        ]
        selector = kwargs.get("label_selector") or ""
        if selector.startswith("job-name="):  # the kubernetes executor's listing of one Job's pods
            self._note_stuck_container(namespace, selector.removeprefix("job-name="), pods.items)
            self.unschedulable.note(selector.removeprefix("job-name="), pods.items)
        return pods

    def _note_stuck_container(self, namespace: str, job: str, pods) -> None:
        for pod in pods:
            claim = missing_claim(pod)  # no container status yet: the pod is not on a node
            if claim is not None:
                return self._stuck(job, pod, FAILED_SCHEDULING, claim, namespace)
            for status in (pod.status.container_statuses if pod.status else None) or []:
                waiting = status.state.waiting if status.state else None
                if status.name != "snakemake" or waiting is None:
                    continue
                reason, message = waiting.reason, waiting.message or ""
                if reason == "ContainerCreating":  # progress, unless a volume cannot be attached or mounted
                    volumes = (pod.spec.volumes if pod.spec else None) or []
                    claims = [
                        v.persistent_volume_claim.claim_name for v in volumes if v.persistent_volume_claim
                    ]
                    message = self.mounts.note(self._api, namespace, job, pod.metadata.name, claims)
                    if message is None:
                        continue
                    reason = volume_failure_reason(message)
                if reason in STUCK_CONTAINER_FIXES or reason in (FAILED_MOUNT, FAILED_ATTACH):
                    if reason in STUCK_CONTAINER_FIXES:
                        self.mounts.forget(job)
                    return self._stuck(job, pod, reason, message)
        self.stuck_containers.pop(job, None)
        if not any(self._creating(pod) for pod in pods):
            self.mounts.forget(job)

    def _stuck(self, job: str, pod, reason: str, message: str, namespace: str = "") -> None:
        previous = self.stuck_containers.get(job)
        same = previous is not None and previous.pod == pod.metadata.name
        # ErrImagePull and ImagePullBackOff alternate: the same pod waits on since its first one.
        since = previous.since if same else time.monotonic()
        detail = previous.detail if same else ""
        if UNBOUND_CLAIM in message and not detail:  # which claim, read once per pod
            detail = unbound_claims(self._api, namespace, pod, self.mounts.refusals)
        self.stuck_containers[job] = StuckContainer(pod.metadata.name, reason, message, since, detail)

    @staticmethod
    def _creating(pod) -> bool:
        return any(
            status.name == "snakemake"
            and status.state
            and status.state.waiting
            and status.state.waiting.reason == "ContainerCreating"
            for status in (pod.status.container_statuses if pod.status else None) or []
        )

    def delete_namespaced_pod(self, name, namespace, **kwargs):
        # The kubernetes executor's safe_delete_job deletes each listed pod, then the Job, in one try: a pod gone
        # in between (the garbage collector, kubectl delete pod) answered 404, which skipped the Job's delete.
        return _gone_is_deleted(lambda: self._api.delete_namespaced_pod(name, namespace, **kwargs))

    def delete_namespaced_secret(self, name, namespace, **kwargs):
        # The run's Secret, deleted at shutdown: a delete sent again after a 5xx whose write took effect (a 504)
        # meets 404, which the kubernetes executor turned into an error of the whole run after its last job.
        return _gone_is_deleted(lambda: self._api.delete_namespaced_secret(name, namespace, **kwargs))

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        kwargs["previous"] = False
        try:
            return self._api.read_namespaced_pod_log(name, namespace, **kwargs)
        except ApiException as error:
            reading = f"reading the log of pod {namespace}/{name}"
            if self.mounts.refusals.note(error, "pods/log", "get", namespace, reading):  # said once per run
                why = "the driver's Role lacks get on pods/log, as the run's log says once"
            else:
                why = describe_api_error(error)
            return (
                f"[kubernetes-kueue] the log of pod {namespace}/{name} could not be read "
                f"({why}); see `kubectl -n {namespace} describe pod {name}`"
            )

    def __getattr__(self, name):
        return getattr(self._api, name)
