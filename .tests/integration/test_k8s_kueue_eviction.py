"""Kueue taking back an admitted, running Job (preemption or eviction), against the stand-in.

The stand-in does what Kueue 0.19 and the Kubernetes Job controller do (see its docstring); the expected
values below are Kueue v0.19.2's, named by their source: apis/kueue/v1beta2/workload_types.go (condition
types and reasons), pkg/scheduler/preemption/preemption.go (preemptionMessage, HumanReadablePreemptionReasons),
pkg/workload/workload.go (SetQuotaReservation, UnsetQuotaReservationWithCondition), pkg/workload/
admissionchecks.go (SyncAdmittedCondition), pkg/controller/jobframework/reconciler.go (the eviction branch)
and pkg/controller/jobs/job/job_controller.go (Stop); and Kubernetes' pkg/controller/job/job_controller.go
(manageJob and deleteJobPods for a suspended Job, ensureJobConditionStatus's JobSuspended/JobResumed).
"""

from __future__ import annotations

import copy
import datetime
import re
import sys
import time
from pathlib import Path

import kubernetes.client
import kubernetes_validate
import pytest
from testkit import role_grants, wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
import test_k8s_api_failures as api_failures  # noqa: E402
from apistandin import KUBERNETES_VERSION  # noqa: E402
from harness import profile_manifests  # noqa: E402
from test_k8s_api_failures import (  # noqa: E402
    NAMESPACE,
    check_for,
    check_round,
    rbac_request,
    run_until_settled,
    submit,
    wait_for_pod,
)

# The same stand-in cluster and executor as the API-failure tests (pytest finds fixtures by these names).
cluster, executor = api_failures.cluster, api_failures.executor

# pkg/scheduler/preemption/preemption.go, preemptionMessage for reason InClusterQueue (the preemptor's UIDs
# and the cohort paths are the cluster's).
PREEMPTION_MESSAGE = re.compile(
    r"Preempted to accommodate a workload \(UID: [0-9a-f-]{36}, JobUID: [0-9a-f-]{36}\) due to "
    r"prioritization in the ClusterQueue; preemptor path: \S+; preemptee path: \S+"
)


def rerun_script(marker: Path, stops_in_s: float = 0.0, rerun_s: float = 0.0) -> str:
    """Runs for a minute the first time (long enough to be preempted), succeeds after ``rerun_s`` when run again.
    With ``stops_in_s``, SIGTERM makes it take that long to stop (as a program saving a checkpoint)."""
    trap = f"trap 'sleep {stops_in_s}; exit 143' TERM; " if stops_in_s else ""
    return f"{trap}test -e {marker} && sleep {rerun_s} && exit 0; touch {marker}; sleep 60"


def workload_of(job: kubernetes.client.V1Job) -> dict:
    (workload,) = (
        kubernetes.client.CustomObjectsApi()
        .list_namespaced_custom_object(
            "kueue.x-k8s.io",
            "v1beta2",
            NAMESPACE,
            "workloads",
            label_selector=f"kueue.x-k8s.io/job-uid={job.metadata.uid}",
        )
        .get("items")
    )
    return workload


# What the report says of an evicted Job whose readmitted run ended before the status check that saw the eviction
RAN_AGAIN_AND_FINISHED = (
    "Its pod was stopped, and the Job ran again from its start and finished before this status check; Snakemake "
    "does not count the eviction as a failure"
)
RUNS_AGAIN = (
    "Its pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake does not count "
    "this as a failure"
)


def preemption_report(
    record, name: str, reason: str = "Preempted (InClusterQueue)", outcome: str = RUNS_AGAIN
) -> str:
    """The executor's report of the preemption (reason InClusterQueue) of the stand-in's Job ``record``. Read
    once the Workload is admitted again, ``reason`` is Requeued's alone: Preempted is False by then (reason
    QuotaReserved), and the message still says why (prioritization in the ClusterQueue)."""
    workload = record.workload["metadata"]["name"]
    (requeued,) = [c for c in record.workload["status"]["conditions"] if c["type"] == "Requeued"]
    message = requeued["message"]  # Requeued keeps the eviction's message after the readmission
    assert PREEMPTION_MESSAGE.fullmatch(message)
    return (
        f"kubernetes-kueue: Kueue evicted Job {NAMESPACE}/{name} (Workload {workload}, reason {reason}: "
        f"{message}). {outcome}; `kubectl -n {NAMESPACE} describe workload {workload}` shows its conditions"
    )


def conditions(workload: dict) -> dict[str, tuple[str, str, str]]:
    return {c["type"]: (c["status"], c["reason"], c["message"]) for c in workload["status"]["conditions"]}


