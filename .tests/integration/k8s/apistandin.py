"""A loopback stand-in for the Kubernetes API and kubelet, for contract tests of the k8s profile.

No API server can run on the test machines, so this serves just the calls that
snakemake-executor-plugin-kubernetes 0.5 makes (create/delete Secret, create/read/delete Job, list/delete
Pods, read a pod log) on 127.0.0.1, and keeps the contract honest:

* every Job is validated against the real Kubernetes OpenAPI schema (``kubernetes_validate``, strict),
  then against rules a real cluster enforces later: an extended resource such as ``nvidia.com/gpu``
  needs a limit equal to its request, and (Kueue) a pod without a memory request escapes the quota;
  a rejected Job gets HTTP 422 like a real admission failure;
* an accepted Job runs its pod for real: the container's ``command + args`` in a fresh empty directory
  (the pod's emptyDir ``/workdir``) with the environment taken from the referenced Secret;
* Kueue is emulated by suspension: with ``admit_delay`` a Job is created suspended and only gets a pod
  after the delay, and ``max_running`` caps how many pods run at once (a quota).

It does not emulate scheduling, image pulls, RBAC, the Kueue webhook or GPU device plugins.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import os
import secrets as random_names
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import kubernetes_validate

KUBERNETES_VERSION = "1.33.0"
KUBECONFIG_TEMPLATE = Path(__file__).with_name("kubeconfig.template.yaml")


@dataclass
class Pod:
    name: str
    job: str
    workdir: Path
    process: subprocess.Popen

    def exit_code(self) -> int | None:
        return self.process.poll()


@dataclass
class JobRecord:
    manifest: dict
    namespace: str
    created: float
    admitted: bool = False
    pod: Pod | None = None
    start_error: str = ""


@dataclass
class Rejection:
    name: str
    problems: list[str]


@dataclass
class ApiStandIn:
    """Serve the stand-in API on 127.0.0.1; ``start()`` picks a free port, ``stop()`` ends every pod."""

    pods_root: Path
    pod_path: str
    pod_home: str = field(default_factory=lambda: os.environ.get("HOME", "/root"))
    admit_delay: float = 0.0
    max_running: int = 0
    kubernetes_version: str = KUBERNETES_VERSION
    secrets: dict[str, dict] = field(default_factory=dict)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    submitted: list[dict] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    namespaces: set[str] = field(default_factory=set)
    deleted_secrets: list[str] = field(default_factory=list)
    secret_keys: dict[str, set[str]] = field(default_factory=dict)
    max_seen_running: int = 0

    def __post_init__(self) -> None:
        self.pods_root = Path(self.pods_root)
        self.pods_root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._stopping = threading.Event()

    # ---- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> ApiStandIn:
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        threading.Thread(target=self._admission_loop, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            for record in self.jobs.values():
                if record.pod and record.pod.exit_code() is None:
                    record.pod.process.kill()
                    record.pod.process.wait()

    def write_kubeconfig(self, path: Path, namespace: str) -> Path:
        text = KUBECONFIG_TEMPLATE.read_text().format(server=self.url, namespace=namespace)
        Path(path).write_text(text)
        return Path(path)

    # ---- validation ------------------------------------------------------------------------------
    def problems(self, job: dict) -> list[str]:
        found = []
        try:
            kubernetes_validate.validate(job, self.kubernetes_version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = "/".join(str(p) for p in error.path)
            found.append(f"schema ({self.kubernetes_version}) at {path or '<root>'}: {error.message}")
        for container in job.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            resources = container.get("resources") or {}
            requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
            for name, value in requests.items():
                # Kubernetes: extended resources (vendor.com/x) cannot be overcommitted; limit == request.
                if "/" in name and str(limits.get(name)) != str(value):
                    found.append(
                        f"container {container.get('name')}: {name} requested without an equal limit"
                    )
            if "memory" not in requests:
                found.append(f"container {container.get('name')}: no memory request, Kueue cannot count it")
        return found

    # ---- kubelet ---------------------------------------------------------------------------------
    def _pod_environment(self, container: dict, namespace: str) -> dict[str, str]:
        env = {"PATH": self.pod_path, "HOME": self.pod_home, "LANG": "C.UTF-8"}
        for variable in container.get("env") or []:
            if "value" in variable:
                env[variable["name"]] = variable["value"]
                continue
            reference = variable["valueFrom"]["secretKeyRef"]
            secret = self.secrets.get(reference["name"])
            if secret is None or reference["key"] not in (secret.get("data") or {}):
                raise KeyError(
                    f"secret {reference['name']}/{reference['key']} referenced by the pod is missing"
                )
            env[variable["name"]] = base64.b64decode(secret["data"][reference["key"]]).decode()
        return env

    def _start_pod(self, name: str, record: JobRecord) -> None:
        container = record.manifest["spec"]["template"]["spec"]["containers"][0]
        workdir = self.pods_root / f"{name}-{random_names.token_hex(3)}"
        workdir.mkdir(parents=True)
        env = self._pod_environment(container, record.namespace)
        log = open(workdir / "pod.log", "wb")  # noqa: SIM115 - the child process owns it
        process = subprocess.Popen(
            [*container.get("command", []), *container.get("args", [])],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        record.pod = Pod(name=workdir.name, job=name, workdir=workdir, process=process)
        record.admitted = True
        record.manifest["spec"]["suspend"] = False

    def running(self) -> int:
        return sum(1 for r in self.jobs.values() if r.pod is not None and r.pod.exit_code() is None)

    def _admission_loop(self) -> None:
        # Kueue admits suspended Workloads in creation order while the quota has room.
        while not self._stopping.wait(0.2):
            with self._lock:
                for name, record in sorted(self.jobs.items(), key=lambda item: item[1].created):
                    if record.admitted or time.monotonic() - record.created < self.admit_delay:
                        continue
                    if self.max_running and self.running() >= self.max_running:
                        break
                    try:
                        self._start_pod(name, record)
                    except (KeyError, OSError) as error:  # a pod that cannot start fails its Job
                        record.admitted, record.start_error = True, str(error)
                self.max_seen_running = max(self.max_seen_running, self.running())

    # ---- API objects -----------------------------------------------------------------------------
    def job_with_status(self, name: str) -> dict:
        record = self.jobs[name]
        job = copy.deepcopy(record.manifest)
        code = record.pod.exit_code() if record.pod else None
        if record.start_error:
            status = {"failed": 1}
        elif record.pod is None:
            status = {}  # suspended: no pods yet
        elif code is None:
            status = {"active": 1}
        else:
            status = {"succeeded": 1} if code == 0 else {"failed": 1}
        job["status"] = status
        return job

    def pod_objects(self, job_name: str) -> list[dict]:
        record = self.jobs.get(job_name)
        if record is None or record.pod is None:
            return []
        code = record.pod.exit_code()
        state = {"running": {}} if code is None else {"terminated": {"exitCode": code}}
        return [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": record.pod.name, "labels": {"job-name": job_name}},
                "status": {
                    "containerStatuses": [
                        {
                            "name": "snakemake",
                            "ready": code is None,
                            "restartCount": 0,
                            "image": record.manifest["spec"]["template"]["spec"]["containers"][0]["image"],
                            "imageID": "",
                            "state": state,
                        }
                    ]
                },
            }
        ]

    def pod_log(self, pod_name: str) -> bytes:
        for record in self.jobs.values():
            if record.pod and record.pod.name == pod_name:
                return (record.pod.workdir / "pod.log").read_bytes()
        raise KeyError(pod_name)

    def pod_logs(self) -> dict[str, str]:
        """Every pod's combined output, by Job name (for assertions and for the secret scan)."""
        with self._lock:
            return {
                name: (r.pod.workdir / "pod.log").read_text(errors="replace")
                for name, r in self.jobs.items()
                if r.pod is not None
            }


