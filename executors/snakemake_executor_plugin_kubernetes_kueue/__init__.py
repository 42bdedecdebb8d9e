"""Snakemake executor plugin ``kubernetes-kueue``: ``snakemake --executor kubernetes-kueue``.

The kubernetes executor of snakemake-executor-plugin-kubernetes 0.5.1, subclassed for Kueue and Azure:

* every Job carries the label ``kueue.x-k8s.io/queue-name`` with the LocalQueue of
  ``--kubernetes-kueue-queue-name`` (any name, not only ``default``);
* with ``--kubernetes-kueue-workload-identity`` every pod carries ``azure.workload.identity/use: "true"`` and
  runs as ``--kubernetes-kueue-service-account-name``, so AKS workload identity gives it an Azure token and
  no storage credential travels in a Kubernetes Secret;
* a failed pod's log is read without ``previous=True`` (see ``jobs.SafeLogCoreApi``): a failed Job fails
  that one job, which Snakemake retries, instead of aborting the run;
* Jobs that request a GPU run ``--kubernetes-kueue-gpu-container-image`` (the CUDA build), others the run's
  ``container-image`` (``gpu: 0`` is a CPU Job); a GPU request gets the equal limit Kubernetes requires, also
  without ``scale: 0``; ``--kubernetes-kueue-env`` and ``--kubernetes-kueue-secret-volumes`` add plain
  environment variables and read-only Secret mounts (e.g. the Dask TLS certificates) to every pod;
* a job with ``gpu`` but no ``gpu_manufacturer`` nvidia or amd, or a ``gpu`` that is no whole number, stops the
  run naming its rule and the fix, and a
  resource that looks like a misspelt one the executor reads (``gpus``, ``mem_gb``) is warned about once per rule
  (``checks.check_gpu_request``, ``checks.unread_resource_warnings``);
* pods do not pip-install the storage plugin at start (the image carries it), so they need no package index;
* API calls answered 429 or 5xx are sent again (``executor.KueueExecutor._kubernetes_retry``); a job whose
  status cannot be read stays watched instead of being lost, a deleted Job fails its job, and a refused
  create names the Job, the queue and the fix (``executor.KueueExecutor.check_active_jobs``, ``jobs``); a Job
  whose pod was deleted while it ran fails naming its namespace and is deleted (the kubernetes executor's own
  log line for it, without the namespace, is replaced by that message, and its ``kubectl describe job`` hint
  after each created Job gets ``-n``: ``stock_lines``), and a container the kubelet
  cannot start (an image it cannot pull or read, a missing Secret, a container the runtime cannot create:
  ``jobs.STUCK_CONTAINER_FIXES``; a volume the kubelet cannot mount: a Secret or ConfigMap whose object or
  listed key is missing, a CSI driver's failure such as Azure File's, seen in the pod's FailedMount events once it
  has waited ContainerCreating for ``mounts.CONTAINER_CREATING_CHECK_S``, or a disk the attach/detach controller
  cannot attach to the node, its FailedAttachVolume events read in the same list; a 403 on that read said once per run;
  a pod unschedulable for its missing PersistentVolumeClaim, ``pending.MISSING_CLAIM``) is reported and fails its job after
  ``executor.CONTAINER_START_GIVE_UP_S`` instead of holding its quota for ever (``jobs.StuckContainer``); a pod
  Kueue admitted but no node can hold (it asks more than one node has) is reported after
  ``pending.UNSCHEDULABLE_REPORT_S`` with the scheduler's message and what it asks, again when that message
  changes, and fails its job after ``--kubernetes-kueue-unschedulable-timeout`` minutes if set (``pending``); a
  ReadWriteOnce disk another node holds (a Multi-Attach FailedAttachVolume event) is warned of once per pod after
  ``--kubernetes-kueue-multi-attach-warning`` minutes, and its job keeps waiting (``mounts.MULTI_ATTACH``);
* a Job Kueue preempts or evicts (it suspends the Job, whose pod is deleted) stays active and runs again once
  readmitted, instead of failing on the stopped pod's exit code or stopping the run on two listed pods
  (``jobs.SafeLogCoreApi``); the eviction is logged once, with the Workload's reason and message, and for a
  waitForPodsReady timeout when Kueue requeues it (``requeueState``) (``executor.KueueExecutor._review_workloads``,
  ``evictions.eviction_report``), also when Kueue readmitted the Job between two status
  checks: its new ``status.startTime`` shows it (test_k8s_kueue_eviction.py,
  ``test_an_eviction_readmitted_between_two_status_checks_is_logged_once_from_the_new_start_time``), and when the
  readmitted run finished before that check, from its Workload read once before the Job's deletion
  (``evictions.WorkloadReview.finished``); a Job whose
  Workload Kueue deactivated (``spec.active: false``, e.g. after waitForPodsReady's backoffLimitCount), which it
  never admits again, fails with Kueue's reason and message and is deleted (``evictions.WorkloadReview``), while
  one someone deactivated by hand to hold it (Evicted reason ``Deactivated``) keeps waiting, said once with the
  ``kubectl patch`` that releases it;
* every setting is checked before any Job is submitted (queue, namespace, service account, storage account):
  a wrong one stops the run with a message naming the setting and the fix. A LocalQueue must exist and be
  active (Kueue's ``Active`` condition). The storage account is checked earlier too, while the Snakefile is
  parsed (``storage_account.check_default_storage_account``): Snakemake uses the storage before this starts.

Snakemake imports every installed executor plugin at start-up, whatever executor is chosen. This module
therefore never contacts a cluster at import, and without the k8s extra (no kubernetes client) it still
imports: choosing the executor then stops with the install command instead.
"""

