"""What the executor makes of Kueue's Workloads: an eviction or a preemption of a running Job, reported once; a
Workload Kueue deactivated, whose Job it never admits again (the job fails); and one someone deactivated to hold it
(the job waits, said once with how to release it)."""

from __future__ import annotations

import datetime
import email.utils
import time

import kubernetes.client
import urllib3
from kubernetes.client.rest import ApiException

from .jobs import describe_api_error

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
# Kueue labels each Job's Workload with the Job's uid (pkg/controller/constants: JobUIDLabel).
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"
# The Evicted reason of a deactivated Workload (spec.active false): "Deactivated" when someone set it (kubectl patch,
# to hold the Job: Kueue admits it again once spec.active is true), "DeactivatedDueTo<cause>" when Kueue did, after
# setting the DeactivationTarget condition first (workload_controller.go, pkg/workload/evict,
# patching.ReasonWithCause; Kueue 0.19). Only Kueue's own deactivation fails the job.
DEACTIVATED = "Deactivated"
DEACTIVATION_FIXES = {
    "DeactivatedDueToRequeuingLimitExceeded": "its pods were not all ready within Kueue's waitForPodsReady.timeout "
    "more often than waitForPodsReady.requeuingStrategy.backoffLimitCount allows (an image that cannot be pulled, a "
    "pod no node can hold, a slow start)",
    "DeactivatedDueToMaximumExecutionTimeExceeded": "it ran longer than its label "
    "kueue.x-k8s.io/max-exec-time-seconds allows",
    "DeactivatedDueToAdmissionCheck": "an admission check of its ClusterQueue rejected it",
}
# Why Kueue evicted a Workload, by the Evicted reason, where the reason alone does not say it (workload_types.go).
EVICTION_CAUSES = {
    "PodsReadyTimeout": "its pod was not ready within Kueue's waitForPodsReady.timeout (a pod no node can hold, an "
    "image or a volume it waits for, a slow start)",
}
# The Requeued reasons Kueue's requeue writes over the eviction's (workload_types.go: WorkloadBackoffFinished,
# WorkloadReactivated), and the eviction's message as SetQuotaReservation keeps it on the reset Evicted condition.
REQUEUE_REASONS = ("BackoffFinished", "Reactivated")
PREVIOUSLY = "Previously: "
# The Evicted reason of each eviction message Kueue writes in one wording (workload_controller.go
# reconcileNotReadyTimeout; pkg/scheduler/preemption preemptionMessage).
EVICTION_MESSAGES = {
    "Exceeded the PodsReady timeout ": "PodsReadyTimeout",
    "Preempted to accommodate a workload ": "Preempted",
}
# How often the Workloads of the Jobs Kueue keeps suspended are read for a deactivation (a Job evicted since the last
# status check has its Workload read at once).
DEACTIVATION_CHECK_S = 60.0


def read_workloads(namespace: str, retry) -> tuple[dict[str, dict], ServerClock]:
    """The namespace's Workloads by the uid of their Job, in one list, and the API server's clock as its answer's
    Date header gave it; ``retry`` sends it again after a transient error (KueueExecutor._retry_transient)."""
    api = kubernetes.client.CustomObjectsApi()
    listed, _, headers = retry(
        lambda: api.list_namespaced_custom_object_with_http_info(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads"
        )
    )
    by_uid = {
        ((workload.get("metadata") or {}).get("labels") or {}).get(JOB_UID_LABEL, ""): workload
        for workload in listed.get("items", [])
    }
    return by_uid, ServerClock((headers or {}).get("Date"))


