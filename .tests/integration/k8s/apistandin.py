"""A loopback stand-in for the Kubernetes API, its kubelet and Kueue, for contract tests of the k8s profile.

No API server can run on the test machines, so this serves the calls the kubernetes executors make (create
and delete Secrets and Jobs, read Jobs, list and delete Pods, read pod logs, read LocalQueues and
ServiceAccounts) on 127.0.0.1, and behaves like the real thing where it matters:

* every Job is validated against the real Kubernetes OpenAPI schema (``kubernetes_validate``, strict), then
  against rules a real cluster enforces later: an extended resource such as ``nvidia.com/gpu`` needs a limit
  equal to its request, and (Kueue) a pod without a memory request escapes the quota; a rejected Job gets
  HTTP 422 like a real admission failure;
* Kueue: its webhook suspends every Job it manages (all of them: ``manageJobsWithoutQueueName: true``, as
  profiles/k8s/README.md configures Kueue); a Job without the ``kueue.x-k8s.io/queue-name`` label is labelled
  ``default`` only when a LocalQueue named ``default`` exists (LocalQueueDefaulting); a Job is admitted only
  if its label names an active LocalQueue of its namespace, after ``admit_delay`` seconds and while fewer
  than ``max_running`` pods run (a quota). Any other Job stays suspended, without pods, for ever, as with
  Kueue. LocalQueues are served with the ``Active`` condition Kueue's controllers write: ``True`` (reason
  ``Ready``) when its ClusterQueue exists and is active, else ``False`` with Kueue's reason
  (``ClusterQueueDoesNotExist``, ``ClusterQueueIsInactive``, ``Stopped``); a ClusterQueue is inactive while
  it names a missing ResourceFlavor (``FlavorNotFound``) or has a ``stopPolicy``;
* an admitted Job runs its pod for real: the container's ``command + args`` in a fresh empty directory (the
  pod's emptyDir ``/workdir``) with the environment of the container spec (values and Secret references);
  Secret volumes are written under the pod's directory, and an environment value naming a path under a mount
  is translated to it (the pod's filesystem is its directory);
* the AKS workload-identity webhook: a pod labelled ``azure.workload.identity/use: "true"`` whose
  ServiceAccount carries ``azure.workload.identity/client-id`` gets ``AZURE_CLIENT_ID``, ``AZURE_TENANT_ID``,
  ``AZURE_AUTHORITY_HOST`` and ``AZURE_FEDERATED_TOKEN_FILE``, plus ``identity_env``: Azurite cannot check an
  Entra token, so the test's emulator credential is what the identity grants here. Other pods get none;
* pods and Jobs report status as the API does: a failed container is ``terminated`` with its exit code and
  reason ``Error``; a container killed by SIGKILL that nobody deleted is ``OOMKilled`` (137), which is what
  the kernel's OOM killer does to a container over its memory limit; ``evict()`` fails a running pod as the
  kubelet's eviction manager does (phase ``Failed``, reason ``Evicted``, container ``ContainerStatusUnknown``
  137); a Job's conditions follow ``backoffLimit: 0`` (``FailureTarget``/``Failed``, ``Complete``);
* ``GET .../log?previous=true`` on a container that never restarted answers HTTP 400 "previous terminated
  container ... not found", as the real API server does for every ``restartPolicy: Never`` pod;
* an image listed in ``unpullable_images`` (a wrong tag, a registry the cluster may not pull from) is never
  pulled: the pod stays ``Pending`` with its container waiting, reason ``ErrImagePull`` then
  ``ImagePullBackOff`` as the kubelet retries, and its Job stays active (holding its Kueue quota) for ever;
* a container whose environment names a missing Secret, or a missing key of one, is not created: it waits with
  reason ``CreateContainerConfigError`` and the kubelet's message (``secret "x" not found``, ``couldn't find key
  k in Secret <namespace>/x``), its pod ``Pending`` and its Job active, and starts once the Secret exists, as the
  kubelet tries again;
* a Secret or ConfigMap volume that is not ``optional`` and names a missing object is not mounted: the container
  waits with reason ``ContainerCreating`` (no message), its pod ``Pending`` and its Job active, and at each of its
  tries the kubelet records a ``Warning`` Event ``FailedMount`` on the pod, ``MountVolume.SetUp failed for volume
  "<volume>" : secret "<name>" not found`` (``configmap "<name>" not found``; operation_generator.go's
  GenerateError, the kubelet's secret and configmap managers), repeated as the kubelet's event recorder does
  (``count`` and ``lastTimestamp``); Events are listed (``GET .../events``) with a ``fieldSelector`` on
  ``involvedObject.kind``, ``involvedObject.name`` and ``reason``; the container starts once the object exists;
  likewise a key that such a volume's ``items`` list and the object lacks (``MountVolume.SetUp failed for volume
  "<volume>" : references non-existent secret key: <key>``, ``... : configmap references non-existent config key:
  <key>``; pkg/volume/secret/secret.go and pkg/volume/configmap/configmap.go, MakePayload), and a
  PersistentVolumeClaim volume whose CSI driver fails to stage it (``mount_errors``, by claim: ``MountVolume.MountDevice
  failed for volume "pvc-<claim uid>" : <the driver's gRPC error>``, as Azure File and Blob drivers fail on a wrong
  account key or a firewall), until the cause is fixed; and a claim's volume that cannot be attached to the node
  (``attach_errors``, by claim): the attach/detach controller of kube-controller-manager
  (pkg/controller/volume/attachdetach) records a ``Warning`` Event ``FailedAttachVolume`` on the pod at each try,
  source ``attachdetach-controller``, ``AttachVolume.Attach failed for volume "pvc-<claim uid>" : <the attacher's
  error>``, and the kubelet, which waits for the attachment, only a FailedMount summary naming no cause; likewise a
  ReadWriteOnce claim's volume attached to another node (``multi_attach``, by claim: the pods using it there), with
  the controller's ``Multi-Attach error for volume "pvc-<claim uid>" Volume is already used by pod(s) <pods>``, the
  pods of the waiting pod's namespace by name and those of others counted (``... and <n> pod(s) in different
  namespaces``, or ``Volume is already used by <n> pod(s) in different namespaces`` alone), or ``... Volume is already
  exclusively attached to one node and can't be attached to another`` when no pod uses it (reconciler.go
  reportMultiAttachError; the node goes only to the controller's log), until the test clears it; those holder pods
  are served (``GET .../pods/<name>``, as a Job's pod is too) as running pods that mount the claim, on
  ``multi_attach_node`` (their ``spec.nodeName``; the Jobs' pods run on ``standin-node-0``), valid against the
  Kubernetes schema, and answer 404 once the test clears them;
* with ``container_runtime="cri-o"`` (CRI-O with runc), a container whose command is not in the image (not on the
  pod's PATH) cannot be created: it waits with reason ``CreateContainerError`` and CRI-O's message (``container
  create failed: ... exec: \\"x\\": executable file not found in $PATH``), its pod ``Pending`` and its Job active,
  and the kubelet tries again; with containerd (the default, as on AKS) the same container fails at its start;
* the scheduler, on ``nodes`` empty nodes alike of ``node_allocatable`` (none set: every pod fits): a pod that
  asks more of a resource than one node has stays ``Pending`` and unscheduled, its Job active, with the condition
  the scheduler writes (``PodScheduled`` ``False``, reason ``Unschedulable``, its FitError message such as ``0/3
  nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found
  for incoming pod.``, ``lastProbeTime`` null, ``lastTransitionTime`` kept while it stays unschedulable), and is
  placed once a node fits (a test changes the nodes, as a cluster autoscaler would); a placed pod carries
  ``PodScheduled`` ``True``; a pod whose PersistentVolumeClaim does not exist is unschedulable with the
  volumebinding plugin's PreFilter error (``0/3 nodes are available: persistentvolumeclaim "<claim>" not found.
  preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.``; kube-scheduler's
  volume_binding.go podHasPVCs, framework/types.go FitError, the DefaultPreemption plugin), and placed once the
  claim is added (``add_objects``; a claim is bound as it is added); a claim in ``unbound_claims`` is served with
  phase ``Pending`` (``GET .../persistentvolumeclaims/<name>``), carries the PV controller's Warning Event
  (``ProvisioningFailed``, ``storageclass.storage.k8s.io "<class>" not found``; ``FailedBinding`` without a class),
  and its pods are unschedulable with the same PreFilter's ``pod has unbound immediate PersistentVolumeClaims``
  until the test binds it (discards it from ``unbound_claims``);
* a deleted Job, pod or Secret answers 404 from then on; a running pod deleted through the API is killed, and
  its Job (``backoffLimit: 0``) fails; ``fail_next()`` makes chosen calls answer as a busy or refusing server
  does (429 with ``Retry-After``, 500, 503, 504 possibly after the write took effect, 403, 404), with
  apimachinery's ``Status`` body; a 403's message is the API server's (staging/src/k8s.io/apiserver/pkg/endpoints/
  handlers/responsewriters/errors.go, apimachinery's NewForbidden): the resource qualified by its API group and, for
  one object, its name, ``is forbidden: User "system:serviceaccount:<namespace>:<name>" cannot <verb> resource
  "<resource[/subresource]>" in API group "<group>" in the namespace "<namespace>"``, where the verb is the one RBAC
  checked (``list`` for a GET of a collection such as ``.../events``, ``get`` for one object).

* Kueue's Workloads (``kueue.x-k8s.io/v1beta2``, get and list, ``labelSelector`` ``key=value``): one per Job,
  named ``job-<job>-<hash>``, labelled ``kueue.x-k8s.io/job-uid`` with the Job's uid and owned by the Job,
  with the ``QuotaReserved`` and ``Admitted`` conditions Kueue 0.19 writes on admission (``admission``
  names the ClusterQueue);
* Kueue evicting an admitted Job (``evict_workload()``, ``preempt()``), in Kueue 0.19's order
  (pkg/workload/evict, pkg/controller/jobframework/reconciler.go): the Workload gets ``Evicted`` (and, when
  preempted, ``Preempted``) True; Kueue suspends the Job (``spec.suspend``, ``status.startTime`` cleared);
  the Job controller removes its tracking finalizer from the pod before deleting it, so the pod is not
  counted in ``status.failed`` (``active`` 0, ``terminating`` 1, ``Suspended`` True) and stays listed with
  a ``deletionTimestamp`` while it stops (SIGTERM, SIGKILL after the grace period; then exit 143 or 137
  for ``terminated_pod_listed_s`` seconds); Kueue then writes ``Requeued`` (True when preempted),
  ``QuotaReserved`` False (reason ``Pending``, the eviction's message), ``Admitted`` False and drops the
  admission. After ``readmit_after_s`` the Workload is admitted again (``Evicted``/``Preempted`` False,
  reason ``QuotaReserved``, message ``Previously: ...``), the Job resumed (``Suspended`` False,
  ``JobResumed``, ``status.startTime`` the time of this resume, as the Job controller resets it) and a new
  pod started, possibly while the old one is still listed, as in Kubernetes. A Job evicted and readmitted
  between two reads therefore reads running both times, with another ``startTime``.

* Kueue deactivating a Workload (``deactivate_workload()``), in Kueue 0.19's order: ``spec.active`` false, then
  ``Evicted`` True with reason ``DeactivatedDueToRequeuingLimitExceeded`` (waitForPodsReady with
  ``requeuingStrategy.backoffLimitCount``: the pods were not ready in time once too often) or ``Deactivated`` (set
  by hand) and Kueue's message (``The workload is deactivated due to exceeding the maximum number of re-queuing
  retries``); an admitted Workload's Job is stopped as for an eviction (``Requeued`` False with that reason); the
  Workload is not admitted again, and its Job stays suspended, until someone sets ``spec.active`` back to true
  (``reactivate_workload()``: ``Requeued`` True, reason ``Reactivated``), after which it is admitted as any other.

* Kueue's waitForPodsReady (``pods_ready_timeout_s`` and the ``requeuing_backoff_*`` settings; off by default), in
  Kueue 0.19's order (pkg/controller/core/workload_controller.go, pkg/workload): an admitted Workload whose pod is not
  ready within the timeout (unschedulable, its image or a volume missing) is evicted, reason ``PodsReadyTimeout``
  (``Exceeded the PodsReady timeout <namespace>/<workload>``), with ``status.requeueState`` (``count``,
  ``requeueAt``: now plus base * 2^(count-1) s, capped); it is not admitted again before ``requeueAt``, when
  ``Requeued`` turns True (``BackoffFinished``) and ``requeueAt`` goes; the timeout past ``backoffLimitCount``
  requeues deactivates it as above (``DeactivatedDueToRequeuingLimitExceeded``).

An exception in one of the stand-in's own threads (Kueue's admission loop, a request's handler) is never lost with
its thread: it is recorded (``thread_errors``), every later API call answers 500 naming it, and the test's next call
into the stand-in, or ``stop()`` at its teardown, raises it as ``StandInThreadError`` with its traceback.

It does not emulate node placement beyond that fit (other pods' use of a node, taints, affinity), image pulls,
RBAC, ClusterQueue quotas per flavor, a ClusterQueue's namespaceSelector, Kueue choosing what to preempt (a
test names the Job), priorities, the Workload's ``PodsReady`` condition and the back-off's jitter, admission checks,
watches and paged lists
(which the executors do not use), or GPU device plugins.
"""

