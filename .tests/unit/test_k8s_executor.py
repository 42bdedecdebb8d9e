"""The kubernetes-kueue executor plugin (executors/): its setting checks, what it adds to a Job, and that
installing it never breaks a `snakemake` call: without a kubeconfig, and without the k8s extra."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
from types import SimpleNamespace

import kubernetes.client
import pytest
from snakemake_executor_plugin_kubernetes_kueue.checks import (
    PLACEHOLDER_CLIENT_ID,
    SecretVolume,
    SettingError,
    check_local_queue_active,
    check_name,
    check_storage_account,
    check_storage_container,
    check_workload_identity_annotations,
    parse_env,
)
from snakemake_executor_plugin_kubernetes_kueue.jobs import (
    QUEUE_LABEL,
    WORKLOAD_IDENTITY_LABEL,
    CompletingBatchApi,
    JobCompletion,
)
from testkit import REPO

sys.path.insert(0, str(REPO / ".tests" / "integration" / "k8s"))
from apistandin import ApiStandIn  # noqa: E402
from harness import snakemake_command  # noqa: E402

TINY = ".tests/integration/k8s/Snakefile"


@pytest.mark.parametrize("value", ["snakemake", "gpu-queue-1", "a"])
def test_valid_names_pass(value):
    assert check_name(value, "kubernetes-kueue-queue-name", "Kueue LocalQueue", "fix") == value


@pytest.mark.parametrize("value", [None, "", "Bad_Queue", "-queue", "queue.", "q" * 64])
def test_bad_names_stop_with_the_setting_and_the_fix(value):
    with pytest.raises(SettingError, match=r"^kubernetes-kueue-queue-name.*: set it in config"):
        check_name(value, "kubernetes-kueue-queue-name", "Kueue LocalQueue", "set it in config")


# What Kubernetes accepts for each kind of name (apimachinery validation; Kueue's webhook for the queue label), and
# what it refuses: a namespace is a DNS-1123 label, a ServiceAccount a DNS-1123 subdomain (dots, up to 253), a
# LocalQueue a DNS-1123 subdomain that is also a label value (up to 63).
NAME_CASES = {
    "namespace": (["snakemake", "team-1", "n" * 63], ["team.one", "n" * 64, "Team", "-ns", "ns-", "ns\n"]),
    "Kueue LocalQueue": (
        ["jobs", "team.gpu-queue", "q" * 63],
        ["q" * 64, "Bad_Queue", "queue.", ".queue", "a..b", "a.-b", "queue\n"],
    ),
    "ServiceAccount": (
        ["snakemake", "snakemake.workload-identity", "a." * 126 + "a"],
        ["a." * 126 + "ab", "Snakemake", "sa_name", "sa.", "sa\n"],
    ),
}


@pytest.mark.parametrize(
    "what, value, valid",
    [
        pytest.param(what, value, valid, id=f"{what}-{len(value)}-{value[:20]!r}")
        for what, (good, bad) in NAME_CASES.items()
        for values, valid in ((good, True), (bad, False))
        for value in values
    ],
)
def test_each_kind_of_name_follows_the_rule_kubernetes_enforces_for_it(what, value, valid):
    """A ServiceAccount named with dots (a DNS subdomain, as Kubernetes allows) was refused as if it had to be a
    DNS label; a name with a trailing newline passed. Each name is held to its own kind's rule, whole."""
    if valid:
        assert check_name(value, "setting", what, "fix") == value
        return
    with pytest.raises(SettingError) as refused:
        check_name(value, "setting", what, "fix")
    longest = 253 if what == "ServiceAccount" else 63
    assert str(refused.value).startswith(f"setting: {value!r} is not a valid {what} name (")
    assert f"at most {longest} characters): fix" in str(refused.value)


def test_env_secret_and_azure_names_are_matched_whole():
    """Environment variable names follow the API server's rule (IsEnvVarName: dots and dashes are allowed), and
    no name passes with a trailing newline."""
    assert parse_env(["dask.config=1", "MY-VAR=x", "_X=y"]) == {"dask.config": "1", "MY-VAR": "x", "_X": "y"}
    for bad in ("1ABC=x", "A B=x", "A\n=x", "=x"):
        with pytest.raises(SettingError, match="kubernetes-kueue-env"):
            parse_env([bad])
    with pytest.raises(SettingError, match="kubernetes-kueue-secret-volumes"):
        SecretVolume.parse("dask-tls\n:/etc/dask-tls")
    with pytest.raises(SettingError, match="SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"):
        check_storage_account("devstoreaccount1\n")
    with pytest.raises(SettingError, match="default-storage-prefix"):
        check_storage_container("az://kd-gat\n/run1")


def test_storage_account_names_follow_azures_rule():
    assert check_storage_account("devstoreaccount1") == "devstoreaccount1"
    for bad in ("ab", "My-Account", "x" * 25, "acct.blob.core.windows.net"):
        with pytest.raises(SettingError, match="SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"):
            check_storage_account(bad)
    with pytest.raises(SettingError, match="is empty or not set: export it"):
        check_storage_account(None)


def test_the_account_flag_reaches_the_jobs_and_an_empty_one_is_refused_with_both_ways(monkeypatch):
    """Snakemake forwards --storage-azure-account-name to the jobs as SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME
    (spawn_jobs.get_storage_provider_envvars: the azure plugin marks the setting env_var), so the refusal
    offers the flag as an equal way. An empty flag passes Snakemake's own "required" check (it refuses None
    only) and reaches check_storage_account: the branch is live."""
    from snakemake.cli import get_argument_parser
    from snakemake.spawn_jobs import SpawnedJobArgsFactory
    from snakemake_interface_storage_plugins.registry import StoragePluginRegistry

    monkeypatch.delenv("SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME", raising=False)
    parser = get_argument_parser()
    plugin = StoragePluginRegistry().get_plugin("azure")
    settings = plugin.get_settings(parser.parse_args(["--storage-azure-account-name", "acct1"]))
    workflow = SimpleNamespace(
        storage_provider_settings={"azure": settings},
        remote_execution_settings=SimpleNamespace(envvars=[]),
        envvars=[],
    )
    jobs = SpawnedJobArgsFactory(workflow)
    assert jobs.envvars() == {"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": "acct1"}
    assert list(jobs.get_storage_provider_args()) == []  # it travels as the variable, not as the flag

    empty = plugin.get_settings(parser.parse_args(["--storage-azure-account-name", ""])).get_settings()
    plugin.validate_settings(empty)  # Snakemake lets "" through
    with pytest.raises(SettingError) as refused:
        check_storage_account(empty.account_name)
    text = str(refused.value)
    assert "export it, or pass --storage-azure-account-name" in text
    assert "not forwarded" not in text
    assert text.endswith(
        "(Snakemake forwards either one to the jobs as SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME)"
    )


def local_queue(*conditions: dict, **spec) -> dict:
    """A LocalQueue as `kubectl -n snakemake get localqueue snakemake -o yaml` shows it."""
    return {
        "metadata": {"name": "snakemake", "namespace": "snakemake"},
        "spec": {"clusterQueue": "snakemake", **spec},
        "status": {"conditions": list(conditions)},
    }


def active(status: str, reason: str, message: str) -> dict:
    return {"type": "Active", "status": status, "reason": reason, "message": message}


def test_an_active_or_not_yet_reconciled_local_queue_passes():
    check_local_queue_active(local_queue(active("True", "Ready", "Can submit new workloads")), "snakemake")
    check_local_queue_active(local_queue(), "snakemake")  # just created: Kueue has not written a status yet
    check_local_queue_active({"metadata": {"name": "q"}}, "snakemake")


@pytest.mark.parametrize(
    "reason, message, fix",
    [
        (
            "ClusterQueueDoesNotExist",
            "Can't submit new workloads to clusterQueue",
            "its ClusterQueue 'snakemake' does not exist: apply profiles/k8s/kueue/resourceflavors.yaml, "
            "then profiles/k8s/kueue/clusterqueue.yaml",
        ),
        (
            "ClusterQueueIsInactive",
            "Can't submit new workloads to clusterQueue",
            "its ClusterQueue 'snakemake' is inactive: `kubectl get clusterqueue snakemake -o yaml`",
        ),
        (
            "Stopped",
            "LocalQueue is stopped",
            "kubectl -n snakemake patch localqueue snakemake --type merge "
            """-p '{"spec":{"stopPolicy":"None"}}'""",
        ),
        ("SomethingNew", "a reason this executor does not know", "kubectl -n snakemake describe localqueue"),
    ],
)
def test_an_inactive_local_queue_stops_the_run_with_kueues_reason_and_the_fix(reason, message, fix):
    with pytest.raises(SettingError) as refused:
        check_local_queue_active(local_queue(active("False", reason, message)), "snakemake")
    text = str(refused.value)
    assert text.startswith("kubernetes-kueue-queue-name: Kueue LocalQueue snakemake/snakemake is inactive")
    assert f"reason {reason}: {message!r}" in text and fix in text
    assert text.endswith(
        "or set kubernetes-kueue-queue-name in profiles/k8s/config.yaml to an active LocalQueue"
    )


def test_workload_identity_needs_a_real_client_id():
    assert (
        check_workload_identity_annotations({"azure.workload.identity/client-id": "abc"}, "sa", "ns") == "abc"
    )
    for given, reason in (
        (None, "has no"),
        ({"azure.workload.identity/client-id": PLACEHOLDER_CLIENT_ID}, "placeholder"),
    ):
        with pytest.raises(SettingError, match=reason):
            check_workload_identity_annotations(given, "sa", "ns")


