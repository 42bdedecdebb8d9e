"""The kubernetes-kueue executor when the API server fails as a real one does, against the stand-in.

The stand-in answers chosen calls with the errors of a real API server (429 with Retry-After from priority
and fairness, 500 on an etcd leader change, 503 while it restarts, 504 after a write that still took effect,
403 from RBAC) and deletes Jobs and pods as the API does. The executor runs its real submission and status
loop (the kubernetes executor's `run_job` path and `check_active_jobs`) over HTTP with the real client;
only Snakemake's scheduler is replaced by a recorder of the callbacks it would get.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import kubernetes.client
import kubernetes.config
import pytest
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from testkit import role_grants
from throttler import Throttler

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import ApiStandIn  # noqa: E402
from harness import pod_path, profile_manifests  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "executors"))
from snakemake_executor_plugin_kubernetes_kueue.executor import KueueExecutor  # noqa: E402
from snakemake_executor_plugin_kubernetes_kueue.jobs import JobCompletion  # noqa: E402

NAMESPACE = "snakemake"
QUEUE = "jobs"


class Recorder:
    """Snakemake's side of the executor: the scheduler's callbacks, the jobs' error logs, the logger."""

    def __init__(self) -> None:
        self.finished: list[str] = []
        self.failed: list[str] = []
        self.job_errors: dict[str, str] = {}
        self.logged: list[tuple[str, str]] = []

    def logger(self) -> SimpleNamespace:
        return SimpleNamespace(
            **{
                level: (lambda message, level=level: self.logged.append((level, str(message))))
                for level in ("debug", "info", "warning", "error")
            }
        )

    def job(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, log_error=lambda msg=None, **_: self.job_errors.update({name: msg}))

    def messages(self, level: str) -> list[str]:
        return [message for logged_level, message in self.logged if logged_level == level]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=pod_path()).start()
    api.add_objects(
        [
            *profile_manifests("kueue/resourceflavors.yaml", "kueue/clusterqueue.yaml"),
            {"kind": "LocalQueue", "metadata": {"name": QUEUE, "namespace": NAMESPACE}, "spec": {"clusterQueue": "snakemake"}},
        ]
    )  # fmt: skip
    configuration = kubernetes.client.Configuration()
    configuration.host = api.url
    monkeypatch.setattr(kubernetes.client.Configuration, "_default", configuration)
    yield api
    api.stop()


@pytest.fixture
def executor(cluster, tmp_path):
    """The executor as after its start-up (settings checked, API objects wrapped), bound to the stand-in."""
    recorder = Recorder()
    executor = object.__new__(KueueExecutor)
    executor.completion = JobCompletion(queue_name=QUEUE)
    executor.batchapi = kubernetes.client.BatchV1Api()
    executor.kubeapi = kubernetes.client.CoreV1Api()
    executor.namespace = NAMESPACE
    executor.lock = threading.Lock()
    executor.status_rate_limiter = Throttler(rate_limit=100, period=1)
    executor.logger = recorder.logger()
    executor.log_path = tmp_path / "kubernetes-logs"
    executor.log_path.mkdir()
    executor.workflow = SimpleNamespace(
        executor_settings=SimpleNamespace(omit_job_cleanup=False),
        scheduler=SimpleNamespace(
            finish_callback=lambda job: recorder.finished.append(job.name),
            error_callback=lambda job: recorder.failed.append(job.name),
        ),
    )
    executor.recorder = recorder
    return executor


def job_body(name: str, script: str) -> kubernetes.client.V1Job:
    """A Job as the kubernetes executor builds it (one container `snakemake`, backoffLimit 0)."""
    container = kubernetes.client.V1Container(
        name="snakemake",
        image="registry/image:cpu",
        command=["/bin/sh"],
        args=["-c", script],
        resources=kubernetes.client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64M"}),
    )
    pod = kubernetes.client.V1PodSpec(containers=[container], restart_policy="Never")
    return kubernetes.client.V1Job(
        metadata=kubernetes.client.V1ObjectMeta(name=name, labels={"app": "snakemake"}),
        spec=kubernetes.client.V1JobSpec(
            backoff_limit=0, template=kubernetes.client.V1PodTemplateSpec(spec=pod)
        ),
    )


def submit(executor, name: str, script: str = "true") -> SubmittedJobInfo:
    """What the kubernetes executor's run_job does to submit a Job: create it through _kubernetes_retry."""
    body = job_body(name, script)
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    return SubmittedJobInfo(job=executor.recorder.job(name), external_jobid=name)


def check_round(executor, active: list[SubmittedJobInfo]) -> list[SubmittedJobInfo]:
    """One round of Snakemake's status loop (RemoteExecutor._wait_for_jobs): the jobs still active."""

    async def collect():
        return [job async for job in executor.check_active_jobs(active)]

    return asyncio.run(collect())


