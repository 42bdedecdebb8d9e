"""The API stand-in behaves like Kubernetes and Kueue where the executors depend on it, and fails like them.

Driven with the real kubernetes Python client over HTTP, with pods that run a one-line shell command:
Kueue-style admission by queue label, the HTTP 400 of `previous=true` log reads, and failed, OOM-killed and
evicted pods reported as the API reports them (the shapes the kubernetes client deserializes).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import kubernetes.client
import pytest
from kubernetes.client.rest import ApiException

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import QUEUE_LABEL, ApiStandIn  # noqa: E402
from harness import pod_path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "executors"))
from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi  # noqa: E402

NAMESPACE = "snakemake"


@pytest.fixture
def standin(tmp_path):
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=pod_path()).start()
    api.add_objects([{"kind": "LocalQueue", "metadata": {"name": "jobs", "namespace": NAMESPACE}}])
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


def wait_for(condition, seconds: float = 20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


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
    api.add_objects([{"kind": "LocalQueue", "metadata": {"name": "default", "namespace": NAMESPACE}}])
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
    assert [c.type for c in pod.status.conditions] == ["DisruptionTarget"]
    assert (terminated.exit_code, terminated.reason) == (137, "ContainerStatusUnknown")
    assert batch.read_namespaced_job_status("evicted", NAMESPACE).status.failed == 1
