"""The executor: the kubernetes executor's, with settings checked first and its API objects wrapped."""

from __future__ import annotations

import time

import kubernetes.client
import kubernetes.config
import snakemake_executor_plugin_kubernetes as kubernetes_plugin
import urllib3
from kubernetes.client.rest import ApiException
from snakemake_interface_common.exceptions import WorkflowError

from .checks import (
    PROFILE,
    SUPPORTED_KUEUE,
    SettingError,
    check_gpu_request,
    check_local_queue_active,
    check_name,
    check_size_requests,
    check_storage_account,
    check_workload_identity_annotations,
    parse_env,
    unpinned_image_warning,
    unread_resource_warnings,
)
from .evictions import KUEUE_GROUP, KUEUE_VERSION, WorkloadReview
from .jobs import (
    CompletingBatchApi,
    JobCompletion,
    SafeLogCoreApi,
    describe_api_error,
    is_transient,
    read_refused,
    refusal_fix,
    status_read_failure,
)
from .mounts import FAILED_ATTACH, FAILED_MOUNT
from .stock_lines import PODLESS_FAILURE_PREFIX, StockLines

GPU_IMAGE_UNSET = (
    "kubernetes-kueue-gpu-container-image is not set: Jobs that request a GPU run container-image {image!r}. "
    "If its torch is a CPU build, each GPU Job stops at its start (device: auto); set "
    f"kubernetes-kueue-gpu-container-image in {PROFILE} to the CUDA image (profiles/k8s/Containerfile)"
)
# Waits before each new try of a call the API server answered with a transient error (429, 5xx); a
# Retry-After it sends wins, up to MAX_RETRY_AFTER_S. The last try's error goes to the kubernetes executor.
RETRY_DELAYS_S = (1.0, 2.0, 4.0)
MAX_RETRY_AFTER_S = 30.0
# The kubernetes executor's namespace when kubernetes-kueue-namespace is not set.
UNSET_NAMESPACE = "default"
# A Job suspended this long (Kueue has not admitted it) is reported, and again after as long each time.
ADMISSION_WAIT_REPORT_S = 600.0
# A Job's container the kubelet keeps waiting (its image cannot be pulled, a Secret it needs is missing) would
# keep the Job active, and its Kueue quota held, for ever: it is reported at once, and its job fails after this.
CONTAINER_START_GIVE_UP_S = 600.0
# Minutes a pod may wait for a ReadWriteOnce volume another node holds before it is warned of (kubernetes-kueue-multi-
# attach-warning's default).
MULTI_ATTACH_WARNING_MIN = 10