def run_until_settled(executor, active: list[SubmittedJobInfo], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while active:
        assert time.monotonic() < deadline, f"still active: {[j.external_jobid for j in active]}"
        active = check_round(executor, active)
        time.sleep(0.2)


def test_a_status_check_before_the_start_up_has_finished_is_harmless():
    """RemoteExecutor starts its status loop in __init__, before __post_init__ (the cluster checks, then the
    API objects): a first round, with no job yet, must not touch them. Reading them there raised
    AttributeError in that thread, which ended it: no status was ever read again and the run hung."""
    executor = object.__new__(KueueExecutor)  # as during __post_init__: no batchapi, no kubeapi yet
    executor.logger = Recorder().logger()
    executor.status_rate_limiter = Throttler(rate_limit=100, period=1)
    assert check_round(executor, []) == []


@pytest.mark.parametrize("resource", ["pods", "jobs/status"])
@pytest.mark.parametrize("status, answers, waits", [(503, 2, ["1 s", "2 s"]), (429, 4, ["1 s"])])
def test_a_busy_api_server_is_asked_again_after_a_wait(cluster, executor, resource, status, answers, waits):
    """A 503 (restart) or 429 (priority and fairness) on the pod list or a status read: the kubernetes
    executor stops the whole run (pods) or loses the job (status) on the first one that reaches it; here the
    call is sent again after a wait, and the job finishes once. The client (urllib3) itself repeats a 429
    carrying Retry-After three times; the fourth reaches the executor, which waits the Retry-After too."""
    job = submit(executor, "blip", "true")
    cluster.fail_next("GET", resource, status, times=answers, retry_after=1 if status == 429 else None)
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["blip"] and executor.recorder.failed == []
    assert cluster.answered_failures == [("GET", resource, status)] * answers
    warnings = executor.recorder.messages("warning")
    assert [w.rsplit("trying again in ", 1)[1] for w in warnings] == waits
    assert all(
        w.startswith(f"kubernetes-kueue: the Kubernetes API server answered HTTP {status} ") for w in warnings
    )


def test_a_status_read_that_keeps_failing_neither_loses_the_job_nor_stops_the_run(cluster, executor):
    """The kubernetes executor logs a failed status read and drops the job from its active list without
    reporting it: Snakemake would wait for it for ever. Here it stays active and finishes normally."""
    job = submit(executor, "status-blip", "true")
    cluster.fail_next("GET", "jobs/status", 500, times=4)  # all the tries of one status check
    assert check_round(executor, [job]) == [job]
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["status-blip"] and executor.recorder.failed == []
    assert cluster.answered_failures == [("GET", "jobs/status", 500)] * 4
    retries = [
        w.rsplit("trying again in ", 1)[1] for w in executor.recorder.messages("warning") if "again in" in w
    ]
    assert retries == ["1 s", "2 s", "4 s"]
    (kept,) = [w for w in executor.recorder.messages("warning") if "could not be read" in w]
    assert kept == (
        f"kubernetes-kueue: the status of Job {NAMESPACE}/status-blip could not be read (HTTP 500 "
        "Internal Server Error: Internal error occurred: etcdserver: leader changed); it is read again at the "
        "next status check"
    )


def test_a_retry_after_is_waited_but_capped():
    from kubernetes.client.rest import ApiException
    from snakemake_executor_plugin_kubernetes_kueue.executor import MAX_RETRY_AFTER_S, _retry_after

    def answer(retry_after):
        error = ApiException(status=429, reason="Too Many Requests")
        error.headers = {} if retry_after is None else {"Retry-After": retry_after}
        return error

    assert MAX_RETRY_AFTER_S == 30
    assert [_retry_after(answer(value), 2.0) for value in ("5", "120", None, "soon")] == [5, 30, 2, 2]


def test_a_retry_after_wins_over_the_executors_own_wait(monkeypatch):
    """README: a 429 or 5xx is sent again after 1, 2 and 4 s, or after the server's Retry-After (at most
    MAX_RETRY_AFTER_S). Each wait is the one of its own answer; the sleep is recorded, not slept."""
    from kubernetes.client.rest import ApiException
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    def answer(status, retry_after=None):
        error = ApiException(
            status=status, reason="Too Many Requests" if status == 429 else "Service Unavailable"
        )
        error.headers = {} if retry_after is None else {"Retry-After": str(int(retry_after))}
        return error

    own = executor_module.RETRY_DELAYS_S
    answers = [answer(429, own[0] + 6), answer(429, executor_module.MAX_RETRY_AFTER_S * 4), answer(503)]
    waited = []
    monkeypatch.setattr(executor_module.time, "sleep", waited.append)
    recorder = Recorder()
    executor = object.__new__(KueueExecutor)
    executor.logger = recorder.logger()

    def call():
        if answers:
            raise answers.pop(0)
        return "answered"

    assert executor._retry_transient(call) == "answered"
    assert waited == [own[0] + 6, executor_module.MAX_RETRY_AFTER_S, own[2]]
    assert [w.rsplit("trying again in ", 1)[1] for w in recorder.messages("warning")] == [
        f"{wait:g} s" for wait in waited
    ]


def test_the_executor_neither_watches_nor_pages(cluster, executor):
    """Its calls carry no watch, resourceVersion, limit or continue: 410 Gone (an expired resourceVersion)
    and continue tokens of paged lists cannot reach it (the README says so)."""
    jobs = [submit(executor, "plain-ok", "true"), submit(executor, "plain-fails", "exit 3")]
    run_until_settled(executor, jobs)
    assert executor.recorder.finished == ["plain-ok"] and executor.recorder.failed == ["plain-fails"]
    methods = {method for method, _, _ in cluster.requests}
    assert methods == {"POST", "GET", "DELETE"}
    assert not [
        q for _, _, q in cluster.requests if {"watch", "resourceVersion", "limit", "continue"} & set(q)
    ]


def rbac_request(method: str, path: str) -> tuple[str, str, str]:
    """(API group, resource[/subresource], verb) of a namespaced request, as RBAC authorizes it."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[parts.index("namespaces") + 2 :]
    resource = "/".join(rest[::2])
    verb = {"POST": "create", "DELETE": "delete"}.get(method) or ("get" if len(rest) > 1 else "list")
    return group, resource, verb


def test_the_driver_role_grants_every_call_the_executor_makes(cluster, executor):
    """Every request of the start-up checks, a submit, status checks, a failed pod's log and the clean-ups,
    as the stand-in received them, is allowed by profiles/k8s/rbac.yaml's Role (else: 403 on a real cluster)."""
    from harness import profile_manifests

    cluster.add_objects([service_account({"azure.workload.identity/client-id": "6f1c1c5e-client"})])
    executor._check_cluster_objects(start_up_settings())
    jobs = [submit(executor, "rbac-ok", "true"), submit(executor, "rbac-fails", "exit 3")]
    run_until_settled(executor, jobs)
    assert executor.recorder.failed == ["rbac-fails"]
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    allowed = role_grants(role)
    made = {rbac_request(method, path) for method, path, _ in cluster.requests}
    assert {("batch", "jobs/status", "get"), ("", "pods/log", "get"), ("", "serviceaccounts", "get")} <= made
    assert made <= allowed, made - allowed


def test_a_job_deleted_from_outside_fails_its_job_naming_it(cluster, executor):
    job = submit(executor, "deleted", "sleep 60")
    wait_for_pod(cluster, "deleted")
    kubernetes.client.BatchV1Api().delete_namespaced_job("deleted", NAMESPACE)  # kubectl delete job deleted
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["deleted"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["deleted"]
    assert message.startswith(f"kubernetes-kueue: Job {NAMESPACE}/deleted no longer exists (HTTP 404)")
    assert "Snakemake runs it again if it has retries left" in message


def test_a_status_read_refused_by_rbac_fails_the_job_with_the_rule_to_add(cluster, executor):
    job = submit(executor, "forbidden", "sleep 60")
    cluster.fail_next("GET", "jobs/status", 403, times=100)
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["forbidden"]
    message = executor.recorder.job_errors["forbidden"]
    assert message.startswith(
        f"kubernetes-kueue: reading the status of Job {NAMESPACE}/forbidden failed with HTTP 403 Forbidden: "
        'jobs.batch "forbidden" is forbidden: '
    )
    assert f'cannot get resource "jobs/status" in API group "batch" in the namespace "{NAMESPACE}"' in message
    assert "profiles/k8s/rbac.yaml" in message and f"kubectl -n {NAMESPACE} delete job forbidden" in message


def test_a_status_read_unauthorized_after_renewing_the_credentials_fails_the_job_as_refused(
    cluster, executor, tmp_path, monkeypatch
):
    """A 401 even after the credentials were loaded again: no later read would succeed, so the job fails
    saying the read was refused. The Job was not deleted, and the message does not claim it was."""
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig.yaml", NAMESPACE)
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    job = submit(executor, "unauthorized", "sleep 60")
    cluster.fail_next("GET", "jobs/status", 401, times=100)
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["unauthorized"] and "unauthorized" in cluster.jobs
    message = executor.recorder.job_errors["unauthorized"]
    assert message.startswith(
        f"kubernetes-kueue: reading the status of Job {NAMESPACE}/unauthorized failed with HTTP 401 Unauthorized"
    )
    assert "no longer exists" not in message and "rbac" not in message  # not a missing permission
    assert (
        "the cluster refused the kubeconfig's credentials, also after loading them again: renew them"
        in message
    )
    assert f"kubectl -n {NAMESPACE} delete job unauthorized" in message  # the Job may still run


def test_a_job_whose_pod_was_deleted_fails_naming_its_namespace_and_is_cleaned_up(cluster, executor):
    """A running pod deleted from outside (`kubectl delete pod`, a node drain or upgrade) fails its Job, and
    the status check lists no pod for it. The kubernetes executor's message for that case told to run
    `kubectl delete job {j.external_jobid}` (its last line is no f-string), named no namespace, and the failed
    Job stayed in the cluster; here the message names the Job in its namespace and the Job is deleted."""
    job = submit(executor, "pod-deleted", "sleep 60")
    pod = wait_for_pod(cluster, "pod-deleted")
    kubernetes.client.CoreV1Api().delete_namespaced_pod(pod, NAMESPACE)  # kubectl delete pod
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["pod-deleted"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["pod-deleted"]
    assert "{" not in message, message
    assert message.startswith(f"kubernetes-kueue: Job {NAMESPACE}/pod-deleted failed and its pod is gone")
    assert f"kubectl -n {NAMESPACE} get events --field-selector involvedObject.name=pod-deleted" in message
    assert "the Job was deleted" in message and "Snakemake runs it again if it has retries left" in message
    assert cluster.jobs["pod-deleted"].deleted


def test_the_error_line_logged_for_a_job_whose_pod_was_deleted_is_its_message_with_the_namespace(
    cluster, executor
):
    """Before it reports the job's error, the kubernetes executor logs its own line for a Job whose pod it did not
    list: `Job pod-deleted failed. For details, please issue: ... kubectl delete job {j.external_jobid}.` (no
    f-string), naming no namespace. That line is left out (stock_lines.StockLines), and the job's message is logged
    in its place, once."""
    job = submit(executor, "pod-deleted", "sleep 60")
    pod = wait_for_pod(cluster, "pod-deleted")
    kubernetes.client.CoreV1Api().delete_namespaced_pod(pod, NAMESPACE)  # kubectl delete pod
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["pod-deleted"]
    logged = [message for level, message in executor.recorder.logged if level in ("warning", "error")]
    assert len(logged) == 1, logged
    assert logged[0].startswith(f"kubernetes-kueue: Job {NAMESPACE}/pod-deleted failed and its pod is gone")
    assert "{" not in logged[0] and executor.recorder.job_errors["pod-deleted"].startswith(logged[0])


def test_the_log_of_a_pod_deleted_before_it_was_read_says_why(cluster, executor):
    """The kubernetes executor lists a failed Job's pod, then reads its log: a pod deleted in between (by a
    person, or the node's eviction clean-up) answers 404. The job still fails normally, with the reason as
    its log instead of an error that stops the run."""
    submit(executor, "gone", "exit 3")
    pod = wait_for_pod(cluster, "gone", running=False)
    kubernetes.client.CoreV1Api().delete_namespaced_pod(pod, NAMESPACE)
    log = executor.kubeapi.read_namespaced_pod_log(pod, NAMESPACE, container="snakemake", previous=True)
    assert log == (
        f"[kubernetes-kueue] the log of pod {NAMESPACE}/{pod} could not be read (HTTP 404 Not Found: pods "
        f'"{pod}" not found); see `kubectl -n {NAMESPACE} describe pod {pod}`'
    )


def test_a_role_without_get_on_pods_log_is_said_once_with_the_rule_and_each_failed_jobs_log_says_so(
    cluster, executor
):
    """A Role trimmed by hand (or applied from an edited rbac.yaml) lacks get on pods/log: each failed job's log held
    the API server's 403 text, once per job, and nothing said which rule to add. Now one warning per run names the
    rule, the namespace and what is lost, as for events and claims; each failed job's log says why it is empty, and
    the jobs fail as they would (Snakemake retries them)."""
    cluster.fail_next("GET", "pods/log", 403, times=1000)
    jobs = [submit(executor, name, "exit 3") for name in ("log-refused-1", "log-refused-2")]
    pods = {name: wait_for_pod(cluster, name, running=False) for name in ("log-refused-1", "log-refused-2")}
    run_until_settled(executor, jobs)
    assert sorted(executor.recorder.failed) == ["log-refused-1", "log-refused-2"]
    assert [status for _, resource, status in cluster.answered_failures if resource == "pods/log"] == [
        403,
        403,
    ]
    warnings = [m for m in executor.recorder.messages("warning") if "the driver's Role lacks" in m]
    assert len(warnings) == 1, warnings
    (pod,) = [
        pod for pod in pods.values() if f"pod {NAMESPACE}/{pod} failed" in warnings[0]
    ]  # the first read
    assert warnings[0] == (
        f"kubernetes-kueue: reading the log of pod {NAMESPACE}/{pod} failed with HTTP 403 Forbidden: pods "
        f'"{pod}" is forbidden: User "{cluster.user}" cannot get resource "pods/log" in API group "" in the '
        f'namespace "{NAMESPACE}": the driver\'s Role lacks the rule for resource pods/log, verb get, in namespace '
        f"{NAMESPACE} (profiles/k8s/rbac.yaml; kubectl apply -f it). Without it, a failed job's log lacks its pod's "
        f"output, which says why it failed (kubectl -n <namespace> logs <pod>, run with another identity, reads it "
        "while the pod exists). The run goes on; this is said once"
    )
    for name, pod in pods.items():
        assert (executor.log_path / f"{name}.log").read_text() == (
            f"[kubernetes-kueue] the log of pod {NAMESPACE}/{pod} could not be read (the driver's Role lacks get on "
            f"pods/log, as the run's log says once); see `kubectl -n {NAMESPACE} describe pod {pod}`\n"
        )
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    assert ("", "pods/log", "get") in role_grants(role)  # the shipped Role has the rule


def test_a_create_whose_answer_was_lost_is_not_refused_as_already_existing(cluster, executor):
    """A 504 after the Job reached etcd: the create is sent again, the server answers 409 AlreadyExists, and
    the Job this run created is taken as created (one Job, which runs)."""
    cluster.fail_next("POST", "jobs", 504, processed=True)
    job = submit(executor, "lost-answer", "true")
    assert [j["metadata"]["name"] for j in cluster.submitted] == ["lost-answer", "lost-answer"]
    assert list(cluster.jobs) == ["lost-answer"]
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["lost-answer"]


def test_a_create_sent_again_after_re_authenticating_still_knows_its_own_job(cluster, executor):
    """A 504 after the write, then a 401 (an expired token): the kubernetes executor re-authenticates, which
    replaces its BatchV1Api, and sends the create again. The 409 is still this run's own Job."""
    from kubernetes.client.rest import ApiException

    cluster.fail_next("POST", "jobs", 504, processed=True)
    body = job_body("reauthenticated", "true")
    with pytest.raises(ApiException):
        executor.batchapi.create_namespaced_job(NAMESPACE, body)
    executor.batchapi = kubernetes.client.BatchV1Api()  # as _reauthenticate_and_retry does
    created = executor.batchapi.create_namespaced_job(NAMESPACE, body)
    assert created.metadata.name == "reauthenticated" and list(cluster.jobs) == ["reauthenticated"]


@pytest.mark.parametrize("resource", ["jobs/status", "jobs"])
def test_an_expired_token_is_renewed_without_kubectl(cluster, executor, tmp_path, monkeypatch, resource):
    """A 401 (the token of the kubeconfig expired): the credentials are loaded again, as at the start, and
    the call is sent again. The kubernetes executor also runs `kubectl get nodes` there, which a driver
    without kubectl (the image of profiles/k8s/Containerfile) cannot: FileNotFoundError stopped the run."""
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig.yaml", NAMESPACE)
    # What KUBECONFIG named when the kubernetes package was imported (it reads the variable then).
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no kubectl
    method = "POST" if resource == "jobs" else "GET"
    cluster.fail_next(method, resource, 401)
    job = submit(executor, "renewed", "true")
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["renewed"]
    assert cluster.answered_failures == [(method, resource, 401)]
    assert list(cluster.jobs) == ["renewed"]
    assert any(
        "answered 401 Unauthorized: loading the credentials again" in m
        for m in executor.recorder.messages("info")
    )


def test_after_a_401_the_calls_carry_the_renewed_kubeconfigs_token(cluster, executor, tmp_path, monkeypatch):
    """The API server stops accepting the driver's token while its Job runs (it expired; `az aks get-credentials`
    wrote a new one into the kubeconfig): every call is answered 401 until one carries the new token. The
    credentials loaded again must reach the API objects the executor calls: kept ones would send the old token."""
    kubeconfig = cluster.write_kubeconfig(tmp_path / "kubeconfig.yaml", NAMESPACE, token="token-before")
    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    executor._reauthenticate_and_retry()  # the start-up's loading, from the kubeconfig
    cluster.accepted_tokens = {"token-before"}
    job = submit(executor, "rotated", "sleep 2")
    assert check_round(executor, [job]) == [job]  # read with the first token
    cluster.write_kubeconfig(kubeconfig, NAMESPACE, token="token-after")
    cluster.accepted_tokens = {"token-after"}
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["rotated"] and executor.recorder.failed == []
    assert ("GET", "jobs/status", 401) in cluster.answered_failures  # the old token was refused once


def test_a_driver_inside_the_cluster_renews_its_credentials_from_its_service_account(
    executor, tmp_path, monkeypatch
):
    """No kubeconfig: the credentials come from the pod's ServiceAccount token and CA, at the start and after
    a 401 alike (the API server address is the in-cluster one, https only, so this checks the loading)."""
    import kubernetes.config.incluster_config as incluster

    monkeypatch.setattr(kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "none"))
    (tmp_path / "token").write_text("service-account-token")
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(tmp_path / "token"))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(tmp_path / "ca.crt"))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    executor._reauthenticate_and_retry()
    configuration = executor.batchapi.api_client.configuration
    assert configuration.host == "https://10.0.0.1:443"
    assert configuration.api_key["authorization"] == "bearer service-account-token"  # as the client writes it


