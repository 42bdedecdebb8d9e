"""What this executor adds to the Job the kubernetes executor builds, and how it reads a failed pod's log.

The kubernetes executor (snakemake-executor-plugin-kubernetes 0.5.1) builds each Job and calls
``BatchV1Api.create_namespaced_job``; it reads failed pods' logs with ``CoreV1Api.read_namespaced_pod_log``.
This executor hands it API objects that complete the Job on its way out and read logs safely on the way in,
so none of the plugin's code is repeated here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import kubernetes.client
from kubernetes.client.rest import ApiException

from .checks import SecretVolume

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu")


@dataclass
class JobCompletion:
    """Labels, image, environment and volumes every Job of the run gets before it is submitted."""

    queue_name: str
    workload_identity: bool = False
    gpu_container_image: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    secret_volumes: list[SecretVolume] = field(default_factory=list)

    def apply(self, job: kubernetes.client.V1Job) -> kubernetes.client.V1Job:
        # Kueue manages (suspends, queues, admits) exactly the Jobs labelled with an existing LocalQueue.
        job.metadata.labels = {**(job.metadata.labels or {}), QUEUE_LABEL: self.queue_name}
        template = job.spec.template
        pod_labels = {"app": "snakemake"}
        if self.workload_identity:
            # The AKS workload-identity webhook injects the token file and AZURE_* variables only into pods
            # carrying this label (a pod label, not a Job label) whose ServiceAccount names a client id.
            pod_labels[WORKLOAD_IDENTITY_LABEL] = "true"
        template.metadata = template.metadata or kubernetes.client.V1ObjectMeta()
        template.metadata.labels = {**(template.metadata.labels or {}), **pod_labels}
        container = template.spec.containers[0]
        requests = (container.resources.requests or {}) if container.resources else {}
        if self.gpu_container_image and any(name in requests for name in GPU_RESOURCES):
            container.image = self.gpu_container_image
        # Idempotent: the kubernetes executor sends the same body again after re-authenticating, and this
        # executor after a transient error; a second copy of a variable or volume would be refused (422).
        container.env = [
            *(variable for variable in container.env or [] if variable.name not in self.env),
            *(kubernetes.client.V1EnvVar(name=name, value=value) for name, value in self.env.items()),
        ]
        names = {f"secret-{index}": volume for index, volume in enumerate(self.secret_volumes)}
        template.spec.volumes = [
            *(volume for volume in template.spec.volumes or [] if volume.name not in names),
            # Optional: a run that never needs the Secret (no calibration) still starts without it.
            *(
                kubernetes.client.V1Volume(
                    name=name,
                    secret=kubernetes.client.V1SecretVolumeSource(secret_name=volume.secret, optional=True),
                )
                for name, volume in names.items()
            ),
        ] or None
        container.volume_mounts = [
            *(mount for mount in container.volume_mounts or [] if mount.name not in names),
            *(
                kubernetes.client.V1VolumeMount(name=name, mount_path=volume.path, read_only=True)
                for name, volume in names.items()
            ),
        ] or None
        return job


class CompletingBatchApi:
    """``BatchV1Api`` whose ``create_namespaced_job`` completes the Job first; everything else passes through."""

    def __init__(self, api: kubernetes.client.BatchV1Api, completion: JobCompletion) -> None:
        self._api = api
        self._completion = completion

    def create_namespaced_job(self, namespace, body, **kwargs):
        return self._api.create_namespaced_job(namespace, self._completion.apply(body), **kwargs)

    def __getattr__(self, name):
        return getattr(self._api, name)


class SafeLogCoreApi:
    """``CoreV1Api`` that reads a failed pod's own log instead of its previous container's.

    The kubernetes executor asks for ``previous=True``. Its Jobs run with ``restartPolicy: Never``, so no
    container ever restarts, and the API server answers HTTP 400 "previous terminated container ... not
    found"; the executor turns that into an error that stops the whole run instead of failing (and retrying)
    the one job. Here the current container's log is read; if even that is gone (an evicted or deleted pod),
    the log says why, and the job still fails normally, so Snakemake retries it.
    """

    def __init__(self, api: kubernetes.client.CoreV1Api) -> None:
        self._api = api

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        kwargs["previous"] = False
        try:
            return self._api.read_namespaced_pod_log(name, namespace, **kwargs)
        except ApiException as error:
            return (
                f"[kubernetes-kueue] the log of pod {namespace}/{name} could not be read "
                f"(HTTP {error.status} {error.reason}: {(error.body or '').strip()[:500]}); "
                f"see `kubectl -n {namespace} describe pod {name}`"
            )

    def __getattr__(self, name):
        return getattr(self._api, name)
