"""The API stand-in behaves like Kubernetes and Kueue where the executors depend on it, and fails like them.

Driven with the real kubernetes Python client over HTTP, with pods that run a one-line shell command:
Kueue-style admission by queue label, LocalQueue status as Kueue reports it (and the executor's refusal of an
inactive queue), the HTTP 400 of `previous=true` log reads, and failed, OOM-killed and evicted pods reported
as the API reports them (the shapes the kubernetes client deserializes).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException
from testkit import wait_for

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import QUEUE_LABEL, ApiStandIn  # noqa: E402
from harness import pod_path, profile_manifests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "executors"))
from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi  # noqa: E402

NAMESPACE = "snakemake"
# profiles/k8s's ResourceFlavors and its ClusterQueue "snakemake", which they make active.
FLAVORS = "kueue/resourceflavors.yaml"
CLUSTER_QUEUE = "kueue/clusterqueue.yaml"


def local_queue(name: str, cluster_queue: str = "snakemake") -> dict:
    return {
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"clusterQueue": cluster_queue},
    }


@pytest.fixture
def standin(tmp_path):
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=pod_path()).start()
    api.add_objects([*profile_manifests(FLAVORS, CLUSTER_QUEUE), local_queue("jobs")])
    configuration = kubernetes.client.Configuration()
    configuration.host = api.url
    client = kubernetes.client.ApiClient(configuration)
    yield api, kubernetes.client.BatchV1Api(client), kubernetes.client.CoreV1Api(client)
    api.stop()


def job(name: str, script: str, queue: str | None = "jobs") -> dict:
    labels = {"app": "snakemake", **({QUEUE_LABEL: queue} if queue else {})}
    container = {
        "name": "snakemake",
        "image": "x",
        "command": ["/bin/sh"],
        "args": ["-c", script],
        "resources": {"requests": {"cpu": "100m", "memory": "64M"}},
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"containers": [container], "restartPolicy": "Never"}},
        },
    }


def pods(core, name):
    return core.list_namespaced_pod(NAMESPACE, label_selector=f"job-name={name}").items


def test_only_jobs_labelled_with_an_existing_local_queue_are_admitted(standin):
    api, batch, core = standin
    batch.create_namespaced_job(NAMESPACE, job("labelled", "true"))
    batch.create_namespaced_job(NAMESPACE, job("unlabelled", "true", queue=None))
    batch.create_namespaced_job(NAMESPACE, job("unknown-queue", "true", queue="nosuchqueue"))
    wait_for(lambda: batch.read_namespaced_job_status("labelled", NAMESPACE).status.succeeded)
    time.sleep(1)  # several admission rounds
    for name in ("unlabelled", "unknown-queue"):
        status = batch.read_namespaced_job_status(name, NAMESPACE)
        assert status.spec.suspend is True and not pods(core, name), name
        assert [c.type for c in status.status.conditions] == ["Suspended"], name
    # LocalQueueDefaulting: with a LocalQueue named "default", unlabelled Jobs are queued there.
    api.add_objects([local_queue("default")])
    created = batch.create_namespaced_job(NAMESPACE, job("defaulted", "true", queue=None))
    assert created.metadata.labels[QUEUE_LABEL] == "default"
    wait_for(lambda: batch.read_namespaced_job_status("defaulted", NAMESPACE).status.succeeded)


def test_previous_log_of_a_container_that_never_restarted_is_a_400(standin):
    api, batch, core = standin
    batch.create_namespaced_job(NAMESPACE, job("fails", "echo the rule failed; exit 3"))
    status = wait_for(
        lambda: (
            batch.read_namespaced_job_status("fails", NAMESPACE).status.failed
            and batch.read_namespaced_job_status("fails", NAMESPACE)
        )
    )
    assert [c.type for c in status.status.conditions] == ["FailureTarget", "Failed"]
    assert status.status.conditions[-1].reason == "BackoffLimitExceeded"
    (pod,) = pods(core, "fails")
    (container,) = pod.status.container_statuses
    assert pod.status.phase == "Failed" and container.restart_count == 0
    assert (container.state.terminated.exit_code, container.state.terminated.reason) == (3, "Error")
    name = pod.metadata.name
    with pytest.raises(ApiException) as raised:
        core.read_namespaced_pod_log(name, NAMESPACE, container="snakemake", previous=True)
    assert raised.value.status == 400
    assert f'previous terminated container \\"snakemake\\" in pod \\"{name}\\" not found' in raised.value.body
    # The executor's reader: the container's own log, not the error.
    log = SafeLogCoreApi(core).read_namespaced_pod_log(name, NAMESPACE, container="snakemake", previous=True)
    assert "the rule failed" in log


def test_oom_killed_and_evicted_pods_are_reported_as_the_api_reports_them(standin):
    api, batch, core = standin
    batch.create_namespaced_job(NAMESPACE, job("oom", "kill -9 $$"))
    batch.create_namespaced_job(NAMESPACE, job("evicted", "sleep 60"))
    wait_for(lambda: batch.read_namespaced_job_status("oom", NAMESPACE).status.failed)
    (pod,) = pods(core, "oom")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.exit_code, terminated.reason) == ("Failed", 137, "OOMKilled")

    wait_for(lambda: batch.read_namespaced_job_status("evicted", NAMESPACE).status.active)
    api.evict("evicted")
    (pod,) = pods(core, "evicted")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, pod.status.reason) == ("Failed", "Evicted")
    assert pod.status.message.startswith("The node was low on resource: memory.")
    assert [c.type for c in pod.status.conditions] == ["DisruptionTarget", "PodScheduled"]
    assert (terminated.exit_code, terminated.reason) == (137, "ContainerStatusUnknown")
    assert batch.read_namespaced_job_status("evicted", NAMESPACE).status.failed == 1


def test_local_queues_carry_kueues_active_condition_and_inactive_ones_admit_nothing(standin):
    api, batch, core = standin
    stuck_cluster_queue = {
        "kind": "ClusterQueue",
        "metadata": {"name": "broken"},
        "spec": {"resourceGroups": [{"coveredResources": ["cpu"], "flavors": [{"name": "spot-nodes"}]}]},
    }
    stopped = local_queue("stopped")
    stopped["spec"]["stopPolicy"] = "Hold"
    api.add_objects(
        [stuck_cluster_queue, local_queue("orphan", "nosuchqueue"), local_queue("stuck", "broken"), stopped]
    )
    listed = kubernetes.client.CustomObjectsApi(batch.api_client).list_namespaced_custom_object(
        "kueue.x-k8s.io", "v1beta2", NAMESPACE, "localqueues"
    )
    active = {
        queue["metadata"]["name"]: tuple(
            queue["status"]["conditions"][0][key] for key in ("status", "reason")
        )
        for queue in listed["items"]
        if queue["status"]["conditions"][0]["type"] == "Active"
    }
    assert active == {
        "jobs": ("True", "Ready"),
        "orphan": ("False", "ClusterQueueDoesNotExist"),
        "stuck": ("False", "ClusterQueueIsInactive"),
        "stopped": ("False", "Stopped"),
    }
    for name in ("orphan", "stuck", "stopped", "jobs"):
        batch.create_namespaced_job(NAMESPACE, job(f"to-{name}", "true", queue=name))
    wait_for(lambda: batch.read_namespaced_job_status("to-jobs", NAMESPACE).status.succeeded)
    time.sleep(1)  # several admission rounds
    for name in ("orphan", "stuck", "stopped"):
        assert batch.read_namespaced_job(f"to-{name}", NAMESPACE).spec.suspend is True, name
        assert not pods(core, f"to-{name}"), name
    # As in Kueue, the queue becomes active once its ClusterQueue's flavor exists, and its Job is admitted.
    api.add_objects([{"kind": "ResourceFlavor", "metadata": {"name": "spot-nodes"}}])
    wait_for(lambda: batch.read_namespaced_job_status("to-stuck", NAMESPACE).status.succeeded)


@pytest.mark.parametrize(
    "queue, reason",
    [("jobs", None), ("orphan", "ClusterQueueDoesNotExist"), ("stuck", "ClusterQueueIsInactive")],
)
def test_the_executor_refuses_a_local_queue_that_kueue_reports_inactive(standin, monkeypatch, queue, reason):
    """The executor's own cluster check (run before any Secret or Job), against the stand-in's LocalQueues."""
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError
    from snakemake_executor_plugin_kubernetes_kueue.executor import KueueExecutor

    api, batch, _ = standin
    api.add_objects(
        [
            {"kind": "ClusterQueue", "metadata": {"name": "broken"}, "spec": {"stopPolicy": "Hold"}},
            local_queue("orphan", "nosuchqueue"),
            local_queue("stuck", "broken"),
        ]
    )
    # The executor's API objects use the default client configuration, as after load_kube_config().
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", batch.api_client.configuration)
    settings = SimpleNamespace(namespace=NAMESPACE, queue_name=queue, workload_identity=False)
    executor = object.__new__(KueueExecutor)  # only the check, not the kubernetes executor's start-up
    if reason is None:
        executor._check_cluster_objects(settings)
        return
    with pytest.raises(SettingError) as refused:
        executor._check_cluster_objects(settings)
    message = str(refused.value)
    assert message.startswith(
        f"kubernetes-kueue-queue-name: Kueue LocalQueue {NAMESPACE}/{queue} is inactive"
    )
    assert f'reason {reason}: "Can\'t submit new workloads to clusterQueue"' in message
    fix = "apply profiles/k8s/kueue/resourceflavors.yaml" if queue == "orphan" else "kubectl get clusterqueue"
    assert fix in message and "or set kubernetes-kueue-queue-name in profiles/k8s/config.yaml" in message
    assert api.submitted == []


def test_a_container_whose_secret_is_missing_waits_as_the_kubelet_keeps_it_and_starts_once_it_exists(standin):
    """The kubelet does not fail a pod whose environment names a missing Secret (or key): the container waits
    with reason CreateContainerConfigError and the kubelet's message, the pod stays Pending and the Job active,
    and the container starts at a later try once the Secret is there."""
    api, batch, core = standin
    for name, key in (("no-secret", "token"), ("no-key", "other")):
        manifest = job(name, 'test "$TOKEN" = s3cret')
        reference = {"name": "run-secret" if name == "no-key" else "absent", "key": key}
        manifest["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": reference}}
        ]
        batch.create_namespaced_job(NAMESPACE, manifest)
    api.add_objects([{"kind": "Secret", "metadata": {"name": "run-secret"}, "data": {"token": "czNjcmV0"}}])
    wait_for(lambda: all(pods(core, name) for name in ("no-secret", "no-key")))
    time.sleep(1)  # several of the kubelet's tries
    expected = {
        "no-secret": 'secret "absent" not found',
        "no-key": f"couldn't find key other in Secret {NAMESPACE}/run-secret",
    }
    for name, message in expected.items():
        (pod,) = pods(core, name)
        (container,) = pod.status.container_statuses
        assert pod.status.phase == "Pending" and container.state.waiting is not None, name
        assert (container.state.waiting.reason, container.state.waiting.message) == (
            "CreateContainerConfigError",
            message,
        )
        status = batch.read_namespaced_job_status(name, NAMESPACE).status
        assert (status.active, status.failed, status.conditions) == (1, None, None), name
    api.add_objects([{"kind": "Secret", "metadata": {"name": "absent"}, "data": {"token": "czNjcmV0"}}])
    wait_for(lambda: batch.read_namespaced_job_status("no-secret", NAMESPACE).status.succeeded)
    assert batch.read_namespaced_job_status("no-key", NAMESPACE).status.active == 1


def test_a_pod_whose_secret_or_configmap_volume_is_missing_waits_container_creating_with_failed_mount_events(
    standin,
):
    """The kubelet mounts every volume before it creates the container: a Secret or ConfigMap volume that is not
    optional and names a missing object leaves the container waiting ContainerCreating (no message), the pod Pending
    and its Job active, and each try records a Warning FailedMount Event on the pod with the kubelet's message
    (repeated: count grows). An optional one is skipped. The container starts once both objects exist."""
    api, batch, core = standin
    manifest = job("unmounted", 'test "$(cat "$CA")" = pem && test "$(cat "$TOKEN_FILE")" = s3cret')
    spec = manifest["spec"]["template"]["spec"]
    spec["volumes"] = [
        {"name": "ca-bundle", "configMap": {"name": "cluster-ca"}},
        {"name": "token", "secret": {"secretName": "absent"}},
        {"name": "maybe", "secret": {"secretName": "never-made", "optional": True}},
    ]
    container = spec["containers"][0]
    container["volumeMounts"] = [
        {"name": "ca-bundle", "mountPath": "/etc/ca", "readOnly": True},
        {"name": "token", "mountPath": "/var/run/token", "readOnly": True},
        {"name": "maybe", "mountPath": "/var/run/maybe", "readOnly": True},
    ]
    container["env"] = [
        {"name": "CA", "value": "/etc/ca/ca.crt"},
        {"name": "TOKEN_FILE", "value": "/var/run/token/t"},
    ]
    batch.create_namespaced_job(NAMESPACE, manifest)
    wait_for(lambda: pods(core, "unmounted"))
    time.sleep(1)  # several of the kubelet's tries
    (pod,) = pods(core, "unmounted")
    (status,) = pod.status.container_statuses
    assert pod.status.phase == "Pending" and status.state.waiting.reason == "ContainerCreating"
    assert status.state.waiting.message is None
    assert batch.read_namespaced_job_status("unmounted", NAMESPACE).status.active == 1
    events = core.list_namespaced_event(
        NAMESPACE,
        field_selector=f"involvedObject.kind=Pod,involvedObject.name={pod.metadata.name},reason=FailedMount",
    ).items
    assert sorted(event.message for event in events) == [
        'MountVolume.SetUp failed for volume "ca-bundle" : configmap "cluster-ca" not found',
        'MountVolume.SetUp failed for volume "token" : secret "absent" not found',
    ]
    for event in events:
        assert (event.type, event.reason, event.source.component) == ("Warning", "FailedMount", "kubelet")
        assert event.involved_object.kind == "Pod" and event.count >= 2 and event.last_timestamp
    assert core.list_namespaced_event(NAMESPACE, field_selector="involvedObject.name=other-pod").items == []
    api.add_objects(
        [
            {"kind": "ConfigMap", "metadata": {"name": "cluster-ca"}, "data": {"ca.crt": "pem"}},
            {"kind": "Secret", "metadata": {"name": "absent"}, "data": {"t": "czNjcmV0"}},
        ]
    )
    wait_for(lambda: batch.read_namespaced_job_status("unmounted", NAMESPACE).status.succeeded)


def test_a_pod_no_node_can_hold_stays_unscheduled_with_the_schedulers_condition_until_a_node_fits(standin):
    """Kueue admits against its quota, not against single nodes: a pod asking more memory than any node has
    stays Pending with the condition kube-scheduler writes (PodScheduled False, reason Unschedulable, its
    FitError message, lastProbeTime null) and its Job active; once a node that fits is there (a cluster
    autoscaler), it is placed and runs."""
    api, batch, core = standin
    api.nodes, api.node_allocatable = 2, {"cpu": "16", "memory": "32Gi"}
    manifest = job("too-big", "true")
    manifest["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] = "100Gi"
    batch.create_namespaced_job(NAMESPACE, manifest)
    (pod,) = wait_for(lambda: pods(core, "too-big"))
    time.sleep(1)  # several of the scheduler's tries
    (pod,) = pods(core, "too-big")
    (condition,) = pod.status.conditions
    assert (pod.status.phase, pod.status.container_statuses) == ("Pending", None)
    assert (condition.type, condition.status, condition.reason, condition.last_probe_time) == (
        "PodScheduled",
        "False",
        "Unschedulable",
        None,
    )
    assert condition.message == (
        "0/2 nodes are available: 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption "
        "victims found for incoming pod."
    )
    first_transition = condition.last_transition_time
    assert first_transition is not None
    status = batch.read_namespaced_job_status("too-big", NAMESPACE).status
    assert (status.active, status.failed, status.succeeded) == (1, None, None)
    api.nodes = 3  # another node alike: the message changes, the transition time does not
    wait_for(lambda: "0/3 nodes" in pods(core, "too-big")[0].status.conditions[0].message)
    assert pods(core, "too-big")[0].status.conditions[0].last_transition_time == first_transition
    api.node_allocatable = {"cpu": "16", "memory": "128Gi"}  # the autoscaler's bigger node
    wait_for(lambda: batch.read_namespaced_job_status("too-big", NAMESPACE).status.succeeded)
    (pod,) = pods(core, "too-big")
    assert [(c.type, c.status) for c in pod.status.conditions] == [("PodScheduled", "True")]


def test_an_exception_in_the_admission_thread_fails_the_test_at_the_next_call_and_not_in_silence(standin):
    """The admission loop is a daemon thread: an exception there ended it without a word, and Kueue's admissions
    simply stopped (a readmission the test waited for never came). Now the exception is recorded; every API call
    answers 500 naming it, and the test's next call into the stand-in raises it with its traceback."""
    from apistandin import StandInThreadError

    api, batch, _ = standin

    def broken() -> None:
        raise RuntimeError("a bug in the admission loop")

    api._retry_pending_pods = broken
    wait_for(lambda: api.thread_errors, what="the admission thread's exception to be recorded")
    with pytest.raises(ApiException) as answered:
        batch.read_namespaced_job_status("anything", NAMESPACE)
    assert answered.value.status == 500
    assert (
        "background thread failed" in answered.value.body
        and "a bug in the admission loop" in answered.value.body
    )
    with pytest.raises(StandInThreadError, match="a bug in the admission loop") as raised:
        api.add_objects([])
    assert "Traceback" in str(raised.value) and "in broken" in str(raised.value)
    api.stop()  # raised once already: the teardown does not raise it again


