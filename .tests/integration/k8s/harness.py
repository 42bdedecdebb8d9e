"""Fixtures and helpers shared by the Azure and Kubernetes integration tests.

Import the fixtures into a test module with ``from harness import azurite, workspace  # noqa: F401``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from secretscan import assert_no_secrets_in_tree, find_secrets  # noqa: F401
from testkit import REPO, require

HERE = Path(__file__).resolve().parent
AZURITE_DIR = REPO / ".azurite"
AZURITE_BIN = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
K8S_PROFILE = REPO / "profiles" / "k8s"
# What a source checkout of the catalog needs to run (the k8s jobs receive these as the source archive).
WORKSPACE_PATHS = ["workflow", "wrappers", "src", "config", ".tests/integration/k8s", "pyproject.toml"]
TINY_SNAKEFILE = ".tests/integration/k8s/Snakefile"
TINY_OUTPUTS = [
    "results/tiny/table.csv",
    "results/tiny/fit.json",
    "results/tiny/eval_teacher.json",
    "results/tiny/eval_student.json",
    "results/tiny/summary.json",
]


@dataclass
class Azurite:
    connection_string: str
    account_name: str

    def env(self) -> dict[str, str]:
        return {
            "AZURITE_CONNECTION_STRING": self.connection_string,
            "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": self.account_name,
        }

    def container(self, name: str):
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient.from_connection_string(self.connection_string).get_container_client(name)

    def blob_names(self, container: str, prefix: str = "") -> set[str]:
        client = self.container(container)
        if not client.exists():
            return set()
        return {blob.name for blob in client.list_blobs(name_starts_with=prefix)}

    def read(self, container: str, name: str) -> bytes:
        return self.container(container).download_blob(name).readall()


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def azurite():
    """Azurite on 127.0.0.1 (started here when installed but not running, and stopped again)."""
    port = int(os.environ.get("AZURITE_BLOB_PORT", "10000"))
    running = (AZURITE_DIR / "azurite.pid").exists() and _port_open(port)
    require(running or AZURITE_BIN.exists(), "Azurite", "run scripts/ci-setup-azurite.sh")
    proc = subprocess.run(
        [str(REPO / "scripts" / "azurite-up.sh"), "--env"], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/azurite-up.sh failed:\n{proc.stderr}")
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1)
        for line in proc.stdout.splitlines()
        if line.startswith("export ")
    )
    yield Azurite(exported["AZURITE_CONNECTION_STRING"], exported["SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"])
    if not running:
        subprocess.run([str(REPO / "scripts" / "azurite-down.sh")], check=False)


def unique_container(label: str) -> str:
    # Container names: 3-63 lowercase letters, digits and hyphens.
    return f"{label}-{uuid.uuid4().hex[:12]}"


def make_workspace(target: Path) -> Path:
    """A fresh git checkout-like copy of the catalog: Snakemake archives git-tracked files for the jobs."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", *WORKSPACE_PATHS],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for relative in listed:
        source = REPO / relative
        if source.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    subprocess.run(["git", "add", "-A"], cwd=target, check=True)
    return target


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return make_workspace(tmp_path / "checkout")


