"""Pods Kueue admitted that no node can hold: the scheduler's PodScheduled=False condition, reason Unschedulable.

Kueue admits a Job against its ClusterQueue's quota, which knows nothing of the size of single nodes: a Job asking
more memory than any one node has is admitted, and its pod stays Pending, unscheduled, for ever; the kubernetes
executor sees the Job as active and waits without a word. A cluster autoscaler may legitimately resolve it by
adding a node, so the pod is not failed at once: it is reported once it has been unschedulable for
``UNSCHEDULABLE_REPORT_S``, again only when the scheduler's message changes, and its job fails only after the
``kubernetes-kueue-unschedulable-timeout`` minutes a profile may set.

A pod whose PersistentVolumeClaim does not exist (or is being deleted, or lost its volume) is unschedulable too,
with the volumebinding plugin's PreFilter error in the scheduler's message (``0/3 nodes are available:
persistentvolumeclaim "data" not found. preemption: ...``; kube-scheduler's volume_binding.go podHasPVCs). No
node or autoscaler can cure that: it is not watched here but held stuck as a container that cannot start
(``MISSING_CLAIM``, jobs.SafeLogCoreApi), reported at once and failed after the same give-up. So is a pod whose claim
exists but is not bound (``pod has unbound immediate PersistentVolumeClaims``: its StorageClass is missing or cannot
provision it, no volume matches it), whose message names no claim: the pod's claims are read once (unbound_claims).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

import urllib3
from kubernetes.client.rest import ApiException

from .checks import PROFILE

# How long a pod is left unschedulable before it is reported: long enough for an autoscaler to add a node.
UNSCHEDULABLE_REPORT_S = 120.0
SETTING = "kubernetes-kueue-unschedulable-timeout"
# The scheduler's message for a pod whose claim cannot be bound to any node, and the reason of its event.
# The same PreFilter's error for a claim that exists, of volumeBindingMode Immediate, and is not bound: it names no
# claim, so the pod's claims are read (unbound_claims).
UNBOUND_CLAIM = "pod has unbound immediate PersistentVolumeClaims"
MISSING_CLAIM = re.compile(
    r'persistentvolumeclaim "[^"]+" (?:not found|is being deleted|bound to non-existent persistentvolume)|'
    + UNBOUND_CLAIM
)
FAILED_SCHEDULING = "FailedScheduling"


def missing_claim(pod) -> str | None:
    """The scheduler's message when ``pod`` is unschedulable because of its PersistentVolumeClaim (missing, being
    deleted, without its volume, or not bound), else None."""
    condition = _unschedulable_condition(pod)
    message = (condition.message or "") if condition is not None else ""
    return message if MISSING_CLAIM.search(message) else None


def unbound_claims(api, namespace: str, pod, refusals) -> str:
    """The claims of ``pod`` that are not Bound, each with its phase, its storage class and the PV controller's last
    Warning Event on it (ProvisioningFailed, FailedBinding: why), for the scheduler's UNBOUND_CLAIM. A read the
    driver's Role refuses goes to ``refusals`` (refusals.Refusals: said once per run, not per pod)."""
    from .jobs import describe_api_error  # jobs imports this module

    found = []
    for volume in (pod.spec.volumes if pod.spec else None) or []:
        if volume.persistent_volume_claim is None:
            continue
        name = volume.persistent_volume_claim.claim_name
        try:
            claim = api.read_namespaced_persistent_volume_claim(name, namespace)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            reading = (
                f"reading persistentvolumeclaim {namespace}/{name}, which pod {pod.metadata.name} mounts,"
            )
            refused = refusals.note(error, "persistentvolumeclaims", "get", namespace, reading)
            why = (
                "the driver's Role does not allow it, as said once" if refused else describe_api_error(error)
            )
            found.append(f'persistentvolumeclaim "{name}" could not be read: {why}')
            continue
        phase = (claim.status.phase if claim.status else None) or "not bound"
        if phase == "Bound":
            continue
        storage_class = claim.spec.storage_class_name if claim.spec else None
        text = f'persistentvolumeclaim "{name}" is {phase}, ' + (
            f'storage class "{storage_class}"'
            if storage_class
            else "no storage class (storageClassName not set)"
        )
        found.append(text + "".join(f", {why}" for why in _last_warning(api, namespace, name, pod, refusals)))
    return "; ".join(found)