from __future__ import annotations

import argparse
import base64
import copy
import datetime
import hashlib
import json
import os
import secrets as random_names
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate
from kubernetes.utils.quantity import parse_quantity

KUBERNETES_VERSION = "1.33.0"
KUBECONFIG_TEMPLATE = Path(__file__).with_name("kubeconfig.template.yaml")
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
CLIENT_ID_ANNOTATION = "azure.workload.identity/client-id"
TENANT_ID_ANNOTATION = "azure.workload.identity/tenant-id"
STANDIN_TENANT = "11111111-2222-3333-4444-555555555555"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # Kueue pkg/controller/constants: JobUIDLabel
# Kueue 0.19 apis/kueue/v1beta2/workload_types.go: condition types, and the Evicted reason of a preemption.
WORKLOAD_EVICTED, WORKLOAD_PREEMPTED, WORKLOAD_REQUEUED = "Evicted", "Preempted", "Requeued"
WORKLOAD_QUOTA_RESERVED, WORKLOAD_ADMITTED = "QuotaReserved", "Admitted"
EVICTED_BY_PREEMPTION = "Preempted"  # WorkloadEvictedByPreemption
# Why Kueue deactivates a Workload itself (the DeactivationTarget condition's reason and message, from
# workload_controller.go), and the Evicted reason of a deactivation (WorkloadDeactivated).
WORKLOAD_REQUEUING_LIMIT_EXCEEDED = "RequeuingLimitExceeded"
DEACTIVATION_TARGET_MESSAGES = {
    WORKLOAD_REQUEUING_LIMIT_EXCEEDED: "exceeding the maximum number of re-queuing retries",
    "MaximumExecutionTimeExceeded": "exceeding the maximum execution time",
}
WORKLOAD_DEACTIVATED = "Deactivated"
PODS_READY_TIMEOUT = "PodsReadyTimeout"  # WorkloadEvictedByPodsReadyTimeout
# Why Kueue preempted a Workload (the Preempted condition's reason), and how its message says it
# (pkg/scheduler/preemption: HumanReadablePreemptionReasons).
PREEMPTION_REASONS = {
    "InClusterQueue": "prioritization in the ClusterQueue",
    "InCohortReclamation": "reclamation within the cohort",
    "InCohortFairSharing": "Fair Sharing within the cohort",
    "InCohortReclaimWhileBorrowing": "reclamation within the cohort while borrowing",
}
# Seconds the kubelet waits after SIGTERM before SIGKILL (a pod's default terminationGracePeriodSeconds).
GRACE_PERIOD_S = 30


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Pod:
    name: str
    job: str
    workdir: Path
    process: subprocess.Popen | None  # None only while the stand-in creates it (under its lock)
    started: str = field(default_factory=_now)
    ended_by: str = ""  # "" while it runs or exits on its own; "deleted" or "evicted" when killed for it
    removed: bool = False  # deleted through the API: no longer listed, its log no longer served
    deletion_timestamp: str = ""  # set when the Job controller deletes it (its Job was suspended)
    stopping_since: float = 0.0  # time.monotonic() of that deletion: SIGKILL after the grace period
    exited_at: float = 0.0  # time.monotonic() when its process was first seen ended
    process_started: float = field(default_factory=time.monotonic)
    unpulled_image: str = ""  # the image the kubelet cannot pull: the container never starts
    # (reason, message) of the container's waiting state while the kubelet cannot create it (a missing Secret:
    # CreateContainerConfigError; a missing Secret volume: ContainerCreating); it tries again until it can.
    waiting: tuple[str, str] = ("", "")
    # The scheduler's message while no node can hold the pod, and since when (its condition's transition time).
    unschedulable: str = ""
    unschedulable_since: str = ""
    scheduled_at: str = ""  # when it was bound to a node (PodScheduled True)

    def exit_code(self) -> int | None:
        code = self.process.poll()
        return None if code is None else (128 - code if code < 0 else code)


class StandInThreadError(RuntimeError):
    """A background thread of the stand-in (its admission loop, a request's handler) raised: the stand-in no longer
    behaves as a cluster does, so the test that uses it fails with the thread's traceback."""