def _status(code: int, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "message": message}


class _Handler(BaseHTTPRequestHandler):
    api: ApiStandIn

    def log_message(self, *args) -> None:  # keep the test output quiet
        pass

    def _send(self, code: int, body: dict | bytes, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _route(self) -> tuple[list[str], dict]:
        url = urllib.parse.urlparse(self.path)
        return url.path.strip("/").split("/"), urllib.parse.parse_qs(url.query)

    @staticmethod
    def _namespace(parts: list[str]) -> str:
        return parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""

    def do_POST(self) -> None:
        parts, _ = self._route()
        body, api, namespace = self._body(), self.api, self._namespace(parts)
        with api._lock:
            api.namespaces.add(namespace)
            if parts[-1] == "secrets":
                api.secrets[body["metadata"]["name"]] = body
                api.secret_keys[body["metadata"]["name"]] = set(body.get("data") or {})
                return self._send(201, body)
            if parts[-1] == "jobs":
                body.setdefault("apiVersion", "batch/v1")
                body.setdefault("kind", "Job")
                name = body["metadata"]["name"]
                api.submitted.append(copy.deepcopy(body))
                problems = api.problems(body)
                if problems:
                    api.rejected.append(Rejection(name, problems))
                    return self._send(
                        422, _status(422, f"Job.batch {name!r} is invalid: " + "; ".join(problems))
                    )
                if name in api.jobs:
                    return self._send(409, _status(409, f"jobs.batch {name!r} already exists"))
                body["spec"]["suspend"] = True  # Kueue's webhook suspends every Job it manages
                api.jobs[name] = JobRecord(manifest=body, namespace=namespace, created=time.monotonic())
                return self._send(201, body)
        self._send(404, _status(404, f"POST {self.path} is not served by the stand-in"))

    def do_GET(self) -> None:
        parts, query = self._route()
        api = self.api
        with api._lock:
            if "jobs" in parts and parts.index("jobs") + 1 < len(parts):
                name = parts[parts.index("jobs") + 1]
                if name not in api.jobs:
                    return self._send(404, _status(404, f"jobs.batch {name!r} not found"))
                return self._send(200, api.job_with_status(name))
            if parts[-1] == "log":
                try:
                    return self._send(200, api.pod_log(parts[-2]), "text/plain")
                except KeyError:
                    return self._send(404, _status(404, f"pods {parts[-2]!r} not found"))
            if parts[-1] == "pods":
                selector = query.get("labelSelector", [""])[0]
                job_name = selector.split("=", 1)[1] if selector.startswith("job-name=") else ""
                items = api.pod_objects(job_name)
                return self._send(
                    200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
                )
        self._send(404, _status(404, f"GET {self.path} is not served by the stand-in"))

    def do_DELETE(self) -> None:
        parts, _ = self._route()
        if self.headers.get("Content-Length"):
            self._body()
        api = self.api
        with api._lock:
            if "secrets" in parts:
                api.secrets.pop(parts[-1], None)
                api.deleted_secrets.append(parts[-1])
            elif "jobs" in parts:
                record = api.jobs.get(parts[-1])
                if record and record.pod and record.pod.exit_code() is None:
                    record.pod.process.kill()  # deleting a running Job kills its pod
            # Pods are kept (with their logs) for the test's assertions; the plugin only needs a 200.
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods-root", type=Path, default=Path("standin-pods"))
    parser.add_argument("--kubeconfig", type=Path, default=Path("standin-kubeconfig.yaml"))
    parser.add_argument("--namespace", default="snakemake")
    parser.add_argument("--admit-delay", type=float, default=0.0)
    parser.add_argument("--max-running", type=int, default=0)
    args = parser.parse_args()
    api = ApiStandIn(
        pods_root=args.pods_root,
        pod_path=os.environ["PATH"],
        admit_delay=args.admit_delay,
        max_running=args.max_running,
    ).start()
    api.write_kubeconfig(args.kubeconfig, args.namespace)
    print(f"stand-in API at {api.url}; export KUBECONFIG={args.kubeconfig.resolve()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        api.stop()


if __name__ == "__main__":
    main()