def test_the_standin_preempts_and_readmits_a_running_job_as_kueue_and_the_job_controller_do(
    cluster, tmp_path
):
    batch, core = kubernetes.client.BatchV1Api(), kubernetes.client.CoreV1Api()
    name, marker = "preempted", tmp_path / "ran-once"
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"kueue.x-k8s.io/queue-name": "jobs"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "snakemake",
                            "image": "x",
                            "command": ["/bin/sh", "-c", rerun_script(marker)],
                            "resources": {"requests": {"cpu": "100m", "memory": "64M"}},
                        }
                    ],
                }
            },
        },
    }
    batch.create_namespaced_job(NAMESPACE, body)
    first_pod = wait_for_pod(cluster, name)
    job = batch.read_namespaced_job_status(name, NAMESPACE)
    workload = workload_of(job)
    assert workload["metadata"]["name"].startswith(f"job-{name}-")
    (owner,) = workload["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Job",
        name,
        job.metadata.uid,
        True,
    )
    assert workload["status"]["admission"]["clusterQueue"] == "snakemake"
    assert conditions(workload) == {
        "QuotaReserved": ("True", "QuotaReserved", "Quota reserved in ClusterQueue snakemake"),
        "Admitted": ("True", "Admitted", "The workload is admitted"),
    }

    cluster.terminated_pod_listed_s = 30.0  # keep the stopped pod listed, to look at it
    cluster.preempt(name, "InClusterQueue", readmit_after_s=3600)
    evicted = conditions(workload_of(job))
    message = evicted["Evicted"][2]
    assert PREEMPTION_MESSAGE.fullmatch(message), message
    assert evicted == {
        "Evicted": ("True", "Preempted", message),  # WorkloadEvicted, WorkloadEvictedByPreemption
        "Preempted": ("True", "InClusterQueue", message),  # WorkloadPreempted, InClusterQueueReason
        "Requeued": ("True", "Preempted", message),  # True for a preemption (reconciler.go)
        # UnadmittedWorkloadsObservability is off by default in 0.19: the reason is WorkloadPending.
        "QuotaReserved": ("False", "Pending", message),
        "Admitted": ("False", "NoReservation", "The workload has no reservation"),
    }
    assert "admission" not in workload_of(job)["status"]
    # The Job: suspended by Kueue (startTime cleared); its pod deleted by the Job controller without being
    # counted as failed (its tracking finalizer removed first).
    suspended = batch.read_namespaced_job_status(name, NAMESPACE)
    assert suspended.spec.suspend is True and suspended.status.start_time is None
    assert (suspended.status.failed, suspended.status.active, suspended.status.terminating) == (None, None, 1)
    assert [(c.type, c.status, c.reason) for c in suspended.status.conditions] == [
        ("Suspended", "True", "JobSuspended")
    ]
    (stopping,) = core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
    assert stopping.metadata.name == first_pod and stopping.metadata.deletion_timestamp is not None
    assert not stopping.metadata.finalizers and stopping.metadata.deletion_grace_period_seconds == 30
    # SIGTERM ends the shell: exit 143, as a real container that does not trap it.
    terminated = wait_for(
        lambda: (
            core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items[0].status.container_statuses[0].state.terminated
        )
    )  # fmt: skip
    assert (terminated.exit_code, terminated.reason) == (143, "Error")
    for document in (cluster.job_with_status(name), *cluster.pod_objects(name)):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)

    # Readmitted: the reset conditions keep what happened; the Job resumes with a new pod, which succeeds.
    cluster.jobs[name].readmit_at = 0.0
    # A generous wait: on a loaded machine the readmission, the new pod's start and its end took over 20 s once.
    second_pod = wait_for_pod(cluster, name, seconds=90, running=False)
    assert second_pod != first_pod
    readmitted = conditions(workload_of(job))
    assert readmitted == {
        "Evicted": ("False", "QuotaReserved", f"Previously: {message}"),
        "Preempted": ("False", "QuotaReserved", f"Previously: {message}"),
        "Requeued": ("True", "Preempted", message),
        "QuotaReserved": ("True", "QuotaReserved", "Quota reserved in ClusterQueue snakemake"),
        "Admitted": ("True", "Admitted", "The workload is admitted"),
    }
    # The old pod may still be listed next to the new one (no pod replacement policy waits for it).
    listed = {
        p.metadata.name for p in core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items
    }
    assert listed == {first_pod, second_pod}
    done = wait_for(lambda: batch.read_namespaced_job_status(name, NAMESPACE).status.succeeded and batch.read_namespaced_job_status(name, NAMESPACE))  # fmt: skip
    assert done.status.failed is None


@pytest.mark.parametrize(
    "readmit_after_s, stops_in_s, symptom",
    [
        # Each state lasts 6-8 s, so that a status check sees it also on a loaded machine (a 2 s window was missed
        # in CI, with two test workers busy).
        (8.0, 0.0, "exit 143"),  # the stopped pod's exit code, listed while the Job waits for readmission
        (0.5, 8.0, "two pods"),  # readmitted while the old pod still stops: the new one is listed next to it
    ],
)
def test_a_preempted_job_is_readmitted_and_succeeds_with_the_eviction_logged_once(
    cluster, executor, tmp_path, readmit_after_s, stops_in_s, symptom
):
    """The kubernetes executor fails a job whose listed pod ended non-zero, and stops the run (an assert)
    when two pods are listed: a preempted Job shows either. Here the job stays active, runs again and succeeds, and the
    eviction is logged once, with the Workload's reason and message, however many status checks see it."""
    name = "preempted"
    # The rerun takes 4 s: the Job cannot end before a status check has seen the state under test.
    job = submit(executor, name, rerun_script(tmp_path / "ran-once", stops_in_s, rerun_s=4.0))
    wait_for_pod(cluster, name)
    assert check_round(executor, [job]) == [job]  # read running: admitted
    cluster.terminated_pod_listed_s = 6.0
    cluster.preempt(name, "InClusterQueue", readmit_after_s=readmit_after_s)
    record = cluster.jobs[name]
    seen, active, deadline = set(), [job], time.monotonic() + 60

    def look() -> None:
        with cluster._lock:
            if len(cluster.pod_objects(name)) == 2:
                seen.add("two pods")
            elif any(pod.exit_code() == 143 for pod in record.stopping):
                seen.add("exit 143")

    while active:
        assert time.monotonic() < deadline, "still active"
        look()
        active = check_round(executor, active)
        look()  # also what the status check may have just read
        time.sleep(0.1)
    assert symptom in seen
    assert executor.recorder.finished == [name] and executor.recorder.failed == []
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == [
        preemption_report(record, name)
    ]
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    made = {rbac_request(method, path) for method, path, _ in cluster.requests}
    assert ("kueue.x-k8s.io", "workloads", "list") in made
    assert made <= role_grants(role), made - role_grants(role)


