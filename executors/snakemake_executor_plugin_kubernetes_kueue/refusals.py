"""Reads that a driver's Role refuses without stopping the run: the rules added to profiles/k8s/rbac.yaml since its
first release (``list`` on events, ``get`` on persistentvolumeclaims), which a Role applied from an older one lacks,
and the reads a Role trimmed by hand may lack (``list`` on Kueue's workloads, ``get`` on pods/log). The API server
answers such a read HTTP 403 (Forbidden); the check that needed it is lost, and the run goes on without it. Each missing rule is said once per run,
whichever read met it first, naming the rule to add, the namespace and what goes undetected; the reads are made again
later, so a Role fixed meanwhile lets them through."""

from __future__ import annotations

from dataclasses import dataclass, field

# What goes undetected without each rule of rbac.yaml a Role may lack, by (resource, verb).
LOST = {
    (
        "events",
        "list",
    ): "a pod whose volume the kubelet cannot mount (a missing Secret or ConfigMap, a key its items "
    "list that the object lacks, a CSI, Azure File or Blob mount failure) or that cannot be attached to the node (a "
    "disk) is not detected: its job waits ContainerCreating, holding its Kueue quota, until someone deletes its Job; "
    "and an unbound claim is reported without the provisioner's event that says why",
    (
        "persistentvolumeclaims",
        "get",
    ): "a pod the scheduler leaves unschedulable because a claim it mounts is not "
    'bound ("pod has unbound immediate PersistentVolumeClaims") is reported without the claim\'s phase, storage '
    "class and the provisioner's event, which say why it is not bound; and a ReadWriteOnce disk another node holds "
    "is warned of by its volume's name, without the claim it belongs to",
    (
        "workloads",
        "list",
    ): "a Job Kueue evicts or preempts is reported without its Workload's reason and message; a Workload Kueue "
    "deactivated (it never admits its Job again) is not detected, so its job waits suspended for ever; and a Job held "
    "in waitForPodsReady's back-off is reported as waiting for quota",
    (
        "pods/log",
        "get",
    ): "a failed job's log lacks its pod's output, which says why it failed (kubectl -n <namespace> logs <pod>, run "
    "with another identity, reads it while the pod exists)",
}
# The API group of each resource of LOST outside the core group ("").
GROUPS = {"workloads": "kueue.x-k8s.io"}


@dataclass
class Refusals:
    """The warnings due for the reads a Role refused (403), one per missing rule and run."""

    due: list[str] = field(default_factory=list)
    said: set[tuple[str, str]] = field(default_factory=set)

    def note(self, error: Exception, resource: str, verb: str, namespace: str, reading: str) -> bool:
        """Note the error of ``reading`` (what was read, for the message); True when it was the Role's refusal."""
        from .jobs import describe_api_error  # jobs imports the modules that use this one

        if getattr(error, "status", None) != 403:
            return False
        if (resource, verb) not in self.said:
            self.said.add((resource, verb))
            group = f" (API group {GROUPS[resource]})" if resource in GROUPS else ""
            self.due.append(
                f"kubernetes-kueue: {reading} failed with {describe_api_error(error)}: the driver's Role lacks the "
                f"rule for resource {resource}{group}, verb {verb}, in namespace {namespace} (profiles/k8s/rbac.yaml; "
                f"kubectl apply -f it). Without it, {LOST[resource, verb]}. The run goes on; this is said once"
            )
        return True

    def take(self) -> list[str]:
        """The warnings not yet given (each once per run: this lives as long as the run)."""
        due, self.due = self.due, []
        return due