@pytest.mark.parametrize(
    "refusal, expected",
    [
        (
            403,
            f'cannot create resource "jobs" in API group "batch" in the namespace "{NAMESPACE}"; the driver needs '
            f"create on jobs in namespace {NAMESPACE} (profiles/k8s/rbac.yaml)",
        ),
        (
            404,
            f'HTTP 404 Not Found: namespaces "{NAMESPACE}" not found; does namespace {NAMESPACE} exist? (kubectl '
            f"get namespace {NAMESPACE}; profiles/k8s/namespace.yaml)",
        ),
        (
            None,
            'HTTP 422 Unprocessable Entity: Job.batch "refused" is invalid: container snakemake: no memory',
        ),
    ],
)
def test_a_refused_create_names_the_job_queue_status_and_fix(cluster, executor, refusal, expected):
    body = job_body("refused", "true")
    if refusal is None:  # the stand-in's own check: Kueue could not count a pod without a memory request
        body.spec.template.spec.containers[0].resources.requests.pop("memory")
    else:
        cluster.fail_next("POST", "jobs", refusal)
    with pytest.raises(WorkflowError) as refused:
        executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    message = str(refused.value)
    assert message.startswith(
        f"kubernetes-kueue: the API server refused Job {NAMESPACE}/refused (Kueue LocalQueue {QUEUE}) with "
    )
    assert expected in message
    assert cluster.jobs == {}