def test_an_eviction_readmitted_between_two_status_checks_is_logged_once_from_the_new_start_time(
    cluster, executor, tmp_path
):
    """Kueue preempts the Job and admits it again before the next status check (the profile checks every
    10 s): no read sees it suspended, and the kubernetes executor sees a job that still runs. The Job
    controller gave the resumed Job a new status.startTime: that is how the eviction is found, and it is
    logged once, as one seen suspended is; the job runs again and succeeds."""
    batch, name = kubernetes.client.BatchV1Api(), "readmitted"
    # The rerun takes 6 s: the status check after the readmission reads the new run, not its end (a finished
    # Job would keep the new start time too).
    marker = tmp_path / "ran-once"
    job = submit(executor, name, rerun_script(marker, rerun_s=6.0))
    first_pod = wait_for_pod(cluster, name)
    # The first run has left its mark, so the run after the preemption is the short one (a busy machine may
    # start the shell late).
    wait_for(marker.exists, what="the first run's mark")
    assert check_round(executor, [job]) == [job]  # read running, with its first start time
    first_start = batch.read_namespaced_job_status(name, NAMESPACE).status.start_time
    # Readmitted 1.5 s after the preemption: startTime has whole seconds, so the new one differs for sure.
    cluster.preempt(name, "InClusterQueue", readmit_after_s=1.5)
    assert wait_for_pod(cluster, name) != first_pod  # readmitted and running again, no status check between
    readmitted = batch.read_namespaced_job_status(name, NAMESPACE)
    assert not readmitted.spec.suspend and readmitted.status.start_time > first_start
    run_until_settled(executor, [job], seconds=60)
    assert executor.recorder.finished == [name] and executor.recorder.failed == []
    warnings = executor.recorder.messages("warning")
    assert [w for w in warnings if "evicted" in w] == [
        preemption_report(cluster.jobs[name], name, "Preempted")
    ]
    assert not [w for w in warnings if "suspended" in w]  # nothing else said about it (e.g. "by hand")


@pytest.mark.parametrize("rerun_exit", [0, 3])
def test_an_eviction_readmitted_and_finished_between_two_status_checks_is_logged_once_reading_one_workload(
    cluster, executor, tmp_path, rerun_exit
):
    """Kueue preempts the Job and admits it again, and the new run ends (succeeds, or fails), all before the next
    status check. That check reads the Job finished, with a new status.startTime, and the kubernetes executor reports
    it and deletes it: the eviction, looked for only among the Jobs still active, was never said, so the user never
    learnt that the job ran twice. It is now said once, from the Workload read once, before the Job is deleted (the
    garbage collector then deletes the Workload too); a Job that finishes without an eviction reads no Workload."""
    batch, name = kubernetes.client.BatchV1Api(), "readmitted-then-done"
    marker = tmp_path / "ran-once"
    release = tmp_path / "release"  # the plain Job runs until the first status check has read it running
    job = submit(executor, name, f"test -e {marker} && exit {rerun_exit}; touch {marker}; sleep 60")
    plain = submit(executor, "never-evicted", f"until test -e {release}; do sleep 0.2; done")
    first_pod = wait_for_pod(cluster, name, seconds=90)
    wait_for_pod(cluster, "never-evicted", seconds=90)
    wait_for(marker.exists, timeout_s=90, what="the first run's mark")
    assert check_round(executor, [job, plain]) == [job, plain]  # read running, with its first start time
    assert {name, "never-evicted"} <= set(executor.batchapi.start_times)
    release.touch()
    first_start = batch.read_namespaced_job_status(name, NAMESPACE).status.start_time
    cluster.preempt(name, "InClusterQueue", readmit_after_s=1.5)  # startTime has whole seconds: 1.5 s differs
    # Readmitted and ended, no status check between.
    assert wait_for_pod(cluster, name, seconds=90, running=False) != first_pod
    wait_for_pod(cluster, "never-evicted", seconds=90, running=False)
    done = batch.read_namespaced_job_status(name, NAMESPACE)
    assert done.status.start_time > first_start
    assert (done.status.succeeded, done.status.failed) == ((1, None) if rerun_exit == 0 else (None, 1))
    reads_before = len([path for _, path, _ in cluster.requests if path.endswith("/workloads")])
    assert check_round(executor, [job, plain]) == []
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == [
        preemption_report(cluster.jobs[name], name, "Preempted", RAN_AGAIN_AND_FINISHED)
    ]
    finished, failed = (executor.recorder.finished, executor.recorder.failed)
    assert sorted(finished + failed) == ["never-evicted", name] and (name in failed) == (rerun_exit != 0)
    assert cluster.jobs[name].deleted
    reads = [(path, query) for _, path, query in cluster.requests if path.endswith("/workloads")]
    reads = reads[reads_before:]
    assert reads == [
        (
            f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads",
            {"labelSelector": [f"kueue.x-k8s.io/job-uid={done.metadata.uid}"]},
        )
    ]
    run_until_settled(executor, [])  # nothing more is said of it
    assert len([w for w in executor.recorder.messages("warning") if "evicted" in w]) == 1


def test_an_eviction_of_a_first_admission_readmitted_and_finished_between_two_status_checks_is_logged_once(
    cluster, executor, tmp_path
):
    """A status check reads the Job suspended, waiting for its first admission; Kueue then admits it, preempts it,
    admits it again, and the new run ends, all before the next check. No read saw the first run's start time, so no
    new one showed the eviction, and the kubernetes executor reported the job and deleted the Job without a word of
    it: the user never learnt that the job ran twice. It is now said once, from the Workload read once, by the Job's
    uid, before the Job is deleted; a Job no check saw started that finishes without an eviction reads its Workload
    once too, and nothing is said of it."""
    batch, name = kubernetes.client.BatchV1Api(), "evicted-on-first-admission"
    cluster.admit_delay = 2.0  # the first status check reads both Jobs suspended
    marker = tmp_path / "ran-once"
    job = submit(executor, name, f"test -e {marker} && exit 0; touch {marker}; sleep 60")
    plain = submit(executor, "never-evicted", "true")
    assert check_round(executor, [job, plain]) == [job, plain]
    assert {name, "never-evicted"} <= set(executor.batchapi.suspended_since)  # read waiting, no start time
    first_pod = wait_for_pod(cluster, name)
    wait_for(marker.exists, what="the first run's mark")
    cluster.preempt(name, "InClusterQueue", readmit_after_s=1.5)
    assert (
        wait_for_pod(cluster, name, running=False) != first_pod
    )  # readmitted and ended, no status check between
    wait_for_pod(cluster, "never-evicted", running=False)
    done = batch.read_namespaced_job_status(name, NAMESPACE)
    assert done.status.succeeded == 1
    plain_uid = batch.read_namespaced_job_status("never-evicted", NAMESPACE).metadata.uid
    requests_before = len(cluster.requests)
    assert check_round(executor, [job, plain]) == []
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == [
        preemption_report(cluster.jobs[name], name, "Preempted", RAN_AGAIN_AND_FINISHED)
    ]
    assert sorted(executor.recorder.finished) == ["evicted-on-first-admission", "never-evicted"]
    assert executor.recorder.failed == [] and cluster.jobs[name].deleted
    reads = [
        (path, query) for _, path, query in cluster.requests[requests_before:] if path.endswith("/workloads")
    ]
    expected = [
        (
            f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads",
            {"labelSelector": [f"kueue.x-k8s.io/job-uid={uid}"]},
        )
        for uid in (done.metadata.uid, plain_uid)
    ]
    assert sorted(reads, key=str) == sorted(expected, key=str)  # one read each, by its uid
    run_until_settled(executor, [])  # nothing more is said of it
    assert len([w for w in executor.recorder.messages("warning") if "evicted" in w]) == 1