@pytest.mark.parametrize(
    "item",
    [
        "AZURE_STORAGE_KEY=c2VjcmV0LWtleQ==",
        "SIMCAL_API_KEY=sc_0123456789abcdef",
        "MY_SAS_TOKEN=sv=2024-01-01&sig=abc",
        "AZURE_STORAGE_CONNECTION_STRING=DefaultEndpointsProtocol=https;AccountKey=abc",
        "AZURE_CLIENT_SECRET=s3cr3t",
        "db.password=hunter2",
    ],
)
def test_a_credential_in_kubernetes_kueue_env_is_refused_without_showing_it(item):
    """kubernetes-kueue-env's values are written in plain text into every Job's spec (readable by whoever may
    read Jobs in the namespace, and kept in etcd and in Kueue's Workloads): a storage key, SAS token, API key or
    client secret given there was accepted. A name that says its value is a credential is now refused, naming
    where it belongs, and the value is not shown."""
    name, _, value = item.partition("=")
    with pytest.raises(SettingError) as refused:
        parse_env(["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=true", item])
    message = str(refused.value)
    assert message.startswith(f"kubernetes-kueue-env: {name} looks like a credential")
    assert f"--envvars {name}" in message and "kubernetes-kueue-secret-volumes" in message
    assert value not in message


def test_names_that_only_contain_a_credential_word_or_point_at_a_key_file_pass():
    # A mounted key file's path is no credential (the profile's own TLS client key); words are matched whole.
    import yaml

    profile = yaml.safe_load((REPO / "profiles" / "k8s" / "config.yaml").read_text())
    assert parse_env(profile["kubernetes-kueue-env"])["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"] == (
        "/etc/dask-tls/tls.key"
    )
    passing = [
        "MONKEY=1",
        "KEYBOARD_LAYOUT=us",
        "AZURE_CLIENT_ID=abc",
        "TOKENIZERS_PARALLELISM=false",
        "KEY=",
    ]
    assert parse_env(passing) == dict(item.split("=", 1) for item in passing)


def test_env_and_secret_volume_settings_are_parsed_or_refused():
    assert parse_env(["A=1", "B_2=x=y"]) == {"A": "1", "B_2": "x=y"}
    for bad in ("no-equals", "NO_EQUALS"):  # a well-formed name without "=" is no NAME=VALUE either
        with pytest.raises(SettingError, match="kubernetes-kueue-env"):
            parse_env([bad])
    assert SecretVolume.parse("dask-tls:/etc/dask-tls/") == SecretVolume("dask-tls", "/etc/dask-tls")
    # A Secret's name is a DNS subdomain: at most 253 characters (a longer one only fails at the first Job).
    longest = ".".join(["a" * 63] * 4)[:253]
    assert SecretVolume.parse(f"{longest}:/x").secret == longest
    for bad in ("dask-tls", "dask-tls:relative", "Bad_Name:/x", f"{longest}a:/x"):
        with pytest.raises(SettingError, match="kubernetes-kueue-secret-volumes"):
            SecretVolume.parse(bad)


def stock_job(gpu: bool, gpu_resource: str = "nvidia.com/gpu") -> kubernetes.client.V1Job:
    """A Job shaped as snakemake-executor-plugin-kubernetes 0.5.1 builds it (labels, pod spec, resources)."""
    requests = {"cpu": "950m", "memory": "2048M", **({gpu_resource: "1"} if gpu else {})}
    container = kubernetes.client.V1Container(
        name="snakemake",
        image="registry/image:cpu",
        command=["/bin/sh"],
        args=["-c", "python -m snakemake"],
        resources=kubernetes.client.V1ResourceRequirements(requests=requests),
        volume_mounts=[kubernetes.client.V1VolumeMount(name="workdir", mount_path="/workdir")],
        env=[kubernetes.client.V1EnvVar(name="FROM_SECRET")],
    )
    pod = kubernetes.client.V1PodSpec(
        containers=[container],
        restart_policy="Never",
        volumes=[
            kubernetes.client.V1Volume(name="workdir", empty_dir=kubernetes.client.V1EmptyDirVolumeSource())
        ],
    )
    return kubernetes.client.V1Job(
        metadata=kubernetes.client.V1ObjectMeta(name="snakejob-x", labels={"app": "snakemake"}),
        spec=kubernetes.client.V1JobSpec(
            backoff_limit=0, template=kubernetes.client.V1PodTemplateSpec(spec=pod)
        ),
    )


@pytest.mark.parametrize("gpu", [False, True])
def test_every_job_gets_the_queue_identity_image_env_and_secret_mount(gpu):
    completion = JobCompletion(
        queue_name="team-queue",
        workload_identity=True,
        gpu_container_image="registry/image:cu130",
        env={"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true"},
        secret_volumes=[SecretVolume("dask-tls", "/etc/dask-tls")],
    )
    job = completion.apply(stock_job(gpu))
    assert job.metadata.labels == {"app": "snakemake", QUEUE_LABEL: "team-queue"}
    assert job.spec.template.metadata.labels[WORKLOAD_IDENTITY_LABEL] == "true"
    (container,) = job.spec.template.spec.containers
    assert container.image == ("registry/image:cu130" if gpu else "registry/image:cpu")
    assert [e.name for e in container.env] == ["FROM_SECRET", "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"]
    mount = container.volume_mounts[-1]
    assert (mount.mount_path, mount.read_only) == ("/etc/dask-tls", True)
    (volume,) = [v for v in job.spec.template.spec.volumes if v.name == mount.name]
    assert volume.secret.secret_name == "dask-tls" and volume.secret.optional is True
    without_identity = JobCompletion(queue_name="q").apply(stock_job(gpu))
    assert WORKLOAD_IDENTITY_LABEL not in without_identity.spec.template.metadata.labels
    assert without_identity.spec.template.spec.containers[0].image == "registry/image:cpu"


@pytest.mark.parametrize("gpu_resource", ["nvidia.com/gpu", "amd.com/gpu"])
def test_a_job_requesting_either_vendors_gpu_runs_the_gpu_image(gpu_resource):
    """The kubernetes executor requests nvidia.com/gpu or amd.com/gpu (gpu_manufacturer)."""
    completion = JobCompletion(queue_name="q", gpu_container_image="registry/image:gpu")
    job = completion.apply(stock_job(gpu=True, gpu_resource=gpu_resource))
    assert job.spec.template.spec.containers[0].image == "registry/image:gpu"


def test_completing_a_job_twice_changes_nothing():
    """The kubernetes executor sends the same body again after re-authenticating (HTTP 401), and this
    executor after a transient error: a second copy of a variable, volume or mount would be refused with
    422 (duplicate volume name) or shadow the first."""
    completion = JobCompletion(
        queue_name="team-queue",
        workload_identity=True,
        gpu_container_image="registry/image:cu130",
        env={"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true"},
        secret_volumes=[SecretVolume("dask-tls", "/etc/dask-tls"), SecretVolume("other", "/etc/other")],
    )
    once = completion.apply(stock_job(gpu=True)).to_dict()
    twice = completion.apply(completion.apply(stock_job(gpu=True))).to_dict()
    assert twice == once
    pod = once["spec"]["template"]["spec"]
    assert [v["name"] for v in pod["volumes"]] == ["workdir", "secret-0", "secret-1"]
    assert [m["name"] for m in pod["containers"][0]["volume_mounts"]] == ["workdir", "secret-0", "secret-1"]


class RecordingBatchApi:
    """A ``BatchV1Api`` that keeps the Job it is asked to create, as the API server receives it."""

    def create_namespaced_job(self, namespace, body, **kwargs):
        self.sent = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            **kubernetes.client.ApiClient().sanitize_for_serialization(body),
        }
        return body


def kueue_executor(completion: JobCompletion, warnings: list[str] | None = None):
    """The executor with what its run_job and the kubernetes executor's read (no cluster): its Jobs go to a
    RecordingBatchApi, ``executor.batchapi._api``."""
    from snakemake_executor_plugin_kubernetes_kueue.executor import KueueExecutor

    def quiet(*args):
        return None

    executor = KueueExecutor.__new__(KueueExecutor)
    attributes = dict(
        completion=completion,
        format_job_exec=lambda job: "python -m snakemake",
        run_namespace="run",
        container_image="registry/image:cpu",
        persistent_volumes=[],
        logger=SimpleNamespace(
            debug=quiet, info=quiet, error=quiet, warning=quiet if warnings is None else warnings.append
        ),
        secret_envvars={},
        k8s_cpu_scalar=0.95,
        k8s_service_account_name="snakemake-jobs",
        privileged=False,
        workflow=SimpleNamespace(deployment_settings=SimpleNamespace(deployment_method=set())),
        _kubernetes_retry=lambda call: call(),
        namespace="snakemake",
        report_job_submission=lambda info: None,
    )
    for name, value in attributes.items():
        setattr(executor, name, value)
    executor.batchapi = RecordingBatchApi()  # wrapped by the executor in its CompletingBatchApi
    return executor


def job_sent_for(resources: dict, completion: JobCompletion, rule: str = "rule", executor=None) -> dict:
    """The Job the kubernetes executor 0.5.1 builds (its own ``run_job``) for a job with these resources, as this
    executor checks, completes and sends it."""
    executor = executor or kueue_executor(completion)
    job = SimpleNamespace(
        name=rule, resources={"_cores": 1, **resources}, jobid=1, attempt=1, is_containerized=False
    )
    executor.run_job(job)
    return executor.batchapi._api.sent


def api_problems(job: dict, tmp_path) -> list[str]:
    """What the API stand-in refuses in a Job: the Kubernetes OpenAPI schema (strict) and the GPU limit rule."""
    return ApiStandIn(pods_root=tmp_path / "pods", pod_path=os.environ["PATH"]).problems(job)


def test_the_kubernetes_executors_line_after_a_created_job_names_its_namespace():
    """After each Job it creates, the kubernetes executor 0.5.1 logs `Get status with: kubectl describe job <name>`:
    without `-n`, kubectl looks in its context's namespace, not the Job's, and answers NotFound. The line names the
    namespace (stock_lines.StockLines); its other lines pass unchanged."""
    completion = JobCompletion(queue_name="snakemake")
    executor = kueue_executor(completion)
    infos: list[str] = []
    debugs: list[str] = []
    executor.logger = SimpleNamespace(debug=debugs.append, info=infos.append, warning=None, error=None)
    job_sent_for({"mem_mb": 1024}, completion, executor=executor)
    name = executor.batchapi._api.sent["metadata"]["name"]
    assert infos == [f"Get status with: kubectl -n snakemake describe job {name}"]
    assert "Executing job: python -m snakemake" in debugs


