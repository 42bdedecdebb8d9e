"""What the executor says when Kueue takes back a running Job: an eviction or a preemption, from its Workload."""

from __future__ import annotations

import kubernetes.client
import urllib3
from kubernetes.client.rest import ApiException

from .jobs import describe_api_error

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
# Kueue labels each Job's Workload with the Job's uid (pkg/controller/constants: JobUIDLabel).
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


def eviction_report(namespace: str, name: str, uid: str, resumed: bool, retry) -> str:
    """What to say of Job ``name`` (uid ``uid``) that Kueue took back, from its Workload's conditions; ``retry``
    sends the Workload read again after a transient error (KueueExecutor._retry_transient)."""
    where = f"Job {namespace}/{name}"
    # What the status reads saw: the Job suspended, or (resumed) running again with a new start time.
    resumed_since = "was suspended and resumed since the last status check (its status.startTime changed)"
    outcome = (
        "Its pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake "
        "does not count this as a failure"
    )
    api = kubernetes.client.CustomObjectsApi()
    try:
        listed = retry(
            lambda: api.list_namespaced_custom_object(
                KUEUE_GROUP,
                KUEUE_VERSION,
                namespace,
                "workloads",
                label_selector=f"{JOB_UID_LABEL}={uid}",
            )
        )
    except (ApiException, urllib3.exceptions.HTTPError) as error:
        taken = f"it {resumed_since}" if resumed else "Kueue suspended it again"
        return (
            f"kubernetes-kueue: {where} was running and {taken} (evicted or preempted; its "
            f"Workload could not be read: {describe_api_error(error)}). {outcome}"
        )
    for workload in listed.get("items", []):
        conditions = {c["type"]: c for c in (workload.get("status") or {}).get("conditions") or []}
        evicted, preempted = conditions.get("Evicted", {}), conditions.get("Preempted", {})
        if evicted.get("status") != "True":
            # Admitted again since: Evicted is reset, but Requeued keeps the eviction's reason and message.
            evicted = conditions.get("Requeued", {})
        if not evicted:
            continue
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