def test_an_eviction_of_a_first_admission_readmitted_and_still_running_at_the_next_check_is_logged_once(
    cluster, executor, tmp_path
):
    """As above, but the readmitted run is still running at the next status check: the first start time that check
    sees is the readmission's, so no new one ever showed the eviction, and the Job, read running from then on, was
    not reported when it finished either. A check that first sees Jobs started now reads their Workloads, in one list
    for all of them, and says the eviction once; a Job whose Workload shows none is not mentioned, and no Workload is
    read again when they finish."""
    name = "evicted-on-first-admission-running"
    cluster.admit_delay = 2.0  # the first status check reads both Jobs suspended
    marker, release = tmp_path / "ran-once", tmp_path / "release"
    wait = f"until test -e {release}; do sleep 0.2; done"  # runs until the test releases it
    job = submit(executor, name, f"test -e {marker} && {{ {wait}; exit 0; }}; touch {marker}; sleep 120")
    plain = submit(executor, "never-evicted", f"{wait}; exit 0")
    assert check_round(executor, [job, plain]) == [job, plain]
    assert {name, "never-evicted"} <= set(executor.batchapi.suspended_since)  # read waiting, no start time
    first_pod = wait_for_pod(cluster, name, seconds=90)
    wait_for(marker.exists, timeout_s=90, what="the first run's mark")
    cluster.preempt(name, "InClusterQueue", readmit_after_s=1.5)
    assert (
        wait_for_pod(cluster, name, seconds=90) != first_pod
    )  # readmitted and running, no status check between
    wait_for_pod(cluster, "never-evicted", seconds=90)
    requests_before = len(cluster.requests)
    assert check_round(executor, [job, plain]) == [job, plain]  # both read running, first seen started
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == [
        preemption_report(cluster.jobs[name], name, "Preempted")
    ]
    reads = [
        (path, query) for _, path, query in cluster.requests[requests_before:] if path.endswith("/workloads")
    ]
    assert reads == [(f"/apis/kueue.x-k8s.io/v1beta2/namespaces/{NAMESPACE}/workloads", {})]  # one, for both
    requests_before = len(cluster.requests)
    release.touch()
    run_until_settled(executor, [job, plain], seconds=90)
    assert (
        sorted(executor.recorder.finished) == sorted([name, "never-evicted"])
        and executor.recorder.failed == []
    )
    assert not [
        p for _, p, _ in cluster.requests[requests_before:] if p.endswith("/workloads")
    ]  # not read again
    warnings = executor.recorder.messages("warning")
    assert len([w for w in warnings if "evicted" in w]) == 1
    assert not [w for w in warnings if "never-evicted" in w]


def test_an_eviction_whose_workload_cannot_be_read_is_still_reported_once(
    cluster, executor, tmp_path, monkeypatch
):
    """Also: a Job waiting for readmission after its eviction gets the long admission-wait report."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.5)
    name = "evicted"
    job = submit(executor, name, rerun_script(tmp_path / "ran-once"))
    wait_for_pod(cluster, name)
    assert check_round(executor, [job]) == [job]
    cluster.evict_workload(name, "PodsReadyTimeout", "Exceeded the PodsReady timeout snakemake/evicted", 1.5)
    cluster.fail_next("GET", "workloads", 403)
    active = [job]
    while active:
        active = check_round(executor, active)
        time.sleep(0.1)
    assert executor.recorder.finished == [name] and executor.recorder.failed == []
    (report,) = [w for w in executor.recorder.messages("warning") if "suspended it again" in w]
    assert report == (
        f"kubernetes-kueue: Job {NAMESPACE}/{name} was running and Kueue suspended it again (evicted or "
        "preempted; its Workload could not be read: HTTP 403 Forbidden: workloads.kueue.x-k8s.io is forbidden: "
        f'User "{cluster.user}" cannot list resource "workloads" in API group "kueue.x-k8s.io" in the namespace '
        f'"{NAMESPACE}"). Its pod was stopped; the Job runs again from its start once Kueue admits it again, and '
        "Snakemake does not count this as a failure"
    )
    assert [w for w in executor.recorder.messages("warning") if "for Kueue to admit it" in w]


def test_a_role_without_list_on_workloads_is_said_once_with_the_rule_and_each_eviction_is_still_reported(
    cluster, executor, tmp_path
):
    """A Role trimmed by hand lacks list on Kueue's workloads: each eviction's report carried the 403, and the
    Workloads read for a deactivation (of Jobs Kueue keeps suspended) failed without a word, so a deactivated
    Workload would have gone undetected in silence. Now one warning per run names the rule, with its API group, and
    what goes undetected; each eviction is still reported once, and the jobs go on."""
    cluster.fail_next("GET", "workloads", 403, times=1000)
    jobs = [submit(executor, name, rerun_script(tmp_path / name)) for name in ("evicted-1", "evicted-2")]
    for job in jobs:
        wait_for_pod(cluster, job.external_jobid)
    assert check_round(executor, jobs) == jobs  # read running
    for job in jobs:
        cluster.evict_workload(job.external_jobid, "ClusterQueueStopped", "The ClusterQueue is stopped", 1.5)
    active = jobs
    while active:
        active = check_round(executor, active)
        time.sleep(0.1)
    assert sorted(executor.recorder.finished) == ["evicted-1", "evicted-2"] and executor.recorder.failed == []
    refused = [status for _, resource, status in cluster.answered_failures if resource == "workloads"]
    assert len(refused) >= 1 and set(refused) == {403}
    warnings = executor.recorder.messages("warning")
    assert [w for w in warnings if "the driver's Role lacks" in w] == [
        f"kubernetes-kueue: listing the Workloads of namespace {NAMESPACE} failed with HTTP 403 Forbidden: "
        f'workloads.kueue.x-k8s.io is forbidden: User "{cluster.user}" cannot list resource "workloads" in API group '
        f'"kueue.x-k8s.io" in the namespace "{NAMESPACE}": the driver\'s Role lacks the rule for resource workloads '
        f"(API group kueue.x-k8s.io), verb list, in namespace {NAMESPACE} (profiles/k8s/rbac.yaml; kubectl apply -f "
        "it). Without it, a Job Kueue evicts or preempts is reported without its Workload's reason and message; a "
        "Workload Kueue deactivated (it never admits its Job again) is not detected, so its job waits suspended for "
        "ever; and a Job held in waitForPodsReady's back-off is reported as waiting for quota. The run goes on; this "
        "is said once"
    ]
    for name in ("evicted-1", "evicted-2"):
        (report,) = [w for w in warnings if f"Job {NAMESPACE}/{name} was running and" in w]
        assert "(evicted or preempted; its Workload could not be read: HTTP 403 Forbidden: " in report
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    assert ("kueue.x-k8s.io", "workloads", "list") in role_grants(role)  # the shipped Role has the rule


def test_the_profiles_cluster_queue_neither_preempts_nor_shares_a_cohort():
    """profiles/k8s/README.md: the profile's own queue never preempts its Jobs (a preempted Job loses its work)."""
    (queue,) = profile_manifests("kueue/clusterqueue.yaml")
    assert queue["spec"]["preemption"] == {"withinClusterQueue": "Never", "reclaimWithinCohort": "Never"}
    assert "cohortName" not in queue["spec"]


