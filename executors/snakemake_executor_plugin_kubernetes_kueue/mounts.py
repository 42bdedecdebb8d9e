"""Pods whose container waits ``ContainerCreating`` for ever because one of its volumes cannot be attached or mounted.

The kubelet mounts every volume of a pod before it creates its container, and tries a mount that fails again and
again: the container waits with reason ``ContainerCreating`` (no message), the pod stays Pending, its Job active and
its Kueue quota held, for ever. The waiting state alone cannot tell this from a slow image pull, which waits
``ContainerCreating`` too; the pod's Events can: at each try the kubelet records a Warning Event, reason
``FailedMount``, whose message is the operation, the volume and the error (``MountVolume.SetUp failed for volume
"<volume>" : <error>``, or ``MountVolume.MountDevice failed ...`` where a CSI driver stages the volume; Kubernetes'
operation_generator.go). The errors told apart (``MOUNT_FAILURES``), each with its own fix:

* ``mount``: a Secret or ConfigMap volume that is not ``optional`` names a missing object (``secret "<name>" not
  found``, ``configmap "<name>" not found``: the kubelet's secret and configmap managers);
* ``mount-key``: its ``items`` list a key the object lacks (``references non-existent secret key: <key>``,
  ``configmap references non-existent config key: <key>``: pkg/volume/secret and pkg/volume/configmap);
* ``mount-driver``: any other failed mount, that is a volume plugin's or CSI driver's error (Azure File or Blob:
  ``rpc error: code = Internal desc = ...``, a driver not registered on the node);
* ``attach``: a volume that must be attached to the node first (a disk: Azure Disk, a block device) and cannot be.
  The kubelet only waits for the attachment; the attach/detach controller of kube-controller-manager tries it, and
  at each failed try records a Warning Event ``FailedAttachVolume`` on the pod, ``AttachVolume.Attach failed for
  volume "<volume>" : <the plugin's or CSI driver's error>`` (pkg/controller/volume/attachdetach, its events from
  operation_generator.go's GenerateAttachVolumeFunc): a disk that is gone, in another zone, attached to another
  node, a VM that holds no more data disks, an identity that may not attach it.

The kubelet's summary (``Unable to attach or mount volumes: ... timed out waiting for the condition``) names no
cause and does not count. A pod waiting ``ContainerCreating`` longer than ``CONTAINER_CREATING_CHECK_S`` has its
Warning Events read (both reasons in one list), at most once every ``CONTAINER_CREATING_CHECK_S``; the executor then
reports it once and fails its job after the give-up of every stuck container, unless the failure has stopped by then
(fixed meanwhile: not recorded again for ``MOUNT_RETRY_S``; the attach/detach controller's back-off stops at the
kubelet's 2 min 2 s too). A driver whose Role lacks ``list`` on ``events``
cannot read them: that is said once per run (``refusals``), and the run goes on without this check.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import urllib3
from kubernetes.client.rest import ApiException

from .refusals import Refusals

# How long a container may wait ContainerCreating (mounting its volumes, pulling its image) before its pod's Events
# are read for a volume the kubelet cannot mount, and how often they are read again.
CONTAINER_CREATING_CHECK_S = 60.0
# The longest the kubelet waits between two tries of a mount (its exponential back-off stops at 2 min 2 s), with a
# margin: a FailedMount not recorded again for this long no longer happens.
MOUNT_RETRY_S = 300.0
FAILED_MOUNT = "FailedMount"
FAILED_ATTACH = "FailedAttachVolume"
# The failed mounts that keep a container waiting, by the fix they need (jobs.STUCK_CONTAINER_FIX_TEXT), most
# specific first: a FailedMount message is the operation, the volume and the volume plugin's error.
_FAILED_MOUNT = r'MountVolume\.\w+ failed for volume "[^"]+" : '
MOUNT_FAILURES = (
    ("attach", re.compile(r'AttachVolume\.Attach failed for volume "[^"]+" : ')),
    ("mount", re.compile(_FAILED_MOUNT + r'(?:secret|configmap) "[^"]+" not found')),
    (
        "mount-key",
        re.compile(
            _FAILED_MOUNT
            + r"(?:references non-existent secret key|configmap references non-existent config key): "
        ),
    ),
    ("mount-driver", re.compile(_FAILED_MOUNT)),
)


# The attach/detach controller's FailedAttachVolume for a ReadWriteOnce volume attached to another node (reconciler.go
# reportMultiAttachError): not a stuck pod, as the volume is attached here once the pod holding it ends, but one that may
# wait for a very long time: warned of once, after kubernetes-kueue-multi-attach-warning minutes (multi_attach_warning).
MULTI_ATTACH = re.compile(r'Multi-Attach error for volume "(?P<volume>[^"]+)" (?P<why>.*)', re.S)
# The three messages of reconciler.go's reportMultiAttachError (pkg/controller/volume/attachdetach/reconciler): the pods
# of the waiting pod's namespace by name, those of other namespaces only counted (a namespace's users must not see
# other namespaces' pod names), and no pod at all when none uses the volume there. The node that holds the volume goes
# only to the controller's own log ("attachedTo"), never into the event; the pods it names are those using the volume on
# that node (GetVolumePodsOnNodes), so their spec.nodeName is that node (read with the Role's get on pods).
USED_BY = re.compile(
    r"Volume is already used by (?:pod\(s\) (?P<pods>.+?)(?: and (?P<others>\d+) pod\(s\) in different "
    r"namespaces)?|(?P<only_others>\d+) pod\(s\) in different namespaces)\Z"
)
MULTI_ATTACH_SETTING = "kubernetes-kueue-multi-attach-warning"


def mount_failure_kind(message: str) -> str | None:
    """Which of MOUNT_FAILURES a FailedMount or FailedAttachVolume message is (its fix), or None (the kubelet's
    timeout summary, any other event)."""
    return next((kind for kind, pattern in MOUNT_FAILURES if pattern.search(message or "")), None)


def volume_failure_reason(message: str) -> str:
    """The reason of the event whose message is ``message``: FailedAttachVolume for the attach/detach controller's
    ``AttachVolume.Attach failed ...``, FailedMount for the kubelet's ``MountVolume.<operation> failed ...``."""
    return FAILED_ATTACH if mount_failure_kind(message) == "attach" else FAILED_MOUNT