class KueueExecutor(kubernetes_plugin.Executor):
    def __post_init__(self):
        settings = self.workflow.executor_settings
        try:
            self.completion = self._check_local_settings(settings)
        except SettingError as error:
            raise WorkflowError(str(error)) from None
        self._load_credentials()
        try:
            self._check_cluster_objects(settings)
        except SettingError as error:
            raise WorkflowError(str(error)) from None
        # Only now the kubernetes executor starts: it creates the run's Secret and, from here on, Jobs.
        super().__post_init__()

    def register_secret(self):
        # The kubernetes executor creates the run's Secret once, outside its retries: a busy server's 429 or 5xx
        # stopped the run with a traceback. Sent again here, a 409 means that an earlier try's write took effect
        # (the Secret's name is the run's uuid4); another refusal names the fix.
        try:
            self._retry_transient(super().register_secret)
        except ApiException as error:
            if error.status != 409:
                fix = refusal_fix(error, f"create on secrets in namespace {self.namespace!r}")
                raise WorkflowError(
                    f"kubernetes-kueue: creating the run's Secret {self.namespace}/{self.run_namespace} failed "
                    f"with {describe_api_error(error)}; {fix}"
                ) from None

    def run_job(self, job):
        resources = dict(job.resources)
        try:
            check_gpu_request(job.name, resources)
            check_size_requests(job.name, resources)
        except SettingError as error:
            raise WorkflowError(str(error)) from None
        warned = self.__dict__.setdefault("_resource_warnings", set())
        for warning in unread_resource_warnings(job.name, resources):
            if warning not in warned:  # once per rule and name, not per job
                warned.add(warning)
                self.logger.warning(f"kubernetes-kueue: {warning}")
        super().run_job(job)

    # Snakemake's executor base class assigns it: the kubernetes executor's own lines go through StockLines.
    @property
    def logger(self):
        return self._logger

    @logger.setter
    def logger(self, logger):
        self._logger = StockLines(logger, lambda: self.namespace)

    # The kubernetes executor assigns these (also when it re-authenticates); wrapping them here is how it
    # submits completed Jobs and reads logs safely, without a copy of its code.
    @property
    def batchapi(self):
        return self._batchapi

    @batchapi.setter
    def batchapi(self, api):
        wrapper = self.__dict__.get("_batchapi")
        if wrapper is None:
            self._batchapi = CompletingBatchApi(api, self.completion)
        else:  # re-authenticated: the same wrapper, and what it knows of the run's Jobs, around the new client
            wrapper.use(api)

    @property
    def kubeapi(self):
        return self._kubeapi

    @kubeapi.setter
    def kubeapi(self, api):
        previous = self.__dict__.get("_kubeapi")
        self._kubeapi = SafeLogCoreApi(api)
        if previous is not None:  # re-authenticated: the containers seen waiting, the pods unscheduled, stay
            self._kubeapi.stuck_containers = previous.stuck_containers
            self._kubeapi.unschedulable = previous.unschedulable
            self._kubeapi.mounts = previous.mounts

    def _kubernetes_retry(self, func):
        # The kubernetes executor tries a failed call once more only after a 401 (re-authentication) or a
        # lost connection (after 5 minutes); any other error stops the run (a pod list, a Job's creation) or
        # loses the job (a status read: see check_active_jobs). A busy API server answers 429 or 5xx for a
        # moment: those calls are tried again here first.
        return super()._kubernetes_retry(lambda: self._retry_transient(func))

    def _reauthenticate_and_retry(self, func=None):
        # The kubernetes executor's version reloads only a kubeconfig (a driver inside the cluster has none)
        # and runs `kubectl get nodes` (not in the image; the driver's Role may not list nodes), and either
        # failure stops the run. Here the credentials are loaded as at the start, kubeconfig or in-cluster.
        self.logger.info(
            "kubernetes-kueue: the API server answered 401 Unauthorized: loading the credentials again"
        )
        self._load_credentials()
        self.kubeapi = kubernetes.client.CoreV1Api()
        self.batchapi = kubernetes.client.BatchV1Api()
        return func() if func else None

    def _retry_transient(self, func):
        for delay in RETRY_DELAYS_S:
            try:
                return func()
            except ApiException as error:
                if not is_transient(error):
                    raise
                wait = _retry_after(error, delay)
                self.logger.warning(
                    f"kubernetes-kueue: the Kubernetes API server answered {describe_api_error(error)}; "
                    f"trying again in {wait:g} s"
                )
                time.sleep(wait)
        return func()

    def report_job_success(self, job_info):
        self._report_finished_eviction(job_info.external_jobid)
        super().report_job_success(job_info)

    def _report_finished_eviction(self, name: str) -> None:
        # A Job taken back since the last check, or whose first run no check saw, that finishes now may have run twice:
        # its Workload says (_review_workloads sees only active ones).
        review, watch = (
            self.__dict__.setdefault("_workload_review", WorkloadReview()),
            self.__dict__.get("_batchapi"),
        )
        report = watch and review.finished(
            self.namespace, name, watch, self._retry_transient, self._refusals()
        )
        self._say_refusals()
        if report:
            self.logger.warning(report)

    def _refusals(self):
        """The run's reads the driver's Role refused (refusals.Refusals), once the API objects are wrapped."""
        return getattr(getattr(self.__dict__.get("_kubeapi"), "mounts", None), "refusals", None)

    def _say_refusals(self) -> None:
        for refused in getattr(self._refusals(), "take", list)():  # a rule the Role lacks: said once per run
            self.logger.warning(refused)

    def report_job_error(self, job_info, msg=None, **kwargs):
        self._report_finished_eviction(job_info.external_jobid)
        if msg is not None and msg.startswith(PODLESS_FAILURE_PREFIX):
            msg = self._podless_failure(job_info.external_jobid)
            self.logger.error(msg)  # in place of the kubernetes executor's line, which StockLines leaves out
        # Snakemake appends "For further error details ..." right after the message.
        if msg and not msg.endswith((" ", "\n")):
            msg += ". "
        super().report_job_error(job_info, msg=msg, **kwargs)

    def _podless_failure(self, name: str) -> str:
        """Delete a failed Job whose pod is gone, as the kubernetes executor deletes the others, and say why."""
        return (
            f"kubernetes-kueue: Job {self.namespace}/{name} failed and its pod is gone (deleted while it ran: "
            "`kubectl delete pod`, a node drain or upgrade, a spot node's eviction), so its log is lost; "
            f"{self._delete_failed_job(name)}. `kubectl -n {self.namespace} get events --field-selector "
            f"involvedObject.name={name}` may say why; Snakemake runs it again if it has retries left"
        )

    def _delete_failed_job(self, name: str) -> str:
        """Delete the Job of a failed job (unless omit-job-cleanup), saying what became of it."""
        if self.workflow.executor_settings.omit_job_cleanup:
            return f"the Job is kept (omit-job-cleanup): kubectl -n {self.namespace} delete job {name}"
        try:
            self._kubernetes_retry(lambda: self.safe_delete_job(name, ignore_not_found=True))
        except WorkflowError as error:
            return f"deleting the Job failed ({error}): kubectl -n {self.namespace} delete job {name}"
        return "the Job was deleted"

    def _gave_up_starting(self, job) -> bool:
        """Report a Job whose container the kubelet keeps waiting, once per pod; fail it once that is hopeless."""
        name = job.external_jobid
        minutes = getattr(self.workflow.executor_settings, "multi_attach_warning", MULTI_ATTACH_WARNING_MIN)
        held = self.kubeapi.mounts.multi_attach_warning(self.kubeapi, self.namespace, name, minutes)
        self._say_refusals()
        if held is not None:  # a disk another node holds: it waits, said once
            self.logger.warning(held)
        stuck = self.kubeapi.stuck_containers.get(name)
        if stuck is None:
            return False
        if not stuck.hopeless(CONTAINER_START_GIVE_UP_S):
            warned = self.__dict__.setdefault("_stuck_warned", set())
            if (name, stuck.pod) not in warned:
                warned.add((name, stuck.pod))
                how = f"cannot start; its job fails if it still cannot in {CONTAINER_START_GIVE_UP_S / 60:g} min"
                self.logger.warning(stuck.describe(self.namespace, name, how))
            return False
        del self.kubeapi.stuck_containers[name]
        if stuck.reason in (FAILED_MOUNT, FAILED_ATTACH) and not self.kubeapi.mounts.still_failing(
            self.kubeapi, self.namespace, name, stuck.pod
        ):
            return False  # the volume was attached and mounted since (fixed meanwhile): the container is on its way
        waited = (time.monotonic() - stuck.since) / 60
        return self._fail_pending(
            job, stuck.describe(self.namespace, name, f"could not start for {waited:.1f} min")
        )

    def _gave_up_scheduling(self, job) -> bool:
        """Report a Job's pod that no node can hold (pending.UnschedulableWatch); fail it after the timeout."""
        minutes = getattr(self.workflow.executor_settings, "unschedulable_timeout", None)
        verdict = self.kubeapi.unschedulable.verdict(self.namespace, job.external_jobid, minutes)
        if verdict is not None and not verdict.give_up:
            self.logger.warning(verdict.text)
        return verdict is not None and verdict.give_up and self._fail_pending(job, verdict.text)

    def _fail_pending(self, job, why: str) -> bool:
        """Fail the job of a Job whose pod never ran, and delete the Job (freeing its Kueue quota)."""
        msg = f"{why}; {self._delete_failed_job(job.external_jobid)}, and Snakemake runs it again if it has retries left"
        self.logger.error(msg)
        self.report_job_error(job, msg=msg)
        return True

    async def check_active_jobs(self, active_jobs):
        waiting = []
        async for job in super().check_active_jobs(active_jobs):
            if not (self._gave_up_starting(job) or self._gave_up_scheduling(job)):
                waiting.append(job)
        waiting = self._review_workloads(waiting)
        self._say_refusals()  # also those of the Workloads' list and of failed pods' logs
        for job in waiting:
            yield job
        self._report_long_admission_waits(waiting)
        # The kubernetes executor skips a job whose status read failed without yielding or reporting it, so
        # Snakemake would wait for it for ever. Such a job is kept active or failed here, saying why.
        for job in active_jobs:
            error = self.batchapi.status_errors.pop(job.external_jobid, None)
            if error is None:
                continue
            msg = status_read_failure(self.namespace, job.external_jobid, error)
            if is_transient(error):
                self.logger.warning(msg)
                yield job
                continue
            self.logger.error(msg)
            self.report_job_error(job, msg=msg)

    def _report_long_admission_waits(self, active_jobs) -> None:
        """Say which Jobs Kueue has kept suspended for long, and what the LocalQueue's state says about why: the
        kubernetes executor sees a suspended Job as merely active, so a Job Kueue never admits (the queue was
        stopped, or it asks for more than the ClusterQueue has) would wait in silence for ever."""
        if not active_jobs:
            # Snakemake's status loop starts before __post_init__ has wrapped the API objects: nothing to read.
            return
        now, watch, queue_state = time.monotonic(), self.batchapi, None
        review = self.__dict__.get("_workload_review") or WorkloadReview()
        for job in active_jobs:
            name = job.external_jobid
            since = watch.suspended_since.get(name)
            if since is None or now - watch.admission_reported.get(name, since) < ADMISSION_WAIT_REPORT_S:
                continue
            if name in review.held:  # said once, with how to release it
                continue
            watch.admission_reported[name] = now
            backoff = review.backoff(self.namespace, name, (now - since) / 60)
            if backoff:  # Kueue holds it back after a PodsReadyTimeout eviction, whatever the quota
                self.logger.warning(backoff)
                continue
            queue = self.completion.queue_name
            queue_state = queue_state or self._queue_state(queue)  # one LocalQueue read per status check
            self.logger.warning(
                f"kubernetes-kueue: Job {self.namespace}/{name} has waited {(now - since) / 60:.1f} min for "
                f"Kueue to admit it from LocalQueue {queue} (suspended, no pod yet). "
                f"{queue_state} `kubectl -n {self.namespace} get workloads` and `kubectl -n "
                f"{self.namespace} describe workload <name>` say why it waits (e.g. insufficient unused quota)"
            )

    def _review_workloads(self, active_jobs) -> list:
        """Report, once per eviction, that Kueue took back a running Job, with its Workload's reason and message;
        fail (and delete) a Job whose Workload Kueue deactivated; the jobs still active.

        A Job Kueue evicts or preempts is suspended and requeued, not failed: the kubernetes executor keeps it active
        (its deleted pod is not listed, see SafeLogCoreApi) and it runs again once readmitted. A status check sees it
        suspended, or, when Kueue admitted it again in between, with a new ``status.startTime`` (see
        CompletingBatchApi.read_namespaced_job_status). A deactivated Workload (``spec.active: false``, e.g. after
        waitForPodsReady's ``requeuingStrategy.backoffLimitCount``) is never admitted again: its Job would stay
        suspended for ever, and the admission-wait report would blame the quota. One someone deactivated (reason
        ``Deactivated``) is held on purpose: its job keeps waiting, said once with how to release it.
        """
        if not active_jobs:
            return active_jobs
        review = self.__dict__.setdefault("_workload_review", WorkloadReview())
        names = [job.external_jobid for job in active_jobs]
        reports, failures = review.review(
            self.namespace, names, self.batchapi, self._retry_transient, self._refusals()
        )
        for report in reports:
            self.logger.warning(report)
        return [
            job
            for job in active_jobs
            if not (job.external_jobid in failures and self._fail_pending(job, failures[job.external_jobid]))
        ]

    def _queue_state(self, queue: str) -> str:
        try:
            queues = self._local_queues(self.namespace)
            if queue not in queues:
                return f"The LocalQueue {self.namespace}/{queue} no longer exists, so Kueue admits nothing."
            check_local_queue_active(queues[queue], self.namespace)
        except SettingError as error:
            return f"{error}."
        return (
            f"The LocalQueue {self.namespace}/{queue} is active: other Jobs hold the quota, or this one asks for "
            "more than its ClusterQueue has or covers."
        )

    def _check_local_settings(self, settings) -> JobCompletion:
        namespace = check_name(
            settings.namespace,
            "kubernetes-kueue-namespace",
            "namespace",
            f"set it in {PROFILE} to the namespace that holds the LocalQueue",
        )
        queue = check_name(
            settings.queue_name,
            "kubernetes-kueue-queue-name",
            "Kueue LocalQueue",
            f"set it in {PROFILE} to a LocalQueue of namespace {namespace} "
            f"(kubectl -n {namespace} get localqueues)",
        )
        if settings.workload_identity:
            check_name(
                settings.service_account_name,
                "kubernetes-kueue-service-account-name",
                "ServiceAccount",
                "workload identity needs the ServiceAccount annotated with the identity's client id "
                f"(profiles/k8s/serviceaccount.yaml); set its name in {PROFILE}",
            )
        if self.workflow.storage_settings.default_storage_provider == "azure":
            check_storage_account(self.envvars().get("SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"))
        if not settings.gpu_container_image:
            # Not a refusal: a container-image with a CUDA torch serves both kinds of Job.
            self.logger.warning(
                GPU_IMAGE_UNSET.format(image=self.workflow.remote_execution_settings.container_image)
            )
        for setting, image in (
            ("container-image", self.workflow.remote_execution_settings.container_image),
            ("kubernetes-kueue-gpu-container-image", settings.gpu_container_image),
        ):
            warning = unpinned_image_warning(setting, image)
            if warning:
                self.logger.warning(warning)
        return JobCompletion(
            queue_name=queue,
            workload_identity=settings.workload_identity,
            gpu_container_image=settings.gpu_container_image,
            env=parse_env(settings.env),
            secret_volumes=list(settings.secret_volumes),
        )

    def _load_credentials(self) -> None:
        try:
            kubernetes.config.load_kube_config()
        except kubernetes.config.ConfigException:
            try:
                kubernetes.config.load_incluster_config()
            except kubernetes.config.ConfigException as error:
                raise WorkflowError(
                    "kubernetes-kueue: no cluster credentials: neither a kubeconfig (KUBECONFIG or "
                    "~/.kube/config, e.g. from `az aks get-credentials -g <group> -n <cluster>`) nor an "
                    f"in-cluster service account was found ({error})"
                ) from None

    def _check_cluster_objects(self, settings) -> None:
        try:
            self._check_queue_and_service_account(settings)
        except SettingError as error:
            if settings.namespace != UNSET_NAMESPACE:
                raise
            # A profile without kubernetes-kueue-namespace runs in the kubernetes executor's default namespace,
            # where the LocalQueue is missing or the driver's Role (rbac.yaml) grants nothing: say that first.
            raise SettingError(
                f"{error}. Note: kubernetes-kueue-namespace is {UNSET_NAMESPACE!r}, the kubernetes executor's "
                f"default when it is not set; set it in {PROFILE} to the namespace that holds the LocalQueue "
                "(snakemake with profiles/k8s/namespace.yaml)"
            ) from None

    def _check_queue_and_service_account(self, settings) -> None:
        namespace, queue = settings.namespace, settings.queue_name
        queues = self._local_queues(namespace)
        if queue not in queues:
            raise SettingError(
                f"kubernetes-kueue-queue-name: Kueue LocalQueue {queue!r} does not exist in namespace "
                f"{namespace!r}; Kueue would leave every Job suspended. Existing LocalQueues: "
                f"{sorted(queues) or 'none'}. Apply profiles/k8s/kueue/localqueue.yaml or set "
                f"kubernetes-kueue-queue-name in {PROFILE} to one of them"
            )
        # An existing queue whose ClusterQueue is missing or inactive admits nothing either.
        check_local_queue_active(queues[queue], namespace)
        if settings.workload_identity:
            account = settings.service_account_name
            try:
                found = self._retry_transient(
                    lambda: kubernetes.client.CoreV1Api().read_namespaced_service_account(account, namespace)
                )
            except ApiException as error:
                if error.status != 404:
                    raise read_refused(error, "serviceaccounts", "get", namespace) from None
                raise SettingError(
                    f"kubernetes-kueue-service-account-name: ServiceAccount {account!r} does not exist in "
                    f"namespace {namespace!r}: apply profiles/k8s/serviceaccount.yaml (with your identity's "
                    "client id) or set the name of yours"
                ) from None
            check_workload_identity_annotations(found.metadata.annotations, account, namespace)

    def _local_queues(self, namespace: str) -> dict[str, dict]:
        """The namespace's LocalQueues by name, each with the status Kueue reports for it."""
        api = kubernetes.client.CustomObjectsApi()
        try:
            listed = self._retry_transient(
                lambda: api.list_namespaced_custom_object(
                    KUEUE_GROUP, KUEUE_VERSION, namespace, "localqueues"
                )
            )
        except urllib3.exceptions.HTTPError as error:
            raise SettingError(
                f"kubernetes-kueue: the Kubernetes API server at {api.api_client.configuration.host} cannot "
                f"be reached ({type(error).__name__}); check KUBECONFIG and its current context "
                "(`kubectl config current-context`, `az aks get-credentials -g <group> -n <cluster>`)"
            ) from None
        except ApiException as error:
            if error.status == 404:
                raise SettingError(
                    f"the cluster does not serve {KUEUE_GROUP}/{KUEUE_VERSION}: install "
                    f"{SUPPORTED_KUEUE}, as profiles/k8s/README.md says (install order, step 2), "
                    "before running with --executor kubernetes-kueue"
                ) from None
            raise read_refused(error, "localqueues", "get/list", namespace) from None
        return {item["metadata"]["name"]: item for item in listed.get("items", [])}


def _retry_after(error: ApiException, default: float) -> float:
    """The server's Retry-After (seconds, as Kubernetes sends it), capped; else ``default``."""
    try:
        return min(float((error.headers or {}).get("Retry-After")), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return default