def _last_warning(api, namespace: str, claim: str, pod, refusals) -> list[str]:
    selector = f"involvedObject.kind=PersistentVolumeClaim,involvedObject.name={claim},type=Warning"
    try:
        events = api.list_namespaced_event(namespace, field_selector=selector).items
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        # A Role without list on events (said once per run): the claim's phase and class still say much.
        reading = f"listing the events of persistentvolumeclaim {namespace}/{claim}, which pod {pod.metadata.name} mounts,"
        refusals.note(error, "events", "list", namespace, reading)
        return []
    latest = max(events, key=lambda e: str(e.last_timestamp or e.event_time or ""), default=None)
    return [f"{latest.reason}: {latest.message}"] if latest is not None else []


@dataclass
class UnschedulablePod:
    """A Job's pod the scheduler could not place: its name, the scheduler's message, what its container asks,
    and since when (time.monotonic(): the driver's clock, not the API server's lastTransitionTime)."""

    pod: str
    message: str
    requests: dict[str, str]
    since: float


@dataclass
class Verdict:
    """What to say about an unschedulable pod now, and whether its job fails."""

    text: str
    give_up: bool = False


def _unschedulable_condition(pod):
    for condition in (pod.status.conditions if pod.status else None) or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return condition
    return None


def _requests(pod) -> dict[str, str]:
    containers = (pod.spec.containers if pod.spec else None) or []
    for container in containers:
        if container.name == "snakemake" and container.resources is not None:
            return {name: str(value) for name, value in (container.resources.requests or {}).items()}
    return {}


@dataclass
class UnschedulableWatch:
    """The unschedulable pod of each Job, as the last pod listing showed it, and what was last said of it."""

    pods: dict[str, UnschedulablePod] = field(default_factory=dict)
    reported: dict[str, tuple[str, str]] = field(default_factory=dict)  # by Job: (pod, message) last reported

    def note(self, job: str, pods) -> None:
        """Called with each listing of the Job's pods (the kubernetes executor's, at every status check)."""
        for pod in pods:
            condition = _unschedulable_condition(pod)
            if condition is None or missing_claim(pod):
                continue
            previous = self.pods.get(job)
            since = previous.since if previous and previous.pod == pod.metadata.name else time.monotonic()
            self.pods[job] = UnschedulablePod(
                pod.metadata.name, condition.message or "", _requests(pod), since
            )
            return
        self.pods.pop(job, None)  # scheduled, gone or not yet created: a new spell is reported anew
        self.reported.pop(job, None)

    def verdict(self, namespace: str, job: str, give_up_min: float | None) -> Verdict | None:
        """The warning due for the Job's unschedulable pod (after UNSCHEDULABLE_REPORT_S, then when the
        scheduler's message changes), or its failure after ``give_up_min`` minutes; None when nothing is due."""
        give_up_s = None if give_up_min is None else give_up_min * 60.0
        pending = self.pods.get(job)
        if pending is None:
            return None
        waited = time.monotonic() - pending.since
        if give_up_s is not None and waited >= give_up_s:
            del self.pods[job]
            self.reported.pop(job, None)
            return Verdict(self.describe(namespace, job, pending, waited, f"its job fails ({SETTING})"), True)
        if waited < UNSCHEDULABLE_REPORT_S or self.reported.get(job) == (pending.pod, pending.message):
            return None
        self.reported[job] = (pending.pod, pending.message)
        then = (
            f"its job fails if it is still unschedulable after {give_up_s / 60:g} min ({SETTING})"
            if give_up_s is not None
            else f"it waits for a node for as long as it takes (set {SETTING} in {PROFILE} to fail it instead)"
        )
        return Verdict(self.describe(namespace, job, pending, waited, then))

    @staticmethod
    def describe(namespace: str, job: str, pending: UnschedulablePod, waited: float, then: str) -> str:
        asks = ", ".join(f"{name}={value}" for name, value in sorted(pending.requests.items())) or "nothing"
        return (
            f"kubernetes-kueue: Kueue admitted Job {namespace}/{job}, but no node can hold its pod {pending.pod} "
            f"(unschedulable for {waited / 60:.1f} min; it asks {asks}): the scheduler says "
            f"{pending.message!r}. A cluster autoscaler may still add a node that fits; otherwise lower the "
            f"rule's resources to what one node has (set-resources in {PROFILE}) or add a node pool that fits "
            f"it (kubectl -n {namespace} describe pod {pending.pod}); {then}"
        )