def test_a_create_meeting_a_job_this_run_did_not_create_is_refused_naming_it(cluster, executor):
    """A 409 AlreadyExists is this run's own Job only when this run sent that create before (a lost
    answer); a Job of that name created by anyone else is refused with the fix, and left as it is."""
    kubernetes.client.BatchV1Api().create_namespaced_job(NAMESPACE, job_body("taken", "sleep 60"))
    with pytest.raises(WorkflowError) as refused:
        submit(executor, "taken", "true")
    assert str(refused.value) == (
        f"kubernetes-kueue: the API server refused Job {NAMESPACE}/taken (Kueue LocalQueue {QUEUE}) with HTTP 409 "
        'Conflict: jobs.batch "taken" already exists; a Job of that name exists and this run did not create it: '
        f"kubectl -n {NAMESPACE} describe job taken"
    )
    assert list(cluster.jobs) == ["taken"]
    assert cluster.jobs["taken"].manifest["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "-c",
        "sleep 60",
    ]


def wait_for_pod(cluster, job_name: str, seconds: float = 20, running: bool = True) -> str:
    """The name of the Job's pod once it runs (running=True) or once it has ended."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with cluster._lock:
            record = cluster.jobs.get(job_name)
            if record and record.pod and (record.pod.exit_code() is None) == running:
                return record.pod.name
        time.sleep(0.1)
    raise AssertionError(f"{job_name} has no {'running' if running else 'ended'} pod")


# ---- the checks before the first Job (KueueExecutor._check_cluster_objects) ----------------------------------
def start_up_settings(workload_identity: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        namespace=NAMESPACE,
        queue_name=QUEUE,
        workload_identity=workload_identity,
        service_account_name="snakemake-jobs",
    )


def service_account(annotations: dict[str, str]) -> dict:
    return {
        "kind": "ServiceAccount",
        "metadata": {"name": "snakemake-jobs", "namespace": NAMESPACE, "annotations": annotations},
    }


def test_a_missing_or_unannotated_service_account_stops_the_start(cluster, executor):
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError

    # Without workload identity the ServiceAccount is not the executor's business: none is needed.
    executor._check_cluster_objects(start_up_settings(workload_identity=False))
    with pytest.raises(SettingError) as missing:
        executor._check_cluster_objects(start_up_settings())
    assert str(missing.value).startswith(
        f"kubernetes-kueue-service-account-name: ServiceAccount 'snakemake-jobs' does not exist in namespace "
        f"'{NAMESPACE}': apply profiles/k8s/serviceaccount.yaml"
    )
    cluster.add_objects([service_account({})])
    with pytest.raises(SettingError) as unannotated:
        executor._check_cluster_objects(start_up_settings())
    assert str(unannotated.value).startswith(
        f"kubernetes-kueue-service-account-name: ServiceAccount {NAMESPACE}/snakemake-jobs has no "
        "azure.workload.identity/client-id annotation"
    )
    cluster.add_objects([service_account({"azure.workload.identity/client-id": "6f1c1c5e-client"})])
    executor._check_cluster_objects(start_up_settings())
    executor._check_cluster_objects(start_up_settings(workload_identity=False))


@pytest.mark.parametrize(
    "resource, verbs, verb, qualified",
    [
        ("localqueues", "get/list", "list", "localqueues.kueue.x-k8s.io"),
        ("serviceaccounts", "get", "get", 'serviceaccounts "snakemake-jobs"'),
    ],
)
def test_a_start_up_read_refused_by_rbac_names_the_missing_permission(
    cluster, executor, resource, verbs, verb, qualified
):
    """A list (localqueues) is refused by the API server as verb list, a read of one object (a ServiceAccount) as get;
    the fix names the verbs the executor needs."""
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError

    cluster.add_objects([service_account({"azure.workload.identity/client-id": "6f1c1c5e-client"})])
    cluster.fail_next("GET", resource, 403)
    with pytest.raises(SettingError) as refused:
        executor._check_cluster_objects(start_up_settings())
    group = "kueue.x-k8s.io" if resource == "localqueues" else ""
    assert str(refused.value) == (
        f"kubernetes-kueue: reading {resource} in namespace '{NAMESPACE}' failed with HTTP 403 Forbidden: "
        f'{qualified} is forbidden: User "{cluster.user}" cannot {verb} resource "{resource}" in API group '
        f'"{group}" in the namespace "{NAMESPACE}"; the driver needs {verbs} on {resource} (profiles/k8s/rbac.yaml)'
    )


@pytest.mark.parametrize("refused", [None, 403])
def test_a_profile_without_a_namespace_is_told_so_whatever_the_cluster_answers(cluster, executor, refused):
    """Without kubernetes-kueue-namespace the Jobs go to the kubernetes executor's default namespace, `default`:
    there the LocalQueue is missing, or (rbac.yaml's Role is the profile namespace's) the read is refused, and
    either message alone would send the researcher to apply localqueue.yaml or widen the Role."""
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError

    if refused:
        cluster.fail_next("GET", "localqueues", refused)
    settings = SimpleNamespace(**{**vars(start_up_settings()), "namespace": "default"})
    with pytest.raises(SettingError) as stopped:
        executor._check_cluster_objects(settings)
    message = str(stopped.value)
    first = (
        "failed with HTTP 403"
        if refused
        else f"Kueue LocalQueue '{QUEUE}' does not exist in namespace 'default'"
    )
    assert first in message
    assert message.endswith(
        ". Note: kubernetes-kueue-namespace is 'default', the kubernetes executor's default when it is not set; "
        "set it in profiles/k8s/config.yaml to the namespace that holds the LocalQueue (snakemake with "
        "profiles/k8s/namespace.yaml)"
    )
    executor._check_cluster_objects(
        start_up_settings(workload_identity=False)
    )  # the profile's namespace: no note


@pytest.mark.parametrize("resource", ["localqueues", "serviceaccounts"])
def test_a_start_up_read_refused_as_unauthorized_names_the_credentials_not_rbac(cluster, executor, resource):
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError

    cluster.add_objects([service_account({"azure.workload.identity/client-id": "6f1c1c5e-client"})])
    cluster.fail_next("GET", resource, 401)
    with pytest.raises(SettingError) as refused:
        executor._check_cluster_objects(start_up_settings())
    message = str(refused.value)
    assert message.startswith(
        f"kubernetes-kueue: reading {resource} in namespace '{NAMESPACE}' failed with HTTP 401 Unauthorized"
    )
    assert "rbac" not in message and "the cluster refused the kubeconfig's credentials: renew them" in message
    assert cluster.answered_failures == [("GET", resource, 401)]  # not asked again: it would be refused again


@pytest.mark.parametrize("resource", ["localqueues", "serviceaccounts"])
def test_a_busy_server_at_start_up_is_asked_again_and_not_blamed_on_rbac(cluster, executor, resource):
    from snakemake_executor_plugin_kubernetes_kueue.checks import SettingError

    cluster.add_objects([service_account({"azure.workload.identity/client-id": "6f1c1c5e-client"})])
    cluster.fail_next("GET", resource, 503, times=2)
    executor._check_cluster_objects(start_up_settings())
    assert [w.rsplit("trying again in ", 1)[1] for w in executor.recorder.messages("warning")] == [
        "1 s",
        "2 s",
    ]
    cluster.fail_next("GET", resource, 503, times=4)  # longer than the tries: the run stops, saying why
    with pytest.raises(SettingError) as busy:
        executor._check_cluster_objects(start_up_settings())
    message = str(busy.value)
    assert message.startswith(
        f"kubernetes-kueue: reading {resource} in namespace '{NAMESPACE}' failed with HTTP 503 Service "
        "Unavailable: the server is currently unable to handle the request; "
    )
    assert "rbac" not in message and message.endswith("the API server is busy or restarting: run again later")


# ---- a Job Kueue does not admit --------------------------------------------------------------------------------
def admission_reports(executor) -> list[str]:
    """The executor's warnings that a Job waits for Kueue to admit it."""
    return [w for w in executor.recorder.messages("warning") if "for Kueue to admit it" in w]