class ServerClock:
    """The API server's time, from the Date header of one of its answers, carried on by this process's monotonic
    clock: Kueue writes ``requeueAt`` by the server's clock, so comparing it with the driver's own wall clock would
    be off by their skew (a driver an hour ahead would take a back-off of minutes for over). Without a Date header
    (a proxy that drops it) it is the driver's clock, off by at most that skew; Date has whole seconds."""

    def __init__(self, date: str | None) -> None:
        self.read_at = time.monotonic()
        try:
            self.date = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError):
            self.date = None
        if self.date is not None and self.date.tzinfo is None:  # "-0000": UTC, as RFC 9110 requires
            self.date = self.date.replace(tzinfo=datetime.UTC)

    def now(self) -> datetime.datetime:
        if self.date is None:
            return datetime.datetime.now(datetime.UTC)
        return self.date + datetime.timedelta(seconds=time.monotonic() - self.read_at)


def read_workload(namespace: str, uid: str, retry) -> dict | None:
    """The Workload of the Job whose uid is ``uid``, in one list of its label (None when Kueue has none for it)."""
    api = kubernetes.client.CustomObjectsApi()
    listed = retry(
        lambda: api.list_namespaced_custom_object(
            KUEUE_GROUP, KUEUE_VERSION, namespace, "workloads", label_selector=f"{JOB_UID_LABEL}={uid}"
        )
    )
    return next(iter(listed.get("items") or []), None)


def _conditions(workload: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (workload.get("status") or {}).get("conditions") or []}


def deactivation(workload: dict) -> tuple[str, str] | None:
    """Kueue's reason and message for a deactivated Workload (``spec.active: false``); None while it is active. The
    reason is ``Deactivated`` when someone deactivated it, ``DeactivatedDueTo<cause>`` when Kueue did."""
    if (workload.get("spec") or {}).get("active", True) is not False:
        return None
    conditions = _conditions(workload)
    evicted, target = conditions.get("Evicted", {}), conditions.get("DeactivationTarget", {})
    if evicted.get("status") == "True" and evicted.get("reason", "").startswith(DEACTIVATED):
        return evicted["reason"], evicted.get("message", "")
    message = "The workload is deactivated"  # what Kueue writes next
    if target.get("status") == "True":  # Kueue's own deactivation, read before it wrote the eviction
        return (
            f"{DEACTIVATED}DueTo{target.get('reason', '')}",
            f"{message} due to {target.get('message', '')}",
        )
    # No DeactivationTarget (Kueue sets it before spec.active): someone set spec.active, and Kueue has not yet
    # written the eviction (or an earlier eviction's reason is still there).
    return DEACTIVATED, message


def deactivation_report(namespace: str, name: str, workload: dict) -> str | None:
    """Why Job ``name`` fails, when Kueue has deactivated its Workload (``spec.active: false``) itself: it then never
    admits it again, and the Job would stay suspended for ever. None while the Workload is active, or when someone
    deactivated it by hand (see hold_report)."""
    found = deactivation(workload)
    if found is None or found[0] == DEACTIVATED:
        return None
    reason, message = found
    workload_name = workload["metadata"]["name"]
    why = DEACTIVATION_FIXES.get(reason, "the reason and message say why")
    return (
        f"kubernetes-kueue: Kueue deactivated the Workload {workload_name} of Job {namespace}/{name} (reason "
        f"{reason}: {message}), so it never admits the Job again, which would stay suspended for ever: "
        f"{why}; `kubectl -n {namespace} describe workload {workload_name}` shows its conditions"
    )


def hold_report(namespace: str, name: str, workload: dict, stopped: bool = False) -> str | None:
    """What to say of Job ``name`` whose Workload someone deactivated (``spec.active: false``, Evicted reason
    ``Deactivated``), to hold it: the job keeps waiting, and runs once the Workload is active again (``stopped``: it
    was running, and Kueue stopped its pod). None otherwise."""
    found = deactivation(workload)
    if found is None or found[0] != DEACTIVATED:
        return None
    workload_name = workload["metadata"]["name"]
    then = (
        "its pod was stopped, and the Job waits suspended to run again from its start"
        if stopped
        else ("the Job waits suspended")
    )
    return (
        f"kubernetes-kueue: the Workload {workload_name} of Job {namespace}/{name} is held: someone deactivated it "
        f"(spec.active false, reason {DEACTIVATED}: {found[1]}), so Kueue does not admit the Job; {then}. "
        f"Release it with `kubectl -n {namespace} patch workload {workload_name} --type merge -p "
        f'\'{{"spec":{{"active":true}}}}\'`, or cancel the run to give it up'
    )