@pytest.mark.parametrize("manufacturer, resource", [("nvidia", "nvidia.com/gpu"), ("amd", "amd.com/gpu")])
def test_a_gpu_rule_without_scale_0_still_sends_a_job_the_api_accepts(tmp_path, manufacturer, resource):
    """A researcher copies a GPU rule's set-resources and leaves out `scale: 0`: the kubernetes executor then
    requests the GPU without a limit, which the API server refuses ("Limit must be set for non overcommitable
    resources"), stopping the run. The GPU's limit is added; CPU and memory keep their requests only."""
    completion = JobCompletion(queue_name="snakemake", gpu_container_image="registry/image:cu130")
    job = job_sent_for({"mem_mb": 2048, "gpu": 1, "gpu_manufacturer": manufacturer}, completion)
    assert api_problems(job, tmp_path) == []
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {resource: "1"}
    assert container["resources"]["requests"][resource] == "1"
    assert container["image"] == "registry/image:cu130"
    with_scale_0 = job_sent_for(
        {"mem_mb": 2048, "gpu": 1, "gpu_manufacturer": manufacturer, "scale": 0}, completion
    )
    assert api_problems(with_scale_0, tmp_path) == []
    assert with_scale_0["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "cpu": "1000m",
        "memory": "2048M",
        resource: "1",
    }


def test_every_job_runs_under_the_restricted_pod_security_standard(tmp_path):
    """The kubernetes executor 0.5.1 sets no security context: the workflow's pods ran with privilege escalation
    allowed, the runtime's default capabilities and no seccomp profile, and a namespace enforcing Pod Security
    "restricted" refused every Job. Each Job now asks for the image's non-root user, RuntimeDefault seccomp, no
    privilege escalation and no capability; one the executor was told to make privileged is left as asked."""
    completion = JobCompletion(queue_name="snakemake", gpu_container_image="registry/image:cu130")
    for resources in ({"mem_mb": 1024}, {"mem_mb": 2048, "gpu": 1, "gpu_manufacturer": "nvidia"}):
        job = job_sent_for(resources, completion)
        assert api_problems(job, tmp_path) == []
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"] == {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
        (container,) = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    executor = kueue_executor(completion)
    executor.privileged = True
    pod = job_sent_for({"mem_mb": 1024}, completion, executor=executor)["spec"]["template"]["spec"]
    assert pod["containers"][0]["securityContext"] == {"privileged": True} and "securityContext" not in pod


