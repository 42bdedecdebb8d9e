"""Contract tests of profiles/k8s with snakemake-executor-plugin-kubernetes, without a cluster.

The real profile drives the real plugin against a loopback stand-in for the Kubernetes API
(k8s/apistandin.py) that validates every Job against the Kubernetes 1.33 OpenAPI schema and then runs
the pod's command for real, with Azurite as the Azure Blob storage. Test-only overrides on the command
line: the kubeconfig (stand-in), the storage prefix (a fresh container), polling intervals, and the
AZURITE_CONNECTION_STRING envvar (the storage plugin's emulator hook; on AKS the identity chain is used).
Not proven here: scheduling, image pulls, RBAC, the Kueue webhook and GPU device plugins.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "k8s"))
from apistandin import ApiStandIn  # noqa: E402
from harness import (  # noqa: E402
    K8S_PROFILE,
    TINY_OUTPUTS,
    TINY_SNAKEFILE,
    assert_no_secrets_in_tree,
    azurite,  # noqa: F401 - fixture
    find_secrets,
    k8s_profile,
    unique_container,
    workspace,  # noqa: F401 - fixture
)
from testkit import run_snakemake, venv_bin  # noqa: E402

GPU_RULE = "kd_gat_train_vgae_teacher"  # the tiny pipeline's rule carrying a real GPU rule name


def _pod_path() -> str:
    # The pod's "image" is this virtualenv: `python -m snakemake` in the pod must be the project's.
    return f"{Path(venv_bin('python')).parent}:/usr/local/bin:/usr/bin:/bin"


@pytest.fixture
def standin(tmp_path):
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=_pod_path()).start()
    yield api
    api.stop()


def run_profile(api: ApiStandIn, azurite, workspace: Path, container: str, *targets: str):  # noqa: F811
    profile = k8s_profile()
    kubeconfig = api.write_kubeconfig(workspace.parent / "kubeconfig.yaml", profile["kubernetes-namespace"])
    env = {
        **azurite.env(),
        "KUBECONFIG": str(kubeconfig),
        # The profile forwards it; an unreachable placeholder proves it reaches the pods' Secret.
        "DASK_SCHEDULER_ADDRESS": "tcp://dask-scheduler.snakemake.svc.cluster.local:8786",
    }
    started = time.monotonic()
    proc = run_snakemake(
        "--profile",
        str(K8S_PROFILE),
        "--snakefile",
        TINY_SNAKEFILE,
        "--default-storage-prefix",
        f"az://{container}/k8s",
        "--envvars",
        *profile["envvars"],
        "AZURITE_CONNECTION_STRING",
        "--latency-wait",
        "5",
        "--seconds-between-status-checks",
        "1",
        "--retries",
        "0",
        *targets,
        cwd=workspace,
        env=env,
        timeout=420,
        check=False,
    )
    return proc, time.monotonic() - started


def _secret_values(azurite) -> tuple[str, str]:  # noqa: F811
    return azurite.connection_string, azurite.connection_string.split("AccountKey=")[1].split(";")[0]


@pytest.mark.integration
@pytest.mark.azurite
def test_k8s_profile_runs_tiny_pipeline_through_api_standin(standin, azurite, workspace):  # noqa: F811
    container = unique_container("k8s")
    proc, _ = run_profile(standin, azurite, workspace, container)
    pod_logs = standin.pod_logs()
    assert proc.returncode == 0, proc.stdout[-6000:] + "\n".join(log[-2000:] for log in pod_logs.values())
    assert not standin.rejected, standin.rejected

    profile = k8s_profile()
    assert standin.namespaces == {profile["kubernetes-namespace"]}
    assert len(standin.submitted) == 3, [job["metadata"]["name"] for job in standin.submitted]
    for job in standin.submitted:
        container_spec = job["spec"]["template"]["spec"]["containers"][0]
        assert container_spec["image"] == profile["container-image"]
        requests = container_spec["resources"]["requests"]
        # default-resources reach every Job: Kueue's memory and storage quotas apply.
        assert requests["memory"].endswith("M") and int(requests["memory"][:-1]) >= 2048
        assert requests["ephemeral-storage"].endswith("M")
        assert "pip install --target" in container_spec["args"][-1]  # the plugin's per-pod precommand

    def requests_of(job: dict) -> dict:
        return job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]

    gpu_jobs = {
        job["spec"]["template"]["spec"]["containers"][0]["args"][-1]: job
        for job in standin.submitted
        if "nvidia.com/gpu" in requests_of(job)
    }
    assert len(gpu_jobs) == 2, "the GPU-named rule and the evaluation group ask for GPUs, make_table does not"
    for command, job in gpu_jobs.items():
        pod = job["spec"]["template"]["spec"]
        resources = pod["containers"][0]["resources"]
        # One GPU each: the evaluation group's members run one after another on it (gpu scope local).
        assert resources["limits"]["nvidia.com/gpu"] == resources["requests"]["nvidia.com/gpu"] == "1", (
            command
        )
        toleration = {
            "key": "nvidia.com/gpu",
            "operator": "Equal",
            "value": "present",
            "effect": "NoSchedule",
        }
        assert toleration in pod["tolerations"]
    assert any(GPU_RULE in command for command in gpu_jobs)
    assert any("evaluation_evaluate_teacher" in command and "summarize" in command for command in gpu_jobs)

    # Every Secret the run created carried the forwarded variables, and was deleted at the end.
    assert standin.secrets == {}, "the run's Secret was not deleted"
    (secret_keys,) = standin.secret_keys.values()
    assert {"dask_scheduler_address", "snakemake_storage_azure_account_name"} <= secret_keys
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
def test_k8s_job_admitted_late_still_completes(tmp_path, azurite, workspace):  # noqa: F811
    # Kueue suspends a Job until its Workload is admitted: no pod exists meanwhile.
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=_pod_path(), admit_delay=8, max_running=1).start()
    try:
        container = unique_container("late")
        proc, elapsed = run_profile(api, azurite, workspace, container, "results/tiny/table.csv")
        assert proc.returncode == 0, proc.stdout[-6000:] + "\n".join(api.pod_logs().values())
        assert len(api.submitted) == 1 and not api.rejected
        assert elapsed >= 8, "the run cannot finish before the Job was admitted"
        assert api.max_seen_running <= 1
        assert "k8s/results/tiny/table.csv" in azurite.blob_names(container, "k8s")
    finally:
        api.stop()


def test_standin_rejects_gpu_request_without_limit(tmp_path):
    """The stand-in's checks can fail: a GPU request without an equal limit (scale not 0) is refused."""
    api = ApiStandIn(pods_root=tmp_path / "pods", pod_path=_pod_path())
    container = {
        "name": "snakemake",
        "image": "x",
        "command": ["/bin/sh"],
        "args": ["-c", "true"],
        "resources": {"requests": {"cpu": "950m", "memory": "2048M", "nvidia.com/gpu": "1"}},
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "snakejob-x", "labels": {"app": "snakemake"}},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {"containers": [container], "restartPolicy": "Never"}},
        },
    }
    assert any("nvidia.com/gpu requested without an equal limit" in p for p in api.problems(job))
    container["resources"]["limits"] = {"cpu": "1000m", "memory": "2048M", "nvidia.com/gpu": "1"}
    assert api.problems(job) == []
    container["resources"] = {"requests": {"cpu": "1"}}
    assert any("no memory request" in p for p in api.problems(job))
    container["gpus"] = 1  # not a Container field: strict schema validation refuses unknown fields
    assert any(p.startswith("schema") for p in api.problems(job))