def test_an_exception_in_a_request_handler_or_never_seen_by_the_test_is_raised_at_teardown(tmp_path):
    """A handler thread's exception (socketserver printed it and went on), and one no later call met: stop(), at
    the test's teardown, raises it."""
    from apistandin import StandInThreadError

    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=pod_path()).start()
    api.add_objects([*profile_manifests(FLAVORS, CLUSTER_QUEUE), local_queue("jobs")])
    configuration = kubernetes.client.Configuration()
    configuration.host = api.url
    batch = kubernetes.client.BatchV1Api(kubernetes.client.ApiClient(configuration))
    batch.create_namespaced_job(NAMESPACE, job("handled", "true"))

    def broken(name: str) -> dict:
        raise KeyError(f"a bug in the handler for {name}")

    api.job_with_status = broken
    # The connection closes without an answer; the client sends the GET again and gets the 500 naming the error.
    with pytest.raises(ApiException, match="a bug in the handler for handled") as answered:
        batch.read_namespaced_job_status("handled", NAMESPACE)
    assert answered.value.status == 500
    with pytest.raises(StandInThreadError, match="a bug in the handler for handled"):
        api.stop()


def test_a_command_the_image_lacks_waits_as_create_container_error_on_cri_o_and_fails_at_start_on_containerd(
    standin,
):
    """CRI-O (with runc) resolves the command when it creates the container: one the image lacks leaves the container
    waiting, CreateContainerError with CRI-O's message, the pod Pending and the Job active while the kubelet tries
    again, and a log read answers 400 as for any waiting container. containerd creates it and fails it at its
    start (StartError), which fails the Job."""
    api, batch, core = standin
    api.container_runtime = "cri-o"
    manifest = job("uncreatable", "true")
    manifest["spec"]["template"]["spec"]["containers"][0]["command"] = ["/opt/missing/snakemake"]
    batch.create_namespaced_job(NAMESPACE, manifest)
    wait_for(lambda: pods(core, "uncreatable"))
    time.sleep(1)  # several of the kubelet's tries
    (pod,) = pods(core, "uncreatable")
    (container,) = pod.status.container_statuses
    assert pod.status.phase == "Pending" and container.state.waiting.reason == "CreateContainerError"
    message = container.state.waiting.message
    assert message.startswith('container create failed: time="') and message.endswith(
        ' level=error msg="runc create failed: unable to start container process: exec: \\"/opt/missing/snakemake\\": '
        'executable file not found in $PATH"'
    )
    status = batch.read_namespaced_job_status("uncreatable", NAMESPACE).status
    assert (status.active, status.failed) == (1, None)
    with pytest.raises(ApiException) as refused:
        core.read_namespaced_pod_log(pod.metadata.name, NAMESPACE, container="snakemake")
    assert refused.value.status == 400 and "is waiting to start: CreateContainerError" in refused.value.body

    api.container_runtime = "containerd"
    manifest["metadata"]["name"] = "started-and-failed"
    batch.create_namespaced_job(NAMESPACE, manifest)
    wait_for(lambda: batch.read_namespaced_job_status("started-and-failed", NAMESPACE).status.failed)