def test_no_job_gets_the_api_token_of_its_service_account(tmp_path):
    """The kubernetes executor 0.5.1 leaves automountServiceAccountToken unset, so every workflow pod had the
    ServiceAccount's Kubernetes API token at /var/run/secrets/kubernetes.io/serviceaccount, though no job calls the
    API (a sweep connects to the Dask scheduler already running; storage and tracking have their own credentials):
    whatever a job ran could act as the ServiceAccount. Every Job now asks for no token, workload identity's
    ServiceAccount (its own projected token) and a privileged Job included, and the API schema accepts it."""
    for completion, resources in [
        (JobCompletion(queue_name="snakemake"), {"mem_mb": 1024}),
        (
            JobCompletion(
                queue_name="snakemake", workload_identity=True, gpu_container_image="registry/image:cu130"
            ),
            {"mem_mb": 2048, "gpu": 1, "gpu_manufacturer": "nvidia"},
        ),
    ]:
        job = job_sent_for(resources, completion)
        assert api_problems(job, tmp_path) == []
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False, resources
        assert pod["serviceAccountName"] == "snakemake-jobs"
    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    executor.privileged = True
    pod = job_sent_for({"mem_mb": 1024}, executor.completion, executor=executor)["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False


def test_no_code_a_job_runs_calls_the_kubernetes_api():
    """Why the Jobs need no API token (above): neither library nor any wrapper or module imports a Kubernetes
    client (kubernetes, dask_kubernetes, kr8s, lightkube). A job that needs the API must change both."""
    clients = {"kubernetes", "kubernetes_asyncio", "dask_kubernetes", "kr8s", "lightkube"}
    found = []
    sources = [
        *(REPO / "src").rglob("*.py"),
        *(REPO / "wrappers").rglob("*.py"),
        *(REPO / "workflow").rglob("*"),
    ]
    for path in sources:
        if path.suffix not in (".py", ".smk") and path.name != "Snakefile":
            continue
        for line in path.read_text().splitlines():
            words = line.replace(",", " ").split()
            if words[:1] in (["import"], ["from"]) and {word.split(".")[0] for word in words[1:]} & clients:
                found.append(f"{path.relative_to(REPO)}: {line.strip()}")
    assert sources and found == []


def test_a_rule_given_0_gpus_runs_the_cpu_image(tmp_path):
    """`gpu: 0` (say, an evaluation rule moved to the CPU in a later profile) still makes the kubernetes executor
    write an nvidia.com/gpu request, of 0: that Job asks for no GPU and runs container-image, not the CUDA one."""
    completion = JobCompletion(queue_name="snakemake", gpu_container_image="registry/image:cu130")
    job = job_sent_for({"mem_mb": 2048, "gpu": 0, "gpu_manufacturer": "nvidia", "scale": 0}, completion)
    assert api_problems(job, tmp_path) == []
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/image:cpu"
    one = job_sent_for({"mem_mb": 2048, "gpu": 1, "gpu_manufacturer": "nvidia", "scale": 0}, completion)
    assert one["spec"]["template"]["spec"]["containers"][0]["image"] == "registry/image:cu130"


@pytest.mark.parametrize(
    "resources, given",
    [({"gpu": 1}, "is not set"), ({"gpu": 1, "gpu_manufacturer": "nvida"}, "is 'nvida', not nvidia or amd")],
)
def test_a_gpu_without_a_known_manufacturer_stops_naming_the_rule_and_the_fix(resources, given):
    """The kubernetes executor refuses such a job with "GPU requested but no manufacturer set", naming neither
    the rule nor where to set it; the run stops at that job."""
    from snakemake_interface_common.exceptions import WorkflowError

    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    with pytest.raises(WorkflowError) as refused:
        job_sent_for(resources, executor.completion, rule="kd_gat_train_new", executor=executor)
    assert str(refused.value) == (
        f"rule kd_gat_train_new: resource gpu=1 but gpu_manufacturer {given}: the Job would not know which GPU "
        "to request. Set them together, e.g. under set-resources in profiles/k8s/config.yaml: "
        "kd_gat_train_new: {gpu: 1, gpu_manufacturer: nvidia, scale: 0}"
    )
    assert not hasattr(executor.batchapi._api, "sent")
    sent = job_sent_for({"gpu": 1, "gpu_manufacturer": "NVIDIA"}, executor.completion)
    assert sent["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "1"


@pytest.mark.parametrize("count", ["one", "v100:1", "1.5", -1, True])  # -1: not 0 or more; True: gpu: yes
def test_a_gpu_count_that_is_no_whole_number_stops_naming_the_rule(count):
    """Snakemake keeps a string resource as it is (`gpu: v100:1`, a SLURM habit); the kubernetes executor would
    send it as the nvidia.com/gpu quantity, which the API server refuses, and this executor's image choice would
    stop on it with a traceback."""
    from snakemake_interface_common.exceptions import WorkflowError

    executor = kueue_executor(
        JobCompletion(queue_name="snakemake", gpu_container_image="registry/image:cu130")
    )
    with pytest.raises(WorkflowError) as refused:
        job_sent_for({"gpu": count, "gpu_manufacturer": "nvidia"}, executor.completion, "eval", executor)
    assert str(refused.value).startswith(
        f"rule eval: resource gpu={count!r} is not a whole number of GPUs (0 or more): Kubernetes requests whole "
        "devices, e.g. set-resources in profiles/k8s/config.yaml: eval: {gpu: 1"
    )
    assert not hasattr(executor.batchapi._api, "sent")
    quoted = job_sent_for({"gpu": "2", "gpu_manufacturer": "nvidia"}, executor.completion)  # gpu: "2" in YAML
    assert quoted["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"] == {
        "nvidia.com/gpu": "2"
    }


def test_a_misspelt_resource_is_named_once_per_rule_and_the_job_still_runs():
    """Snakemake accepts any resource name, and the kubernetes executor ignores those it does not read: `gpus: 1`
    would run a GPU rule on the CPU without a word. Names close to one it reads are warned about, once per rule;
    a workflow's own resources (gpu_mem_mb, group_slot) and other executors' (slurm_partition) are not."""
    warnings = []
    executor = kueue_executor(JobCompletion(queue_name="snakemake"), warnings)
    resources = {
        "mem_mb": 2048,
        "gpus": 1,
        "mem_gb": 16,
        "cpus": 4,
        "gpu_mem_mb": 300,
        "group_slot": 1,
        "slurm_partition": "gpu",
        "runtime": 60,
    }
    for _ in range(2):
        sent = job_sent_for(resources, executor.completion, rule="train", executor=executor)
    assert sent["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "950m",
        "memory": "2048M",
    }
    prefix = "kubernetes-kueue: rule train: resource"
    suffix = "is not read by the kubernetes-kueue executor, so its Jobs ask for nothing of it; did you mean"
    assert warnings == [
        f"{prefix} 'gpus' {suffix} 'gpu'?",
        f"{prefix} 'mem_gb' {suffix} 'mem_mb' (in MB; or 'mem' with its unit, e.g. '16G')?",
        f"{prefix} 'cpus' {suffix} the rule's threads (threads: or --set-threads), which set the Job's CPU "
        "request?",
    ]


class StatusReads:
    """A ``BatchV1Api`` whose status reads of one Job answer ``(suspended, startTime in seconds)`` in turn."""

    def __init__(self, reads: list[tuple[bool, int | None]]) -> None:
        self._reads = iter(reads)

    def read_namespaced_job_status(self, name, namespace, **kwargs):
        suspended, start_s = next(self._reads)
        started = (
            None if start_s is None else datetime.datetime(2025, 1, 1, 12, 0, start_s, tzinfo=datetime.UTC)
        )
        return kubernetes.client.V1Job(
            metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace, uid="job-uid"),
            spec=kubernetes.client.V1JobSpec(
                suspend=suspended, template=kubernetes.client.V1PodTemplateSpec()
            ),
            status=kubernetes.client.V1JobStatus(start_time=started),
        )


@pytest.mark.parametrize(
    "reads, reported",
    [
        ([(True, None), (False, 0), (False, 0)], [None, None, None]),  # admitted, then runs on
        ([(False, 0), (False, 9)], [None, True]),  # taken back and readmitted between two reads
        ([(False, 0), (True, None), (False, 9)], [None, False, None]),  # seen suspended: once, not again
        ([(False, None), (False, 0), (False, 0)], [None, None, None]),  # startTime set after the first read
        ([(False, 0), (False, None), (False, 9)], [None, None, True]),  # resumed, startTime not set yet
    ],
)
def test_a_job_taken_back_is_seen_suspended_or_by_its_new_start_time(reads, reported):
    """The Job controller sets status.startTime anew each time a Job is resumed: a Job read running with
    another start than at its last running read was evicted and readmitted between the two."""
    api = CompletingBatchApi(StatusReads(reads), JobCompletion(queue_name="q"))
    seen = []
    for _ in reads:
        api.read_namespaced_job_status("job", "ns")
        seen.append(api.taken_back.pop("job", None))  # as the executor takes it to report it
    assert seen == reported


def dry_run_without_cluster(tmp_path, k8s_extra: bool) -> subprocess.CompletedProcess:
    # No kubeconfig anywhere: KUBECONFIG points nowhere and HOME has no ~/.kube.
    env = {**os.environ, "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [*snakemake_command(k8s_extra), "--snakefile", TINY, "--directory", str(tmp_path / "run"), "-n"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("k8s_extra", [True, False], ids=["with k8s extra", "without k8s extra"])
def test_installed_executor_breaks_no_snakemake_call_without_kubeconfig(tmp_path, k8s_extra):
    dry = dry_run_without_cluster(tmp_path, k8s_extra)
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-3000:]
    assert "make_table" in dry.stdout


def executor_before_the_cluster(warnings: list[str], storage: str | None = None, envvars: dict | None = None):
    """The executor with only what its local checks read (no cluster): logger, workflow, job envvars."""
    from snakemake_executor_plugin_kubernetes_kueue.executor import KueueExecutor

    executor = KueueExecutor.__new__(KueueExecutor)
    executor.logger = SimpleNamespace(warning=warnings.append)
    executor.workflow = SimpleNamespace(
        storage_settings=SimpleNamespace(default_storage_provider=storage),
        remote_execution_settings=SimpleNamespace(container_image="registry/image:cpu"),
        spawned_job_args_factory=SimpleNamespace(envvars=lambda: dict(envvars or {})),
    )
    return executor


def local_settings(**changes) -> SimpleNamespace:
    settings = dict(
        namespace="snakemake",
        queue_name="snakemake",
        workload_identity=False,
        service_account_name=None,
        gpu_container_image="registry/image:cu130",
        env=[],
        secret_volumes=[],
    )
    return SimpleNamespace(**{**settings, **changes})


@pytest.mark.parametrize("gpu_image", [None, "registry/image:cu130"])
def test_an_unset_gpu_image_is_warned_about_before_any_job(gpu_image):
    warnings = []
    executor = executor_before_the_cluster(warnings)
    completion = executor._check_local_settings(local_settings(gpu_container_image=gpu_image))
    assert completion.gpu_container_image == gpu_image
    if gpu_image:
        assert warnings == []
    else:
        (warning,) = warnings
        assert warning.startswith("kubernetes-kueue-gpu-container-image is not set: Jobs that request a GPU")
        assert "'registry/image:cpu'" in warning and "profiles/k8s/config.yaml" in warning


@pytest.mark.parametrize(
    "image, pinned",
    [
        ("ghcr.io/kd-gat/snakemake-gpu-catalog", False),
        ("ghcr.io/kd-gat/snakemake-gpu-catalog:latest", False),
        ("localhost:5000/snakemake-gpu-catalog", False),  # a registry's port is no tag
        ("localhost:5000/snakemake-gpu-catalog:snakemake-9.27.1-cu130", True),
        ("ghcr.io/kd-gat/snakemake-gpu-catalog@sha256:" + "0" * 64, True),
    ],
)
def test_an_image_without_a_tag_is_warned_about_before_any_job(image, pinned):
    """README: the pods' Snakemake must be the driver's. An image without a tag pulls :latest, whatever that is
    today, and Kubernetes accepts it without a word."""
    for setting, changes in (
        ("kubernetes-kueue-gpu-container-image", {"gpu_container_image": image}),
        ("container-image", {}),
    ):
        warnings = []
        executor = executor_before_the_cluster(warnings)
        if not changes:
            executor.workflow.remote_execution_settings.container_image = image
        executor._check_local_settings(local_settings(**changes))
        if pinned:
            assert warnings == []
        else:
            (warning,) = warnings
            assert warning.startswith(
                f"{setting} {image!r} has no tag (or is :latest): each pod runs whatever"
            )


def test_every_setting_reaches_the_jobs():
    """What the profile sets (identity, image, env, Secret mounts) is what every Job gets, not the default."""
    settings = local_settings(
        queue_name="team-queue",
        workload_identity=True,
        service_account_name="snakemake-jobs",
        env=["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=true", "A=x=y"],
        secret_volumes=[SecretVolume("dask-tls", "/etc/dask-tls")],
    )
    completion = executor_before_the_cluster([])._check_local_settings(settings)
    assert completion == JobCompletion(
        queue_name=settings.queue_name,
        workload_identity=True,
        gpu_container_image=settings.gpu_container_image,
        env=parse_env(settings.env),
        secret_volumes=settings.secret_volumes,
    )


def test_a_mapping_under_kubernetes_kueue_env_reaches_no_pod(tmp_path):
    """Environment variables are a mapping almost everywhere else (a pod's env, docker compose), but Snakemake's
    profile parser passes a mapping on only for its own keys (set-resources, config, ...): under
    kubernetes-kueue-env it is dropped before the executor sees it, so profiles/k8s/config.yaml warns."""
    import yaml
    from snakemake.profiles import ProfileConfigFileParser

    profile = yaml.safe_load((REPO / "profiles" / "k8s" / "config.yaml").read_text())
    for env, reaches in (({"A": "1"}, None), (["A=1"], ["A=1"])):
        (tmp_path / "config.yaml").write_text(yaml.safe_dump({**profile, "kubernetes-kueue-env": env}))
        with open(tmp_path / "config.yaml") as stream:
            arguments = ProfileConfigFileParser().parse(stream)
        assert arguments.get("kubernetes-kueue-env") == reaches
        assert arguments["kubernetes-kueue-queue-name"] == "snakemake"  # the rest of the profile arrives
    comment = " ".join((REPO / "profiles" / "k8s" / "config.yaml").read_text().split())
    assert "Snakemake's profile parser drops a mapping (NAME: VALUE) here without a word" in comment


def test_workload_identity_without_a_service_account_stops_before_any_job():
    executor = executor_before_the_cluster([])
    with pytest.raises(SettingError, match=r"^kubernetes-kueue-service-account-name is not set: workload"):
        executor._check_local_settings(local_settings(workload_identity=True))
    assert executor._check_local_settings(local_settings(workload_identity=False)).workload_identity is False


def test_the_azure_storage_account_the_jobs_get_is_checked_before_any_job():
    """Also for a Snakefile that does not call check_default_storage_account: the account the jobs would get."""
    account = "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"
    malformed = executor_before_the_cluster([], storage="azure", envvars={account: "https://x.blob"})
    with pytest.raises(SettingError, match=f"^{account}: 'https://x.blob' is not an Azure storage account"):
        malformed._check_local_settings(local_settings())
    with pytest.raises(SettingError, match=f"^{account} is empty or not set"):
        executor_before_the_cluster([], storage="azure")._check_local_settings(local_settings())
    executor_before_the_cluster([], storage="azure", envvars={account: "acct1"})._check_local_settings(
        local_settings()
    )
    # Another default storage: the variable is not used, so not required.
    executor_before_the_cluster([], storage="s3")._check_local_settings(local_settings())


def test_busy_servers_and_lost_connections_are_transient_refusals_are_not():
    """README: a call answered with 429 or 5xx (busy or restarting server) is sent again; a status read that
    lost its connection keeps its job watched. A refusal (4xx) would be refused again."""
    from kubernetes.client.rest import ApiException
    from snakemake_executor_plugin_kubernetes_kueue.jobs import is_transient
    from urllib3.exceptions import MaxRetryError, ProtocolError

    for status in (429, 500, 502, 503, 504):
        assert is_transient(ApiException(status=status)), status
    for status in (400, 401, 403, 404, 409, 422):
        assert not is_transient(ApiException(status=status)), status
    assert is_transient(MaxRetryError(None, "/apis/batch/v1", "connection refused"))
    assert is_transient(ProtocolError("Connection aborted.", ConnectionResetError()))
    assert not is_transient(ValueError("not an API error"))


def test_an_api_error_is_told_with_the_servers_message_whatever_its_body():
    """A Kubernetes Status body gives its message; a proxy in front of the API server (a 502 or 504) may
    answer plain text, which is told as it is; a connection error by its type."""
    import json

    from kubernetes.client.rest import ApiException
    from snakemake_executor_plugin_kubernetes_kueue.jobs import describe_api_error
    from urllib3.exceptions import MaxRetryError

    def answer(status, reason, body):
        error = ApiException(status=status, reason=reason)
        error.body = body
        return error

    message = 'jobs.batch "x" is forbidden: User "driver" cannot create resource "jobs"'
    status = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": 403})
    assert describe_api_error(answer(403, "Forbidden", status)) == f"HTTP 403 Forbidden: {message}"
    text = "upstream connect error or disconnect/reset before headers"
    assert describe_api_error(answer(502, "Bad Gateway", f"{text}\n")) == f"HTTP 502 Bad Gateway: {text}"
    assert describe_api_error(answer(504, "Gateway Timeout", None)) == "HTTP 504 Gateway Timeout: "
    lost = MaxRetryError(None, "/apis/batch/v1", "connection refused")
    assert describe_api_error(lost) == f"MaxRetryError: {lost}"


class LogReads:
    """A ``CoreV1Api`` whose log reads answer ``answer`` (an exception is raised), keeping what each asked for."""

    def __init__(self, answer) -> None:
        self.answer, self.asked = answer, []

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.asked.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_a_failed_pods_own_log_is_read_and_a_refused_read_becomes_the_log_instead_of_stopping_the_run():
    """jobs.SafeLogCoreApi: the kubernetes executor asks for previous=True, which the API server answers with 400
    for a container that never restarted (restartPolicy Never), and any error of that read stops the whole run.
    The current container's log is asked for; a 400 even then (a container that never started) becomes the
    job's log, so that only this job fails, and Snakemake retries it."""
    import json

    from kubernetes.client.rest import ApiException
    from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi

    read = LogReads("MemoryError\n")
    log = SafeLogCoreApi(read).read_namespaced_pod_log("pod-1", "ns", container="snakemake", previous=True)
    assert log == "MemoryError\n"
    assert read.asked == [{"container": "snakemake", "previous": False}]
    message = 'container "snakemake" in pod "pod-1" is waiting to start: ContainerCreating'
    refused = ApiException(status=400, reason="Bad Request")
    refused.body = json.dumps({"kind": "Status", "status": "Failure", "message": message, "code": 400})
    log = SafeLogCoreApi(LogReads(refused)).read_namespaced_pod_log(
        "pod-1", "ns", container="snakemake", previous=True
    )
    assert log == (
        f"[kubernetes-kueue] the log of pod ns/pod-1 could not be read (HTTP 400 Bad Request: {message}); see "
        "`kubectl -n ns describe pod pod-1`"
    )


class ConflictingBatchApi:
    """A ``BatchV1Api`` whose creates are answered 409 AlreadyExists, keeping the names of the Jobs it is asked to
    read."""

    def __init__(self) -> None:
        self.read = []

    def create_namespaced_job(self, namespace, body, **kwargs):
        import json

        from kubernetes.client.rest import ApiException

        conflict = ApiException(status=409, reason="Conflict")
        message = f'jobs.batch "{body.metadata.name}" already exists'
        conflict.body = json.dumps({"kind": "Status", "message": message, "code": 409})
        raise conflict

    def read_namespaced_job(self, name, namespace, **kwargs):
        self.read.append(name)
        return kubernetes.client.V1Job(
            metadata=kubernetes.client.V1ObjectMeta(name=name, namespace=namespace)
        )


def test_a_409_is_this_runs_own_job_only_when_this_run_sent_that_create_before():
    """jobs.CompletingBatchApi: a create whose answer was lost and is sent again meets 409 AlreadyExists for the Job
    it made, which is read and taken as created; a 409 at a name's first create is a Job this run did not make, and
    is refused with the fix, never taken over (it may run anything)."""
    from snakemake_interface_common.exceptions import WorkflowError

    api = ConflictingBatchApi()
    batch = CompletingBatchApi(api, JobCompletion(queue_name="team-queue"))
    with pytest.raises(WorkflowError) as refused:
        batch.create_namespaced_job("ns", stock_job(gpu=False))
    assert str(refused.value) == (
        "kubernetes-kueue: the API server refused Job ns/snakejob-x (Kueue LocalQueue team-queue) with HTTP 409 "
        'Conflict: jobs.batch "snakejob-x" already exists; a Job of that name exists and this run did not create it: '
        "kubectl -n ns describe job snakejob-x"
    )
    assert api.read == []
    # The same create sent again (after a 504 whose Job reached the server): the 409 is this run's own Job.
    created = batch.create_namespaced_job("ns", stock_job(gpu=False))
    assert created.metadata.name == "snakejob-x" and api.read == ["snakejob-x"]


class PodListing:
    """A ``CoreV1Api`` whose pod listing answers these pods."""

    def __init__(self, pods) -> None:
        self.pods = pods

    def list_namespaced_pod(self, namespace, **kwargs):
        return kubernetes.client.V1PodList(items=list(self.pods))


def test_a_pod_being_deleted_is_not_listed_next_to_the_jobs_new_pod():
    """jobs.SafeLogCoreApi: the pod Kueue's eviction deletes stays listed while it stops (deletionTimestamp set),
    next to the new pod of the readmitted Job; the kubernetes executor would fail the job on its exit code 143 or
    stop the run on two pods. Only pods not being deleted are listed."""
    from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi

    stopping = kubernetes.client.V1Pod(
        metadata=kubernetes.client.V1ObjectMeta(
            name="job-old", deletion_timestamp=datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)
        )
    )
    new = kubernetes.client.V1Pod(metadata=kubernetes.client.V1ObjectMeta(name="job-new"))
    listed = SafeLogCoreApi(PodListing([stopping, new])).list_namespaced_pod(
        "ns", label_selector="job-name=job"
    )
    assert [pod.metadata.name for pod in listed.items] == ["job-new"]
    alone = SafeLogCoreApi(PodListing([stopping])).list_namespaced_pod("ns", label_selector="job-name=job")
    assert alone.items == []