class ContainerWaits(Exception):
    """The kubelet cannot create the container yet: its waiting state's reason and message. It tries again."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


@dataclass
class JobRecord:
    manifest: dict
    namespace: str
    created: float
    admitted: bool = False
    pod: Pod | None = None
    start_error: str = ""
    deleted: bool = False  # deleted through the API: 404 from then on (kept here for the tests' assertions)
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    workload: dict = field(default_factory=dict)
    stopping: list[Pod] = field(default_factory=list)  # pods deleted by a suspension, listed until gone
    readmit_at: float = 0.0  # time.monotonic() before which an evicted Workload is not admitted again
    resumed: str = ""  # when the Job was last unsuspended after an eviction (its Suspended=False condition)
    admitted_at: float = (
        0.0  # time.monotonic() of the last admission: waitForPodsReady's timeout counts from it
    )
    started: str = ""  # its status.startTime: set anew on each resume, cleared when Kueue suspends it


# The Status objects the API server answers these codes with (reason, message), as apimachinery writes them.
FAILURE_STATUS = {
    401: ("Unauthorized", "Unauthorized"),  # an expired token: the body says no more
    # apiserver's responsewriters.Forbidden (forbiddenMessage) wrapped in apimachinery's NewForbidden: the resource
    # qualified by its group and, for one object, its name, then the RBAC request (verb, resource/subresource, group).
    403: (
        "Forbidden",
        '{qualified} is forbidden: User "{user}" cannot {verb} resource "{resource}" in API group "{group}" in the '
        'namespace "{namespace}"',
    ),
    # A create in a namespace that does not exist; a call on a named object gets '<kind> "<name>" not found'.
    404: ("NotFound", 'namespaces "{namespace}" not found'),
    429: ("TooManyRequests", "Too many requests, please try again later."),
    500: ("InternalError", "Internal error occurred: etcdserver: leader changed"),
    503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
    504: (
        "Timeout",
        "the server was unable to return a response in the time allotted, but may still be processing the request",
    ),
}
VERBS = {"GET": "get", "POST": "create", "DELETE": "delete"}


@dataclass
class InjectedFailure:
    """The next ``times`` calls ``method`` on ``resource`` (``jobs``, ``jobs/status``, ``pods``, ``pods/log``...)
    answer ``status``. ``processed``: the request takes effect first (a 504 after the write reached etcd)."""

    method: str
    resource: str
    status: int
    times: int = 1
    retry_after: int | None = None
    processed: bool = False


@dataclass
class Rejection:
    name: str
    problems: list[str]


@dataclass
class ApiStandIn:
    """Serve the stand-in API on 127.0.0.1; ``start()`` picks a free port, ``stop()`` ends every pod."""

    pods_root: Path
    pod_path: str
    pod_home: str = field(default_factory=lambda: os.environ.get("HOME", "/root"))
    admit_delay: float = 0.0
    max_running: int = 0
    identity_env: dict[str, str] = field(default_factory=dict)
    serves_kueue: bool = True  # False: a cluster without Kueue (no kueue.x-k8s.io API at all)
    kubernetes_version: str = KUBERNETES_VERSION
    secrets: dict[str, dict] = field(default_factory=dict)
    config_maps: dict[str, dict] = field(default_factory=dict)
    # "namespace/name" -> a PersistentVolumeClaim, bound as it is added (unless in unbound_claims)
    persistent_volume_claims: dict[str, dict] = field(default_factory=dict)
    # Claims ("namespace/name") the PV controller cannot bind (its StorageClass is missing; no PersistentVolume matches
    # a claim without one): phase Pending, with the controller's Warning Event on the claim, until the test discards it.
    unbound_claims: set[str] = field(default_factory=set)
    # By claim ("namespace/name"): the error its CSI driver answers NodeStageVolume with (Azure File: a wrong key,
    # a storage firewall); the kubelet fails MountDevice at each try until the test clears it.
    mount_errors: dict[str, str] = field(default_factory=dict)
    # By claim ("namespace/name"): the error its CSI driver answers ControllerPublishVolume with (Azure Disk: the VM's
    # data-disk limit, a disk in another zone); the attach/detach controller fails to attach the claim's volume to the
    # node at each try until the test clears it.
    attach_errors: dict[str, str] = field(default_factory=dict)
    # By claim ("namespace/name") of a ReadWriteOnce volume attached to another node: the pods that use it there, by
    # name, or "namespace/name" for one of another namespace ([] once none does: the attachment outlived its pod). The attach/detach controller refuses to attach it
    # to a second node, with its Multi-Attach FailedAttachVolume at each try, until the test clears it.
    multi_attach: dict[str, list[str]] = field(default_factory=dict)
    # The node those holder pods run on, which the volume is attached to (the pods the Jobs start go to standin-node-0):
    # each holder is served as a running Pod (GET .../pods/<name>) with this spec.nodeName, mounting the claim.
    multi_attach_node: str = "standin-node-1"
    events: list[dict] = field(default_factory=list)  # core/v1 Events the kubelet recorded
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    local_queues: dict[str, dict] = field(default_factory=dict)  # "namespace/name" -> LocalQueue
    cluster_queues: dict[str, dict] = field(default_factory=dict)  # name -> ClusterQueue (cluster-scoped)
    resource_flavors: set[str] = field(default_factory=set)
    service_accounts: dict[str, dict] = field(default_factory=dict)  # "namespace/name" -> ServiceAccount
    submitted: list[dict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)
    deleted_secrets: list[str] = field(default_factory=list)
    secret_keys: dict[str, set[str]] = field(default_factory=dict)
    log_requests: list[dict] = field(default_factory=list)
    failures: list[InjectedFailure] = field(default_factory=list)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, query) of every call
    answered_failures: list[tuple[str, str, int]] = field(default_factory=list)
    # Bearer tokens the API server accepts (None: anonymous calls on loopback, as by default). Any other
    # credential is answered 401 Unauthorized, as the real server answers a token it no longer accepts.
    accepted_tokens: set[str] | None = None
    # Who the API server takes the caller for, as its 403s name it: a driver pod using the ServiceAccount of
    # profiles/k8s/rbac.yaml (its RoleBinding's subject).
    user: str = "system:serviceaccount:snakemake:snakemake-driver"
    max_seen_running: int = 0
    # How long a pod stopped by a suspension stays listed after its container ended (the kubelet's status
    # report, then its final delete): the window in which a client sees its exit code 143.
    terminated_pod_listed_s: float = 1.0
    unpullable_images: set[str] = field(default_factory=set)
    # The nodes' container runtime. containerd (AKS) creates a container whatever its command, and a command the
    # image lacks fails it at its start (StartError, the Job fails); CRI-O with runc resolves the command when it
    # creates the container, so there the container waits, CreateContainerError, and the kubelet tries again.
    container_runtime: str = "containerd"
    # The cluster's nodes, all alike and empty: what one node can hold (``{"memory": "64Gi"}``; a resource it
    # does not list is unlimited, except an extended one such as nvidia.com/gpu, of which it has none).
    nodes: int = 3
    node_allocatable: dict[str, str] = field(default_factory=dict)
    # Kueue's waitForPodsReady (its Configuration; 0: off, as by default): ``timeout``, and
    # ``requeuingStrategy.backoffLimitCount`` (None: requeued for ever), ``backoffBaseSeconds``,
    # ``backoffMaxSeconds``.
    pods_ready_timeout_s: float = 0.0
    requeuing_backoff_limit_count: int | None = None
    requeuing_backoff_base_s: float = 60.0
    requeuing_backoff_max_s: float = 3600.0

    def __post_init__(self) -> None:
        self.pods_root = Path(self.pods_root)
        self.pods_root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()
        # The traceback of each exception a background thread raised, in order, and how many were raised already.
        self.thread_errors: list[str] = []
        self._holders: dict[tuple[str, str], tuple[str, str]] = {}  # multi_attach's pods read: (uid, created)
        self._raised_errors = 0

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ApiStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.standin = self
        self._server.daemon_threads = True
        threading.Thread(target=self._guarded(self._server.serve_forever), daemon=True).start()
        threading.Thread(target=self._guarded(self._admission_loop), daemon=True).start()
        return self

    def _guarded(self, target):
        """``target`` run in a thread: an exception it raises is recorded (``record_thread_error``), not lost with
        the thread, which would leave Jobs unadmitted with nothing said."""

        def run() -> None:
            try:
                target()
            except BaseException:
                self.record_thread_error()

        return run

    def record_thread_error(self) -> None:
        """Record the exception being handled in a background thread; the next call into the stand-in (through
        the API or from the test) and ``stop()`` raise it as StandInThreadError."""
        with self._lock:
            self.thread_errors.append(
                f"in thread {threading.current_thread().name}:\n{traceback.format_exc()}"
            )

    def check_threads(self) -> None:
        """Raise StandInThreadError for exceptions of background threads not raised yet."""
        with self._lock:
            new = self.thread_errors[self._raised_errors :]
            self._raised_errors = len(self.thread_errors)
        if new:
            raise StandInThreadError("the API stand-in's background thread failed " + "\n".join(new))

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for record in self.jobs.values():
                for pod in [*record.stopping, record.pod]:
                    if pod is not None and pod.exit_code() is None:
                        self._kill(pod, "deleted")
        self.check_threads()  # at the test's teardown at the latest

    def write_kubeconfig(self, path: Path, namespace: str, token: str | None = None) -> Path:
        user = "{}" if token is None else json.dumps({"token": token})  # YAML flow mapping
        text = KUBECONFIG_TEMPLATE.read_text().format(server=self.url, namespace=namespace, user=user)
        Path(path).write_text(text)
        return Path(path)

    def add_objects(self, documents: list[dict]) -> ApiStandIn:
        """Objects applied before the run (kubectl apply): Kueue's objects, ServiceAccounts, Secrets, ConfigMaps."""
        self.check_threads()
        with self._lock:
            for document in documents:
                meta = document["metadata"]
                key = f"{meta.get('namespace', '')}/{meta['name']}"
                if document["kind"] == "LocalQueue":
                    self.local_queues[key] = copy.deepcopy(document)
                elif document["kind"] == "ClusterQueue":
                    self.cluster_queues[meta["name"]] = copy.deepcopy(document)
                elif document["kind"] == "ResourceFlavor":
                    self.resource_flavors.add(meta["name"])
                elif document["kind"] == "ServiceAccount":
                    self.service_accounts[key] = copy.deepcopy(document)
                elif document["kind"] == "Secret":
                    self.secrets[meta["name"]] = copy.deepcopy(document)
                elif document["kind"] == "ConfigMap":
                    self.config_maps[meta["name"]] = copy.deepcopy(document)
                elif document["kind"] == "PersistentVolumeClaim":
                    claim = copy.deepcopy(document)
                    claim["metadata"].setdefault("uid", str(uuid.uuid4()))
                    self.persistent_volume_claims[key] = claim
                    if key in self.unbound_claims:
                        self._claim_not_bound(claim)
        return self

    def fail_next(self, method: str, resource: str, status: int, **how) -> ApiStandIn:
        """Answer the next call(s) with an error the real API server gives (see ``InjectedFailure``)."""
        self.check_threads()
        assert status in FAILURE_STATUS, f"no Status known for HTTP {status}"
        with self._lock:
            self.failures.append(InjectedFailure(method, resource, status, **how))
        return self

    def take_failure(self, method: str, resource: str) -> InjectedFailure | None:
        with self._lock:
            for failure in self.failures:
                if (failure.method, failure.resource) == (method, resource) and failure.times > 0:
                    failure.times -= 1
                    self.answered_failures.append((method, resource, failure.status))
                    return failure
        return None

    # ---- validation ------------------------------------------------------------------------------
    def problems(self, job: dict) -> list[str]:
        found = []
        try:
            kubernetes_validate.validate(job, self.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            found.append(f"schema ({self.kubernetes_version}) at {path or '<root>'}: {error.message}")
        for container in job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for part, quantities in (("requests", requests), ("limits", limits)):
                for name, value in quantities.items():
                    # Kubernetes: a quantity must parse, and be 0 or more (ValidateResourceRequirements);
                    # 0 is accepted.
                    try:
                        negative = parse_quantity(value) < 0
                    except ValueError:
                        found.append(f"container {container.get('name')}: {value!r} is no quantity")
                        continue
                    if negative:
                        found.append(
                            f"container {container.get('name')}: resources.{part}[{name}]: Invalid value: "
                            f"{str(value)!r}: must be greater than or equal to 0"
                        )
            for name, value in requests.items():
                # Kubernetes: extended resources (vendor.com/x) cannot be overcommitted; limit == request.
                if "/" in name and str(limits.get(name)) != str(value):
                    found.append(
                        f"container {container.get('name')}: {name} requested without an equal limit"
                    )
            if "memory" not in requests:
                found.append(f"container {container.get('name')}: no memory request, Kueue cannot count it")
        return found

    # ---- Kueue -----------------------------------------------------------------------------------
    def queue_of(self, record: JobRecord) -> str:
        return (record.manifest["metadata"].get("labels") or {}).get(QUEUE_LABEL, "")

    def admissible(self, record: JobRecord) -> bool:
        """workload.IsAdmissible: an active Workload (spec.active not false) of an active LocalQueue."""
        key = f"{record.namespace}/{self.queue_of(record)}"
        if record.workload.get("spec", {}).get("active", True) is False:
            return False
        return key in self.local_queues and self.local_queue_active(key)[0] == "True"

    def cluster_queue_active(self, name: str) -> tuple[str, str, str]:
        """(status, reason, message) of a ClusterQueue's Active condition, as Kueue's cache computes it."""
        if (self.cluster_queues[name].get("metadata") or {}).get("deletionTimestamp"):
            return "False", "Terminating", "Can't admit new workloads; clusterQueue is terminating"
        spec = self.cluster_queues[name].get("spec") or {}
        missing = sorted(
            {
                flavor["name"]
                for group in spec.get("resourceGroups") or []
                for flavor in group.get("flavors") or []
            }
            - self.resource_flavors
        )
        if spec.get("stopPolicy", "None") != "None":
            return "False", "Stopped", "Can't admit new workloads: is stopped."
        if missing:
            message = f"Can't admit new workloads: references missing ResourceFlavor(s): {','.join(missing)}."
            return "False", "FlavorNotFound", message
        return "True", "Ready", "Can admit new workloads"

    def delete_cluster_queue(self, name: str) -> None:
        """``kubectl delete clusterqueue <name>``, as Kueue 0.19 answers it (pkg/controller/core/
        clusterqueue_controller.go Reconcile; pkg/cache clusterQueue.inactiveReason): its finalizer
        ``kueue.x-k8s.io/resource-in-use`` keeps it, with a deletionTimestamp, while Workloads hold quota in it (they run
        on); meanwhile it is Active False, reason ``Terminating``, so its LocalQueues are inactive and it admits nothing;
        once none holds quota (``ClusterQueueEmpty``) the finalizer goes and so does the ClusterQueue."""
        with self._lock:
            metadata = self.cluster_queues[name].setdefault("metadata", {})
            metadata.setdefault("finalizers", ["kueue.x-k8s.io/resource-in-use"])
            metadata["deletionTimestamp"] = _now()
            self._collect_cluster_queues()

    def _collect_cluster_queues(self) -> None:
        """Drop each terminating ClusterQueue in which no Workload holds quota any more (its pod ended or is gone)."""
        for name, queue in list(self.cluster_queues.items()):
            if not (queue.get("metadata") or {}).get("deletionTimestamp"):
                continue
            holding = [
                record
                for record in self.jobs.values()
                if record.admitted
                and not record.deleted
                and record.pod is not None
                and record.pod.exit_code() is None
                and (self.local_queues.get(f"{record.namespace}/{self.queue_of(record)}") or {})
                .get("spec", {})
                .get("clusterQueue")
                == name
            ]
            if not holding:
                del self.cluster_queues[name]

    def local_queue_active(self, key: str) -> tuple[str, str, str]:
        """(status, reason, message) of a LocalQueue's Active condition, as Kueue's controller sets it."""
        spec = self.local_queues[key].get("spec") or {}
        cluster_queue = spec.get("clusterQueue", "")
        if spec.get("stopPolicy", "None") != "None":
            return "False", "Stopped", "LocalQueue is stopped"
        if cluster_queue not in self.cluster_queues:
            return "False", "ClusterQueueDoesNotExist", "Can't submit new workloads to clusterQueue"
        if self.cluster_queue_active(cluster_queue)[0] != "True":
            return "False", "ClusterQueueIsInactive", "Can't submit new workloads to clusterQueue"
        return "True", "Ready", "Can submit new workloads to localQueue"

    def local_queue_with_status(self, key: str) -> dict:
        queue = copy.deepcopy(self.local_queues[key])
        status, reason, message = self.local_queue_active(key)
        condition = {"type": "Active", "status": status, "reason": reason, "message": message}
        queue["status"] = {
            "conditions": [{**condition, "lastTransitionTime": _now(), "observedGeneration": 1}]
        }
        return queue

    def _admission_loop(self) -> None:
        # Kueue admits suspended Workloads in creation order while the quota has room.
        while not self._stopping.wait(0.2):
            with self._lock:
                self._collect_cluster_queues()
                self._stop_deleted_pods()
                self._retry_pending_pods()
                self._wait_for_pods_ready()
                for name, record in sorted(self.jobs.items(), key=lambda item: item[1].created):
                    if record.admitted or record.deleted or not self.admissible(record):
                        continue
                    if (
                        time.monotonic() - record.created < self.admit_delay
                        or time.monotonic() < record.readmit_at
                    ):
                        continue
                    if self.max_running and self.running() >= self.max_running:
                        break
                    try:
                        self._start_pod(name, record)
                    except OSError as error:  # a command that cannot run fails its Job
                        record.admitted, record.start_error = True, str(error)
                self.max_seen_running = max(self.max_seen_running, self.running())

    def running(self) -> int:
        return sum(1 for r in self.jobs.values() if r.pod is not None and r.pod.exit_code() is None)

    # ---- kubelet ---------------------------------------------------------------------------------
    def _workload_identity_env(self, template: dict, namespace: str, workdir: Path) -> dict[str, str]:
        labels = (template.get("metadata") or {}).get("labels") or {}
        account = self.service_accounts.get(f"{namespace}/{template['spec'].get('serviceAccountName', '')}")
        annotations = ((account or {}).get("metadata") or {}).get("annotations") or {}
        if labels.get(WORKLOAD_IDENTITY_LABEL) != "true" or CLIENT_ID_ANNOTATION not in annotations:
            return {}
        token = workdir.parent / f"{workdir.name}-azure-identity-token"
        token.write_text("stand-in federated token\n")
        return {
            "AZURE_CLIENT_ID": annotations[CLIENT_ID_ANNOTATION],
            "AZURE_TENANT_ID": annotations.get(TENANT_ID_ANNOTATION, STANDIN_TENANT),
            "AZURE_AUTHORITY_HOST": "https://login.microsoftonline.com/",
            "AZURE_FEDERATED_TOKEN_FILE": str(token),
            **self.identity_env,
        }

    def _volume_sources(self, template: dict) -> dict[str, tuple[str, str, dict | None, bool]]:
        """The pod's Secret and ConfigMap volumes by name: (kind as the kubelet names it, object name, the object or
        None when it is missing, optional)."""
        sources = {}
        for volume in template["spec"].get("volumes") or []:
            if "secret" in volume:
                source, name = volume["secret"], volume["secret"]["secretName"]
                sources[volume["name"]] = (
                    "secret",
                    name,
                    self.secrets.get(name),
                    bool(source.get("optional")),
                )
            elif "configMap" in volume:
                source, name = volume["configMap"], volume["configMap"]["name"]
                found = self.config_maps.get(name)
                sources[volume["name"]] = ("configmap", name, found, bool(source.get("optional")))
        return sources

    def claim_with_status(self, key: str) -> dict:
        """A claim as the API serves it: phase Bound to its PV ``pvc-<uid>`` (dynamically provisioned), or Pending."""
        claim = copy.deepcopy(self.persistent_volume_claims[key])
        claim.update(apiVersion="v1", kind="PersistentVolumeClaim")
        if key in self.unbound_claims:
            claim["status"] = {"phase": "Pending"}
            return claim
        claim["spec"]["volumeName"] = f"pvc-{claim['metadata']['uid']}"
        size = claim["spec"].get("resources", {}).get("requests", {}).get("storage", "1Gi")
        modes = claim["spec"].get("accessModes", [])
        claim["status"] = {"phase": "Bound", "accessModes": modes, "capacity": {"storage": size}}
        return claim

    def _claim_not_bound(self, claim: dict) -> None:
        """The PV controller's Warning Event on a claim it cannot bind (pkg/controller/volume/persistentvolume/
        pv_controller.go): provisionClaim's ProvisioningFailed with the StorageClass lister's NotFound error, or, for a
        claim without a class, syncUnboundClaim's FailedBinding."""
        meta, now = claim["metadata"], _now()
        klass = claim["spec"].get("storageClassName")
        reason, message = (
            ("ProvisioningFailed", f'storageclass.storage.k8s.io "{klass}" not found')
            if klass
            else (
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
        )
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{meta['name']}.{random_names.token_hex(8)}",
                    "namespace": meta["namespace"],
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "name": meta["name"],
                    "namespace": meta["namespace"],
                    "uid": meta["uid"],
                },
                "reason": reason,
                "message": message,
                "source": {"component": "persistentvolume-controller"},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": "Warning",
                "eventTime": None,
                "reportingComponent": "persistentvolume-controller",
                "reportingInstance": "",
            }
        )

    def _failed_mount(
        self,
        record: JobRecord,
        pod: Pod,
        message: str,
        reason: str = "FailedMount",
        component: str = "kubelet",
    ) -> None:
        """An event recorder's Warning Event on the pod (the kubelet's FailedMount, the attach/detach controller's
        FailedAttachVolume), or the same one again (count and lastTimestamp, as its EventCorrelator aggregates a
        repeated event)."""
        now = _now()
        for event in self.events:
            if (event["involvedObject"]["name"], event["reason"], event["message"]) == (
                pod.name,
                reason,
                message,
            ):
                event.update(count=event["count"] + 1, lastTimestamp=now)
                return
        host = (
            {"host": "standin-node-0"} if component == "kubelet" else {}
        )  # a controller's source has no host
        self.events.append(
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {
                    "name": f"{pod.name}.{random_names.token_hex(8)}",
                    "namespace": record.namespace,
                },
                "involvedObject": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": pod.name,
                    "namespace": record.namespace,
                },
                "reason": reason,
                "message": message,
                "source": {"component": component, **host},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": "Warning",
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": host.get("host", ""),
            }
        )

    def _mount_errors(self, record: JobRecord, template: dict) -> list[str]:
        """Why the kubelet cannot mount each volume it cannot (operation_generator.go: the operation, the volume, the
        volume plugin's error): a missing Secret or ConfigMap (not optional), a key its items list that the object
        lacks, a claim whose CSI driver fails to stage it (``mount_errors``; the volume is the claim's PV)."""
        failed = []
        for volume, (kind, name, found, optional) in self._volume_sources(template).items():
            if found is None and not optional:
                failed.append(f'MountVolume.SetUp failed for volume "{volume}" : {kind} "{name}" not found')
                continue
            spec = next(v for v in template["spec"]["volumes"] if v["name"] == volume)
            keys = {*(found or {}).get("data", {}), *(found or {}).get("binaryData", {})}
            for item in (spec.get("secret") or spec.get("configMap") or {}).get("items") or []:
                if found is not None and item["key"] not in keys and not optional:
                    error = "references non-existent secret key" if kind == "secret" else (
                        "configmap references non-existent config key")  # fmt: skip
                    failed.append(f'MountVolume.SetUp failed for volume "{volume}" : {error}: {item["key"]}')
                    break
        for volume in template["spec"].get("volumes") or []:
            key = f"{record.namespace}/{(volume.get('persistentVolumeClaim') or {}).get('claimName')}"
            if key in self.mount_errors and key in self.persistent_volume_claims:
                pv = f"pvc-{self.persistent_volume_claims[key]['metadata']['uid']}"  # a provisioned PV's name
                failed.append(f'MountVolume.MountDevice failed for volume "{pv}" : {self.mount_errors[key]}')
        return failed

    def _attach_errors(self, record: JobRecord, template: dict) -> list[str]:
        """Why the attach/detach controller (kube-controller-manager, pkg/controller/volume/attachdetach; the message
        from operation_generator.go's attach operation: the operation, the volume, the attacher's error) cannot attach
        each claim's volume (its PV ``pvc-<claim uid>``) to the pod's node: ``attach_errors``."""
        failed = []
        for volume in template["spec"].get("volumes") or []:
            key = f"{record.namespace}/{(volume.get('persistentVolumeClaim') or {}).get('claimName')}"
            if key in self.attach_errors and key in self.persistent_volume_claims:
                pv = f"pvc-{self.persistent_volume_claims[key]['metadata']['uid']}"
                failed.append(f'AttachVolume.Attach failed for volume "{pv}" : {self.attach_errors[key]}')
            if key in self.multi_attach and key in self.persistent_volume_claims:
                # reconciler.go reportMultiAttachError, through VolumeToAttach.GenerateMsg ("%v for volume %q %v").
                pv, pods = (
                    f"pvc-{self.persistent_volume_claims[key]['metadata']['uid']}",
                    self.multi_attach[key],
                )
                # Each pod's own message: the names of its namespace's pods, a count of the others'.
                local = [p for p in pods if "/" not in p or p.split("/")[0] == record.namespace]
                local, others = [p.split("/")[-1] for p in local], len(pods) - len(local)
                if local:
                    why = f"Volume is already used by pod(s) {', '.join(local)}"
                    why += f" and {others} pod(s) in different namespaces" if others else ""
                elif others:
                    why = f"Volume is already used by {others} pod(s) in different namespaces"
                else:
                    why = (
                        "Volume is already exclusively attached to one node and can't be attached to another"
                    )
                failed.append(f'Multi-Attach error for volume "{pv}" {why}')
        return failed

    def _mount_volumes(self, record: JobRecord, pod: Pod, container: dict) -> dict[str, Path]:
        """The kubelet's volume manager: every volume of the pod is mounted before the container is created; one that
        cannot be (``_mount_errors``) fails, with a FailedMount Event, and the container waits ContainerCreating. A
        volume that must first be attached to the node and cannot be (``_attach_errors``) gets the attach/detach
        controller's FailedAttachVolume Event; the kubelet waits for it and records only its summary, a FailedMount
        that names no cause (``Unable to attach or mount volumes: ... timed out ...``)."""
        template, workdir = record.manifest["spec"]["template"], pod.workdir
        sources = self._volume_sources(template)
        unattached = self._attach_errors(record, template)
        for message in unattached:
            self._failed_mount(record, pod, message, "FailedAttachVolume", "attachdetach-controller")
        if unattached:
            names = [v["name"] for v in template["spec"]["volumes"] if "persistentVolumeClaim" in v]
            summary = (
                f"Unable to attach or mount volumes: unmounted volumes=[{' '.join(names)}], unattached volumes="
                f"[{' '.join(names)}], failed to process volumes=[]: timed out waiting for the condition"
            )
            self._failed_mount(record, pod, summary)
            raise ContainerWaits("ContainerCreating", "")
        failed = self._mount_errors(record, template)
        for message in failed:
            self._failed_mount(record, pod, message)
        if failed:
            raise ContainerWaits("ContainerCreating", "")
        mounts = {}
        for mount in container.get("volumeMounts") or []:
            kind, _, found, _ = sources.get(mount["name"], ("", "", None, True))
            if found is None:
                continue
            target = workdir.parent / f"{workdir.name}-mounts" / mount["mountPath"].lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            if kind == "secret":
                for key, value in (found.get("data") or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
            else:
                for key, value in (found.get("data") or {}).items():
                    (target / key).write_text(value)
                for key, value in (found.get("binaryData") or {}).items():
                    (target / key).write_bytes(base64.b64decode(value))
            mounts[mount["mountPath"]] = target
        return mounts

    def _pod_environment(self, record: JobRecord, pod: Pod) -> dict[str, str]:
        template, workdir = record.manifest["spec"]["template"], pod.workdir
        container = template["spec"]["containers"][0]
        env = {"PATH": self.pod_path, "HOME": self.pod_home, "LANG": "C.UTF-8"}
        mounts = self._mount_volumes(record, pod, container)
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = _translate(variable["value"], mounts)
                continue
            reference = variable["valueFrom"]["secretKeyRef"]
            secret = self.secrets.get(reference["name"])
            # The kubelet's makeEnvironmentVariables: the container waits, its Job stays active.
            if secret is None:
                raise ContainerWaits("CreateContainerConfigError", f'secret "{reference["name"]}" not found')
            if reference["key"] not in (secret.get("data") or {}):
                raise ContainerWaits(
                    "CreateContainerConfigError",
                    f"couldn't find key {reference['key']} in Secret {record.namespace}/{reference['name']}",
                )
            env[variable["name"]] = base64.b64decode(secret["data"][reference["key"]]).decode()
        env.update(self._workload_identity_env(template, record.namespace, workdir))
        return env

    def _start_pod(self, name: str, record: JobRecord) -> None:
        """The Job controller creates the pod; the scheduler and the kubelet then try to run it (``_place``)."""
        workdir = self.pods_root / f"{name}-{random_names.token_hex(3)}"
        workdir.mkdir(parents=True)
        record.pod = Pod(name=workdir.name, job=name, workdir=workdir, process=None)  # _place gives it one
        record.admitted, record.admitted_at = True, time.monotonic()
        # Kubernetes' Job controller (syncJob) sets startTime to the time of every resume, not only the first.
        record.started = record.pod.started
        if record.manifest["spec"]["suspend"] and record.workload["status"].get("conditions"):
            record.resumed = _now()  # readmitted after an eviction: the Job controller resumes it
        record.manifest["spec"]["suspend"] = False
        self._reserve_quota(record)
        self._place(record, record.pod)

    def unschedulable_message(self, record: JobRecord) -> str:
        """The scheduler's FitError text for a pod no node can hold (framework.FitError.Error(), then the
        DefaultPreemption plugin's), or "" when one of the ``nodes`` empty nodes of ``node_allocatable`` fits it."""
        nodes = self.nodes
        for volume in record.manifest["spec"]["template"]["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and f"{record.namespace}/{claim}" not in self.persistent_volume_claims:
                # The volumebinding PreFilter's UnschedulableAndUnresolvable: the message goes in once, not per node,
                # and preemption cannot help on any node.
                return (
                    f'0/{nodes} nodes are available: persistentvolumeclaim "{claim}" not found. preemption: '
                    f"0/{nodes} nodes are available: {nodes} Preemption is not helpful for scheduling."
                )
        for volume in record.manifest["spec"]["template"]["spec"].get("volumes") or []:
            claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
            if claim is not None and f"{record.namespace}/{claim}" in self.unbound_claims:
                # The same PreFilter, for a claim of volumeBindingMode Immediate that is not bound yet.
                return (
                    f"0/{nodes} nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: "
                    f"0/{nodes} nodes are available: {nodes} Preemption is not helpful for scheduling."
                )
        if not self.node_allocatable:
            return ""
        container = record.manifest["spec"]["template"]["spec"]["containers"][0]
        requests = (container.get("resources") or {}).get("requests") or {}
        short = sorted(
            f"Insufficient {name}"
            for name, value in requests.items()
            if (
                name in self.node_allocatable or "/" in name
            )  # a node has no extended resource it does not list
            and parse_quantity(value) > parse_quantity(self.node_allocatable.get(name, "0"))
        )
        if not short:
            return ""
        return (
            f"0/{nodes} nodes are available: {', '.join(f'{nodes} {reason}' for reason in short)}. preemption: "
            f"0/{nodes} nodes are available: {nodes} No preemption victims found for incoming pod."
        )

    def _place(self, record: JobRecord, pod: Pod) -> None:
        """The scheduler binds the pod to a node that can hold it; that node's kubelet mounts its volumes, pulls
        its image and makes its container's configuration, then starts it. Each step that cannot be done yet
        leaves the pod waiting, and is tried again (``_retry_pending_pods``)."""
        unfit = self.unschedulable_message(record)
        if unfit:
            # schedule_one.go handleSchedulingFailure: PodScheduled False, reason Unschedulable, the FitError;
            # UpdatePodCondition keeps lastTransitionTime while the status stays False.
            pod.unschedulable, pod.unschedulable_since = unfit, pod.unschedulable_since or _now()
            return self._hold(pod)
        pod.unschedulable, pod.scheduled_at = "", pod.scheduled_at or _now()
        container = record.manifest["spec"]["template"]["spec"]["containers"][0]
        pod.unpulled_image = container["image"] if container["image"] in self.unpullable_images else ""
        try:
            env, pod.waiting = self._pod_environment(record, pod), ("", "")
        except ContainerWaits as waits:
            pod.waiting = (waits.reason, waits.message)
            return self._hold(pod)
        if pod.unpulled_image:
            return self._hold(pod)  # it waits for its image
        missing = self._command_missing_at_create(container, env)
        if missing:
            pod.waiting = ("CreateContainerError", missing)
            return self._hold(pod)
        try:
            process = _popen(_command(container), pod.workdir, env)
        except OSError as error:  # a command that cannot run fails its Job (StartError)
            record.start_error = str(error)
            self._hold(pod)
            return self._kill(pod, "start error")
        if pod.process is not None:
            self._kill(pod, "")  # the stand-in of the pod while it waited
        pod.process, pod.process_started = process, time.monotonic()

    def _command_missing_at_create(self, container: dict, env: dict[str, str]) -> str:
        """CRI-O's message when it cannot create the container because its command is not in the image (here: not
        on the pod's PATH), as the kubelet shows it in the waiting state; "" when it can (or the runtime is
        containerd, which finds out only at the start)."""
        command = _command(container)
        if self.container_runtime != "cri-o" or not command:
            return ""
        if shutil.which(command[0], path=env.get("PATH", "")) is not None:
            return ""
        return (
            f'container create failed: time="{_now()}" level=error msg="runc create failed: unable to start '
            f'container process: exec: \\"{command[0]}\\": executable file not found in $PATH"'
        )

    def _hold(self, pod: Pod) -> None:
        """Until its container starts, a process that only waits stands for the pod (its Job is active)."""
        if pod.process is None:
            pod.process = _popen(["sleep", "86400"], pod.workdir, {"PATH": self.pod_path})

    def _retry_pending_pods(self) -> None:
        """The scheduler's and the kubelet's next tries: a node that fits was added, a missing Secret created."""
        for record in self.jobs.values():
            pod = record.pod
            if record.deleted or pod is None or pod.exit_code() is not None or record.start_error:
                continue
            if pod.unschedulable or pod.waiting[0]:
                self._place(record, pod)

    def _kill(self, pod: Pod, reason: str) -> None:
        pod.ended_by = reason
        try:
            os.killpg(pod.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        pod.process.wait()

    def evict(self, job_name: str) -> None:
        """Evict the Job's running pod, as the kubelet does on node pressure (or a drain)."""
        self.check_threads()
        with self._lock:
            pod = self.jobs[job_name].pod
            assert pod is not None and pod.exit_code() is None, f"{job_name} has no running pod"
            self._kill(pod, "evicted")

    # ---- Kueue's Workloads and evictions ---------------------------------------------------------
    def _new_workload(self, name: str, record: JobRecord) -> dict:
        """The Workload Kueue's job reconciler creates for a new Job (jobframework.ConstructWorkload)."""
        digest = hashlib.sha256(f"{record.uid}/batch/v1/Job".encode()).hexdigest()[:5]
        template = copy.deepcopy(record.manifest["spec"]["template"])
        return {
            "apiVersion": KUEUE_API,
            "kind": "Workload",
            "metadata": {
                "name": f"job-{name}-{digest}",
                "namespace": record.namespace,
                "uid": str(uuid.uuid4()),
                "labels": {JOB_UID_LABEL: record.uid},
                "ownerReferences": [
                    {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": record.uid,
                     "controller": True, "blockOwnerDeletion": True}
                ],
            },
            "spec": {
                "queueName": self.queue_of(record),
                "active": True,
                "podSets": [{"name": "main", "count": 1, "template": template}],
            },
            "status": {},
        }  # fmt: skip

    def _cluster_queue_of(self, record: JobRecord) -> str:
        queue = self.local_queues[f"{record.namespace}/{self.queue_of(record)}"]
        return (queue.get("spec") or {}).get("clusterQueue", "")

    def _reserve_quota(self, record: JobRecord) -> None:
        """Kueue's admission (workload.SetQuotaReservation, then SyncAdmittedCondition)."""
        status, now = record.workload["status"], _now()
        cluster_queue = self._cluster_queue_of(record)
        status["admission"] = {
            "clusterQueue": cluster_queue,
            "podSetAssignments": [{"name": "main", "count": 1}],
        }
        conditions = status.setdefault("conditions", [])
        _set_condition(conditions, WORKLOAD_QUOTA_RESERVED, "True", "QuotaReserved",
                       f"Quota reserved in ClusterQueue {cluster_queue}", now)  # fmt: skip
        for kind in (WORKLOAD_EVICTED, WORKLOAD_PREEMPTED):  # resetActiveCondition
            previous = _find_condition(conditions, kind)
            if previous and previous["status"] == "True":
                _set_condition(
                    conditions, kind, "False", "QuotaReserved", f"Previously: {previous['message']}", now
                )
        _set_condition(conditions, WORKLOAD_ADMITTED, "True", "Admitted", "The workload is admitted", now)

    def preempt(self, job_name: str, reason: str = "InClusterQueue", readmit_after_s: float = 0.0) -> None:
        """Kueue's scheduler preempting the Job's admitted Workload for another one (``reason``: why)."""
        assert reason in PREEMPTION_REASONS, f"Kueue has no preemption reason {reason!r}"
        preemptor = str(uuid.uuid4())
        message = (
            f"Preempted to accommodate a workload (UID: {preemptor}, JobUID: {uuid.uuid4()}) due to "
            f"{PREEMPTION_REASONS[reason]}; preemptor path: /snakemake; preemptee path: /snakemake"
        )
        self.evict_workload(
            job_name, EVICTED_BY_PREEMPTION, message, readmit_after_s, preemption_reason=reason
        )

    def evict_workload(
        self,
        job_name: str,
        reason: str,
        message: str,
        readmit_after_s: float = 0.0,
        preemption_reason: str = "",
    ) -> None:
        """Kueue evicting the Job's admitted Workload (reason: ``Preempted``, ``PodsReadyTimeout``,
        ``ClusterQueueStopped``...), then the Job controller and Kueue's job reconciler reacting to it."""
        self.check_threads()
        with self._lock:
            record = self.jobs[job_name]
            assert record.admitted and record.pod is not None, f"{job_name} has no admitted Workload"
            self._evict(record, reason, message, readmit_after_s, preemption_reason)

    def _evict(
        self,
        record: JobRecord,
        reason: str,
        message: str,
        readmit_after_s: float,
        preemption_reason: str = "",
    ) -> None:
        now, conditions = _now(), record.workload["status"]["conditions"]
        # The scheduler (preemption) or a controller: evict.Evict / SetPreemptedCondition.
        _set_condition(conditions, WORKLOAD_EVICTED, "True", reason, message, now)
        if preemption_reason:
            _set_condition(conditions, WORKLOAD_PREEMPTED, "True", preemption_reason, message, now)
        self._stop_and_release(record, reason, message, now)
        record.readmit_at = time.monotonic() + readmit_after_s

    @staticmethod
    def _pods_ready(pod: Pod) -> bool:
        """Whether the pod counts as ready for waitForPodsReady: its container runs (or ran), i.e. it is neither
        unschedulable nor waiting for an image, a volume or its configuration."""
        return not (pod.unschedulable or pod.waiting[0] or pod.unpulled_image) or pod.exit_code() is not None

    def _wait_for_pods_ready(self) -> None:
        """Kueue's waitForPodsReady (pkg/controller/core/workload_controller.go: reconcileNotReadyTimeout,
        triggerDeactivationOrBackoffRequeue; pkg/workload UpdateRequeueState). An admitted Workload whose pods are not
        ready ``pods_ready_timeout_s`` after its admission is evicted, reason ``PodsReadyTimeout``, message ``Exceeded
        the PodsReady timeout <namespace>/<workload>``, with ``status.requeueState``: ``count`` one more, ``requeueAt``
        now plus the back-off, base * 2^(count-1) s capped at the max (Kueue's jitter left out); its Job is stopped as
        for any eviction (``Requeued`` False, reason PodsReadyTimeout). Once ``requeueAt`` has passed, the workload
        controller writes ``Requeued`` True, reason ``BackoffFinished`` ("The workload backoff was finished"), and
        drops ``requeueAt`` (``count`` stays), and the Workload may be admitted again. The timeout that would make the
        count exceed ``requeuing_backoff_limit_count`` deactivates it instead (``deactivate_workload``'s sequence,
        cause ``RequeuingLimitExceeded``)."""
        if not self.pods_ready_timeout_s:
            return
        now = time.monotonic()
        for record in self.jobs.values():
            if record.deleted or record.workload.get("spec", {}).get("active", True) is False:
                continue
            conditions = record.workload["status"].get("conditions") or []
            requeued = _find_condition(conditions, WORKLOAD_REQUEUED)
            if requeued and (requeued["status"], requeued["reason"]) == ("False", PODS_READY_TIMEOUT):
                if now >= record.readmit_at:
                    record.workload["status"].get("requeueState", {}).pop("requeueAt", None)
                    _set_condition(conditions, WORKLOAD_REQUEUED, "True", "BackoffFinished",
                                   "The workload backoff was finished", _now())  # fmt: skip
                continue
            pod = record.pod
            if not record.admitted or pod is None or record.start_error or self._pods_ready(pod):
                continue
            if now - record.admitted_at < self.pods_ready_timeout_s:
                continue
            state = record.workload["status"].get("requeueState") or {}
            count = state.get("count", 0) + 1
            limit = self.requeuing_backoff_limit_count
            if limit is not None and count > limit:
                self._deactivate(record, WORKLOAD_REQUEUING_LIMIT_EXCEEDED)
                continue
            wait = min(self.requeuing_backoff_base_s * 2 ** (count - 1), self.requeuing_backoff_max_s)
            at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=wait)
            record.workload["status"]["requeueState"] = {
                "count": count,
                "requeueAt": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            workload = f"{record.namespace}/{record.workload['metadata']['name']}"
            self._evict(record, PODS_READY_TIMEOUT, f"Exceeded the PodsReady timeout {workload}", wait)

    def _stop_and_release(self, record: JobRecord, reason: str, message: str, now: str) -> None:
        """Kueue's job reconciler on an evicted Workload (reconciler.go, "handle eviction"), and the Job controller."""
        conditions = record.workload["status"]["conditions"]
        # The job reconciler: stopJob suspends the Job; the Job controller deletes its pod.
        record.manifest["spec"]["suspend"] = True
        record.admitted, record.resumed, record.started = False, "", ""
        pod, record.pod = record.pod, None
        if not pod.scheduled_at:
            # Never bound to a node, so no kubelet to stop it: the API server deletes such a pod at once (graceful
            # deletion is for a pod on a node), and it is no longer listed.
            self._kill(pod, "suspended")
            pod.removed = True
        elif pod.exit_code() is None:
            pod.deletion_timestamp, pod.stopping_since, pod.ended_by = now, time.monotonic(), "suspended"
            try:
                os.killpg(pod.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            record.stopping.append(pod)
        # The job reconciler, once the Job is no longer active: requeue and release the quota
        # (Requeued is True only for a preemption or node failures), then SyncAdmittedCondition.
        requeued = "True" if reason in (EVICTED_BY_PREEMPTION, "NodeFailures") else "False"
        _set_condition(conditions, WORKLOAD_REQUEUED, requeued, reason, message, now)
        _set_condition(conditions, WORKLOAD_QUOTA_RESERVED, "False", "Pending", message, now)
        record.workload["status"].pop("admission", None)
        _set_condition(
            conditions,
            WORKLOAD_ADMITTED,
            "False",
            "NoReservation",
            "The workload has no reservation",
            now,
        )

    def deactivate_workload(self, job_name: str, cause: str = WORKLOAD_REQUEUING_LIMIT_EXCEEDED) -> None:
        """Kueue deactivating the Job's Workload (``spec.active: false``): it never admits it again until someone sets
        it back to true, and the Job stays suspended. ``cause``: why Kueue did it, ``RequeuingLimitExceeded``
        (waitForPodsReady: the pods were not ready in time once more than ``requeuingStrategy.backoffLimitCount``
        allows) or ``MaximumExecutionTimeExceeded``, both of an admitted Workload; "" for someone's ``kubectl patch
        workload <name> --type merge -p '{"spec":{"active":false}}'``.

        In Kueue 0.19's order (pkg/controller/core/workload_controller.go: triggerDeactivation and the Reconcile
        branches on spec.active; pkg/workload/evict): the DeactivationTarget condition (reason the cause), then
        ``spec.active`` false, then ``Evicted`` True with reason ``Deactivated`` (``DeactivatedDueTo<cause>``) and
        message ``The workload is deactivated`` (`` due to <the target's message>``), the DeactivationTarget and any
        requeueState removed; an admitted Workload's Job is then stopped and its quota released as for any eviction
        (``Requeued`` False with the Evicted reason and message). A Workload waiting for admission only gets
        ``Evicted``: its Job is suspended already."""
        self.check_threads()
        with self._lock:
            record = self.jobs[job_name]
            assert not cause or record.admitted, (
                f"Kueue deactivates {job_name} for {cause} only once admitted"
            )
            self._deactivate(record, cause)

    def _deactivate(self, record: JobRecord, cause: str) -> None:
        now, status = _now(), record.workload["status"]
        conditions = status.setdefault("conditions", [])
        reason, message = WORKLOAD_DEACTIVATED, "The workload is deactivated"
        if cause:  # SetDeactivationTarget, removed again by the eviction below
            reason = f"{WORKLOAD_DEACTIVATED}DueTo{cause}"  # patching.ReasonWithCause
            message = f"{message} due to {DEACTIVATION_TARGET_MESSAGES[cause]}"
        record.workload["spec"]["active"] = False
        status.pop("requeueState", None)
        _set_condition(conditions, WORKLOAD_EVICTED, "True", reason, message, now)
        if record.admitted:
            self._stop_and_release(record, reason, message, now)

    def reactivate_workload(self, job_name: str) -> None:
        """Someone's ``kubectl patch workload <name> --type merge -p '{"spec":{"active":true}}'``: Kueue's workload
        controller marks a Workload it had stopped for a deactivation ``Requeued`` True (reason ``Reactivated``,
        "The workload was reactivated") and queues it; its admission then resets ``Evicted`` and resumes the Job."""
        self.check_threads()
        with self._lock:
            record = self.jobs[job_name]
            record.workload["spec"]["active"] = True
            conditions = record.workload["status"].setdefault("conditions", [])
            requeued = _find_condition(conditions, WORKLOAD_REQUEUED)
            if requeued and requeued["status"] == "False" and requeued["reason"] == WORKLOAD_DEACTIVATED:
                _set_condition(conditions, WORKLOAD_REQUEUED, "True", "Reactivated", "The workload was reactivated",
                               _now())  # fmt: skip

    def _stop_deleted_pods(self) -> None:
        """The kubelet: SIGKILL after the grace period; a stopped pod is gone a moment after it ended."""
        now = time.monotonic()
        for record in self.jobs.values():
            for pod in list(record.stopping):
                if pod.exit_code() is None:
                    if now - pod.stopping_since >= GRACE_PERIOD_S:
                        os.killpg(pod.process.pid, signal.SIGKILL)
                    continue
                pod.exited_at = pod.exited_at or now
                if now - pod.exited_at >= self.terminated_pod_listed_s:
                    record.stopping.remove(pod)

    def workloads(self, namespace: str, selector: str = "") -> list[dict]:
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(record.workload)
            for record in self.jobs.values()
            if not record.deleted  # the garbage collector deletes a deleted Job's Workload
            and record.namespace == namespace
            and (not selector or record.workload["metadata"]["labels"].get(key) == value)
        ]

    # ---- API objects -----------------------------------------------------------------------------
    def job_with_status(self, name: str) -> dict:
        record = self.jobs[name]
        job = copy.deepcopy(record.manifest)
        job["metadata"]["uid"] = record.uid
        code = record.pod.exit_code() if record.pod else None
        now = _now()
        resumed = (
            [_condition("Suspended", "JobResumed", "Job resumed", record.resumed, "False")]
            if record.resumed
            else []
        )
        if record.start_error or code not in (None, 0):
            reason, message = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            status = {
                "failed": 1,
                "active": 0,
                "conditions": [  # the Job controller keeps the resume's condition, updated in place, before them
                    *resumed,
                    _condition("FailureTarget", reason, message, now),
                    _condition("Failed", reason, message, now),
                ],
            }
        elif record.pod is None:
            # Suspended by Kueue: no pods until its Workload is admitted. A pod deleted by the suspension is
            # counted as terminating, not failed (the Job controller removed its tracking finalizer first).
            status = {"conditions": [_condition("Suspended", "JobSuspended", "Job suspended", now)]}
            if record.stopping:
                status.update(terminating=len(record.stopping), ready=0)
        elif code is None:
            # The API omits an empty list.
            status = {"active": 1, **({"conditions": resumed} if resumed else {})}
            if record.stopping:
                status["terminating"] = len(record.stopping)
        else:
            status = {
                "succeeded": 1,
                "active": 0,
                "conditions": [
                    *resumed,
                    _condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", now),
                    _condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", now),
                ],
            }  # fmt: skip
        if record.started:  # running, or finished: a finished Job keeps the start of its last run
            status["startTime"] = record.started
        job["status"] = status
        return job

    def pod_objects(self, job_name: str, removed_too: bool = False) -> list[dict]:
        """The Job's pods as the API lists them; with ``removed_too`` also those the garbage collector has
        removed since (a test's look back at how a finished run's pods ended)."""
        record = self.jobs.get(job_name)
        if record is None:
            return []
        container = record.manifest["spec"]["template"]["spec"]["containers"][0]
        listed = [
            pod
            for pod in [*record.stopping, record.pod]
            if pod is not None and (removed_too or not pod.removed)
        ]
        objects = []
        for pod in sorted(listed, key=lambda pod: pod.name):  # the API server lists by name
            metadata = {"name": pod.name, "namespace": record.namespace, "labels": {"job-name": job_name}}
            if pod.deletion_timestamp:
                metadata.update(
                    deletionTimestamp=pod.deletion_timestamp, deletionGracePeriodSeconds=GRACE_PERIOD_S
                )
            else:
                metadata["finalizers"] = ["batch.kubernetes.io/job-tracking"]
            # The pod's spec is its Job's template's, with the node the scheduler bound it to.
            spec = copy.deepcopy(record.manifest["spec"]["template"]["spec"])
            if pod.scheduled_at:
                spec["nodeName"] = "standin-node-0"
            objects.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": metadata,
                    "spec": spec,
                    "status": _pod_status(pod, container),
                }
            )
        return objects

    def pod_object(self, namespace: str, pod_name: str) -> dict | None:
        """The pod ``namespace/pod_name`` as the API serves it (GET .../pods/<name>): a Job's pod still listed, or a pod
        of ``multi_attach`` that holds a claim's volume on ``multi_attach_node``; None when there is none."""
        for job_name, record in self.jobs.items():
            if record.namespace == namespace and not record.deleted:
                found = [p for p in self.pod_objects(job_name) if p["metadata"]["name"] == pod_name]
                if found:
                    return found[0]
        for key, holders in self.multi_attach.items():
            claim_namespace, claim = key.split("/", 1)
            for holder in holders:
                # A holder of another namespace mounts a claim of its own there on the same disk (a static PV).
                holder_namespace, _, name = holder.rpartition("/")
                if (holder_namespace or claim_namespace, name) == (namespace, pod_name):
                    return self._holder_pod(namespace, name, claim)
        return None

    def _holder_pod(self, namespace: str, name: str, claim: str) -> dict:
        """A running pod that mounts ``claim``, on ``multi_attach_node``, with the fields the API server and the kubelet
        fill in (uid, creationTimestamp, the default container fields, its status), created when first read."""
        uid, started = self._holders.setdefault((namespace, name), (str(uuid.uuid4()), _now()))
        container = {
            "name": "main",
            "image": "busybox:1.36",
            "command": ["sleep", "infinity"],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "imagePullPolicy": "IfNotPresent",
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "File",
            "resources": {},
        }
        # The kubelet's conditions of a running pod: no reason or message, lastProbeTime null.
        kinds = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        conditions = [
            {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": started}
            for kind in kinds
        ]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "creationTimestamp": started},
            "spec": {
                "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                "nodeName": self.multi_attach_node,
                "restartPolicy": "Always",
                "schedulerName": "default-scheduler",
                "serviceAccountName": "default",
                "terminationGracePeriodSeconds": GRACE_PERIOD_S,
            },
            "status": {
                "phase": "Running",
                "conditions": conditions,
                "hostIP": "10.224.0.5",
                "podIP": "10.244.1.17",
                "startTime": started,
                "qosClass": "BestEffort",
                "containerStatuses": [
                    {
                        "name": "main",
                        "image": "docker.io/library/busybox:1.36",
                        "imageID": "docker.io/library/busybox@sha256:" + "0" * 64,
                        "containerID": "containerd://" + uid.replace("-", "") * 2,
                        "ready": True,
                        "started": True,
                        "restartCount": 0,
                        "state": {"running": {"startedAt": started}},
                    }
                ],
            },
        }

    def find_pod(self, pod_name: str) -> tuple[JobRecord, Pod]:
        for record in self.jobs.values():
            for pod in [*record.stopping, *([record.pod] if record.pod else [])]:
                if pod.name == pod_name:
                    return record, pod
        raise KeyError(pod_name)

    def pod_logs(self) -> dict[str, str]:
        """Every pod's combined output, by Job name (for assertions and for the secret scan)."""
        self.check_threads()
        with self._lock:
            return {
                name: (r.pod.workdir / "pod.log").read_text(errors="replace")
                for name, r in self.jobs.items()
                if r.pod is not None
            }