def k8s_profile() -> dict:
    return yaml.safe_load((K8S_PROFILE / "config.yaml").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pod_path() -> str:
    """PATH of a stand-in pod: its "image" is this virtualenv, so `python -m snakemake` is the project's."""
    from testkit import venv_bin

    return f"{Path(venv_bin('python')).parent}:/usr/local/bin:/usr/bin:/bin"


# Kueue's objects in the README's install order: a ClusterQueue naming a missing flavor stays inactive, and a
# LocalQueue whose ClusterQueue is missing or inactive admits nothing.
KUEUE_MANIFESTS = ("kueue/resourceflavors.yaml", "kueue/clusterqueue.yaml", "kueue/localqueue.yaml")


def profile_manifests(*names: str) -> list[dict]:
    """The documents of profiles/k8s/<name> (what `kubectl apply -f` would create before a run)."""
    return [
        document
        for name in names
        for document in yaml.safe_load_all((K8S_PROFILE / name).read_text())
        if document
    ]


def manifest_container(path: Path, name: str) -> dict:
    """The first container of the Deployment ``name`` in the manifest file ``path``."""
    for document in yaml.safe_load_all(path.read_text()):
        if document and document["kind"] == "Deployment" and document["metadata"]["name"] == name:
            return document["spec"]["template"]["spec"]["containers"][0]
    raise KeyError(f"no Deployment {name} in {path}")


# Runs snakemake as if the k8s extra were not installed: neither the kubernetes client nor the kubernetes
# executor can be found or imported (Snakemake lists executor plugins with pkgutil, then imports each).
WITHOUT_K8S_EXTRA = """
import pkgutil, sys
from importlib.abc import MetaPathFinder
HIDDEN = {"kubernetes", "snakemake_executor_plugin_kubernetes"}
class Hide(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Hide())
listed = pkgutil.iter_modules
pkgutil.iter_modules = lambda *a, **k: (m for m in listed(*a, **k) if m.name not in HIDDEN)
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""


def snakemake_command(k8s_extra: bool = True) -> list[str]:
    """The snakemake CLI of the project venv, or the same as if the k8s extra were not installed."""
    from testkit import venv_bin

    return [venv_bin("snakemake")] if k8s_extra else [venv_bin("python"), "-c", WITHOUT_K8S_EXTRA]


def write_tls_certificates(directory: Path) -> Path:
    """A throwaway CA and one certificate it signed (server and client use), as the Secret dask-tls holds them.

    Files ca.crt, tls.crt and tls.key, as cert-manager or the README's openssl commands write them.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test dask CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.DNSName("dask-scheduler.snakemake.svc.cluster.local"), x509.DNSName("localhost")]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([*names, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "tls.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return directory


def mounted(value: str, mount_path: str, directory: Path) -> str:
    """``value`` with the Secret's mount path replaced by the local directory holding its files."""
    return value.replace(mount_path.rstrip("/") + "/", f"{directory}/")


@dataclass
class DaskTls:
    """The manifests' TLS Dask cluster on loopback: its address and what a client of it needs."""

    address: str
    certificates: Path
    mount_path: str

    def client_env(self) -> dict[str, str]:
        """The profile's pod environment for the Dask client (kubernetes-kueue-env), mount path translated."""
        pairs = (item.split("=", 1) for item in k8s_profile()["kubernetes-kueue-env"])
        return {name: mounted(value, self.mount_path, self.certificates) for name, value in pairs}

    def secret(self) -> dict:
        """The Secret dask-tls as `kubectl create secret generic dask-tls --from-file=...` would make it."""
        import base64

        data = {
            path.name: base64.b64encode(path.read_bytes()).decode()
            for path in sorted(self.certificates.iterdir())
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "dask-tls", "namespace": "snakemake"},
            "data": data,
        }


@pytest.fixture(scope="session")
def dask_from_manifests(tmp_path_factory):
    """The in-cluster Dask cluster of profiles/k8s/dask, run on loopback from the manifests' own commands.

    Only the network names and the Secret's mount change: the scheduler listens on 127.0.0.1:<free port>
    instead of 0.0.0.0:8786, the workers dial that address instead of the Service's DNS name, and the
    certificate paths under the dask-tls mount point at throwaway certificates made here. Yields a DaskTls.
    """
    from testkit import venv_bin

    here = tmp_path_factory.mktemp("dask-tls")
    scheduler = manifest_container(K8S_PROFILE / "dask" / "scheduler.yaml", "dask-scheduler")
    worker = manifest_container(K8S_PROFILE / "dask" / "workers.yaml", "dask-workers")
    (mount,) = {m["mountPath"] for m in scheduler["volumeMounts"] + worker["volumeMounts"]}
    certificates = write_tls_certificates(here / "certificates")
    port = free_port()
    address = f"tls://127.0.0.1:{port}"
    service_address = next(arg for arg in worker["args"] if arg.startswith("tls://"))
    loopback = {"0.0.0.0": "127.0.0.1", "8786": str(port), ":8787": ":0", service_address: address}
    processes = []
    try:
        for container, role in ((scheduler, "scheduler"), (worker, "worker")):
            command = [venv_bin(container["command"][0]), *container["command"][1:]]
            args = [mounted(loopback.get(arg, arg), mount, certificates) for arg in container["args"]]
            env = {**os.environ, **{e["name"]: e["value"] for e in container.get("env", [])}}
            log = open(here / f"dask-{role}.log", "wb")  # noqa: SIM115 - owned by the child
            processes.append(
                subprocess.Popen([*command, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
            )
            log.close()
            if role == "scheduler":
                _wait_for_port(port, processes[-1], here / "dask-scheduler.log")
        cluster = DaskTls(address, certificates, mount)
        from distributed import Client
        from distributed.security import Security

        security = Security(
            tls_ca_file=str(certificates / "ca.crt"),
            tls_client_cert=str(certificates / "tls.crt"),
            tls_client_key=str(certificates / "tls.key"),
            require_encryption=True,
        )
        with Client(address, security=security, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield cluster
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_for_port(port: int, process: subprocess.Popen, log: Path) -> None:
    import time

    for _ in range(150):
        if _port_open(port):
            return
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the Dask scheduler did not listen on {port}:\n{log.read_text()[-3000:]}")