ZERO_WHY = (
    "requests no {kind}, so Kueue counts nothing of it against the ClusterQueue's quota and the pod is placed as "
    "if it needed none"
)
NOT_A_SIZE = "is not a {kind} size in MB above 0 (the API server refuses a negative quantity)"


@pytest.mark.parametrize(
    "name, value, why, api_says",
    [
        ("mem_mb", 0, ZERO_WHY.format(kind="memory"), []),
        ("disk_mb", 0, ZERO_WHY.format(kind="ephemeral-storage"), []),
        (
            "mem_mb",
            -512,
            NOT_A_SIZE.format(kind="memory"),
            [
                "container snakemake: resources.requests[memory]: Invalid value: '-512M': must be greater than or "
                "equal to 0"
            ],
        ),
        ("mem_mb", "lots", NOT_A_SIZE.format(kind="memory"), ["container snakemake: 'lotsM' is no quantity"]),
    ],
)
def test_a_size_of_0_or_less_stops_naming_the_rule_and_the_resource(tmp_path, name, value, why, api_says):
    """The kubernetes executor writes `mem_mb: 0` as a "0M" memory request, which the API server accepts (so does
    the stand-in) and Kueue counts as nothing against the ClusterQueue's memory quota, and a negative one as
    "-512M", which the API server refuses without naming the rule. This executor refuses both before any Job is
    sent, naming the rule, the resource and where to set it."""
    import snakemake_executor_plugin_kubernetes as kubernetes_plugin
    from snakemake_interface_common.exceptions import WorkflowError

    completion = JobCompletion(queue_name="snakemake")
    executor = kueue_executor(completion)
    with pytest.raises(WorkflowError) as refused:
        job_sent_for({"mem_mb": 2048, name: value}, completion, rule="evaluation_summary", executor=executor)
    assert str(refused.value) == (
        f"rule evaluation_summary: resource {name}={value!r} {why}. Set what the job needs, e.g. under "
        f"set-resources in profiles/k8s/config.yaml: evaluation_summary: {{{name}: 4096}}"
    )
    assert not hasattr(executor.batchapi._api, "sent")
    # The Job the kubernetes executor's own run_job sends for it, unchecked, and what the API server says of it.
    unchecked = kueue_executor(completion)
    job = SimpleNamespace(
        name="evaluation_summary",
        resources={"_cores": 1, "mem_mb": 2048, name: value},
        jobid=1,
        attempt=1,
        is_containerized=False,
    )
    kubernetes_plugin.Executor.run_job(unchecked, job)
    assert api_problems(unchecked.batchapi._api.sent, tmp_path) == api_says


@pytest.mark.parametrize("value", [float("inf"), True], ids=["infinite", "yes"])
def test_a_size_that_is_no_finite_number_stops_naming_the_rule_and_the_resource(value):
    """check_size_requests: mem_mb and disk_mb must be numbers above 0; an infinite one (`.inf` in YAML) or a
    boolean (`mem_mb: yes`) is not a size, whatever float() makes of it."""
    from snakemake_interface_common.exceptions import WorkflowError

    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    with pytest.raises(WorkflowError) as refused:
        job_sent_for({"mem_mb": value}, executor.completion, rule="evaluation_summary", executor=executor)
    assert str(refused.value).startswith(
        f"rule evaluation_summary: resource mem_mb={value!r} {NOT_A_SIZE.format(kind='memory')}. "
    )
    assert not hasattr(executor.batchapi._api, "sent")


def test_the_smallest_size_above_0_is_sent_as_it_is(tmp_path):
    """1 MB (and a quoted "2048", as YAML may give it) is a size the Job requests unchanged: no floor is added."""
    completion = JobCompletion(queue_name="snakemake")
    job = job_sent_for({"mem_mb": 1, "disk_mb": "2048", "scale": 0}, completion)
    assert api_problems(job, tmp_path) == []
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"] == {"cpu": "950m", "memory": "1M", "ephemeral-storage": "2048M"}
    assert resources["limits"] == {"cpu": "1000m", "memory": "1M", "ephemeral-storage": "2048M"}


def api_error(status: int, headers: dict | None = None):
    from kubernetes.client.rest import ApiException

    error = ApiException(status=status, reason="Reason")
    error.headers = headers
    return error