def check_for(executor, active: list, seconds: float) -> list:
    """Status checks every 0.1 s for ``seconds`` (as Snakemake's loop makes them); the Jobs still active."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        active = check_round(executor, active)
        time.sleep(0.1)
    return active


def test_a_job_kueue_keeps_suspended_is_reported_with_the_queues_state(cluster, executor, monkeypatch):
    """The ClusterQueue is stopped after the start-up check (an administrator's `stopPolicy: Hold`): Kueue
    admits nothing, and the kubernetes executor would wait in silence. The executor says so, at most once
    per ADMISSION_WAIT_REPORT_S, with Kueue's reason; once the queue runs again the Job runs and finishes."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    assert executor_module.ADMISSION_WAIT_REPORT_S == 600  # the README's "10 minutes"
    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 1.0)
    with cluster._lock:
        cluster.cluster_queues["snakemake"]["spec"]["stopPolicy"] = "Hold"
    job = submit(executor, "held", "true")
    active = check_for(executor, [job], 3.5)
    assert active == [job] and executor.recorder.finished == []
    reports = admission_reports(executor)
    assert len(reports) in (2, 3), reports  # after 1 s, then each further second, not at every check
    assert reports[0].startswith(
        f"kubernetes-kueue: Job {NAMESPACE}/held has waited 0.0 min for Kueue to admit it from LocalQueue "
        f"{QUEUE} (suspended, no pod yet). kubernetes-kueue-queue-name: Kueue LocalQueue {NAMESPACE}/{QUEUE} is "
        "inactive (Active=False, reason ClusterQueueIsInactive"
    )
    assert reports[0].endswith(
        f"`kubectl -n {NAMESPACE} describe workload <name>` say why it waits (e.g. insufficient unused quota)"
    )
    with cluster._lock:
        del cluster.cluster_queues["snakemake"]["spec"]["stopPolicy"]
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["held"]


def test_a_cluster_queue_deleted_under_a_running_job_lets_it_finish_and_the_waiting_one_is_told_why(
    cluster, executor, tmp_path, monkeypatch
):
    """Someone deletes the ClusterQueue while a Job runs in it: Kueue's finalizer keeps it, Terminating, until that
    Job's Workload no longer holds quota, so the running Job is not evicted and finishes; a Job that waits is not
    admitted, and its LocalQueue is inactive (ClusterQueueIsInactive). The stand-in deleted a ClusterQueue at once,
    and the report's fix named only FlavorNotFound and Stopped, so the user read a queue to repair, not one being
    deleted. It now names Terminating too; once the running Job has ended the ClusterQueue is gone, which the next
    report says (ClusterQueueDoesNotExist), and the waiting Job runs once the ClusterQueue is applied again."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 1.0)
    release = tmp_path / "release"
    running = submit(executor, "running", f"while ! test -e {release}; do sleep 0.1; done")
    wait_for_pod(cluster, "running")
    assert check_round(executor, [running]) == [running]
    cluster.delete_cluster_queue("snakemake")
    assert "snakemake" in cluster.cluster_queues  # held by its finalizer while "running" holds quota
    waiting = submit(executor, "waiting", "true")
    active = check_for(executor, [running, waiting], 1.5)
    assert active == [running, waiting] and executor.recorder.failed == []
    (report,) = admission_reports(executor)[:1]
    assert report.startswith(
        f"kubernetes-kueue: Job {NAMESPACE}/waiting has waited 0.0 min for Kueue to admit it from LocalQueue {QUEUE} "
        f"(suspended, no pod yet). kubernetes-kueue-queue-name: Kueue LocalQueue {NAMESPACE}/{QUEUE} is inactive "
        '(Active=False, reason ClusterQueueIsInactive: "Can\'t submit new workloads to clusterQueue"), so Kueue '
        "would leave every Job suspended; its ClusterQueue 'snakemake' is inactive: "
    )
    assert (
        "Terminating: it was deleted, and Kueue keeps it only until the Workloads it admitted have ended; apply "
        "profiles/k8s/kueue/clusterqueue.yaml again once it is gone"
    ) in report
    release.touch()
    active = check_for(executor, active, 2.0)
    assert executor.recorder.finished == ["running"] and active == [waiting]  # not evicted: it ran to its end
    assert (
        "snakemake" not in cluster.cluster_queues
    )  # its finalizer went with the last Workload holding quota
    assert "reason ClusterQueueDoesNotExist" in admission_reports(executor)[-1]
    cluster.add_objects(profile_manifests("kueue/clusterqueue.yaml"))
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["running", "waiting"] and executor.recorder.failed == []


def test_a_job_waiting_on_an_active_queue_is_reported_as_waiting_for_quota(cluster, executor, monkeypatch):
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.5)
    cluster.admit_delay = 2.0  # the quota is taken for a while
    job = submit(executor, "queued", "true")
    run_until_settled(executor, [job])
    (report,) = admission_reports(executor)[:1]
    assert (
        f"LocalQueue {NAMESPACE}/{QUEUE} is active: other Jobs hold the quota, or this one asks for more than its "
        "ClusterQueue has or covers." in report
    )
    assert executor.recorder.finished == ["queued"]


def test_a_job_whose_local_queue_was_deleted_is_reported_as_such(cluster, executor, monkeypatch):
    """The LocalQueue is deleted after the start-up check: Kueue admits nothing from it, and the report says
    that the queue is gone (not that other Jobs hold the quota). Once it is back, the Job runs."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.5)
    with cluster._lock:
        local_queue = cluster.local_queues.pop(f"{NAMESPACE}/{QUEUE}")  # kubectl delete localqueue
    job = submit(executor, "orphaned", "true")
    active = check_for(executor, [job], 1.5)
    assert active == [job] and executor.recorder.finished == []
    reports = admission_reports(executor)
    assert reports, "a Job suspended longer than ADMISSION_WAIT_REPORT_S was not reported"
    assert (
        f"LocalQueue {QUEUE} (suspended, no pod yet). The LocalQueue {NAMESPACE}/{QUEUE} no longer exists, so "
        "Kueue admits nothing." in reports[0]
    )
    cluster.add_objects([local_queue])
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["orphaned"]


