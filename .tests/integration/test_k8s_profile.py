"""Contract tests of profiles/k8s and its kubernetes-kueue executor, without a cluster.

The real profile drives the real executor against a loopback stand-in for the Kubernetes API, kubelet and
Kueue (k8s/apistandin.py): it validates every Job against the Kubernetes 1.33 OpenAPI schema, admits only
Jobs labelled with an existing, active LocalQueue, runs each pod's command for real, reports failed pods as
the API does and answers `previous=true` log reads with the real HTTP 400. Data live in Azurite (except for
the storage-account test, which runs as on a real driver, without it). Test-only overrides
on the command line: the kubeconfig (stand-in), the storage prefix (a fresh container), polling intervals,
and --config oom_below_mb (the tiny pipeline's first make_table attempt is OOM-killed). The pods' Azure
credential comes from the stand-in's workload-identity webhook, never from a Kubernetes Secret.
Not proven here: scheduling, image pulls, RBAC, Kueue's quota per flavor and GPU device plugins.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import QUEUE_LABEL, WORKLOAD_IDENTITY_LABEL, ApiStandIn  # noqa: E402
from harness import (  # noqa: E402
    K8S_PROFILE,
    KUEUE_MANIFESTS,
    TINY_OUTPUTS,
    TINY_SNAKEFILE,
    assert_no_secrets_in_tree,
    azurite,  # noqa: F401 - fixture
    find_secrets,
    k8s_profile,
    make_workspace,
    pod_path,
    profile_manifests,
    snakemake_command,
    unique_container,
    workspace,  # noqa: F401 - fixture
)
from snakemake_executor_plugin_kubernetes_kueue.checks import SUPPORTED_KUEUE  # noqa: E402
from testkit import REPO, run_snakemake  # noqa: E402

GPU_RULE = "kd_gat_train_vgae_teacher"  # the tiny pipeline's rule carrying a real GPU rule name
OOM_BELOW_MB = 3000  # make_table's first attempt gets 2048 MB: killed; the retry gets 4096 MB
ADMIT_DELAY = 2
# Cases of test_a_wrong_setting_stops_the_run_before_any_job that apply only part of kueue/ (default: all).
PARTIAL_KUEUE = {
    "queue without its cluster queue": ("kueue/resourceflavors.yaml", "kueue/localqueue.yaml"),
    "queue of an inactive cluster queue": ("kueue/clusterqueue.yaml", "kueue/localqueue.yaml"),
}


def applied_objects(client_id: str | None = None, kueue: tuple[str, ...] = KUEUE_MANIFESTS) -> list[dict]:
    """What `kubectl apply` puts in the cluster before a run: Kueue's flavors and queues and the Job pods'
    ServiceAccount, annotated with a (made-up) identity's client id as the README tells the user to."""
    objects = profile_manifests(*kueue, "serviceaccount.yaml")
    for document in objects:
        if document["kind"] == "ServiceAccount" and client_id is not None:
            document["metadata"]["annotations"]["azure.workload.identity/client-id"] = client_id
    return objects


def new_standin(tmp_path: Path, azurite, **options) -> ApiStandIn:  # noqa: F811
    # What the workload identity grants a pod; Azurite cannot check an Entra token, so it is the emulator's key.
    identity = {"AZURITE_CONNECTION_STRING": azurite.connection_string}
    return ApiStandIn(
        pods_root=tmp_path / "pods", pod_path=pod_path(), identity_env=identity, **options
    ).start()


def run_profile(api: ApiStandIn, azurite, workspace: Path, container: str, *args: str, env=None):  # noqa: F811
    kubeconfig = api.write_kubeconfig(
        workspace.parent / "kubeconfig.yaml", k8s_profile()["kubernetes-kueue-namespace"]
    )
    started = time.monotonic()
    proc = run_snakemake(
        "--profile",
        str(K8S_PROFILE),
        "--snakefile",
        TINY_SNAKEFILE,
        "--default-storage-prefix",
        f"az://{container}/k8s",
        "--latency-wait",
        "5",
        "--seconds-between-status-checks",
        "1",
        "--config",
        f"oom_below_mb={OOM_BELOW_MB}",
        *args,
        cwd=workspace,
        env={
            # The driver's own storage access (on AKS: az login); pods get theirs from workload identity.
            **azurite.env(),
            "KUBECONFIG": str(kubeconfig),
            # The profile forwards it; an unreachable placeholder proves it reaches the pods' Secret.
            "DASK_SCHEDULER_ADDRESS": "tls://dask-scheduler.snakemake.svc.cluster.local:8786",
            **(env or {}),
        },
        timeout=420,
        check=False,
    )
    return proc, time.monotonic() - started