def test_a_busy_server_is_asked_again_after_its_capped_retry_after_or_the_delays_and_a_refusal_is_not(
    monkeypatch,
):
    """README and executor.RETRY_DELAYS_S: a 429 or 5xx is sent again after 1, 2, 4 s, or after the server's
    Retry-After, capped at MAX_RETRY_AFTER_S; a malformed Retry-After falls back to the delay. A refusal (403)
    is raised at its first answer, without waiting."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as module

    waits = []
    monkeypatch.setattr(module.time, "sleep", waits.append)
    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    answers = iter([api_error(429, {"Retry-After": "120"}), api_error(503, {"Retry-After": "soon"}), "done"])

    def call():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert executor._retry_transient(call) == "done"
    assert waits == [module.MAX_RETRY_AFTER_S, 2.0]
    waits.clear()
    answers = iter([api_error(500), api_error(502), api_error(504), "done"])
    assert executor._retry_transient(call) == "done"
    assert waits == [1.0, 2.0, 4.0]
    waits.clear()
    answers = iter([api_error(403), "done"])
    with pytest.raises(Exception) as refused:
        executor._retry_transient(call)
    assert refused.value.status == 403 and waits == []


class FailingStatusReads:
    """A ``BatchV1Api`` whose status reads of each Job raise that Job's error."""

    def __init__(self, errors: dict) -> None:
        self.errors = errors

    def read_namespaced_job_status(self, name, namespace, **kwargs):
        raise self.errors[name]


def status_check(executor, names: list[str]) -> tuple[list[str], dict[str, str]]:
    """One status check of these Jobs: the names yielded (kept active), and the messages of those failed."""
    import asyncio
    import contextlib

    failed = {}
    executor.status_rate_limiter = contextlib.nullcontext()
    executor.report_job_error = lambda job, msg=None, **kwargs: failed.setdefault(job.external_jobid, msg)
    jobs = [SimpleNamespace(external_jobid=name) for name in names]

    async def check():
        return [job.external_jobid async for job in executor.check_active_jobs(jobs)]

    return asyncio.run(check()), failed


def test_a_job_whose_status_read_failed_is_kept_when_busy_and_failed_with_the_reason_otherwise():
    """README: a job whose status cannot be read stays watched instead of being lost (the kubernetes executor
    skips it without a word), a deleted Job (404) fails its job, and a refusal fails it with the fix: for a 401,
    that the credentials were refused also after loading them again."""
    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    executor.batchapi = FailingStatusReads(
        {
            "busy": api_error(503),
            "deleted": api_error(404),
            "refused": api_error(401),
            "denied": api_error(403),
        }
    )
    kept, failed = status_check(executor, ["busy", "deleted", "refused", "denied"])
    assert kept == ["busy"]
    assert failed["deleted"].startswith(
        "kubernetes-kueue: Job snakemake/deleted no longer exists (HTTP 404): it was deleted before it finished"
    )
    assert failed["refused"] == (
        "kubernetes-kueue: reading the status of Job snakemake/refused failed with HTTP 401 Reason: ; the cluster "
        "refused the kubeconfig's credentials, also after loading them again: renew them (`az aks get-credentials "
        "-g <group> -n <cluster>`, `kubectl config current-context`). The Job may still run: kubectl -n snakemake "
        "delete job refused"
    )
    assert (
        "; the driver needs get on jobs/status in namespace 'snakemake' (profiles/k8s/rbac.yaml). "
        in (failed["denied"])
    )
    assert set(failed) == {"deleted", "refused", "denied"}
    assert executor.batchapi.status_errors == {}


class LocalQueueList:
    """A ``CustomObjectsApi`` whose LocalQueue list answers ``answer`` (an exception is raised), counting reads."""

    def __init__(self, answer) -> None:
        self.answer, self.reads = answer, 0
        self.api_client = SimpleNamespace(configuration=SimpleNamespace(host="https://aks.example:443"))

    def __call__(self):
        return self

    def list_namespaced_custom_object(self, group, version, namespace, plural, **kwargs):
        assert (group, version, plural) == ("kueue.x-k8s.io", "v1beta2", "localqueues")
        self.reads += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return {"items": list(self.answer)}


def test_jobs_kueue_keeps_suspended_are_reported_after_10_minutes_with_one_queue_read_and_not_again_at_once(
    monkeypatch,
):
    """README: a Job Kueue has not admitted for ADMISSION_WAIT_REPORT_S is reported, with what the LocalQueue's
    state says (one LocalQueue read per status check), and again only after as long; a LocalQueue deleted
    meanwhile is said to admit nothing."""
    import time

    queues = LocalQueueList([local_queue(active("True", "Ready", "Can submit new workloads"))])
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", queues)
    warnings = []
    executor = kueue_executor(JobCompletion(queue_name="snakemake"), warnings)
    long_ago = time.monotonic() - 700
    executor.batchapi.suspended_since.update({"a": long_ago, "b": long_ago, "new": time.monotonic()})
    jobs = [SimpleNamespace(external_jobid=name) for name in ("a", "b", "new")]
    executor._report_long_admission_waits(jobs)
    assert [warning.split(" has waited ")[0] for warning in warnings] == [
        "kubernetes-kueue: Job snakemake/a",
        "kubernetes-kueue: Job snakemake/b",
    ]
    assert "The LocalQueue snakemake/snakemake is active: other Jobs hold the quota" in warnings[0]
    assert queues.reads == 1
    executor._report_long_admission_waits(jobs)
    assert len(warnings) == 2 and queues.reads == 1
    queues.answer = []
    executor.batchapi.admission_reported["a"] = long_ago
    executor._report_long_admission_waits(jobs)
    assert len(warnings) == 3
    assert "The LocalQueue snakemake/snakemake no longer exists, so Kueue admits nothing." in warnings[2]


class WorkloadList:
    """A ``CustomObjectsApi`` whose Workload list answers these Workloads, keeping the label selectors asked; its
    answer's Date header is ``server_now`` (the API server's clock), the time of the call when None."""

    def __init__(self, workloads: list[dict], server_now: datetime.datetime | None = None) -> None:
        self.workloads, self.selectors, self.server_now = workloads, [], server_now

    def __call__(self):
        return self

    def list_namespaced_custom_object(self, group, version, namespace, plural, label_selector=None, **kwargs):
        assert (group, version, namespace, plural) == ("kueue.x-k8s.io", "v1beta2", "snakemake", "workloads")
        self.selectors.append(label_selector)
        return {"items": self.workloads}

    def list_namespaced_custom_object_with_http_info(self, *args, **kwargs):
        now = self.server_now or datetime.datetime.now(datetime.UTC)
        date = now.strftime("%a, %d %b %Y %H:%M:%S GMT")  # an HTTP date, as the API server writes it
        return self.list_namespaced_custom_object(*args, **kwargs), 200, {"Date": date}


@pytest.mark.parametrize("driver_ahead_h", [-25.0, 25.0])
@pytest.mark.parametrize("requeue_in_min", [-1.0, 5.0])
def test_a_waitforpodsready_backoff_is_told_by_the_api_servers_clock_whatever_the_drivers(
    monkeypatch, driver_ahead_h, requeue_in_min
):
    """Kueue writes status.requeueState.requeueAt by the API server's clock: the back-off report is said while
    requeueAt is ahead of the server's time (the Date of the Workload list's answer, carried on by the driver's
    monotonic clock), and not once it passed, with the driver's wall clock a day ahead of the server's or behind
    it (it was compared with the driver's own clock, so a driver ahead took a 5-minute back-off for over and
    blamed the quota, and one behind said a requeue time long past)."""
    from snakemake_executor_plugin_kubernetes_kueue import executor as executor_module

    server_now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=driver_ahead_h)
    requeue_at = (server_now + datetime.timedelta(minutes=requeue_in_min)).strftime("%Y-%m-%dT%H:%M:%SZ")
    held = workload(("Requeued", "False", "PodsReadyTimeout", "Exceeded the PodsReady timeout"))
    held["status"]["requeueState"] = {"count": 1, "requeueAt": requeue_at}
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", WorkloadList([held], server_now))
    queues = {"snakemake": local_queue(active("True", "Ready", "Can submit new workloads"))}
    monkeypatch.setattr(executor_module.KueueExecutor, "_local_queues", lambda self, namespace: queues)
    monkeypatch.setattr(executor_module, "ADMISSION_WAIT_REPORT_S", 0.0)
    warnings = []
    executor = kueue_executor(JobCompletion(queue_name="snakemake"), warnings)
    executor.batchapi.suspended_since["job-x"] = time.monotonic() - 700
    executor.batchapi.job_uids["job-x"] = "uid-1"
    jobs = [SimpleNamespace(external_jobid="job-x")]
    assert executor._review_workloads(jobs) == jobs
    executor._report_long_admission_waits(jobs)
    assert len(warnings) == 1, warnings
    in_backoff = f"Requeue 1 of its Workload: Kueue requeues it at {requeue_at} (status.requeueState)"
    if requeue_in_min > 0:
        assert "in waitForPodsReady's back-off, not waiting for quota" in warnings[0]
        assert in_backoff in warnings[0]
    else:  # passed on the server: Kueue requeues it, and the Job waits for quota
        assert "Kueue to admit it from LocalQueue snakemake" in warnings[0] and in_backoff not in warnings[0]


def workload(*conditions: tuple[str, str, str, str]) -> dict:
    return {
        "metadata": {"name": "job-x-1a2b3", "labels": {"kueue.x-k8s.io/job-uid": "uid-1"}},
        "status": {
            "conditions": [
                {"type": kind, "status": status, "reason": reason, "message": message}
                for kind, status, reason, message in conditions
            ]
        },
    }