def test_each_evicted_job_is_reported_with_its_own_workload(cluster, executor, tmp_path):
    """Two running Jobs evicted, each with its own message: each report names that Job's Workload (found by
    its job-uid label) and the message of its own eviction, not those of the other Job's."""
    names = ("first", "second")
    # The rerun takes 3 s: a status check reads each Job running again, not only its end.
    jobs = [
        submit(executor, name, rerun_script(tmp_path / f"{name}-ran-once", rerun_s=3.0)) for name in names
    ]
    for name in names:
        wait_for_pod(cluster, name)
        wait_for((tmp_path / f"{name}-ran-once").exists, what=f"the mark of {name}'s first run")
    assert check_round(executor, jobs) == jobs  # both read running: admitted
    messages = {name: f"Exceeded the PodsReady timeout {NAMESPACE}/{name}" for name in names}
    for name in names:
        cluster.evict_workload(name, "PodsReadyTimeout", messages[name], readmit_after_s=1.0)
    run_until_settled(executor, jobs)
    assert sorted(executor.recorder.finished) == sorted(names) and executor.recorder.failed == []
    reports = [w for w in executor.recorder.messages("warning") if "evicted" in w]
    assert len(reports) == len(names), reports
    for name in names:
        workload = cluster.jobs[name].workload["metadata"]["name"]
        (report,) = [
            r for r in reports if r.startswith(f"kubernetes-kueue: Kueue evicted Job {NAMESPACE}/{name} ")
        ]
        assert (
            f"(Workload {workload}, reason PodsReadyTimeout: {messages[name]}): its pod was not ready"
            in report
        )
        assert report.endswith(f"`kubectl -n {NAMESPACE} describe workload {workload}` shows its conditions")


# ---- a Workload Kueue deactivates ----------------------------------------------------------------------------------
# pkg/controller/core/workload_controller.go (triggerDeactivation), pkg/workload/evict (Evict, IsEvictedByDeactivation)
# and patching.ReasonWithCause: the Evicted condition of a Workload deactivated after too many PodsReady timeouts.
DEACTIVATED_REASON = "DeactivatedDueToRequeuingLimitExceeded"
DEACTIVATED_MESSAGE = "The workload is deactivated due to exceeding the maximum number of re-queuing retries"


def test_the_standin_deactivates_a_workload_as_kueue_does_and_never_admits_it_again(cluster):
    """waitForPodsReady with requeuingStrategy.backoffLimitCount: an admitted Job whose pod is never ready (its image
    cannot be pulled) is evicted once too often, and Kueue deactivates its Workload: spec.active false, Evicted with
    the deactivation's reason and message, the Job suspended and its quota released; it is never admitted again."""
    batch, name = kubernetes.client.BatchV1Api(), "never-ready"
    cluster.unpullable_images = {"registry/image:cpu"}
    body = api_failures.job_body(name, "true")
    body.metadata.labels["kueue.x-k8s.io/queue-name"] = "jobs"
    batch.create_namespaced_job(NAMESPACE, body)
    wait_for_pod(cluster, name)
    job = batch.read_namespaced_job_status(name, NAMESPACE)
    cluster.deactivate_workload(name, "RequeuingLimitExceeded")
    workload = workload_of(job)
    assert workload["spec"]["active"] is False and "admission" not in workload["status"]
    assert conditions(workload) == {
        "Evicted": ("True", DEACTIVATED_REASON, DEACTIVATED_MESSAGE),
        "Requeued": ("False", DEACTIVATED_REASON, DEACTIVATED_MESSAGE),  # not a preemption: False
        "QuotaReserved": ("False", "Pending", DEACTIVATED_MESSAGE),
        "Admitted": ("False", "NoReservation", "The workload has no reservation"),
    }  # DeactivationTarget is gone once the eviction is written
    time.sleep(1.0)  # several admission rounds: the quota has room, but the Workload is inactive
    suspended = batch.read_namespaced_job_status(name, NAMESPACE)
    assert suspended.spec.suspend is True and suspended.status.active is None
    assert cluster.jobs[name].pod is None and not cluster.jobs[name].admitted
    kubernetes_validate.validate(cluster.job_with_status(name), KUBERNETES_VERSION, strict=True)