def _secret_values(azurite) -> tuple[str, str]:  # noqa: F811
    return azurite.connection_string, azurite.connection_string.split("AccountKey=")[1].split(";")[0]


def _pod(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def _command(job: dict) -> str:
    return _pod(job)["containers"][0]["args"][-1]


def evict_first_pod_of(api: ApiStandIn, rule: str, seconds: float = 300) -> None:
    """Evict the first pod of ``rule`` one second after it starts, as a node under memory pressure would."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with api._lock:
            started = [n for n, r in api.jobs.items() if r.pod is not None and rule in _command(r.manifest)]
        if started:
            time.sleep(1)
            api.evict(started[0])
            return
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.azurite
def test_k8s_profile_retries_failed_and_evicted_jobs_and_completes(tmp_path, azurite, workspace):  # noqa: F811
    profile = k8s_profile()
    api = new_standin(tmp_path, azurite, admit_delay=ADMIT_DELAY, max_running=2)
    api.add_objects(applied_objects(client_id=str(uuid.uuid4())))
    container = unique_container("k8s")
    evictor = threading.Thread(target=evict_first_pod_of, args=(api, GPU_RULE), daemon=True)
    evictor.start()
    try:
        proc, elapsed = run_profile(api, azurite, workspace, container)
        evictor.join(timeout=5)
        pod_logs = api.pod_logs()
        assert proc.returncode == 0, proc.stdout[-6000:] + "\n".join(log[-2000:] for log in pod_logs.values())
        assert not api.rejected, api.rejected
    finally:
        api.stop()

    # Kueue: every Job carried the profile's queue, was suspended until admitted, within the quota of 2 pods.
    assert api.namespaces == {profile["kubernetes-kueue-namespace"]}
    assert elapsed >= ADMIT_DELAY and api.max_seen_running <= 2
    by_rule: dict[str, list[dict]] = {}
    for job in api.submitted:
        rules = [
            r
            for r in ("make_table", GPU_RULE, "evaluation_evaluate_teacher")
            if f"'{r}'" in _command(job) or f" {r} " in _command(job)
        ]
        by_rule.setdefault(rules[0] if rules else _command(job)[-200:], []).append(job)
    assert {rule: len(jobs) for rule, jobs in by_rule.items()} == {
        "make_table": 2,  # the OOM-killed first attempt, then the retry
        GPU_RULE: 2,  # the evicted first attempt, then the retry
        "evaluation_evaluate_teacher": 1,  # the evaluation group: two evaluations and the summary, one pod
    }, list(by_rule)
    for job in api.submitted:
        pod, (spec,) = _pod(job), _pod(job)["containers"]
        assert job["metadata"]["labels"][QUEUE_LABEL] == profile["kubernetes-kueue-queue-name"]
        # Created suspended (Kueue's webhook), then admitted: unsuspended, with a pod.
        record = api.jobs[job["metadata"]["name"]]
        assert record.admitted and record.pod is not None and record.manifest["spec"]["suspend"] is False
        assert job["spec"]["template"]["metadata"]["labels"][WORKLOAD_IDENTITY_LABEL] == "true"
        assert pod["serviceAccountName"] == profile["kubernetes-kueue-service-account-name"]
        # The image carries the storage plugin: pods pip-install nothing, so they need no package index.
        assert "pip install" not in spec["args"][-1]
        env = {e["name"]: e.get("value") for e in spec["env"]}
        for item in profile["kubernetes-kueue-env"]:
            name, value = item.split("=", 1)
            assert env[name] == value
        (mount,) = [m for m in spec["volumeMounts"] if m["name"] != "workdir"]
        assert f"dask-tls:{mount['mountPath']}" in profile["kubernetes-kueue-secret-volumes"]
        requests = spec["resources"]["requests"]
        assert requests["memory"].endswith("M") and int(requests["memory"][:-1]) >= 2048
        assert requests["ephemeral-storage"].endswith("M")
        gpu = "nvidia.com/gpu" in requests
        assert spec["image"] == profile["kubernetes-kueue-gpu-container-image" if gpu else "container-image"]
        if gpu:
            # One GPU each: the evaluation group's members run one after another on it (gpu scope local).
            assert spec["resources"]["limits"]["nvidia.com/gpu"] == requests["nvidia.com/gpu"] == "1"
            toleration = {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            }
            assert toleration in pod["tolerations"]
    assert (
        "nvidia.com/gpu"
        not in by_rule["make_table"][0]["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]
    )

    # The retry: attempt-scaled memory, after a pod the API reported as OOMKilled; its log was read without
    # previous=true (which the API answers with 400 for a container that never restarted).
    first, retry = by_rule["make_table"]
    assert _pod(first)["containers"][0]["resources"]["requests"]["memory"] == "2048M"
    assert _pod(retry)["containers"][0]["resources"]["requests"]["memory"] == "4096M"
    (killed,) = api.pod_objects(first["metadata"]["name"], removed_too=True)
    assert killed["status"]["phase"] == "Failed"
    assert killed["status"]["containerStatuses"][0]["state"]["terminated"]["reason"] == "OOMKilled"
    assert killed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137
    reads = [r for r in api.log_requests if r["pod"] == killed["metadata"]["name"]]
    assert reads and all(r.get("previous", "false").lower() == "false" for r in reads), reads

    # The evicted pod, reported as the kubelet reports it, failed its job, which ran again.
    (evicted,) = api.pod_objects(by_rule[GPU_RULE][0]["metadata"]["name"], removed_too=True)
    assert (evicted["status"]["phase"], evicted["status"]["reason"]) == ("Failed", "Evicted")

    # One Secret per run, deleted at the end, holding names only: no storage credential travels in it.
    assert api.secrets == {}, "the run's Secret was not deleted"
    (secret_keys,) = api.secret_keys.values()
    assert secret_keys == {"dask_scheduler_address", "snakemake_storage_azure_account_name"}

    stored = azurite.blob_names(container, "k8s")
    for output in TINY_OUTPUTS:
        assert f"k8s/{output}" in stored, f"{output} missing from az://{container}; have {sorted(stored)}"
    summary = json.loads(azurite.read(container, "k8s/results/tiny/summary.json"))
    assert summary["sum_y"] == sum(x * x for x in range(10))

    secret_values = _secret_values(azurite)
    assert not find_secrets(proc.stdout, secret_values)
    assert_no_secrets_in_tree(workspace, secret_values)
    for name, log in pod_logs.items():
        assert not find_secrets(log, secret_values), f"pod log of {name} holds a secret"


@pytest.mark.integration
@pytest.mark.azurite
def test_stock_kubernetes_executor_aborts_on_the_400_where_ours_retries(tmp_path, azurite, workspace):  # noqa: F811
    """The same OOM-killed first attempt under the stock executor: its log read with previous=true gets the
    API's 400, which escapes as an error and stops the whole run, although retries are allowed."""
    profile = k8s_profile()
    namespace = profile["kubernetes-kueue-namespace"]
    api = new_standin(tmp_path, azurite)
    # The stock executor cannot label Jobs: Kueue queues them only through a LocalQueue named "default".
    default_queue = {"name": "default", "namespace": namespace}
    api.add_objects(profile_manifests("kueue/resourceflavors.yaml", "kueue/clusterqueue.yaml"))
    api.add_objects(
        [{"kind": "LocalQueue", "metadata": default_queue, "spec": {"clusterQueue": "snakemake"}}]
    )
    container = unique_container("stock")
    kubeconfig = api.write_kubeconfig(workspace.parent / "kubeconfig.yaml", namespace)
    try:
        proc = run_snakemake(
            "--executor", "kubernetes",
            "--kubernetes-namespace", namespace,
            "--container-image", profile["container-image"],
            "--default-storage-provider", "azure",
            "--default-storage-prefix", f"az://{container}/k8s",
            # No workload identity in the stock executor: the emulator's key has to travel in its Secret.
            "--envvars", "AZURITE_CONNECTION_STRING",
            "--default-resources", "disk_mb=4096",
            "--retries", "2",
            "--jobs", "2",
            "--latency-wait", "5",
            "--seconds-between-status-checks", "1",
            "--snakefile", TINY_SNAKEFILE,
            "results/tiny/table.csv",
            "--config", f"oom_below_mb={OOM_BELOW_MB}",
            cwd=workspace,
            env={**azurite.env(), "KUBECONFIG": str(kubeconfig)},
            timeout=300,
            check=False,
        )  # fmt: skip
    finally:
        api.stop()
    assert proc.returncode != 0, proc.stdout[-4000:]
    assert "previous terminated container" in proc.stdout, proc.stdout[-4000:]
    assert len(api.submitted) == 1, "the stock executor never retried the failed job"
    assert [r.get("previous") for r in api.log_requests] == ["True"]


@pytest.mark.integration
@pytest.mark.azurite
@pytest.mark.parametrize(
    "case, args, env, client_id, message",
    [
        (
            "no kueue",
            [],
            {},
            "id",
            f"the cluster does not serve kueue.x-k8s.io/v1beta2: install {SUPPORTED_KUEUE}",
        ),
        ("api server down", [], {}, "id", "cannot be reached (MaxRetryError); check KUBECONFIG"),
        (
            "unknown queue",
            ["--kubernetes-kueue-queue-name", "gpu-queue"],
            {},
            "id",
            "Kueue LocalQueue 'gpu-queue' does not exist in namespace 'snakemake'",
        ),
        (
            "queue without its cluster queue",
            [],
            {},
            "id",
            "Kueue LocalQueue snakemake/snakemake is inactive (Active=False, reason ClusterQueueDoesNotExist",
        ),
        (
            "queue of an inactive cluster queue",
            [],
            {},
            "id",
            "Kueue LocalQueue snakemake/snakemake is inactive (Active=False, reason ClusterQueueIsInactive",
        ),
        (
            "malformed queue",
            ["--kubernetes-kueue-queue-name", "Bad_Queue"],
            {},
            "id",
            "kubernetes-kueue-queue-name: 'Bad_Queue' is not a valid Kueue LocalQueue name",
        ),
        (
            "storage account",
            [],
            {"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": "https://x.blob.core.windows.net"},
            "id",
            "is not an Azure storage account name",
        ),
        (
            "placeholder identity",
            [],
            {},
            None,
            "still carries the placeholder azure.workload.identity/client-id",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else None,
)
def test_a_wrong_setting_stops_the_run_before_any_job(
    tmp_path,
    azurite,  # noqa: F811
    workspace,  # noqa: F811
    case,
    args,
    env,
    client_id,
    message,  # noqa: F811
):
    api = new_standin(tmp_path, azurite, serves_kueue=case != "no kueue")
    identity = None if client_id is None else str(uuid.uuid4())
    api.add_objects(applied_objects(client_id=identity, kueue=PARTIAL_KUEUE.get(case, KUEUE_MANIFESTS)))
    if case == "api server down":
        api.stop()  # the kubeconfig names a port nobody listens on any more
    try:
        proc, _ = run_profile(api, azurite, workspace, unique_container("bad"), *args, env=env)
    finally:
        api.stop()
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    assert api.submitted == [] and api.secret_keys == {}, (
        "nothing may reach the cluster before the checks pass"
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "account, message",
    [
        (
            "https://x.blob.core.windows.net",
            "'https://x.blob.core.windows.net' is not an Azure storage account",
        ),
        # Unset or empty: Snakemake itself refuses the plugin's required setting before parsing the Snakefile.
        (
            "",
            "missing for plugin azure: --storage-azure-account-name (or environment variable",
        ),
    ],
    ids=["malformed", "empty"],
)
def test_a_wrong_storage_account_stops_the_run_before_the_storage_is_used(
    tmp_path,
    workspace,  # noqa: F811
    account,
    message,
):
    """As on a real driver: without Azurite's connection string the storage plugin uses the account itself,
    and Snakemake uses the storage (DAG inventory, source upload) before the executor starts. The workflow
    checks the account while it is parsed, so neither Azurite nor the network is needed to stop here."""
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=pod_path()).start()
    api.add_objects(applied_objects(client_id=str(uuid.uuid4())))
    kubeconfig = api.write_kubeconfig(
        tmp_path / "kubeconfig.yaml", k8s_profile()["kubernetes-kueue-namespace"]
    )
    env = {
        "KUBECONFIG": str(kubeconfig),
        "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": account,
        "DASK_SCHEDULER_ADDRESS": "tls://dask-scheduler.snakemake.svc.cluster.local:8786",
    }
    try:
        proc = run_snakemake(
            "--profile", str(K8S_PROFILE), "--snakefile", TINY_SNAKEFILE,
            cwd=workspace, env=env, without=["AZURITE_CONNECTION_STRING"], timeout=300, check=False,
        )  # fmt: skip
    finally:
        api.stop()
    assert proc.returncode != 0
    assert message in proc.stdout, proc.stdout[-3000:]
    # Refused while the Snakefile was parsed: before the DAG (whose inventory would read the storage).
    assert "Building DAG of jobs" not in proc.stdout, proc.stdout[-3000:]
    assert api.submitted == [] and api.secret_keys == {}


def documented_dry_run() -> tuple[dict[str, str], list[str]]:
    """The dry run without an Azure account that profiles/k8s/README.md gives: its variables and its arguments."""
    readme = (K8S_PROFILE / "README.md").read_text()
    commands = re.findall(r"^\s*((?:\w+=\S+ )+snakemake --profile profiles/k8s -n .*)$", readme, re.M)
    assert len(commands) == 1, f"profiles/k8s/README.md gives {len(commands)} dry runs without Azure, not one"
    words = shlex.split(commands[0])
    at = words.index("snakemake")
    return dict(word.split("=", 1) for word in words[:at]), words[at + 1 :]


# Set on a driver that runs the profile; a dry run without Azure starts with none of them.
DRIVER_VARIABLES = [
    "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME",
    "AZURITE_CONNECTION_STRING",
    "DASK_SCHEDULER_ADDRESS",
]


def checkout_with_profile(tmp_path: Path) -> Path:
    """A checkout in which the README's commands run as written (relative --profile profiles/k8s)."""
    checkout = make_workspace(tmp_path / "checkout")
    shutil.copytree(K8S_PROFILE, checkout / "profiles" / "k8s")
    return checkout


@pytest.mark.integration
def test_the_documented_dry_run_without_an_azure_account_plans_every_job(tmp_path):
    """The README's dry run, run as written from a checkout with no Azure variable, account or network: it plans
    the whole default workflow with the profile's resources, one evaluation group job per dataset."""
    env, args = documented_dry_run()
    checkout = checkout_with_profile(tmp_path)
    unset = [name for name in DRIVER_VARIABLES if name not in env]  # the command's own variables stay
    proc = run_snakemake(*args, cwd=checkout, env=env, without=unset, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "This was a dry-run (flag -n)" in proc.stdout
    datasets = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["datasets"]
    assert proc.stdout.count("Group job evaluation (jobs in lexicogr. order):") == len(datasets)
    assert "gpu=1, gpu_manufacturer=nvidia, scale=0" in proc.stdout  # the profile's set-resources apply
    assert "ChainedTokenCredential" not in proc.stdout


@pytest.mark.integration
def test_a_dry_run_without_the_storage_account_stops_at_once_naming_the_variable(tmp_path):
    """profiles/k8s/README.md: `snakemake --profile profiles/k8s -n` needs the account name as a run does."""
    checkout = checkout_with_profile(tmp_path)
    proc = run_snakemake(
        "--profile", "profiles/k8s", "-n", cwd=checkout, without=DRIVER_VARIABLES, timeout=300, check=False
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert (
        "The following required arguments are missing for plugin azure: --storage-azure-account-name (or "
        "environment variable SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME)."
    ) in proc.stdout
    assert "Building DAG of jobs" not in proc.stdout


@pytest.mark.integration
@pytest.mark.azurite
@pytest.mark.parametrize("k8s_extra", [True, False], ids=["with k8s extra", "without k8s extra"])
def test_choosing_the_executor_without_cluster_or_k8s_extra_says_what_is_missing(
    tmp_path,
    azurite,  # noqa: F811
    workspace,  # noqa: F811
    k8s_extra,
):
    # No kubeconfig anywhere: KUBECONFIG points nowhere and HOME has no ~/.kube.
    env = {**os.environ, **azurite.env(), "KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = subprocess.run(
        [
            *snakemake_command(k8s_extra),
            "--profile", str(K8S_PROFILE),
            "--snakefile", TINY_SNAKEFILE,
            "--default-storage-prefix", f"az://{unique_container('nocluster')}/k8s",
            "results/tiny/table.csv",
        ],
        cwd=workspace,
        env={**env, "DASK_SCHEDULER_ADDRESS": "tls://x:8786"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    expected = (
        "kubernetes-kueue: no cluster credentials"
        if k8s_extra
        else "needs the k8s extra: pip install 'snakemake-gpu-catalog[k8s]'"
    )
    assert expected in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