@pytest.mark.parametrize(
    "conditions, reason, message",
    [
        (
            [
                ("Evicted", "True", "Preempted", "Preempted to accommodate a workload (UID: w1)"),
                ("Preempted", "True", "InClusterQueue", "Preempted to accommodate a workload (UID: w1)"),
            ],
            "Preempted (InClusterQueue)",
            "Preempted to accommodate a workload (UID: w1)",
        ),
        (  # admitted again since: Evicted is reset, Requeued keeps the eviction's reason and message
            [
                ("Evicted", "False", "", ""),
                ("Preempted", "False", "", ""),
                ("Requeued", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout"),
            ],
            "PodsReadyTimeout",
            "Exceeded the PodsReady timeout",
        ),
    ],
)
def test_an_eviction_is_logged_once_with_its_workloads_reason_and_message(
    monkeypatch, conditions, reason, message
):
    """README: a Job Kueue evicts or preempts stays active; the eviction is logged once, with the reason and
    message of the Workload Kueue labels with the Job's uid (and the preemption's reason when it preempted)."""
    other = {
        **workload(("Evicted", "True", "Other", "another Job's eviction")),
        "metadata": {"name": "job-y-9z8y7"},
    }
    workloads = WorkloadList([other, workload(*conditions)])
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", workloads)
    warnings = []
    executor = kueue_executor(JobCompletion(queue_name="snakemake"), warnings)
    executor.batchapi.taken_back["job-x"] = False
    executor.batchapi.job_uids["job-x"] = "uid-1"
    jobs = [SimpleNamespace(external_jobid="job-x")]
    assert executor._review_workloads(jobs) == jobs
    assert executor._review_workloads(jobs) == jobs
    # A PodsReadyTimeout says what Kueue's timeout means for the pod; a preemption's reason says it already.
    cause = (
        ": its pod was not ready within Kueue's waitForPodsReady.timeout (a pod no node can hold, an image or a "
        "volume it waits for, a slow start)"
        if reason == "PodsReadyTimeout"
        else ""
    )
    assert warnings == [
        f"kubernetes-kueue: Kueue evicted Job snakemake/job-x (Workload job-x-1a2b3, reason {reason}: {message})"
        f"{cause}. Its pod was stopped; the Job runs again from its start once Kueue admits it again, and Snakemake does not "
        "count this as a failure; `kubectl -n snakemake describe workload job-x-1a2b3` shows its conditions"
    ]
    assert workloads.selectors == [
        None
    ]  # one list of the namespace's Workloads, found by their job-uid label


class ServiceAccountRead:
    """A ``CoreV1Api`` whose ServiceAccount reads answer ``answer`` (an exception is raised)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def __call__(self):
        return self

    def read_namespaced_service_account(self, name, namespace, **kwargs):
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def cluster_check(monkeypatch, queues, account=None, **settings) -> str | None:
    """The message of the SettingError the cluster checks stop with for this cluster, or None when they pass."""
    monkeypatch.setattr(kubernetes.client, "CustomObjectsApi", LocalQueueList(queues))
    monkeypatch.setattr(kubernetes.client, "CoreV1Api", ServiceAccountRead(account))
    executor = executor_before_the_cluster([])
    try:
        executor._check_cluster_objects(local_settings(**settings))
    except SettingError as error:
        return str(error)
    return None


def test_a_missing_or_inactive_local_queue_or_a_cluster_without_kueue_stops_the_run_before_any_job(
    monkeypatch,
):
    """README: a LocalQueue must exist and be active; the unset namespace ('default', the kubernetes executor's)
    is named as the likely cause; a cluster that does not serve Kueue's API (404) is told to install Kueue."""
    assert cluster_check(monkeypatch, [local_queue()]) is None
    missing = cluster_check(monkeypatch, [], queue_name="team")
    assert missing.startswith(
        "kubernetes-kueue-queue-name: Kueue LocalQueue 'team' does not exist in namespace 'snakemake'; Kueue would "
        "leave every Job suspended. Existing LocalQueues: none."
    )
    assert "Note:" not in missing
    in_default = cluster_check(monkeypatch, [local_queue()], queue_name="team", namespace="default")
    assert "Existing LocalQueues: ['snakemake']" in in_default
    assert (
        "Note: kubernetes-kueue-namespace is 'default', the kubernetes executor's default when it is not set"
        in (in_default)
    )
    stopped = cluster_check(monkeypatch, [local_queue(active("False", "Stopped", "LocalQueue is stopped"))])
    assert stopped.startswith("kubernetes-kueue-queue-name: Kueue LocalQueue snakemake/snakemake is inactive")
    no_kueue = cluster_check(monkeypatch, api_error(404))
    assert no_kueue.startswith("the cluster does not serve kueue.x-k8s.io/v1beta2: install Kueue")
    denied = cluster_check(monkeypatch, api_error(403))
    assert denied.startswith(
        "kubernetes-kueue: reading localqueues in namespace 'snakemake' failed with HTTP 403"
    )
    assert denied.endswith("the driver needs get/list on localqueues (profiles/k8s/rbac.yaml)")


def test_workload_identitys_service_account_must_exist_and_carry_a_real_client_id_before_any_job(monkeypatch):
    def account(client_id):
        return kubernetes.client.V1ServiceAccount(
            metadata=kubernetes.client.V1ObjectMeta(
                annotations={"azure.workload.identity/client-id": client_id}
            )
        )

    identity = dict(workload_identity=True, service_account_name="snakemake-jobs")
    assert cluster_check(monkeypatch, [local_queue()], account("abc"), **identity) is None
    placeholder = cluster_check(monkeypatch, [local_queue()], account(PLACEHOLDER_CLIENT_ID), **identity)
    assert placeholder.startswith(
        "kubernetes-kueue-service-account-name: ServiceAccount snakemake/snakemake-jobs still carries the placeholder"
    )
    missing = cluster_check(monkeypatch, [local_queue()], api_error(404), **identity)
    assert missing.startswith(
        "kubernetes-kueue-service-account-name: ServiceAccount 'snakemake-jobs' does not exist in namespace "
        "'snakemake'"
    )


def test_re_authenticating_keeps_what_the_wrapper_knows_of_the_runs_jobs_and_sends_the_call_again(
    monkeypatch,
):
    """After a 401 the credentials are loaded again and the call is sent again through new clients; the Jobs
    this run sent (a later 409 is its own), their suspension and eviction records stay."""
    executor = kueue_executor(JobCompletion(queue_name="snakemake"))
    loads = []
    executor._load_credentials = lambda: loads.append(1)
    wrapper = executor.batchapi
    wrapper.suspended_since["a"] = 1.0
    assert executor._reauthenticate_and_retry(lambda: "answer") == "answer"
    assert loads == [1]
    assert executor.batchapi is wrapper and wrapper.suspended_since == {"a": 1.0}
    assert isinstance(wrapper._api, kubernetes.client.BatchV1Api)
    assert isinstance(executor.kubeapi._api, kubernetes.client.CoreV1Api)


def test_credentials_come_from_the_kubeconfig_else_the_in_cluster_service_account(monkeypatch):
    """A driver inside the cluster has no kubeconfig: the in-cluster service account is used; with neither, the
    run stops saying where credentials come from."""
    import kubernetes.config
    from snakemake_interface_common.exceptions import WorkflowError

    def missing():
        raise kubernetes.config.ConfigException("Invalid kube-config file. No configuration found.")

    loaded = []
    monkeypatch.setattr(kubernetes.config, "load_kube_config", missing)
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", lambda: loaded.append("in-cluster"))
    executor = executor_before_the_cluster([])
    executor._load_credentials()
    assert loaded == ["in-cluster"]
    monkeypatch.setattr(kubernetes.config, "load_incluster_config", missing)
    with pytest.raises(
        WorkflowError, match=r"^kubernetes-kueue: no cluster credentials: neither a kubeconfig"
    ):
        executor._load_credentials()


def test_the_plugins_settings_pods_do_not_install_the_storage_plugin_and_the_queue_is_required():
    """__init__: pods do not pip-install the storage plugin (the image carries it); otherwise the kubernetes
    executor's common settings. The queue name is required; workload identity is off unless set."""
    import dataclasses

    import snakemake_executor_plugin_kubernetes as kubernetes_plugin
    import snakemake_executor_plugin_kubernetes_kueue as plugin

    assert plugin.common_settings.auto_deploy_default_storage_provider is False
    assert dataclasses.replace(plugin.common_settings, auto_deploy_default_storage_provider=True) == (
        dataclasses.replace(kubernetes_plugin.common_settings, auto_deploy_default_storage_provider=True)
    )
    fields = {f.name: f for f in dataclasses.fields(plugin.ExecutorSettings)}
    assert fields["queue_name"].metadata["required"] is True
    settings = plugin.ExecutorSettings(queue_name="snakemake")
    assert settings.workload_identity is False and settings.env == [] and settings.secret_volumes == []


@pytest.mark.parametrize(
    "active, conditions, expected",
    [
        (  # Kueue 0.19 after backoffLimitCount: spec.active false, then the eviction
            False,
            [
                (
                    "Evicted",
                    "True",
                    "DeactivatedDueToRequeuingLimitExceeded",
                    "The workload is deactivated due to exceeding the maximum number of re-queuing retries",
                )
            ],
            "reason DeactivatedDueToRequeuingLimitExceeded: The workload is deactivated due to exceeding the maximum "
            "number of re-queuing retries), so it never admits the Job again, which would stay suspended for ever: "
            "its pods were not all ready within Kueue's waitForPodsReady.timeout",
        ),
        (  # read between Kueue's spec.active update and its eviction: DeactivationTarget says why
            False,
            [
                (
                    "DeactivationTarget",
                    "True",
                    "MaximumExecutionTimeExceeded",
                    "exceeding the maximum execution time",
                )
            ],
            "reason DeactivatedDueToMaximumExecutionTimeExceeded: The workload is deactivated due to exceeding the "
            "maximum execution time), so it never admits the Job again, which would stay suspended for ever: it ran "
            "longer than its label kueue.x-k8s.io/max-exec-time-seconds allows",
        ),
        # reactivated (spec.active true again): Evicted keeps the deactivation until the readmission, which comes
        (True, [("Evicted", "True", "Deactivated", "The workload is deactivated")], None),
        (None, [("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout")], None),
    ],
)
def test_a_deactivated_workload_is_told_from_its_spec_and_named_with_kueues_reason(
    active, conditions, expected
):
    from snakemake_executor_plugin_kubernetes_kueue.evictions import deactivation_report, hold_report

    found = {**workload(*conditions), **({} if active is None else {"spec": {"active": active}})}
    report = deactivation_report("snakemake", "job-x", found)
    if expected is None:
        assert report is None
        return
    assert report.startswith(
        "kubernetes-kueue: Kueue deactivated the Workload job-x-1a2b3 of Job snakemake/job-x (" + expected
    )
    assert report.endswith("`kubectl -n snakemake describe workload job-x-1a2b3` shows its conditions")
    assert hold_report("snakemake", "job-x", found) is None  # Kueue's own: the job fails, it is no hold


@pytest.mark.parametrize(
    "conditions",
    [
        [],  # someone's kubectl patch, read before Kueue's eviction (no DeactivationTarget: not Kueue's)
        [("Evicted", "True", "Deactivated", "The workload is deactivated")],  # Kueue's eviction for it
        # an earlier eviction's reason, not yet replaced by the deactivation's
        [("Evicted", "True", "PodsReadyTimeout", "Exceeded the PodsReady timeout")],
    ],
)
def test_a_workload_deactivated_by_hand_is_a_hold_not_a_failure(conditions):
    """kubectl patch workload ... spec.active=false holds the Job on purpose: Kueue evicts it with the plain reason
    Deactivated (its own deactivations are DeactivatedDueTo<cause>, after a DeactivationTarget). k8s5 failed the job,
    so the operator lost it; now it is a hold, told with how to release it."""
    from snakemake_executor_plugin_kubernetes_kueue.evictions import deactivation_report, hold_report

    found = {**workload(*conditions), "spec": {"active": False}}
    assert deactivation_report("snakemake", "job-x", found) is None
    assert hold_report("snakemake", "job-x", found) == (
        "kubernetes-kueue: the Workload job-x-1a2b3 of Job snakemake/job-x is held: someone deactivated it (spec.active "
        "false, reason Deactivated: The workload is deactivated), so Kueue does not admit the Job; the Job waits "
        "suspended. Release it with `kubectl -n snakemake patch workload job-x-1a2b3 --type merge -p "
        """'{"spec":{"active":true}}'`, or cancel the run to give it up"""
    )
    assert hold_report("snakemake", "job-x", {**found, "spec": {"active": True}}) is None


def test_a_pod_waiting_container_creating_is_held_stuck_only_while_the_kubelet_keeps_failing_to_mount(
    monkeypatch,
):
    """mounts.MountWatch: ContainerCreating is also what a slow image pull shows, so only the kubelet's FailedMount
    events that name a cause make it stuck; its timeout summary does not. Events are read only after CONTAINER_CREATING_CHECK_S, and at most that often. At the
    give-up, a FailedMount the kubelet has not recorded again for MOUNT_RETRY_S (the object was created) no longer
    holds the pod stuck."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_kubernetes_kueue import mounts

    clock = [1000.0]
    monkeypatch.setattr(mounts.time, "monotonic", lambda: clock[0])
    missing = 'MountVolume.SetUp failed for volume "ca" : configmap "cluster-ca" not found'
    events, reads = [], []

    def event(message, count):
        return SimpleNamespace(message=message, count=count, last_timestamp=f"2026-01-01T00:00:{count:02d}Z",
                               event_time=None)  # fmt: skip

    def list_namespaced_event(namespace, field_selector):
        reads.append(field_selector)
        return SimpleNamespace(items=list(events))

    api = SimpleNamespace(list_namespaced_event=list_namespaced_event)
    watch = mounts.MountWatch()
    assert watch.note(api, "ns", "job", "pod-1") is None and reads == []  # first seen: no read
    clock[0] += mounts.CONTAINER_CREATING_CHECK_S - 1
    assert watch.note(api, "ns", "job", "pod-1") is None and reads == []  # a normal start: still no read
    events.append(event("Unable to attach or mount volumes: unmounted volumes=[ca]: timed out waiting", 1))
    clock[0] += 1
    assert watch.note(api, "ns", "job", "pod-1") is None
    assert reads == [
        "involvedObject.kind=Pod,involvedObject.name=pod-1,type=Warning"
    ]  # FailedAttachVolume too
    events.append(event(missing, 3))
    clock[0] += 1
    assert (
        watch.note(api, "ns", "job", "pod-1") is None and len(reads) == 1
    )  # read at most once a check period
    clock[0] += mounts.CONTAINER_CREATING_CHECK_S
    assert watch.note(api, "ns", "job", "pod-1") == missing and len(reads) == 2
    clock[0] += mounts.MOUNT_RETRY_S - 10
    events[-1] = event(missing, 4)  # the kubelet tried again
    assert watch.still_failing(api, "ns", "job", "pod-1") is True
    clock[0] += mounts.MOUNT_RETRY_S  # no FailedMount since: the ConfigMap exists now
    assert watch.still_failing(api, "ns", "job", "pod-1") is False
    assert watch.note(api, "ns", "job", "pod-1") is None
    watch.forget("job")
    assert watch.note(api, "ns", "job", "pod-2") is None  # another pod: its own clock


@pytest.mark.parametrize(
    "message, kind",
    [
        ('MountVolume.SetUp failed for volume "ca" : secret "cluster-ca" not found', "mount"),
        ('MountVolume.SetUp failed for volume "ca" : configmap "cluster-ca" not found', "mount"),
        (
            'MountVolume.SetUp failed for volume "ca" : references non-existent secret key: tls.crt',
            "mount-key",
        ),
        (
            'MountVolume.SetUp failed for volume "ca" : configmap references non-existent config key: x',
            "mount-key",
        ),
        (
            'MountVolume.MountDevice failed for volume "pvc-1" : rpc error: code = Internal desc = volume(rg#acct#'
            "share) mount //acct.file.core.windows.net/share on /var/lib/kubelet/plugins failed with mount failed: "
            "exit status 32\nmount error(13): Permission denied",
            "mount-driver",
        ),
        (
            'MountVolume.MountDevice failed for volume "pvc-2" : kubernetes.io/csi: attacher.MountDevice failed to '
            "create newCsiDriverClient: driver name blob.csi.azure.com not found in the list of registered CSI drivers",
            "mount-driver",
        ),
        ("Unable to attach or mount volumes: unmounted volumes=[ca], unattached volumes=[]: timed out", None),
        (
            'AttachVolume.Attach failed for volume "pvc-3" : rpc error: code = NotFound desc = Volume not found, '
            "failed with error: Retriable: false, RetryAfter: 0s, HTTPStatusCode: 404",
            "attach",
        ),
        (
            'AttachVolume.Attach failed for volume "pvc-4" : timed out waiting for external-attacher of '
            "disk.csi.azure.com CSI driver to attach volume /subscriptions/s/disks/pvc-4",
            "attach",
        ),
        # Another pod on another node holds the ReadWriteOnce disk: that resolves once it ends, not a stuck pod (it is
        # warned of after kubernetes-kueue-multi-attach-warning minutes: mounts.MULTI_ATTACH).
        ('Multi-Attach error for volume "pvc-5" Volume is already used by pod(s) other-pod', None),
    ],
)
def test_each_failed_mount_is_told_apart_by_the_fix_it_needs(message, kind):
    """The kubelet's FailedMount messages (operation_generator.go: operation, volume, the plugin's error): a missing
    object, a missing key of its items, and any driver's error (CSI: Azure File, Blob) each get their own fix; the
    timeout summary names no cause. k8s6 recognised only the first: the others waited ContainerCreating in silence."""
    from snakemake_executor_plugin_kubernetes_kueue import mounts
    from snakemake_executor_plugin_kubernetes_kueue.jobs import STUCK_CONTAINER_FIX_TEXT

    assert mounts.mount_failure_kind(message) == kind
    assert kind is None or kind in STUCK_CONTAINER_FIX_TEXT
    # The attach/detach controller's failures come as FailedAttachVolume events, the kubelet's as FailedMount.
    expected = "FailedAttachVolume" if kind == "attach" else "FailedMount"
    assert mounts.volume_failure_reason(message) == expected


@pytest.mark.parametrize(
    "message, claim",
    [
        (
            '0/3 nodes are available: persistentvolumeclaim "data" not found. preemption: 0/3 nodes are '
            "available: 3 Preemption is not helpful for scheduling.",
            True,
        ),
        ('0/3 nodes are available: persistentvolumeclaim "data" is being deleted. preemption: ...', True),
        (
            "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption "
            "victims found for incoming pod.",
            False,
        ),
    ],
)
def test_a_pod_unschedulable_for_its_claim_is_stuck_not_waiting_for_a_node(message, claim):
    """kube-scheduler's volumebinding PreFilter fails a pod whose PersistentVolumeClaim is missing (or being deleted,
    or lost its volume): no node or autoscaler cures that, so it is a stuck pod (FailedScheduling, fix "claim"), not
    one of the unschedulable pods UnschedulableWatch gives an autoscaler time for."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_kubernetes_kueue import pending
    from snakemake_executor_plugin_kubernetes_kueue.jobs import SafeLogCoreApi

    condition = SimpleNamespace(type="PodScheduled", status="False", reason="Unschedulable", message=message)
    pod = SimpleNamespace(
        metadata=SimpleNamespace(name="pod-1"),
        status=SimpleNamespace(conditions=[condition], container_statuses=None),
        spec=SimpleNamespace(containers=[]),
    )
    assert (pending.missing_claim(pod) == message) is claim
    watch = pending.UnschedulableWatch()
    watch.note("job", [pod])
    assert ("job" in watch.pods) is not claim
    core = SafeLogCoreApi(SimpleNamespace())
    core._note_stuck_container("ns", "job", [pod])
    stuck = core.stuck_containers.get("job")
    assert (stuck is not None and (stuck.reason, stuck.message) == ("FailedScheduling", message)) is claim
    if claim:
        assert "create the claim (kubectl -n ns get pvc)" in stuck.describe("ns", "job", "cannot start")