@pytest.mark.parametrize(
    "method, resource, call, message",
    [
        (
            "GET",
            "events",
            lambda batch, core: core.list_namespaced_event(NAMESPACE),
            'events is forbidden: User "system:serviceaccount:snakemake:snakemake-driver" cannot list resource '
            '"events" in API group "" in the namespace "snakemake"',
        ),
        (
            "GET",
            "jobs/status",
            lambda batch, core: batch.read_namespaced_job_status("x", NAMESPACE),
            'jobs.batch "x" is forbidden: User "system:serviceaccount:snakemake:snakemake-driver" cannot get '
            'resource "jobs/status" in API group "batch" in the namespace "snakemake"',
        ),
        (
            "POST",
            "jobs",
            lambda batch, core: batch.create_namespaced_job(NAMESPACE, job("x", "true")),
            'jobs.batch is forbidden: User "system:serviceaccount:snakemake:snakemake-driver" cannot create '
            'resource "jobs" in API group "batch" in the namespace "snakemake"',
        ),
        (
            "GET",
            "localqueues",
            lambda batch, core: kubernetes.client.CustomObjectsApi(
                batch.api_client
            ).list_namespaced_custom_object("kueue.x-k8s.io", "v1beta2", NAMESPACE, "localqueues"),
            'localqueues.kueue.x-k8s.io is forbidden: User "system:serviceaccount:snakemake:snakemake-driver" cannot '
            'list resource "localqueues" in API group "kueue.x-k8s.io" in the namespace "snakemake"',
        ),
    ],
    ids=["list-events", "get-jobs-status", "create-jobs", "list-localqueues"],
)
def test_a_refusal_by_rbac_is_the_api_servers_403_status_word_for_word(
    standin, method, resource, call, message
):
    """The API server's 403 (apiserver responsewriters/errors.go forbiddenMessage, apimachinery NewForbidden): the
    resource qualified by its group (and the object's name), the ServiceAccount's user name, the verb RBAC checked
    (list for a collection, get for one object, create), the resource with its subresource, the API group (quoted
    even when it is the core group's "") and the namespace. The stand-in's was shorter (no qualified resource, no API
    group, a bare user name), so assertions on it passed for messages a real cluster never sends."""
    api, batch, core = standin
    api.fail_next(method, resource, 403)
    with pytest.raises(ApiException) as refused:
        call(batch, core)
    status = json.loads(refused.value.body)
    assert (refused.value.status, status["reason"], status["code"]) == (403, "Forbidden", 403)
    assert status["message"] == message