@dataclass
class MountFailure:
    """The kubelet's last FailedMount Event that names a cause: its message, what changes each time the kubelet
    records it again (count, lastTimestamp), and when (time.monotonic()) that was last seen to change."""

    message: str
    repeated: tuple
    changed_at: float
    cleared: bool = (
        False  # the kubelet stopped recording it: the object exists now, the container is on its way
    )


def _mount_failure(events) -> tuple[str, tuple] | None:
    found = [event for event in events if mount_failure_kind(event.message)]
    if not found:
        return None
    latest = _latest(found)
    return latest.message, (latest.count, latest.last_timestamp, latest.event_time)


def _latest(events):
    key = lambda event: (str(event.last_timestamp or event.event_time or ""), event.count or 0)  # noqa: E731
    return max(events, key=key, default=None)


def _volume_of(api, namespace: str, claim: str, pod: str, refusals: Refusals) -> str | None:
    """The PersistentVolume a claim is bound to (its spec.volumeName), or None when it cannot be read (a read the
    driver's Role refuses goes to ``refusals``)."""
    try:
        return api.read_namespaced_persistent_volume_claim(claim, namespace).spec.volume_name
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        reading = f"reading persistentvolumeclaim {namespace}/{claim}, which pod {pod} mounts,"
        refusals.note(error, "persistentvolumeclaims", "get", namespace, reading)
        return None


