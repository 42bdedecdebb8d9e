"""What the executor makes of Kueue's Workloads: an eviction or a preemption of a running Job, reported once, and a
deactivated Workload, whose Job Kueue never admits again."""

from __future__ import annotations

import time

import kubernetes.client
import urllib3
from kubernetes.client.rest import ApiException

from .jobs import describe_api_error

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
# Kueue labels each Job's Workload with the Job's uid (pkg/controller/constants: JobUIDLabel).
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
# The Evicted reason of a deactivated Workload (spec.active false): "Deactivated" when someone set it,
# "DeactivatedDueTo<cause>" when Kueue did (pkg/workload/evict, patching.ReasonWithCause; Kueue 0.19).
DEACTIVATED = "Deactivated"
DEACTIVATION_FIXES = {
    "DeactivatedDueToRequeuingLimitExceeded": "its pods were not all ready within Kueue's waitForPodsReady.timeout "
    "more often than waitForPodsReady.requeuingStrategy.backoffLimitCount allows (an image that cannot be pulled, a "
    "pod no node can hold, a slow start)",
    "DeactivatedDueToMaximumExecutionTimeExceeded": "it ran longer than its label "
    "kueue.x-k8s.io/max-exec-time-seconds allows",
    "DeactivatedDueToAdmissionCheck": "an admission check of its ClusterQueue rejected it",
    DEACTIVATED: "someone set its spec.active to false (kubectl patch workload)",
}
# How often the Workloads of the Jobs Kueue keeps suspended are read for a deactivation (a Job evicted since the last
# status check has its Workload read at once).
DEACTIVATION_CHECK_S = 60.0


def read_workloads(namespace: str, retry) -> dict[str, dict]:
    """The namespace's Workloads by the uid of their Job, in one list; ``retry`` sends it again after a transient
    error (KueueExecutor._retry_transient)."""
    api = kubernetes.client.CustomObjectsApi()
    listed = retry(
        lambda: api.list_namespaced_custom_object(KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads")
    )
    return {
        ((workload.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL, ""): workload
        for workload in listed.get("items", [])
    }


def _conditions(workload: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (workload.get("status") or {}).get("conditions") or []}


def deactivation_report(namespace: str, name: str, workload: dict) -> str | None:
    """Why Job ``name`` fails, when Kueue has deactivated its Workload (``spec.active: false``): Kueue then never
    admits it again, and the Job would stay suspended for ever. None while the Workload is active."""
    if (workload.get("spec") or {}).get("active", True) is not False:
        return None
    conditions = _conditions(workload)
    evicted, target = conditions.get("Evicted", {}), conditions.get("DeactivationTarget", {})
    reason, message = (
        DEACTIVATED,
        "The workload is deactivated",
    )  # what Kueue writes next, when nobody asked it
    if evicted.get("status") == "True" and evicted.get("reason", "").startswith(DEACTIVATED):
        reason, message = evicted["reason"], evicted.get("message", "")
    elif target.get("status") == "True":  # Kueue's own deactivation, read before it wrote the eviction
        reason = f"{DEACTIVATED}DueTo{target.get('reason', '')}"
        message = f"{message} due to {target.get('message', '')}"
    workload_name = workload["metadata"]["name"]
    why = DEACTIVATION_FIXES.get(reason, "the reason and message say why")
    return (
        f"kubernetes-kueue: Kueue deactivated the Workload {workload_name} of Job {namespace}/{name} (reason "
        f"{reason}: {message}), so it never admits the Job again, which would stay suspended for ever: "
        f"{why}; `kubectl -n {namespace} describe workload {workload_name}` shows its conditions"
    )


def eviction_report(namespace: str, name: str, resumed: bool, workload: dict | None, error=None) -> str:
    """What to say of Job ``name`` that Kueue took back, from its Workload's conditions (``error``: why it could not
    be read)."""
    where = f"Job {namespace}/{name}"
    # What the status reads saw: the Job suspended, or (resumed) running again with a new start time.
    resumed_since = "was suspended and resumed since the last status check (its status.startTime changed)"
    outcome = (
        "Its pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake "
        "does not count this as a failure"
    )
    if error is not None:
        taken = f"it {resumed_since}" if resumed else "Kueue suspended it again"
        return (
            f"kubernetes-kueue: {where} was running and {taken} (evicted or preempted; its "
            f"Workload could not be read: {describe_api_error(error)}). {outcome}"
        )
    conditions = _conditions(workload or {})
    evicted, preempted = conditions.get("Evicted", {}), conditions.get("Preempted", {})
    if evicted.get("status") != "True":
        # Admitted again since: Evicted is reset, but Requeued keeps the eviction's reason and message.
        evicted = conditions.get("Requeued", {})
    if evicted:
        reason = evicted.get("reason", "")
        if preempted.get("status") == "True":
            reason += f" ({preempted.get('reason', '')})"
        workload_name = workload["metadata"]["name"]
        return (
            f"kubernetes-kueue: Kueue evicted {where} (Workload {workload_name}, reason {reason}: "
            f"{evicted.get('message', '')}). {outcome}; `kubectl -n {namespace} describe workload "
            f"{workload_name}` shows its conditions"
        )
    state = resumed_since if resumed else "is suspended again"
    return (
        f"kubernetes-kueue: {where} was running and {state}, and its Workload shows no eviction (suspended "
        f"by hand?). {outcome}"
    )


class WorkloadReview:
    """What the Workloads of a status check's active Jobs say: an eviction to report once for each Job Kueue took
    back (CompletingBatchApi.taken_back), and a failure for each Job whose Workload Kueue deactivated."""

    def __init__(self) -> None:
        self.read_at = float("-inf")  # time.monotonic() of the last read for a deactivation

    def review(self, namespace: str, names: list[str], watch, retry) -> tuple[list[str], dict[str, str]]:
        """The eviction reports, and the failure messages by Job name, for the Jobs ``names``; ``watch`` is the
        CompletingBatchApi that saw their status."""
        taken = [name for name in names if name in watch.taken_back]
        suspended = [name for name in names if name in watch.suspended_since]
        now = time.monotonic()
        if not taken and not (suspended and now - self.read_at >= DEACTIVATION_CHECK_S):
            return [], {}
        self.read_at = now
        try:
            by_uid = read_workloads(namespace, retry)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            # The next check reads them again for a deactivation; the evictions are reported now, as they are.
            return [
                eviction_report(namespace, name, watch.taken_back.pop(name), None, error) for name in taken
            ], {}
        reports, failures = [], {}
        for name in dict.fromkeys([*taken, *suspended]):
            workload = by_uid.get(watch.job_uids.get(name, "")) if watch.job_uids.get(name) else None
            failure = workload and deactivation_report(namespace, name, workload)
            if failure:
                failures[name] = failure
                watch.taken_back.pop(name, None)
            elif name in taken:
                reports.append(eviction_report(namespace, name, watch.taken_back.pop(name), workload))
        return reports, failures
