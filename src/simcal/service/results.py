"""Where finished jobs' Parquet files go: a local directory, or Azure Blob (``az://container/prefix``).

Azure credentials, in this order: the connection string in ``AZURE_STORAGE_CONNECTION_STRING`` (the Azurite
emulator, development), else the account URL (``--azure-account-url``, ``AZURE_STORAGE_ACCOUNT_URL``, or
``https://<AZURE_STORAGE_ACCOUNT>.blob.core.windows.net``) with ``DefaultAzureCredential``: workload identity in
AKS, a managed identity on a VM, ``az login`` on a workstation. No credential is ever logged or stored.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlparse

from simcal.tables import atomic_write

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class ResultsError(ValueError):
    """The results location is unusable; the message says what to set."""


class LocalResults:
    def __init__(self, directory: str | Path):
        # Absolute: results_path is shown to clients and kept in the registry across restarts from elsewhere.
        self.directory = Path(directory).absolute()
        try:  # a directory the service cannot write to would fail every job after all of its simulations ran
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.directory, prefix=".simcal-write-check-"):
                pass
        except OSError as error:
            raise ResultsError(
                f"--results {self.directory}: cannot write results there ({error.strerror or error}); "
                "expected a directory this service can write to"
            ) from error

    def publish(self, path: Path, job_id: str) -> str:
        target = self.directory / f"{job_id}.parquet"
        with open(path, "rb") as source:
            atomic_write(target, lambda handle: shutil.copyfileobj(source, handle))
        return str(target)

    def chunks(self, results_path: str) -> Iterator[bytes]:
        with open(results_path, "rb") as handle:
            while block := handle.read(CHUNK):
                yield block

    def exists(self, results_path: str) -> bool:
        return Path(results_path).is_file()


class AzureResults:
    def __init__(self, url: str, account_url: str | None = None, env: Mapping[str, str] | None = None):
        parsed = urlparse(url)
        if parsed.scheme != "az" or not parsed.netloc:
            raise ResultsError(f"--results {url!r}: expected az://<container>/<prefix> or a local directory")
        self.url = url.rstrip("/")
        self.container_name, self.prefix = parsed.netloc, parsed.path.strip("/")
        self.service = blob_service(account_url, os.environ if env is None else env)
        self.container = self.service.get_container_client(self.container_name)
        from azure.core.exceptions import AzureError, ResourceExistsError

        try:
            self.container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as error:  # no route, no permission, no such account: say so before serving
            raise ResultsError(
                f"--results {url}: cannot use the container {self.container_name!r} at {self.service.url} "
                f"({type(error).__name__}: {str(error).splitlines()[0]})"
            ) from error

    def _name(self, job_id: str) -> str:
        return f"{self.prefix}/{job_id}.parquet" if self.prefix else f"{job_id}.parquet"

    def _blob(self, results_path: str) -> str:
        return results_path.removeprefix(f"az://{self.container_name}/")

    def publish(self, path: Path, job_id: str) -> str:
        name = self._name(job_id)
        with open(path, "rb") as handle:
            self.container.upload_blob(name, handle, overwrite=True)
        return f"az://{self.container_name}/{name}"

    def chunks(self, results_path: str) -> Iterator[bytes]:
        yield from self.container.download_blob(self._blob(results_path)).chunks()

    def exists(self, results_path: str) -> bool:
        return self.container.get_blob_client(self._blob(results_path)).exists()


def blob_service(account_url: str | None, env: Mapping[str, str]):
    from azure.storage.blob import BlobServiceClient

    connection = env.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        return BlobServiceClient.from_connection_string(connection)
    account_url = account_url or env.get("AZURE_STORAGE_ACCOUNT_URL")
    if not account_url and env.get("AZURE_STORAGE_ACCOUNT"):
        account_url = f"https://{env['AZURE_STORAGE_ACCOUNT']}.blob.core.windows.net"
    if not account_url:
        raise ResultsError(
            "results in Azure Blob need the storage account: --azure-account-url, AZURE_STORAGE_ACCOUNT_URL or "
            "AZURE_STORAGE_ACCOUNT (credentials from the default identity chain), or "
            "AZURE_STORAGE_CONNECTION_STRING"
        )
    from azure.identity import DefaultAzureCredential

    return BlobServiceClient(account_url, credential=DefaultAzureCredential())


def results_store(url: str | None, state_dir: Path, account_url: str | None = None):
    if url is None:
        return LocalResults(state_dir / "results")
    if url.startswith("az://"):
        return AzureResults(url, account_url)
    if "://" in url:
        raise ResultsError(f"--results {url!r}: expected az://<container>/<prefix> or a local directory")
    return LocalResults(url)