@dataclass
class MountWatch:
    """For each Job whose pod waits ContainerCreating: since when (time.monotonic()), when its Events were last read,
    and the failed mount they showed; and the refusal of the first Events read the driver may not make."""

    creating: dict[str, tuple[str, float]] = field(default_factory=dict)  # by Job: (pod, since)
    read_at: dict[str, float] = field(default_factory=dict)
    found: dict[str, MountFailure] = field(default_factory=dict)
    # The reads the driver's Role refused, said once per run (also the claims' reads: jobs.SafeLogCoreApi).
    refusals: Refusals = field(default_factory=Refusals)
    multi_attach: dict[str, str] = field(
        default_factory=dict
    )  # by Job: the last Multi-Attach event's message
    claims: dict[str, list[str]] = field(default_factory=dict)  # by Job: the claims its pod mounts
    multi_attach_warned: set[tuple[str, str]] = field(default_factory=set)  # (Job, pod) warned of

    def note(self, api, namespace: str, job: str, pod: str, claims: tuple = ()) -> str | None:
        """Called with each listing that shows the Job's pod ``pod`` (mounting ``claims``) waiting ContainerCreating:
        the kubelet's FailedMount message while its Events show a volume it cannot mount, else None."""
        now = time.monotonic()
        previous = self.creating.get(job)
        if previous is None or previous[0] != pod:
            self.forget(job)
            self.creating[job], self.claims[job] = (pod, now), list(claims)
            return None
        due = now - max(previous[1], self.read_at.get(job, previous[1])) >= CONTAINER_CREATING_CHECK_S
        if due:
            self.read_at[job] = now
            self._update(api, namespace, job, pod, now)
        missing = self.found.get(job)
        return missing.message if missing is not None and not missing.cleared else None

    def still_failing(self, api, namespace: str, job: str, pod: str) -> bool:
        """At the give-up: whether the failure (FailedMount, FailedAttachVolume) was recorded again within MOUNT_RETRY_S
        (the kubelet and the attach/detach controller try again, with a back-off of at most about two minutes, for as
        long as it fails). Once it has not, the volume was attached and mounted and the container is on its way (its
        image is pulled): it is no longer held stuck."""
        now = time.monotonic()
        self.read_at[job] = now
        self._update(api, namespace, job, pod, now)
        missing = self.found.get(job)
        if missing is None or now - missing.changed_at >= MOUNT_RETRY_S:
            if missing is not None:
                missing.cleared = True
            return False
        return True

    def forget(self, job: str) -> None:
        """The Job's pod no longer waits ContainerCreating (started, gone, or another pod)."""
        for known in (self.creating, self.read_at, self.found, self.multi_attach, self.claims):
            known.pop(job, None)

    def multi_attach_warning(self, api, namespace: str, job: str, after_min: float | None) -> str | None:
        """Once per pod, when it has waited ContainerCreating ``after_min`` minutes with a Multi-Attach event: which
        claim, held by which pods (those of other namespaces the event only counts), on which node, and that the job keeps
        waiting. The event never names the node (USED_BY): it is read from the spec.nodeName of the pods of ``namespace``
        it names; without one (only pods of other namespaces, none at all, or gone since), `kubectl get
        volumeattachments` shows it."""
        message, creating = self.multi_attach.get(job), self.creating.get(job)
        if message is None or creating is None or after_min is None:
            return None
        pod, waited = creating[0], time.monotonic() - creating[1]
        if waited < after_min * 60 or (job, pod) in self.multi_attach_warned:
            return None
        self.multi_attach_warned.add((job, pod))
        volume = MULTI_ATTACH.search(message)["volume"]
        claims = self.claims.get(job, [])
        claim = next((c for c in claims if _volume_of(api, namespace, c, pod, self.refusals) == volume), None)
        what = f'persistentvolumeclaim "{claim}" (volume {volume})' if claim else f'volume "{volume}"'
        used = USED_BY.search(message)
        nodes = _nodes_of(api, namespace, used["pods"].split(", ") if used and used["pods"] else [])
        where = (
            f"on node {', '.join(sorted(set(nodes.values())))}, which holds {volume} (the spec.nodeName of pod(s) "
            f"{', '.join(nodes)}; the event names no node)"
            if nodes
            else f"the event names no node (`kubectl get volumeattachments` shows the node that holds {volume})"
        )
        return (
            f"kubernetes-kueue: the container of Job {namespace}/{job} (pod {pod}) has waited {waited / 60:.1f} min for "
            f"{what}, a ReadWriteOnce volume attached to another node, which the attach/detach controller does not "
            f"attach to a second one (FailedAttachVolume: {message}). {_holders(used, namespace)}; {where}. The job "
            "keeps waiting, its Kueue quota held, and "
            "starts once the volume is detached from that node: end what holds it, or give the rule a claim of its own "
            f"or a ReadWriteMany one. Said once per pod ({MULTI_ATTACH_SETTING}: after how many minutes)"
        )

    def _update(self, api, namespace: str, job: str, pod: str, now: float) -> None:
        try:
            events = _failed_mounts(api, namespace, pod)
        except urllib3.exceptions.HTTPError:
            return  # read again later
        except ApiException as error:
            reading = f"listing the events of pod {namespace}/{pod}, which waits ContainerCreating,"
            self.refusals.note(error, "events", "list", namespace, reading)
            return  # read again later: a Role fixed meanwhile lets it through
        held = _latest([event for event in events if MULTI_ATTACH.match(event.message or "")])
        if held is not None:
            self.multi_attach[job] = held.message
        read, known = _mount_failure(events), self.found.get(job)
        if read is None or (known is not None and known.repeated == read[1]):
            return
        self.found[job] = MountFailure(read[0], read[1], now)  # new, or recorded again: not cleared


def _holders(used, namespace: str) -> str:
    """Who uses the volume on the other node, as the Multi-Attach event says (``used``: its USED_BY match)."""
    if used is None:
        return (
            "no pod uses it there any more (the attachment outlived its pod, e.g. on a node that went down)"
        )
    if used["only_others"]:
        return (
            f"{used['only_others']} pod(s) of other namespaces use it there (the event names no pod of another "
            "namespace)"
        )
    others = f", and {used['others']} pod(s) of other namespaces," if used["others"] else ""
    return f"pod(s) {used['pods']} of namespace {namespace}{others} use it there"


def _nodes_of(api, namespace: str, pods: list[str]) -> dict[str, str]:
    """The node each of ``pods`` (of ``namespace``) runs on, by pod: its spec.nodeName. A pod that cannot be read (gone
    since the event, a Role without get on pods) or is on no node is left out."""
    nodes = {}
    for pod in pods:
        try:
            node = api.read_namespaced_pod(pod, namespace).spec.node_name
        except (ApiException, urllib3.exceptions.HTTPError):
            continue
        if node:
            nodes[pod] = node
    return nodes


def _failed_mounts(api, namespace: str, pod: str):
    # A field selector takes no "or": FailedMount (the kubelet) and FailedAttachVolume (the attach/detach controller)
    # come in one list of the pod's Warnings, told apart by their messages (mount_failure_kind).
    selector = f"involvedObject.kind=Pod,involvedObject.name={pod},type=Warning"
    return api.list_namespaced_event(namespace, field_selector=selector).items