def test_a_job_whose_workload_kueue_deactivated_fails_saying_why_and_is_deleted(
    cluster, executor, monkeypatch
):
    """The kubernetes executor saw the deactivated Job as suspended, i.e. active, for ever, and this one reported an
    eviction after which the Job 'runs again once Kueue admits it again', then every 10 minutes that other Jobs hold
    the quota. Now the status check that sees it fails the job with Kueue's reason and message, and deletes the Job."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.3)
    name = "never-ready"
    cluster.unpullable_images = {"registry/image:cpu"}
    job = submit(executor, name, "true")
    wait_for_pod(cluster, name)
    assert check_round(executor, [job]) == [job]  # admitted, its container waiting for its image
    cluster.deactivate_workload(name, "RequeuingLimitExceeded")
    active, deadline = [job], time.monotonic() + 10
    while active:
        assert time.monotonic() < deadline, "the deactivated Job is still active"
        active = check_round(executor, active)
        time.sleep(0.1)
    assert executor.recorder.failed == [name] and executor.recorder.finished == []
    workload = cluster.jobs[name].workload["metadata"]["name"]
    message = executor.recorder.job_errors[name]
    assert message.startswith(
        f"kubernetes-kueue: Kueue deactivated the Workload {workload} of Job {NAMESPACE}/{name} (reason "
        f"{DEACTIVATED_REASON}: {DEACTIVATED_MESSAGE}), so it never admits the Job again, which would stay "
        "suspended for ever: its pods were not all ready within Kueue's waitForPodsReady.timeout more often than "
        "waitForPodsReady.requeuingStrategy.backoffLimitCount allows"
    )
    assert (
        f"`kubectl -n {NAMESPACE} describe workload {workload}` shows its conditions; the Job was deleted"
        in message
    )
    assert cluster.jobs[name].deleted
    warnings = executor.recorder.messages("warning")
    assert not [w for w in warnings if "evicted" in w or "for Kueue to admit it" in w], warnings


HELD_MESSAGE = "The workload is deactivated"  # Kueue's Evicted message for a deactivation by hand


@pytest.mark.parametrize("admitted", [False, True], ids=["waiting", "running"])
def test_a_job_whose_workload_was_deactivated_by_hand_is_held_said_once_and_runs_once_released(
    cluster, executor, monkeypatch, tmp_path, admitted
):
    """An operator deactivates a Workload on purpose (kubectl patch workload ... spec.active=false) to hold its Job:
    Kueue's Evicted reason is then plain `Deactivated`, not `DeactivatedDueTo<cause>`. The job is not failed (k8s5
    failed it, so the hold lost it): one line says it is held and how to release it, the misleading 'waited for Kueue
    to admit it' report is not made for it, and once the Workload is active again Kueue admits the Job and the job
    finishes. Its Workloads are read every DEACTIVATION_CHECK_S while it waits, at once after an eviction."""
    from snakemake_executor_plugin_kubernetes_kueue import evictions
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    assert evictions.DEACTIVATION_CHECK_S == 60
    monkeypatch.setattr(evictions, "DEACTIVATION_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.3)
    name = "held"
    if not admitted:  # held before the submission: a Job admitted first could finish before the deactivation
        with cluster._lock:
            cluster.cluster_queues["snakemake"]["spec"]["stopPolicy"] = "Hold"
    job = submit(executor, name, rerun_script(tmp_path / "ran") if admitted else "true")
    if admitted:
        wait_for_pod(cluster, name)
    assert check_round(executor, [job]) == [job]
    cluster.deactivate_workload(name, cause="")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # several status checks, and several Workload reads
        assert check_round(executor, [job]) == [job], executor.recorder.job_errors
        time.sleep(0.1)
    assert executor.recorder.failed == [] and not cluster.jobs[name].deleted
    assert len([p for _, p, _ in cluster.requests if p.endswith("/workloads")]) >= 3
    workload = cluster.jobs[name].workload["metadata"]["name"]
    warnings = executor.recorder.messages("warning")
    held = [w for w in warnings if " is held" in w]
    assert held == [
        f"kubernetes-kueue: the Workload {workload} of Job {NAMESPACE}/{name} is held: someone deactivated it "
        f"(spec.active false, reason Deactivated: {HELD_MESSAGE}), so Kueue does not admit the Job; "
        + (
            "its pod was stopped, and the Job waits suspended to run again from its start"
            if admitted
            else "the Job waits suspended"
        )
        + f". Release it with `kubectl -n {NAMESPACE} patch workload {workload} --type merge -p "
        """'{"spec":{"active":true}}'`, or cancel the run to give it up"""
    ], warnings
    assert not [w for w in warnings if "for Kueue to admit it" in w or "evicted" in w], warnings
    if not admitted:
        with cluster._lock:
            del cluster.cluster_queues["snakemake"]["spec"]["stopPolicy"]
    cluster.reactivate_workload(name)
    run_until_settled(executor, [job])
    assert executor.recorder.finished == [name] and executor.recorder.failed == []
    assert len([w for w in executor.recorder.messages("warning") if " is held" in w]) == 1


def test_the_standin_reactivates_a_workload_deactivated_by_hand_as_kueue_does(cluster):
    """Kueue's workload controller on spec.active true again: Requeued True, reason Reactivated (it was False with
    reason Deactivated), and the Workload is admitted again; the Job resumes with a new pod."""
    batch, name = kubernetes.client.BatchV1Api(), "reactivated"
    body = api_failures.job_body(name, "sleep 1")
    body.metadata.labels["kueue.x-k8s.io/queue-name"] = "jobs"
    batch.create_namespaced_job(NAMESPACE, body)
    wait_for_pod(cluster, name)
    job = batch.read_namespaced_job_status(name, NAMESPACE)
    cluster.deactivate_workload(name, cause="")
    assert conditions(workload_of(job))["Requeued"] == ("False", "Deactivated", HELD_MESSAGE)
    time.sleep(0.5)
    assert cluster.jobs[name].pod is None  # held
    cluster.reactivate_workload(name)
    workload = workload_of(job)
    assert workload["spec"]["active"] is True
    wait_for(lambda: batch.read_namespaced_job_status(name, NAMESPACE).status.succeeded)
    found = conditions(workload_of(job))
    assert found["Requeued"] == ("True", "Reactivated", "The workload was reactivated")
    assert found["Evicted"] == ("False", "QuotaReserved", f"Previously: {HELD_MESSAGE}")
    assert found["Admitted"][0] == "True"


# ---- waitForPodsReady: evictions with back-off, then a deactivation ------------------------------------------------
# pkg/controller/core/workload_controller.go (reconcileNotReadyTimeout, triggerDeactivationOrBackoffRequeue, the
# BackoffFinished requeue in Reconcile) and pkg/workload (UpdateRequeueState): the Workload of a pod never ready.
def never_ready(cluster, timeout_s: float, limit: int) -> None:
    """Kueue configured with waitForPodsReady (timeout, backoffLimitCount, a 1 s back-off base), and nodes too small for
    the Jobs' pods (64M asked): each admitted pod stays unscheduled, never ready."""
    cluster.pods_ready_timeout_s, cluster.requeuing_backoff_limit_count = timeout_s, limit
    cluster.requeuing_backoff_base_s, cluster.requeuing_backoff_max_s = 1.0, 10.0
    cluster.node_allocatable = {"memory": "32M"}


def requeue_at(workload: dict) -> datetime.datetime:
    at = workload["status"]["requeueState"]["requeueAt"]
    return datetime.datetime.strptime(at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)


def test_the_standin_evicts_requeues_with_backoff_and_deactivates_a_workload_whose_pod_is_never_ready(
    cluster,
):
    """waitForPodsReady as Kueue runs it: the timeout evicts the admitted Workload (PodsReadyTimeout, requeueState count
    1 and requeueAt one back-off later), it is requeued once requeueAt has passed (Requeued True, BackoffFinished,
    requeueAt gone, count kept) and admitted again; the next timeout, past backoffLimitCount 1, deactivates it."""
    batch, name = kubernetes.client.BatchV1Api(), "never-ready"
    never_ready(cluster, timeout_s=0.5, limit=1)
    body = api_failures.job_body(name, "true")
    body.metadata.labels["kueue.x-k8s.io/queue-name"] = "jobs"
    batch.create_namespaced_job(NAMESPACE, body)
    wait_for(lambda: cluster.jobs[name].pod, what="the pod, unscheduled")
    job = batch.read_namespaced_job_status(name, NAMESPACE)
    evicted = wait_for(
        lambda: (w := workload_of(job))["status"].get("requeueState") and w, what="the eviction"
    )
    before = datetime.datetime.now(datetime.UTC)
    workload = evicted["metadata"]["name"]
    timeout = f"Exceeded the PodsReady timeout {NAMESPACE}/{workload}"
    assert conditions(evicted) == {
        "Evicted": ("True", "PodsReadyTimeout", timeout),
        "Requeued": ("False", "PodsReadyTimeout", timeout),
        "QuotaReserved": ("False", "Pending", timeout),
        "Admitted": ("False", "NoReservation", "The workload has no reservation"),
    }
    assert evicted["status"]["requeueState"]["count"] == 1 and evicted["spec"]["active"] is True
    # base * 2^0 = 1 s after the eviction, in whole seconds
    assert (
        before - datetime.timedelta(seconds=1)
        <= requeue_at(evicted)
        <= before + datetime.timedelta(seconds=2)
    )
    assert batch.read_namespaced_job_status(name, NAMESPACE).spec.suspend is True
    requeued = wait_for(
        lambda: (w := workload_of(job))["status"].get("requeueState") == {"count": 1} and w,
        what="the requeue",
    )
    assert conditions(requeued)["Requeued"] == (
        "True",
        "BackoffFinished",
        "The workload backoff was finished",
    )
    readmitted = wait_for(
        lambda: conditions(w := workload_of(job))["Admitted"][0] == "True" and w, what="the readmission"
    )
    assert conditions(readmitted)["Evicted"] == ("False", "QuotaReserved", f"Previously: {timeout}")
    deactivated = wait_for(
        lambda: (w := workload_of(job))["spec"]["active"] is False and w, what="the deactivation"
    )
    assert "requeueState" not in deactivated["status"]
    assert conditions(deactivated)["Evicted"] == ("True", DEACTIVATED_REASON, DEACTIVATED_MESSAGE)
    time.sleep(1.0)  # never admitted again
    assert batch.read_namespaced_job_status(name, NAMESPACE).spec.suspend is True
    kubernetes_validate.validate(cluster.job_with_status(name), KUBERNETES_VERSION, strict=True)


def test_each_waitforpodsready_eviction_is_reported_once_with_its_requeue_time_then_the_deactivation_fails_the_job(
    cluster, executor
):
    """A Job whose pod is never ready: Kueue evicts it at each waitForPodsReady timeout and requeues it after a
    back-off, twice (backoffLimitCount 2), then deactivates it. Each eviction is reported once, naming the reason,
    what it means and when Kueue requeues the Job (status.requeueState.requeueAt, and the count); the report said
    neither the timeout's meaning nor the requeue time, so the Job seemed to be waiting for quota. The deactivation
    then fails the job with Kueue's reason, as a direct one does, and its Job is deleted."""
    name = "never-ready"
    never_ready(cluster, timeout_s=1.0, limit=2)
    active, seen, deadline = [submit(executor, name, "true")], {}, time.monotonic() + 30
    while active:
        assert time.monotonic() < deadline, "the never-ready Job is still active"
        active = check_round(executor, active)
        with cluster._lock:
            state = cluster.jobs[name].workload["status"].get("requeueState") or {}
            if state.get("requeueAt"):
                seen.setdefault(state["count"], state["requeueAt"])
        time.sleep(0.1)
    assert sorted(seen) == [1, 2], seen
    workload = cluster.jobs[name].workload["metadata"]["name"]
    expected = [
        f"kubernetes-kueue: Kueue evicted Job {NAMESPACE}/{name} (Workload {workload}, reason PodsReadyTimeout: "
        f"Exceeded the PodsReady timeout {NAMESPACE}/{workload}): its pod was not ready within Kueue's "
        "waitForPodsReady.timeout (a pod no node can hold, an image or a volume it waits for, a slow start). Kueue "
        f"requeues it at {seen[count]}, requeue {count} of its Workload; once a timeout would exceed "
        "waitForPodsReady.requeuingStrategy.backoffLimitCount requeues, Kueue deactivates it and the job fails. Its "
        "pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake does not count "
        f"this as a failure; `kubectl -n {NAMESPACE} describe workload {workload}` shows its conditions"
        for count in (1, 2)
    ]
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == expected
    assert executor.recorder.failed == [name] and executor.recorder.finished == []
    message = executor.recorder.job_errors[name]
    assert message.startswith(
        f"kubernetes-kueue: Kueue deactivated the Workload {workload} of Job {NAMESPACE}/{name} (reason "
        f"{DEACTIVATED_REASON}: {DEACTIVATED_MESSAGE}), so it never admits the Job again"
    )
    assert "more often than waitForPodsReady.requeuingStrategy.backoffLimitCount allows" in message
    assert (
        "shows its conditions; the Job was deleted, and Snakemake runs it again if it has retries left"
        in message
    )
    assert cluster.jobs[name].deleted


def test_a_waitforpodsready_eviction_seen_only_after_the_readmission_is_reported_as_the_eviction_then_the_requeue(
    cluster, executor
):
    """Kueue evicts the Job (PodsReadyTimeout), its back-off passes and Kueue admits it again, all between two status
    checks: the executor sees only a new status.startTime. By then SetQuotaReservation has reset Evicted (False,
    QuotaReserved, "Previously: <the eviction's message>") and the back-off's end rewrote Requeued (True,
    BackoffFinished): the report named BackoffFinished, "The workload backoff was finished", as if that were why Kueue
    took the Job back. It names the eviction's reason and message, then the requeue and the readmission."""
    name = "readmitted-unseen"
    never_ready(cluster, timeout_s=1.0, limit=3)
    # The readmitted pod must still run at the next status check (a Job that ends first is not reviewed): 6 s.
    active, deadline = [submit(executor, name, "sleep 6")], time.monotonic() + 20
    while name not in executor.batchapi.admitted:  # read running once: admitted, with its startTime
        assert time.monotonic() < deadline, "the Job was never read admitted"
        active = check_round(executor, active)
        time.sleep(0.05)
    assert executor.batchapi.start_times.get(name), "read running without its startTime"

    def readmitted_after_the_backoff() -> bool:
        with cluster._lock:  # then no further timeout, and a node for the pod: it runs and succeeds
            record = cluster.jobs[name]
            admitted = conditions(record.workload)["Admitted"][0] == "True"
            if not admitted or record.workload["status"].get("requeueState") != {"count": 1}:
                return False
            cluster.pods_ready_timeout_s, cluster.node_allocatable = 0.0, {}
            return True

    wait_for(readmitted_after_the_backoff, timeout_s=20, what="the eviction, back-off and readmission")
    workload = cluster.jobs[name].workload["metadata"]["name"]
    assert conditions(cluster.jobs[name].workload)["Requeued"] == (
        "True",
        "BackoffFinished",
        "The workload backoff was finished",
    )
    run_until_settled(executor, active)
    expected = (
        f"kubernetes-kueue: Kueue evicted Job {NAMESPACE}/{name} (Workload {workload}, reason PodsReadyTimeout: "
        f"Exceeded the PodsReady timeout {NAMESPACE}/{workload}): its pod was not ready within Kueue's "
        "waitForPodsReady.timeout (a pod no node can hold, an image or a volume it waits for, a slow start). Kueue "
        "requeued it once its back-off was over (Requeued reason BackoffFinished: The workload backoff was finished), "
        "requeue 1 of its Workload, and has admitted it again; once a timeout would exceed "
        "waitForPodsReady.requeuingStrategy.backoffLimitCount requeues, Kueue deactivates it and the job fails. Its "
        "pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake does not count "
        f"this as a failure; `kubectl -n {NAMESPACE} describe workload {workload}` shows its conditions"
    )
    assert [w for w in executor.recorder.messages("warning") if "evicted" in w] == [expected]
    assert executor.recorder.finished == [name] and executor.recorder.failed == []


def test_a_job_in_a_long_waitforpodsready_backoff_is_reported_as_in_backoff_with_its_count_and_requeue_time(
    cluster, executor, monkeypatch
):
    """Kueue evicted the Job (PodsReadyTimeout) and holds it suspended until status.requeueState.requeueAt: with
    Kueue's default back-off (base 60 s, doubled at each requeue, up to an hour) that is often longer than the
    10-minute admission report, which then said the Job waited for quota from an active LocalQueue ("other Jobs hold
    the quota"). The report says it is in waitForPodsReady's back-off, with the requeue count and requeueAt."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 1.0)
    name = "backing-off"
    never_ready(cluster, timeout_s=0.5, limit=3)
    cluster.requeuing_backoff_base_s, cluster.requeuing_backoff_max_s = 60.0, 3600.0
    active = check_for(executor, [submit(executor, name, "true")], 3.0)
    assert [job.external_jobid for job in active] == [name]
    with cluster._lock:
        workload = copy.deepcopy(cluster.jobs[name].workload)
    state, name_of_workload = workload["status"]["requeueState"], workload["metadata"]["name"]
    assert state["count"] == 1 and conditions(workload)["Requeued"][:2] == ("False", "PodsReadyTimeout")
    reports = [w for w in executor.recorder.messages("warning") if " has waited " in w]
    assert reports, executor.recorder.messages("warning")
    assert reports[0] == (
        f"kubernetes-kueue: Job {NAMESPACE}/{name} has waited 0.0 min for Kueue to admit it again: it is in "
        f"waitForPodsReady's back-off, not waiting for quota. Kueue evicted it (Workload {name_of_workload}, reason "
        f"PodsReadyTimeout: Exceeded the PodsReady timeout {NAMESPACE}/{name_of_workload}): its pod was not ready "
        "within Kueue's waitForPodsReady.timeout (a pod no node can hold, an image or a volume it waits for, a slow "
        f"start). Requeue 1 of its Workload: Kueue requeues it at {state['requeueAt']} (status.requeueState); once a "
        "timeout would exceed waitForPodsReady.requeuingStrategy.backoffLimitCount requeues, Kueue deactivates it "
        f"and the job fails. `kubectl -n {NAMESPACE} describe workload {name_of_workload}` shows its conditions"
    )
    assert not [w for w in executor.recorder.messages("warning") if "quota" in w and "back-off" not in w]