from dataclasses import dataclass, field, replace

# Snakemake turns these annotations into argparse types at run time and understands Optional[X], not X | None.
from typing import Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase

from .checks import SecretVolume, SettingError

try:
    import snakemake_executor_plugin_kubernetes as kubernetes_plugin
except ImportError as missing:  # the k8s extra is not installed
    kubernetes_plugin = None
    MISSING_KUBERNETES = missing

INSTALL_HINT = "pip install 'snakemake-gpu-catalog[k8s]' (snakemake-executor-plugin-kubernetes 0.5.1)"


def _parse_secret_volumes(items: list[str]) -> list[SecretVolume]:
    try:
        return [SecretVolume.parse(item) for item in items]
    except SettingError as error:
        raise WorkflowError(str(error)) from None


def _unparse_secret_volumes(volumes: list[SecretVolume]) -> list[str]:
    return [volume.unparse() for volume in volumes]


@dataclass
class KueueSettings(ExecutorSettingsBase):
    """The settings this executor adds to those of the kubernetes executor."""

    queue_name: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Kueue LocalQueue (in the namespace) that queues every Job: the value of the Job label "
            "kueue.x-k8s.io/queue-name. Checked to exist before any Job is submitted.",
            "required": True,
        },
    )
    workload_identity: bool = field(
        default=False,
        metadata={
            "help": "Give every pod the label azure.workload.identity/use=true, so that AKS workload "
            "identity injects an Azure token for the service account (requires "
            "--kubernetes-kueue-service-account-name, annotated with azure.workload.identity/client-id).",
        },
    )
    gpu_container_image: Optional[str] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Image of Jobs that request a GPU (the CUDA build); other Jobs run --container-image.",
        },
    )
    env: list[str] = field(
        default_factory=list,
        metadata={
            "help": "NAME=VALUE environment variables of every pod, as plain text in the Job spec "
            "(never secrets: those go through workload identity).",
            "nargs": "+",
        },
    )
    unschedulable_timeout: Optional[int] = field(  # noqa: UP045
        default=None,
        metadata={
            "help": "Minutes a Job's pod may stay unschedulable (no node can hold what it asks: PodScheduled=False, "
            "reason Unschedulable) before its job fails and its Job is deleted. Unset: it waits, as a cluster "
            "autoscaler may add a node; it is reported after 2 minutes and whenever the scheduler's message changes.",
        },
    )
    multi_attach_warning: Optional[int] = field(  # noqa: UP045
        default=10,
        metadata={
            "help": "Minutes a Job's pod may wait for a ReadWriteOnce volume attached to another node (the attach/detach "
            "controller's Multi-Attach error) before one warning names the claim, what holds it and, read from a "
            "holder pod of the namespace, its node. The job keeps waiting: the volume is attached once it is detached "
            "there.",
        },
    )
    secret_volumes: list[SecretVolume] = field(
        default_factory=list,
        metadata={
            "help": "Kubernetes Secrets mounted read-only into every pod, as <secret-name>:<path>.",
            "parse_func": _parse_secret_volumes,
            "unparse_func": _unparse_secret_volumes,
            "nargs": "+",
        },
    )


if kubernetes_plugin is None:

    @dataclass
    class ExecutorSettings(KueueSettings):
        """Without the kubernetes executor: the profile's settings still parse, then the executor stops."""

        namespace: str = field(default="default", metadata={"help": "Namespace of the Jobs."})
        service_account_name: Optional[str] = field(  # noqa: UP045
            default=None, metadata={"help": "ServiceAccount of the Jobs' pods."}
        )

    common_settings = CommonSettings(non_local_exec=True, implies_no_shared_fs=True, job_deploy_sources=True)

    class Executor(RemoteExecutor):
        """Stand-in registered when the kubernetes executor is missing: it only says how to install it."""

        def __post_init__(self):
            raise WorkflowError(
                f"the kubernetes-kueue executor needs the k8s extra: {INSTALL_HINT} ({MISSING_KUBERNETES})"
            )

        def run_job(self, job):  # pragma: no cover - __post_init__ always raises first
            raise NotImplementedError

        async def check_active_jobs(self, active_jobs):  # pragma: no cover
            raise NotImplementedError
            yield

        def cancel_jobs(self, active_jobs):  # pragma: no cover
            raise NotImplementedError

else:
    from .executor import KueueExecutor

    Executor = KueueExecutor

    @dataclass
    class ExecutorSettings(kubernetes_plugin.ExecutorSettings, KueueSettings):
        """The kubernetes executor's settings (namespace, service account, ...) plus the Kueue ones."""

    # As the kubernetes executor, except that pods do not pip-install the storage plugins at start: the
    # image carries them (profiles/k8s/Containerfile), so pods need no route to a package index.
    common_settings = replace(kubernetes_plugin.common_settings, auto_deploy_default_storage_provider=False)