def eviction_report(
    namespace: str, name: str, resumed: bool, workload: dict | None, error=None, finished: bool = False
) -> str:
    """What to say of Job ``name`` that Kueue took back, from its Workload's conditions (``error``: why it could not
    be read; ``finished``: the Job ran again and finished before a status check saw it running again)."""
    where = f"Job {namespace}/{name}"
    # What the status reads saw: the Job suspended, or (resumed) running again with a new start time.
    resumed_since = "was suspended and resumed since the last status check (its status.startTime changed)"
    outcome = (
        "Its pod was stopped, and the Job ran again from its start and finished before this status check; "
        "Snakemake does not count the eviction as a failure"
        if finished
        else "Its pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake "
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
    requeued = None
    if evicted.get("status") != "True":
        evicted, requeued = _readmitted_eviction(conditions)
    if evicted:
        reason = evicted.get("reason", "")
        cause = f": {EVICTION_CAUSES[reason]}" if reason in EVICTION_CAUSES else ""
        if preempted.get("status") == "True":
            reason += f" ({preempted.get('reason', '')})"
        workload_name = workload["metadata"]["name"]
        return (
            f"kubernetes-kueue: Kueue evicted {where} (Workload {workload_name}, reason {reason}: "
            f"{evicted.get('message', '')}){cause}.{_requeue(workload, requeued)} {outcome}; `kubectl -n {namespace} "
            f"describe workload {workload_name}` shows its conditions"
        )
    state = resumed_since if resumed else "is suspended again"
    return (
        f"kubernetes-kueue: {where} was running and {state}, and its Workload shows no eviction (suspended "
        f"by hand?). {outcome}"
    )


def _readmitted_eviction(conditions: dict[str, dict]) -> tuple[dict, dict | None]:
    """The eviction of a Workload admitted again since, and the requeue that wrote Requeued after it (None when
    Requeued still is the eviction's). SetQuotaReservation resets Evicted (False, reason QuotaReserved, message
    ``Previously: <the eviction's message>``); Requeued keeps the eviction's reason and message, unless Kueue's requeue
    rewrote it (BackoffFinished: waitForPodsReady's back-off ended; Reactivated): then the reason is told from the
    eviction's message, which Kueue writes in one wording per reason."""
    requeued = conditions.get("Requeued", {})
    if requeued.get("reason") not in REQUEUE_REASONS:
        return requeued, None
    message = conditions.get("Evicted", {}).get("message", "").removeprefix(PREVIOUSLY)
    reason = next((r for start, r in EVICTION_MESSAGES.items() if message.startswith(start)), "not recorded")
    return {"reason": reason, "message": message}, requeued


def _requeue(workload: dict, requeued: dict | None = None) -> str:
    """When Kueue admits the Workload again after waitForPodsReady's back-off (``status.requeueState``), and what
    follows from the count; "" for an eviction without one (a preemption). ``requeued``: the Requeued condition of a
    Workload requeued and admitted again since its eviction."""
    state = (workload.get("status") or {}).get("requeueState") or {}
    then = (
        "once a timeout would exceed waitForPodsReady.requeuingStrategy.backoffLimitCount requeues, Kueue "
        "deactivates it and the job fails."
    )
    if requeued is not None:
        how = f"Requeued reason {requeued.get('reason', '')}: {requeued.get('message', '')}"
        if "count" not in state:
            return f" Kueue requeued it ({how}) and has admitted it again."
        return (
            f" Kueue requeued it once its back-off was over ({how}), requeue {state['count']} of its Workload, and "
            f"has admitted it again; {then}"
        )
    if "count" not in state:
        return ""
    when = f"at {state['requeueAt']}" if state.get("requeueAt") else "now (its back-off is over)"
    return f" Kueue requeues it {when}, requeue {state['count']} of its Workload; {then}"


def backoff_report(
    namespace: str, name: str, workload: dict, waited_min: float, clock: ServerClock | None = None
) -> str | None:
    """What to say of Job ``name``, suspended for ``waited_min`` minutes, while Kueue holds its Workload in
    waitForPodsReady's back-off after a PodsReadyTimeout eviction (Requeued False with the eviction's reason, and
    ``status.requeueState``), in place of the report of a Job that waits for quota; None when it is not in one (its
    ``requeueAt`` passed by the API server's ``clock``, the one of the Workload's read: Kueue requeues it)."""
    conditions = _conditions(workload)
    requeued = conditions.get("Requeued", {})
    state = (workload.get("status") or {}).get("requeueState") or {}
    if requeued.get("status") != "False" or "count" not in state:
        return None
    at = state.get("requeueAt")
    try:
        passed = at and datetime.datetime.fromisoformat(at) <= (clock or ServerClock(None)).now()
    except ValueError:
        passed = False
    if passed:
        return None
    when = (
        f"Kueue requeues it at {at} (status.requeueState)"
        if at
        else "its Workload does not say when Kueue requeues it"
    )
    reason = requeued.get("reason", "")
    cause = f": {EVICTION_CAUSES[reason]}" if reason in EVICTION_CAUSES else ""
    workload_name = workload["metadata"]["name"]
    return (
        f"kubernetes-kueue: Job {namespace}/{name} has waited {waited_min:.1f} min for Kueue to admit it again: it is "
        f"in waitForPodsReady's back-off, not waiting for quota. Kueue evicted it (Workload {workload_name}, reason "
        f"{reason}: {requeued.get('message', '')}){cause}. Requeue {state['count']} of its Workload: {when}; once a "
        "timeout would exceed waitForPodsReady.requeuingStrategy.backoffLimitCount requeues, Kueue deactivates it and "
        f"the job fails. `kubectl -n {namespace} describe workload {workload_name}` shows its conditions"
    )


class WorkloadReview:
    """What the Workloads of a status check's active Jobs say: an eviction to report once for each Job Kueue took
    back (CompletingBatchApi.taken_back), a failure for each Job whose Workload Kueue deactivated, and one line for
    each Job whose Workload someone deactivated to hold it (``held``, while it is)."""

    def __init__(self) -> None:
        self.read_at = float("-inf")  # time.monotonic() of the last read for a deactivation
        self.held: set[str] = set()  # Jobs whose Workload was last read held (deactivated by hand)
        self.workloads: dict[str, dict] = {}  # by Job: its Workload as last read (see backoff_report)
        self.clock = ServerClock(None)  # the API server's clock, as the last read's answer gave it

    def backoff(self, namespace: str, name: str, waited_min: float) -> str | None:
        """backoff_report of Job ``name`` from its Workload as last read, by the server's clock of that read."""
        workload = self.workloads.get(name)
        return backoff_report(namespace, name, workload, waited_min, self.clock) if workload else None

    def finished(self, namespace: str, name: str, watch, retry, refusals=None) -> str | None:
        """The eviction to report of Job ``name``, which has just finished (succeeded or failed), when its status
        showed it taken back since the last status check (a new status.startTime: Kueue evicted it, admitted it
        again, and its new pod ended before the check), or when no status read saw it started before (its first
        admission's run unseen, so no start time to compare) and its Workload shows an eviction; else None. Its
        Workload is read once, by the Job's uid, before the kubernetes executor deletes the Job (and the garbage
        collector its Workload). A read the Role refuses (403) goes to ``refusals`` too (refusals.Refusals)."""
        self.held.discard(name)
        self.workloads.pop(name, None)
        unseen = name in watch.started_unseen
        watch.started_unseen.discard(name)
        if name not in watch.taken_back and not unseen:
            return None
        resumed, uid = watch.taken_back.pop(name, True), watch.job_uids.get(name)
        try:
            workload = read_workload(namespace, uid, retry) if uid else None
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            _refused(refusals, error, namespace, f"listing the Workload of Job {namespace}/{name}")
            # Unseen, it may well never have been evicted: a read that failed says nothing of it.
            return None if unseen else eviction_report(namespace, name, resumed, None, error, finished=True)
        # Kueue writes Evicted at an eviction and never drops it (SetQuotaReservation resets it to False).
        if unseen and "Evicted" not in _conditions(workload or {}):
            return None
        return eviction_report(namespace, name, resumed, workload, finished=True)

    def review(
        self, namespace: str, names: list[str], watch, retry, refusals=None
    ) -> tuple[list[str], dict[str, str]]:
        """The reports to log, and the failure messages by Job name, for the Jobs ``names``; ``watch`` is the
        CompletingBatchApi that saw their status; a list the Role refuses (403) goes to ``refusals``."""
        taken = [name for name in names if name in watch.taken_back]
        suspended = [name for name in names if name in watch.suspended_since]
        # Running, first seen started by this check: no earlier start time to compare, so an eviction of a first
        # admission no check saw shows only in the Workload (read in the same list for all of them).
        fresh = [name for name in names if name in watch.started_unseen and name not in watch.taken_back]
        watch.started_unseen.difference_update(
            fresh
        )  # their Workload is read now, not again when they finish
        self.held &= set(suspended)  # running again, or gone
        now = time.monotonic()
        if not taken and not fresh and not (suspended and now - self.read_at >= DEACTIVATION_CHECK_S):
            return [], {}
        self.read_at = now
        try:
            by_uid, self.clock = read_workloads(namespace, retry)
        except (ApiException, urllib3.exceptions.HTTPError) as error:
            _refused(refusals, error, namespace, f"listing the Workloads of namespace {namespace}")
            # The next check reads them again for a deactivation; the evictions are reported now, as they are (a
            # fresh Job, which may well never have been evicted, is not).
            return [
                eviction_report(namespace, name, watch.taken_back.pop(name), None, error) for name in taken
            ], {}
        reports, failures = [], {}
        self.workloads = {}
        for name in dict.fromkeys([*taken, *suspended]):
            workload = by_uid.get(watch.job_uids.get(name, "")) if watch.job_uids.get(name) else None
            if workload:
                self.workloads[name] = workload
            failure = workload and deactivation_report(namespace, name, workload)
            hold = workload and hold_report(namespace, name, workload)
            if failure:
                failures[name] = failure
                watch.taken_back.pop(name, None)
                continue
            if hold and name in taken:  # the hold says it: Kueue stopped the Job for it
                watch.taken_back.pop(name)
                hold = hold_report(namespace, name, workload, stopped=True)
                self.held.discard(name)
            elif name in taken:
                reports.append(eviction_report(namespace, name, watch.taken_back.pop(name), workload))
            if hold and name not in self.held:
                reports.append(hold)  # once per hold: released and held again, it is said again
            self.held = (self.held | {name}) if hold else (self.held - {name})
        reports += [
            report for name in fresh if (report := _first_admission_eviction(namespace, name, watch, by_uid))
        ]
        return reports, failures


def _first_admission_eviction(namespace: str, name: str, watch, by_uid: dict[str, dict]) -> str | None:
    """The eviction to report of Job ``name``, running and first seen started by this status check, when its Workload
    shows one: Kueue evicted its first admission and admitted it again, all between two checks (Kueue writes Evicted
    at an eviction and never drops it; SetQuotaReservation resets it to False). An Evicted still True is an eviction
    under way: the next check sees the Job suspended, or with a new start time, and reports it then."""
    uid = watch.job_uids.get(name)
    workload = by_uid.get(uid) if uid else None
    evicted = _conditions(workload or {}).get("Evicted")
    if evicted is None or evicted.get("status") == "True":
        return None
    return eviction_report(namespace, name, True, workload)


def _refused(refusals, error: Exception, namespace: str, reading: str) -> None:
    """Note a Workloads list the driver's Role refused (403): said once per run, with the rule to add."""
    if refusals is not None:
        refusals.note(error, "workloads", "list", namespace, reading)