def test_a_job_is_no_longer_reported_as_waiting_once_kueue_admitted_it(cluster, executor, monkeypatch):
    """The admission-wait report is about suspended Jobs only: once Kueue admitted the Job and its pod runs,
    however long it runs, no status check says again that it waits for admission."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.3)
    cluster.admit_delay = 1.0
    job = submit(executor, "admitted-late", "sleep 3")

    def has_pod() -> bool:  # admitted: the Job controller made its pod
        with cluster._lock:
            return cluster.jobs["admitted-late"].pod is not None

    active, deadline = [job], time.monotonic() + 20
    while not has_pod():
        assert time.monotonic() < deadline, "never admitted"
        active = check_round(executor, active)
        time.sleep(0.1)
    before_admission = admission_reports(executor)
    assert before_admission, "a Job suspended longer than ADMISSION_WAIT_REPORT_S was not reported"
    run_until_settled(executor, active)  # the pod runs for 3 s: ten report periods
    assert executor.recorder.finished == ["admitted-late"]
    assert admission_reports(executor) == before_admission


def test_a_job_whose_image_cannot_be_pulled_is_reported_then_failed_and_deleted(
    cluster, executor, monkeypatch
):
    """A wrong image tag, or a registry the cluster may not pull from: the kubelet retries the pull for ever, the
    pod stays Pending and its Job active, holding its Kueue quota, and the kubernetes executor waits for it
    without a word. The first status check that sees it says so once, naming the image; after
    CONTAINER_START_GIVE_UP_S the job fails and its Job is deleted, so that the quota is freed."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    default = getattr(executor_module, "CONTAINER_START_GIVE_UP_S", None)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0, raising=False)
    cluster.unpullable_images = {"registry/image:cpu"}
    job = submit(executor, "unpullable", "true")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and executor.recorder.failed == []
    warnings = [message for message in executor.recorder.messages("warning") if "cannot start" in message]
    assert len(warnings) == 1, warnings  # once, not at every status check
    assert warnings[0].startswith(f"kubernetes-kueue: the container of Job {NAMESPACE}/unpullable (pod ")
    assert "registry/image:cpu" in warnings[0] and "--attach-acr" in warnings[0]
    run_until_settled(executor, active)
    assert executor.recorder.failed == ["unpullable"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["unpullable"]
    assert message.startswith(f"kubernetes-kueue: the container of Job {NAMESPACE}/unpullable (pod ")
    assert "could not start for 0.0 min" in message and "registry/image:cpu" in message
    assert "the Job was deleted" in message and cluster.jobs["unpullable"].deleted
    assert default == 600  # the README's "10 minutes"


def submit_with_secret_env(executor, name: str, secret: str) -> SubmittedJobInfo:
    """A Job whose environment comes from a Secret, as the kubernetes executor's every Job reads the run's."""
    body = job_body(name, 'test "$TOKEN" = s3cret')
    reference = kubernetes.client.V1SecretKeySelector(name=secret, key="token")
    body.spec.template.spec.containers[0].env = [
        kubernetes.client.V1EnvVar(
            name="TOKEN", value_from=kubernetes.client.V1EnvVarSource(secret_key_ref=reference)
        )
    ]
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    return SubmittedJobInfo(job=executor.recorder.job(name), external_jobid=name)


def test_a_job_whose_secret_is_missing_is_reported_then_failed_and_deleted(cluster, executor, monkeypatch):
    """A Secret the pod's environment names is missing: the kubelet keeps the container waiting
    (CreateContainerConfigError) and the Job active, as the stand-in now does instead of failing the Job at once.
    The first status check that sees it says so once, with the kubelet's message; after CONTAINER_START_GIVE_UP_S
    the job fails and its Job is deleted, so that its Kueue quota is freed."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    job = submit_with_secret_env(executor, "secretless", "snakemake-run")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and executor.recorder.failed == []
    warnings = [message for message in executor.recorder.messages("warning") if "cannot start" in message]
    assert len(warnings) == 1, warnings  # once, not at every status check
    assert warnings[0].startswith(f"kubernetes-kueue: the container of Job {NAMESPACE}/secretless (pod ")
    assert '(CreateContainerConfigError: secret "snakemake-run" not found)' in warnings[0]
    assert f"a Secret or key the pod needs is missing: kubectl -n {NAMESPACE} describe pod " in warnings[0]
    run_until_settled(executor, active)
    assert executor.recorder.failed == ["secretless"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["secretless"]
    assert message.startswith(f"kubernetes-kueue: the container of Job {NAMESPACE}/secretless (pod ")
    assert "could not start for" in message and 'secret "snakemake-run" not found' in message
    assert "the Job was deleted" in message and cluster.jobs["secretless"].deleted


def test_a_job_whose_secret_appears_before_the_give_up_runs(cluster, executor, monkeypatch):
    """The kubelet tries again: a Secret created while the container waits (applied late) lets it start, and the
    job finishes without a failure; only the one warning was logged."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    job = submit_with_secret_env(executor, "late-secret", "applied-late")
    active = check_for(executor, [job], 1.0)
    assert active == [job]
    cluster.add_objects(
        [{"kind": "Secret", "metadata": {"name": "applied-late"}, "data": {"token": "czNjcmV0"}}]
    )
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["late-secret"] and executor.recorder.failed == []
    assert (
        len([message for message in executor.recorder.messages("warning") if "cannot start" in message]) == 1
    )


def unschedulable_warnings(executor) -> list[str]:
    return [w for w in executor.recorder.messages("warning") if "no node can hold its pod" in w]


def test_a_pod_no_node_can_hold_is_reported_once_and_again_when_the_schedulers_message_changes(
    cluster, executor, monkeypatch
):
    """Kueue admits the Job (its quota has room) but no node has the memory its pod asks: the pod stays
    unscheduled, which the kubernetes executor waits on without a word. After UNSCHEDULABLE_REPORT_S the
    executor says so once, naming the Job, the pod, the scheduler's message and what the pod asks; again only
    when the message changes; and the job runs once a node fits (an autoscaler may add one), without failing."""
    from snakemake_executor_plugin_kubernetes_kueue import pending

    assert pending.UNSCHEDULABLE_REPORT_S == 120  # the README's "2 minutes"
    monkeypatch.setattr(pending, "UNSCHEDULABLE_REPORT_S", 0.5)
    cluster.node_allocatable = {"cpu": "16", "memory": "32M"}  # the Job asks 64M
    job = submit(executor, "too-big", "true")
    active = check_for(executor, [job], 0.3)
    assert unschedulable_warnings(executor) == []  # not at once: an autoscaler may still add a node
    active = check_for(executor, active, 1.5)
    (warning,) = unschedulable_warnings(executor)
    pod = cluster.jobs["too-big"].pod.name
    message = (
        "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption "
        "victims found for incoming pod."
    )
    assert warning.startswith(
        f"kubernetes-kueue: Kueue admitted Job {NAMESPACE}/too-big, but no node can hold its pod {pod} "
        "(unschedulable for 0."
    )
    assert f"it asks cpu=100m, memory=64M): the scheduler says {message!r}" in warning
    assert "kubernetes-kueue-unschedulable-timeout" in warning and "it waits for a node" in warning
    cluster.nodes = 4  # a node alike was added: the scheduler's message changes
    active = check_for(executor, active, 1.0)
    assert (
        len(unschedulable_warnings(executor)) == 2
        and "0/4 nodes are available" in unschedulable_warnings(executor)[1]
    )
    active = check_for(executor, active, 1.0)
    assert len(unschedulable_warnings(executor)) == 2  # the same message is not said again
    cluster.node_allocatable = {"cpu": "16", "memory": "1Gi"}  # the autoscaler's bigger node
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["too-big"] and executor.recorder.failed == []


def test_a_pod_unschedulable_past_the_timeout_fails_its_job_and_its_job_is_deleted(
    cluster, executor, monkeypatch
):
    """With kubernetes-kueue-unschedulable-timeout set, a pod still unschedulable after that many minutes fails its
    job, naming the scheduler's message, and its Job is deleted, so that its Kueue quota is freed."""
    import dataclasses

    from snakemake_executor_plugin_kubernetes_kueue import KueueSettings, pending

    (setting,) = [f for f in dataclasses.fields(KueueSettings) if f.name == "unschedulable_timeout"]
    assert (
        setting.default is None and "Minutes a Job's pod may stay unschedulable" in setting.metadata["help"]
    )
    monkeypatch.setattr(pending, "UNSCHEDULABLE_REPORT_S", 0.3)
    executor.workflow.executor_settings.unschedulable_timeout = 0.025  # minutes: 1.5 s
    cluster.node_allocatable = {"memory": "32M"}
    job = submit(executor, "never-fits", "true")
    run_until_settled(executor, [job])
    assert executor.recorder.failed == ["never-fits"] and executor.recorder.finished == []
    (warning,) = unschedulable_warnings(executor)
    assert "its job fails if it is still unschedulable after 0.025 min" in warning
    error = executor.recorder.job_errors["never-fits"]
    assert error.startswith(
        f"kubernetes-kueue: Kueue admitted Job {NAMESPACE}/never-fits, but no node can hold"
    )
    assert (
        "3 Insufficient memory" in error and "its job fails (kubernetes-kueue-unschedulable-timeout)" in error
    )
    assert "the Job was deleted" in error and cluster.jobs["never-fits"].deleted


def test_a_pod_gone_before_its_delete_does_not_leave_its_job_behind(cluster, executor):
    """The kubernetes executor's cleanup lists a finished Job's pods, deletes each, then the Job, all in one try:
    a pod gone in between (the garbage collector, kubectl delete pod) answered 404, which ended the cleanup
    before the Job's delete, and the Job stayed in the cluster. The pod's 404 is now what it means: gone."""
    job = submit(executor, "pod-gone", "true")
    cluster.fail_next("DELETE", "pods", 404)
    run_until_settled(executor, [job])
    assert executor.recorder.finished == ["pod-gone"] and executor.recorder.failed == []
    assert cluster.answered_failures == [("DELETE", "pods", 404)]
    assert cluster.jobs["pod-gone"].deleted, "the Job was left in the cluster"


def test_the_runs_secret_deleted_by_a_504_that_took_effect_ends_the_run_cleanly(cluster, executor):
    """At shutdown the run's Secret is deleted. A 504 whose delete still reached etcd is sent again, as every
    transient answer is, and meets 404: the kubernetes executor made that an error of the whole run, after its
    last job had succeeded. The Secret is gone, which is what the delete was for."""
    executor.run_namespace = "snakemake-run-secret"
    executor.kubeapi.create_namespaced_secret(
        NAMESPACE,
        kubernetes.client.V1Secret(metadata=kubernetes.client.V1ObjectMeta(name=executor.run_namespace)),
    )
    cluster.fail_next("DELETE", "secrets", 504, processed=True)
    executor.unregister_secret()
    assert cluster.answered_failures == [("DELETE", "secrets", 504)]
    assert executor.run_namespace in cluster.deleted_secrets and executor.run_namespace not in cluster.secrets


def register_run_secret(executor) -> str:
    """The kubernetes executor's start: the run's Secret, named with its uuid4, holding the run's variables."""
    executor.run_namespace, executor.secret_envvars = "0d4c8f5e-run-secret", {}
    executor.envvars = lambda: {"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": "devstoreaccount1"}
    executor.register_secret()
    return executor.run_namespace


@pytest.mark.parametrize("status, processed", [(503, False), (429, False), (504, True)])
def test_the_runs_secret_is_created_also_when_the_server_is_busy(cluster, executor, status, processed):
    """The kubernetes executor creates the run's Secret outside its retries: a 429 or 503 at the start stopped the
    run with a traceback. It is sent again; a 504 whose write took effect meets 409 AlreadyExists, its own."""
    cluster.fail_next(
        "POST", "secrets", status, processed=processed, retry_after=1 if status == 429 else None
    )
    name = register_run_secret(executor)
    assert cluster.secret_keys[name] == {"snakemake_storage_azure_account_name"}
    assert cluster.answered_failures[-1] == ("POST", "secrets", status)


def test_a_refused_run_secret_names_the_permission_the_driver_needs(cluster, executor):
    cluster.fail_next("POST", "secrets", 403)
    with pytest.raises(WorkflowError) as refused:
        register_run_secret(executor)
    assert str(refused.value) == (
        f"kubernetes-kueue: creating the run's Secret {NAMESPACE}/0d4c8f5e-run-secret failed with HTTP 403 "
        f'Forbidden: secrets is forbidden: User "{cluster.user}" cannot create resource "secrets" in API group "" '
        f"in the namespace \"{NAMESPACE}\"; the driver needs create on secrets in namespace '{NAMESPACE}' "
        "(profiles/k8s/rbac.yaml)"
    )


# The kubelet's waiting reasons (pkg/kubelet/images/types.go, container/sync_result.go, kuberuntime_container.go) that
# keep a restartPolicy Never container waiting for ever, and a word of the fix the executor gives for each.
NEVER_STARTING_REASONS = {
    "ErrImagePull": "--attach-acr",
    "ImagePullBackOff": "--attach-acr",
    "InvalidImageName": "--attach-acr",
    "ErrImageNeverPull": "--attach-acr",
    "RegistryUnavailable": "cannot reach the image's registry",
    "ImageInspectError": "cannot read the image it pulled",
    "SignatureValidationFailed": "image policy refuses the image's signature",
    "CreateContainerConfigError": "a Secret or key the pod needs is missing",
    "CreateContainerError": "container runtime cannot create the container",
    "PreCreateHookError": "CPUs, memory or devices (GPUs)",
    "PreStartHookError": "CPUs, memory or devices (GPUs)",
}


@pytest.mark.parametrize("reason", sorted(NEVER_STARTING_REASONS))
def test_every_waiting_reason_the_kubelet_never_gets_past_is_watched_with_its_own_fix(reason):
    """Each such reason is noted when the kubernetes executor lists the Job's pods, and described with the fix for
    it; RunContainerError and StartError end the container (its Job fails), and ContainerCreating is progress."""
    from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi

    def pod_list(waiting_reason: str) -> kubernetes.client.V1PodList:
        waiting = kubernetes.client.V1ContainerStateWaiting(
            reason=waiting_reason, message="the kubelet's message"
        )
        status = kubernetes.client.V1ContainerStatus(
            name="snakemake",
            image="registry/image:cpu",
            image_id="",
            ready=False,
            restart_count=0,
            state=kubernetes.client.V1ContainerState(waiting=waiting),
        )
        pod = kubernetes.client.V1Pod(
            metadata=kubernetes.client.V1ObjectMeta(name="job-abcde"),
            status=kubernetes.client.V1PodStatus(phase="Pending", container_statuses=[status]),
        )
        return kubernetes.client.V1PodList(items=[pod])

    listed = {"answer": pod_list(reason)}
    core = SafeLogCoreApi(SimpleNamespace(list_namespaced_pod=lambda namespace, **_: listed["answer"]))
    core.list_namespaced_pod(NAMESPACE, label_selector="job-name=job")
    stuck = core.stuck_containers["job"]
    assert (stuck.pod, stuck.reason, stuck.message) == ("job-abcde", reason, "the kubelet's message")
    described = stuck.describe(NAMESPACE, "job", "cannot start")
    assert described.startswith(
        f"kubernetes-kueue: the container of Job {NAMESPACE}/job (pod job-abcde) cannot start ({reason}: the "
        "kubelet's message); "
    )
    assert NEVER_STARTING_REASONS[reason] in described
    assert "{" not in described  # every placeholder of the fix filled in
    for progress in ("ContainerCreating", "PodInitializing", "RunContainerError"):
        listed["answer"] = pod_list(progress)
        core.list_namespaced_pod(NAMESPACE, label_selector="job-name=job")
        assert "job" not in core.stuck_containers, progress


def test_a_container_the_runtime_cannot_create_is_reported_then_failed_and_deleted(
    cluster, executor, monkeypatch
):
    """CRI-O cannot create a container whose command is not in the image: the container waits, CreateContainerError,
    and the kubelet tries again for ever, its Job active and its Kueue quota held. The executor says so once, with
    CRI-O's message and the fix, and after CONTAINER_START_GIVE_UP_S fails the job and deletes its Job."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    cluster.container_runtime = "cri-o"
    body = job_body("uncreatable", "true")
    body.spec.template.spec.containers[0].command = ["/opt/missing/snakemake"]
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    job = SubmittedJobInfo(job=executor.recorder.job("uncreatable"), external_jobid="uncreatable")
    active = check_for(executor, [job], 1.0)
    assert active == [job] and executor.recorder.failed == []
    (warning,) = [message for message in executor.recorder.messages("warning") if "cannot start" in message]
    assert warning.startswith(
        f"kubernetes-kueue: the container of Job {NAMESPACE}/uncreatable (pod uncreatable-"
    )
    assert "(CreateContainerError: container create failed: " in warning
    assert 'exec: \\"/opt/missing/snakemake\\": executable file not found in $PATH"); ' in warning
    assert "the container runtime cannot create the container; the events of `kubectl -n" in warning
    run_until_settled(executor, active)
    assert executor.recorder.failed == ["uncreatable"] and executor.recorder.finished == []
    message = executor.recorder.job_errors["uncreatable"]
    assert "could not start for" in message and "CreateContainerError" in message
    assert "the Job was deleted" in message and cluster.jobs["uncreatable"].deleted


def submit_with_volume(executor, name: str, kind: str, source: str, script: str = "true") -> SubmittedJobInfo:
    """A Job whose pod mounts a Secret or ConfigMap volume that is not optional (one the Job names itself, or one a
    cluster policy adds to every pod, such as a CA bundle)."""
    body = job_body(name, script)
    volume = kubernetes.client.V1Volume(name="ca-bundle")
    if kind == "secret":
        volume.secret = kubernetes.client.V1SecretVolumeSource(secret_name=source)
    else:
        volume.config_map = kubernetes.client.V1ConfigMapVolumeSource(name=source)
    body.spec.template.spec.volumes = [volume]
    body.spec.template.spec.containers[0].volume_mounts = [
        kubernetes.client.V1VolumeMount(name="ca-bundle", mount_path="/etc/ca", read_only=True)
    ]
    executor._kubernetes_retry(lambda: executor.batchapi.create_namespaced_job(NAMESPACE, body))
    return SubmittedJobInfo(job=executor.recorder.job(name), external_jobid=name)


@pytest.mark.parametrize("kind", ["secret", "configmap"])
def test_a_job_whose_secret_or_configmap_volume_is_missing_is_reported_once_then_failed_and_deleted(
    cluster, executor, monkeypatch, kind
):
    """A volume that is not optional names a Secret or ConfigMap that does not exist: the kubelet cannot mount it,
    and the container waits ContainerCreating for ever (the kubelet's FailedMount events say why), its Job active
    and its Kueue quota held; the executor took that for progress and waited in silence. Now, once the pod has waited
    CONTAINER_CREATING_CHECK_S, its FailedMount events are read: one warning names the kubelet's message and the fix,
    and after CONTAINER_START_GIVE_UP_S the job fails and its Job is deleted. The events read is allowed by the
    driver's Role."""
    from harness import profile_manifests
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    assert mounts.CONTAINER_CREATING_CHECK_S == 60
    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 2.0)
    name = f"unmounted-{kind}"
    job = submit_with_volume(executor, name, kind, "cluster-ca")
    active = check_for(executor, [job], 1.5)
    assert active == [job] and executor.recorder.failed == []
    warnings = [message for message in executor.recorder.messages("warning") if "cannot start" in message]
    assert len(warnings) == 1, warnings  # once, not at every status check
    pod = cluster.jobs[name].pod.name
    assert warnings[0] == (
        f"kubernetes-kueue: the container of Job {NAMESPACE}/{name} (pod {pod}) cannot start; its job fails if it "
        f'still cannot in {2.0 / 60:g} min (FailedMount: MountVolume.SetUp failed for volume "ca-bundle" : {kind} '
        f'"cluster-ca" not found); a Secret or ConfigMap volume of the pod is not optional and the object it names '
        f"does not exist in namespace {NAMESPACE} (the Job's own volumes, or ones a cluster policy adds to every "
        f"pod): create it, or make the volume optional; kubectl -n {NAMESPACE} describe pod {pod} lists the "
        "FailedMount events"
    )
    run_until_settled(executor, active)
    assert executor.recorder.failed == [name] and executor.recorder.finished == []
    message = executor.recorder.job_errors[name]
    assert message.startswith(
        f"kubernetes-kueue: the container of Job {NAMESPACE}/{name} (pod {pod}) could not "
    )
    assert f'{kind} "cluster-ca" not found' in message
    assert "the Job was deleted" in message and cluster.jobs[name].deleted
    (role,) = [doc for doc in profile_manifests("rbac.yaml") if doc["kind"] == "Role"]
    made = {rbac_request(method, path) for method, path, _ in cluster.requests}
    assert ("", "events", "list") in made and made <= role_grants(role), made - role_grants(role)


def test_a_job_whose_missing_volume_appears_before_the_give_up_runs_and_a_quick_start_reads_no_events(
    cluster, executor, monkeypatch
):
    """The kubelet tries the mount again: a ConfigMap created while the container waits (applied late) lets it start,
    and the job finishes after the one warning. A container that leaves ContainerCreating within
    CONTAINER_CREATING_CHECK_S (every normal start) costs no events read."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module
    from snakemake_executor_plugin_kubernetes_kueue import mounts

    monkeypatch.setattr(mounts, "CONTAINER_CREATING_CHECK_S", 0.3)
    quick = submit(executor, "quick", "sleep 1")
    run_until_settled(executor, [quick])
    assert not [path for _, path, _ in cluster.requests if path.endswith("/events")]
    monkeypatch.setattr(executor_module, "CONTAINER_START_GIVE_UP_S", 60.0)
    job = submit_with_volume(executor, "late-ca", "configmap", "cluster-ca")
    active = check_for(executor, [job], 1.5)
    assert active == [job]
    cluster.add_objects(
        [{"kind": "ConfigMap", "metadata": {"name": "cluster-ca"}, "data": {"ca.crt": "pem"}}]
    )
    run_until_settled(executor, active)
    assert executor.recorder.finished == ["quick", "late-ca"] and executor.recorder.failed == []
    assert len([m for m in executor.recorder.messages("warning") if "cannot start" in m]) == 1