def test_the_pods_that_hold_a_disk_another_node_attached_are_served_as_the_api_serves_them(standin):
    """The Multi-Attach event names the pods of the waiting pod's namespace that use the disk on the node it is
    attached to (reconciler.go reportMultiAttachError); those pods are served (GET .../pods/<name>) as the API serves
    a running pod, valid against the Kubernetes schema, with the node they run on (spec.nodeName), which is not the
    waiting pod's; a pod of another namespace is served in its own; a Job's pod is served by name too. A pod nobody
    runs answers 404, as does a holder once the disk is free (the test clears it)."""
    import kubernetes_validate
    from apistandin import KUBERNETES_VERSION

    api, batch, core = standin
    disk = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "scratch", "namespace": NAMESPACE},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    api.add_objects([disk])
    api.multi_attach[f"{NAMESPACE}/scratch"] = ["results-writer-7f9c2", "lab/notebook-0"]
    manifest = job("second-writer", "true")
    spec = manifest["spec"]["template"]["spec"]
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": "scratch"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    batch.create_namespaced_job(NAMESPACE, manifest)
    (waiting,) = wait_for(lambda: pods(core, "second-writer"), timeout_s=60)

    def served(namespace: str, name: str) -> dict:
        answer = core.read_namespaced_pod(name, namespace, _preload_content=False)
        document = json.loads(answer.data)
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        return document

    holder = served(NAMESPACE, "results-writer-7f9c2")
    assert (holder["metadata"]["name"], holder["metadata"]["namespace"]) == (
        "results-writer-7f9c2",
        NAMESPACE,
    )
    assert holder["spec"]["nodeName"] == api.multi_attach_node == "standin-node-1"
    assert holder["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "scratch"}}]
    assert holder["status"]["phase"] == "Running"
    assert holder["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert (
        served(NAMESPACE, "results-writer-7f9c2")["metadata"]["uid"] == holder["metadata"]["uid"]
    )  # the same pod
    other = served("lab", "notebook-0")
    assert (other["metadata"]["namespace"], other["spec"]["nodeName"]) == ("lab", "standin-node-1")
    own = served(NAMESPACE, waiting.metadata.name)
    assert own["metadata"]["labels"] == {"job-name": "second-writer"}
    assert own["spec"].get("nodeName") != "standin-node-1"  # the waiting pod is on another node
    for namespace, name in [
        (NAMESPACE, "notebook-0"),
        (NAMESPACE, "nobody"),
        ("lab", "results-writer-7f9c2"),
    ]:
        with pytest.raises(ApiException) as refused:
            core.read_namespaced_pod(name, namespace)
        assert refused.value.status == 404
        assert json.loads(refused.value.body)["message"] == f'pods "{name}" not found'
    with api._lock:
        api.multi_attach.clear()  # the holders ended, the disk is free
    with pytest.raises(ApiException) as gone:
        core.read_namespaced_pod("results-writer-7f9c2", NAMESPACE)
    assert gone.value.status == 404
    wait_for(
        lambda: batch.read_namespaced_job_status("second-writer", NAMESPACE).status.succeeded, timeout_s=60
    )