def _command(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _popen(command: list[str], workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """The container's process, its output appended to the pod's log."""
    with open(workdir / "pod.log", "ab") as log:
        return subprocess.Popen(
            command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def _translate(value: str, mounts: dict[str, Path]) -> str:
    for mount_path, target in mounts.items():
        if value == mount_path or value.startswith(mount_path.rstrip("/") + "/"):
            return str(target) + value[len(mount_path.rstrip("/")) :]
    return value


def _condition(kind: str, reason: str, message: str, when: str, status: str = "True") -> dict:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastProbeTime": when,
        "lastTransitionTime": when,
    }


def _find_condition(conditions: list[dict], kind: str) -> dict | None:
    return next((condition for condition in conditions if condition["type"] == kind), None)


def _set_condition(
    conditions: list[dict], kind: str, status: str, reason: str, message: str, when: str
) -> None:
    """apimachinery's meta.SetStatusCondition: the transition time changes only with the status."""
    previous = _find_condition(conditions, kind)
    if previous is None:
        conditions.append(
            {"type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": when}
        )
        return
    if previous["status"] != status:
        previous["lastTransitionTime"] = when
    previous.update(status=status, reason=reason, message=message)


def _waiting(pod: Pod, base: dict, reason: str, message: str = "") -> dict:
    """A Pending pod whose container the kubelet has not started, and why."""
    waiting = {"reason": reason, **({"message": message} if message else {})}
    state = {**base, "ready": False, "started": False, "state": {"waiting": waiting}}
    return {"phase": "Pending", "startTime": pod.started, "containerStatuses": [state]}


def _pod_status(pod: Pod, container: dict) -> dict:
    """The pod's status as the API shows it: the scheduler's PodScheduled condition (lastProbeTime null, as it
    writes it), then the kubelet's part once the pod is on a node."""
    if pod.unschedulable and pod.exit_code() is None:
        unschedulable = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": pod.unschedulable,
            "lastProbeTime": None,
            "lastTransitionTime": pod.unschedulable_since,
        }
        return {"phase": "Pending", "conditions": [unschedulable], "qosClass": "Burstable"}
    status = _kubelet_status(pod, container)
    scheduled = {"type": "PodScheduled", "status": "True", "lastProbeTime": None}
    status["conditions"] = [
        *status.get("conditions", []),
        {**scheduled, "lastTransitionTime": pod.scheduled_at},
    ]
    return status


def _kubelet_status(pod: Pod, container: dict) -> dict:
    code = pod.exit_code()
    base = {"name": container["name"], "image": container["image"], "imageID": "", "restartCount": 0}
    # The kubelet mounts the volumes, pulls the image, then makes the container's configuration.
    if code is None and pod.waiting[0] == "ContainerCreating":
        return _waiting(pod, base, "ContainerCreating")
    if code is None and pod.unpulled_image:
        # The kubelet alternates ErrImagePull (a try) and ImagePullBackOff (waiting for the next one).
        tries = int(time.monotonic() - pod.process_started)
        reason, message = (
            ("ErrImagePull", f'rpc error: code = NotFound desc = failed to pull and unpack image "{pod.unpulled_image}": not found')
            if tries % 2 == 0
            else ("ImagePullBackOff", f'Back-off pulling image "{pod.unpulled_image}"')
        )  # fmt: skip
        return _waiting(pod, base, reason, message)
    if code is None and pod.waiting[0]:
        return _waiting(pod, base, *pod.waiting)
    if code is None:
        return {
            "phase": "Running",
            "startTime": pod.started,
            "containerStatuses": [
                {**base, "ready": True, "started": True, "state": {"running": {"startedAt": pod.started}}}
            ],
        }
    terminated = {"exitCode": code, "startedAt": pod.started, "finishedAt": _now()}
    status = {"phase": "Succeeded" if code == 0 else "Failed", "startTime": pod.started}
    if pod.ended_by == "evicted":
        status.update(
            reason="Evicted",
            message="The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. ",
            conditions=[_condition("DisruptionTarget", "TerminationByKubelet", "Evicted", _now())],
        )
        terminated = {
            "exitCode": 137,
            "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated",
        }
    elif pod.ended_by == "start error":
        terminated.update(exitCode=128, reason="StartError")
    elif code == 0:
        terminated["reason"] = "Completed"
    elif code == 137 and not pod.ended_by:
        terminated["reason"] = "OOMKilled"
    else:
        terminated["reason"] = "Error"
    state = {**base, "ready": False, "started": False, "state": {"terminated": terminated}}
    return {**status, "containerStatuses": [state]}


def _status(code: int, message: str, reason: str) -> dict:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class _Server(ThreadingHTTPServer):
    standin: ApiStandIn

    def handle_error(self, request, client_address) -> None:
        """A request's handler raised (socketserver would print it and go on): recorded, so that the test fails. A
        client that hung up is its own doing, not the stand-in's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            self.standin.record_thread_error()


class _Handler(BaseHTTPRequestHandler):
    api: ApiStandIn
    _failure: InjectedFailure | None = None

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _resource(self) -> str:
        """The RBAC resource of the request: ``jobs``, ``jobs/status``, ``pods``, ``pods/log``, ``secrets``..."""
        parts, _ = self._route()
        if "namespaces" not in parts:
            return ""
        rest = parts[parts.index("namespaces") + 2 :]
        return "/".join(rest[::2]) if rest else ""

    def _take_failure(self) -> bool:
        """True when an injected failure has been answered and the request must not take effect."""
        path, query = urllib.parse.urlparse(self.path)[2:5:2]
        if self.api.thread_errors:
            # A background thread failed: the stand-in is broken, and every call says so (the test's own next call
            # into the stand-in, or its teardown, raises StandInThreadError).
            if self.headers.get("Content-Length"):
                self._body()
            message = "the API stand-in's background thread failed: " + self.api.thread_errors[0]
            self._send(500, _status(500, message, "InternalError"))
            return True
        with self.api._lock:
            self.api.requests.append((self.command, path, urllib.parse.parse_qs(query)))
            accepted = self.api.accepted_tokens
            if accepted is not None and self.headers.get("Authorization") not in {
                f"Bearer {t}" for t in accepted
            }:
                self.api.answered_failures.append((self.command, self._resource(), 401))
                refused = InjectedFailure(self.command, self._resource(), 401)
            else:
                refused = None
        if refused is not None:
            if self.headers.get("Content-Length"):
                self._body()
            self._send_failure(refused)
            return True
        failure = self.api.take_failure(self.command, self._resource())
        self._failure = None
        if failure is None:
            return False
        if failure.processed:
            self._failure = failure  # the request takes effect; the failure replaces its answer
            return False
        if self.headers.get("Content-Length"):
            self._body()
        self._send_failure(failure)
        return True

    def _send_failure(self, failure: InjectedFailure) -> None:
        reason, message = FAILURE_STATUS[failure.status]
        parts, _ = self._route()
        rest = parts[parts.index("namespaces") + 2 :] if "namespaces" in parts else []
        # A GET of a collection (.../events) is RBAC's list, of an object (.../jobs/<name>/status) its get.
        collection = self.command == "GET" and len(rest) == 1
        # /api/v1/... is the core group (""), /apis/<group>/<version>/... a named one (batch, kueue.x-k8s.io).
        group = parts[1] if parts[0] == "apis" else ""
        qualified = f"{rest[0]}.{group}" if rest and group else (rest[0] if rest else "")
        message = message.format(
            verb="list" if collection else VERBS.get(self.command, self.command.lower()),
            resource=self._resource(),
            namespace=self._namespace(parts),
            group=group,
            qualified=f'{qualified} "{rest[1]}"' if len(rest) >= 2 else qualified,
            user=self.api.user,
        )
        if failure.status == 404 and len(rest) >= 2:  # a named object that is gone
            kind = {"jobs": "jobs.batch"}.get(rest[-2], rest[-2])
            message = f'{kind} "{rest[-1]}" not found'
        body, headers = _status(failure.status, message, reason), {}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
            body["details"] = {"retryAfterSeconds": failure.retry_after}
        self._send(failure.status, body, headers=headers)

    def _send(
        self,
        code: int,
        body: dict | bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            return self._send_failure(failure)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _route(self) -> tuple[list[str], dict]:
        url = urllib.parse.urlparse(self.path)
        return url.path.strip("/").split("/"), urllib.parse.parse_qs(url.query)

    @staticmethod
    def _namespace(parts: list[str]) -> str:
        return parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""

    def do_POST(self) -> None:
        if self._take_failure():
            return
        parts, _ = self._route()
        body, api, namespace = self._body(), self.api, self._namespace(parts)
        with api._lock:
            api.namespaces.add(namespace)
            if parts[-1] == "secrets":
                if body["metadata"]["name"] in api.secrets:
                    message = f'secrets "{body["metadata"]["name"]}" already exists'
                    return self._send(409, _status(409, message, "AlreadyExists"))
                api.secrets[body["metadata"]["name"]] = body
                api.secret_keys[body["metadata"]["name"]] = set(body.get("data") or {})
                return self._send(201, body)
            if parts[-1] == "jobs":
                return self._create_job(body, namespace)
        self._send(404, _status(404, f"POST {self.path} is not served by the stand-in", "NotFound"))

    def _create_job(self, body: dict, namespace: str) -> None:
        api = self.api
        body.setdefault("apiVersion", "batch/v1")
        body.setdefault("kind", "Job")
        name = body["metadata"]["name"]
        api.submitted.append(copy.deepcopy(body))
        problems = api.problems(body)
        if problems:
            api.rejected.append(Rejection(name, problems))
            # apimachinery's NewInvalid: the name in double quotes (Go's %q), then the field errors.
            message = f'Job.batch "{name}" is invalid: ' + "; ".join(problems)
            return self._send(422, _status(422, message, "Invalid"))
        if name in api.jobs and not api.jobs[name].deleted:
            return self._send(409, _status(409, f'jobs.batch "{name}" already exists', "AlreadyExists"))
        labels = body["metadata"].setdefault("labels", {})
        if QUEUE_LABEL not in labels and f"{namespace}/default" in api.local_queues:
            labels[QUEUE_LABEL] = "default"  # Kueue's LocalQueueDefaulting
        body["spec"]["suspend"] = True  # Kueue's webhook suspends every Job it manages
        record = JobRecord(manifest=body, namespace=namespace, created=time.monotonic())
        record.workload = api._new_workload(name, record)
        api.jobs[name] = record
        return self._send(201, {**body, "metadata": {**body["metadata"], "uid": record.uid}})

    def do_GET(self) -> None:
        if self._take_failure():
            return
        parts, query = self._route()
        api = self.api
        with api._lock:
            if "jobs" in parts and parts.index("jobs") + 1 < len(parts):
                name = parts[parts.index("jobs") + 1]
                if name not in api.jobs or api.jobs[name].deleted:
                    return self._send(404, _status(404, f'jobs.batch "{name}" not found', "NotFound"))
                return self._send(200, api.job_with_status(name))
            if parts[-1] == "log":
                return self._pod_log(parts[-2], query)
            if len(parts) >= 2 and parts[-2] == "pods":
                pod = api.pod_object(self._namespace(parts), parts[-1])
                if pod is None:
                    return self._send(404, _status(404, f'pods "{parts[-1]}" not found', "NotFound"))
                return self._send(200, pod)
            if parts[-1] == "pods":
                selector = query.get("labelSelector", [""])[0]
                job_name = selector.split("=", 1)[1] if selector.startswith("job-name=") else ""
                record = api.jobs.get(job_name)
                items = api.pod_objects(job_name) if record is not None and not record.deleted else []
                return self._send(
                    200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                )
            if parts[-1] == "events":
                return self._events(parts, query)
            if "localqueues" in parts:
                return self._local_queues(parts)
            if "workloads" in parts:
                return self._workloads(parts, query)
            if "persistentvolumeclaims" in parts and parts[-1] != "persistentvolumeclaims":
                key = f"{self._namespace(parts)}/{parts[-1]}"
                if key not in api.persistent_volume_claims:
                    message = f'persistentvolumeclaims "{parts[-1]}" not found'
                    return self._send(404, _status(404, message, "NotFound"))
                return self._send(200, api.claim_with_status(key))
            if "serviceaccounts" in parts and parts[-1] != "serviceaccounts":
                key = f"{self._namespace(parts)}/{parts[-1]}"
                if key not in api.service_accounts:
                    message = f'serviceaccounts "{parts[-1]}" not found'
                    return self._send(404, _status(404, message, "NotFound"))
                return self._send(200, api.service_accounts[key])
        self._send(404, _status(404, f"GET {self.path} is not served by the stand-in", "NotFound"))

    def _events(self, parts: list[str], query: dict) -> None:
        """A namespace's Events, filtered by a fieldSelector of ``field=value`` terms (the fields the API server
        indexes for Events that the tests use: involvedObject.kind, involvedObject.name, reason, type)."""
        terms = [term.partition("=")[::2] for term in query.get("fieldSelector", [""])[0].split(",") if term]
        namespace, items = self._namespace(parts), []
        for event in self.api.events:
            fields = {
                "involvedObject.kind": event["involvedObject"]["kind"],
                "involvedObject.name": event["involvedObject"]["name"],
                "reason": event["reason"],
                "type": event["type"],
            }
            if event["metadata"]["namespace"] == namespace and all(fields.get(k) == v for k, v in terms):
                items.append(copy.deepcopy(event))
        self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items})

    def _local_queues(self, parts: list[str]) -> None:
        api, namespace = self.api, self._namespace(parts)
        if not api.serves_kueue or parts[:3] != ["apis", "kueue.x-k8s.io", "v1beta2"]:
            return self._send(
                404, _status(404, "the server could not find the requested resource", "NotFound")
            )
        items = [
            api.local_queue_with_status(key)
            for key in sorted(api.local_queues)
            if key.startswith(f"{namespace}/")
        ]
        if parts[-1] == "localqueues":
            listing = {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueueList", "metadata": {}}
            return self._send(200, {**listing, "items": items})
        if f"{namespace}/{parts[-1]}" not in api.local_queues:
            message = f'localqueues.kueue.x-k8s.io "{parts[-1]}" not found'
            return self._send(404, _status(404, message, "NotFound"))
        return self._send(200, api.local_queue_with_status(f"{namespace}/{parts[-1]}"))

    def _workloads(self, parts: list[str], query: dict) -> None:
        api, namespace = self.api, self._namespace(parts)
        if not api.serves_kueue or parts[:3] != ["apis", "kueue.x-k8s.io", "v1beta2"]:
            return self._send(
                404, _status(404, "the server could not find the requested resource", "NotFound")
            )
        items = api.workloads(namespace, query.get("labelSelector", [""])[0])
        if parts[-1] == "workloads":
            return self._send(
                200, {"apiVersion": KUEUE_API, "kind": "WorkloadList", "metadata": {}, "items": items}
            )
        found = [item for item in items if item["metadata"]["name"] == parts[-1]]
        if not found:
            message = f'workloads.kueue.x-k8s.io "{parts[-1]}" not found'
            return self._send(404, _status(404, message, "NotFound"))
        return self._send(200, found[0])

    def _pod_log(self, pod_name: str, query: dict) -> None:
        api = self.api
        api.log_requests.append({"pod": pod_name, **{k: v[0] for k, v in query.items()}})
        try:
            record, pod = api.find_pod(pod_name)
            if pod.removed:
                raise KeyError(pod_name)
        except KeyError:
            return self._send(404, _status(404, f'pods "{pod_name}" not found', "NotFound"))
        if pod.unschedulable and pod.exit_code() is None:
            # No node, no kubelet to ask: the API server answers an empty log (pod.LogLocation without a host).
            return self._send(200, b"", "text/plain")
        if (pod.unpulled_image or pod.waiting[0]) and pod.exit_code() is None:
            container = query.get("container", ["snakemake"])[0]
            why = (
                "trying and failing to pull image"
                if pod.unpulled_image and pod.waiting[0] != "ContainerCreating"
                else pod.waiting[0]
            )
            message = f'container "{container}" in pod "{pod_name}" is waiting to start: {why}'
            return self._send(400, _status(400, message, "BadRequest"))
        if query.get("previous", ["false"])[0].lower() == "true":
            # restartPolicy: Never, so restartCount is always 0: there is no previous container.
            container = query.get("container", ["snakemake"])[0]
            message = f'previous terminated container "{container}" in pod "{pod_name}" not found'
            return self._send(400, _status(400, message, "BadRequest"))
        return self._send(200, (pod.workdir / "pod.log").read_bytes(), "text/plain")

    def do_DELETE(self) -> None:
        if self._take_failure():
            return
        parts, _ = self._route()
        if self.headers.get("Content-Length"):
            self._body()
        api = self.api
        # Deleted Jobs, pods and Secrets answer 404 from now on, as in the API; the records (and pod logs) are kept
        # for the tests' assertions.
        with api._lock:
            if "secrets" in parts:
                if parts[-1] not in api.secrets:
                    return self._send(404, _status(404, f'secrets "{parts[-1]}" not found', "NotFound"))
                api.secrets.pop(parts[-1])
                api.deleted_secrets.append(parts[-1])
            elif "jobs" in parts:
                record = api.jobs.get(parts[-1])
                if record is None or record.deleted:
                    return self._send(404, _status(404, f'jobs.batch "{parts[-1]}" not found', "NotFound"))
                record.deleted = True
                for pod in [*record.stopping, record.pod]:
                    if pod is not None:
                        pod.removed = True  # the garbage collector deletes a deleted Job's pods
                        if pod.exit_code() is None:
                            api._kill(pod, "deleted")
            elif "pods" in parts:
                try:
                    record, pod = api.find_pod(parts[-1])
                    if pod.removed:
                        raise KeyError(parts[-1])
                except KeyError:
                    return self._send(404, _status(404, f'pods "{parts[-1]}" not found', "NotFound"))
                # A running pod is killed; with backoffLimit: 0 its Job then fails (a deleted pod counts as failed).
                if pod.exit_code() is None:
                    api._kill(pod, "deleted")
                pod.removed = True
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods-root", type=Path, default=Path("standin-pods"))
    parser.add_argument("--kubeconfig", type=Path, default=Path("standin-kubeconfig.yaml"))
    parser.add_argument("--namespace", default="snakemake")
    parser.add_argument("--admit-delay", type=float, default=0.0)
    parser.add_argument("--max-running", type=int, default=0)
    parser.add_argument(
        "--apply",
        type=Path,
        nargs="*",
        default=[
            *sorted(Path("profiles/k8s/kueue").glob("*.yaml")),
            Path("profiles/k8s/serviceaccount.yaml"),
        ],
        help="manifests applied before the run (Kueue's queues and flavors, ServiceAccounts, Secrets)",
    )
    args = parser.parse_args()
    api = ApiStandIn(
        pods_root=args.pods_root,
        pod_path=os.environ["PATH"],
        admit_delay=args.admit_delay,
        max_running=args.max_running,
    ).start()
    import yaml

    api.add_objects([doc for path in args.apply for doc in yaml.safe_load_all(path.read_text()) if doc])
    api.write_kubeconfig(args.kubeconfig, args.namespace)
    print(f"stand-in API at {api.url}; export KUBECONFIG={args.kubeconfig.resolve()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
