"""The Job pods' Azure credential: workload identity, through the storage plugin's own credential chain.

Under the Kubernetes tests the pods reach Azurite with the connection string the stand-in injects, which
short-cuts the plugin's credential chain. Here the chain runs as in a pod on AKS: the variables the
workload-identity webhook injects, the federated token file, no connection string and no Azure CLI. The
Entra token endpoint and Blob storage are answered in-process (requests' transport is replaced), so the test
needs no network, and it fails if the chain would use anything but the federated token.

Relies on (pinned by this test): snakemake-storage-plugin-azure 0.4.x building
``ChainedTokenCredential(AzureCliCredential(), ManagedIdentityCredential(), EnvironmentCredential())``, and
azure-identity's ManagedIdentityCredential switching to WorkloadIdentityCredential when the webhook's
variables are set (azure-identity 1.27.0 in constraints.txt; the plugin requires >= 1.17.1).
"""

from __future__ import annotations

import io
import json
import logging
import urllib.parse

import pytest
import requests
import urllib3
from azure.identity import ChainedTokenCredential, ManagedIdentityCredential, WorkloadIdentityCredential
from snakemake_storage_plugin_azure import StorageProvider, StorageProviderSettings

ACCOUNT = "mylab42"
CLIENT_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
TENANT_ID = "11111111-2222-3333-4444-555555555555"
AUTHORITY = "https://login.microsoftonline.com/"
FEDERATED_TOKEN = "eyJhbGciOiJSUzI1NiJ9.service-account-token.signature"
BLOB_TOKEN = "blob-access-token-from-entra"
BLOB_SCOPE = "https://storage.azure.com/.default"
# Variables that would select another credential of the chain or another managed-identity platform.
OTHER_CREDENTIALS = (
    "AZURITE_CONNECTION_STRING",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
)


def _response(request, status: int, body: bytes = b"", headers: dict | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code, response.request, response.url = status, request, request.url
    response.raw = urllib3.HTTPResponse(
        body=io.BytesIO(body), status=status, headers=headers or {}, preload_content=False
    )
    response.headers = requests.structures.CaseInsensitiveDict(response.raw.headers)
    return response


class FakeAzure:
    """Entra's token endpoint for the webhook's tenant and the account's Blob endpoint; nothing else answers."""

    def __init__(self) -> None:
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest) -> requests.Response:
        self.requests.append(request)
        if request.method == "POST" and request.url == f"{AUTHORITY}{TENANT_ID}/oauth2/v2.0/token":
            token = {
                "token_type": "Bearer",
                "expires_in": 3600,
                "ext_expires_in": 3600,
                "access_token": BLOB_TOKEN,
            }
            return _response(request, 200, json.dumps(token).encode(), {"Content-Type": "application/json"})
        if request.url.startswith(f"https://{ACCOUNT}.blob.core.windows.net/"):
            return _response(request, 200, headers={"x-ms-version": "2025-01-05"})
        raise requests.ConnectionError(f"no network in this test: {request.method} {request.url}")


@pytest.fixture
def pod_on_aks(tmp_path, monkeypatch):
    """A pod's environment after the AKS workload-identity webhook, as the stand-in's webhook also sets it."""
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text(FEDERATED_TOKEN)
    for name in OTHER_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("AZURE_TENANT_ID", TENANT_ID)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", AUTHORITY)
    monkeypatch.setenv("PATH", str(tmp_path))  # the job image has no Azure CLI
    azure = FakeAzure()
    monkeypatch.setattr(
        requests.adapters.HTTPAdapter, "send", lambda adapter, request, **_: azure.send(request)
    )
    return azure


def plugins_provider(tmp_path) -> StorageProvider:
    """The default storage provider as Snakemake builds it in a pod (snakemake/storage.py)."""
    return StorageProvider(
        logger=logging.getLogger("snakemake"),
        local_prefix=tmp_path / ".snakemake" / "storage" / "azure",
        settings=StorageProviderSettings(account_name=ACCOUNT),
        keep_local=False,
        retrieve=True,
        is_default=True,
    )


def test_pods_reach_blob_storage_with_the_federated_token_of_workload_identity(tmp_path, pod_on_aks):
    provider = plugins_provider(tmp_path)
    chain = provider.bsc.credential
    assert isinstance(chain, ChainedTokenCredential)
    (managed,) = [c for c in chain.credentials if isinstance(c, ManagedIdentityCredential)]
    # Private attribute: which credential ManagedIdentityCredential chose (azure-identity 1.27).
    assert isinstance(managed._credential, WorkloadIdentityCredential)

    # One try: a chain that fails fails at once, instead of after the SDK's retries.
    assert provider.bsc.get_container_client("snakemake").exists(retry_total=0)
    token_request, blob_request = pod_on_aks.requests
    form = {key: values for key, values in urllib.parse.parse_qs(token_request.body).items()}
    assert form == {
        "client_assertion": [FEDERATED_TOKEN],
        "client_assertion_type": ["urn:ietf:params:oauth:client-assertion-type:jwt-bearer"],
        "client_id": [CLIENT_ID],
        "grant_type": ["client_credentials"],
        "scope": [BLOB_SCOPE],
    }
    assert blob_request.url.startswith(f"https://{ACCOUNT}.blob.core.windows.net/snakemake?")
    assert blob_request.headers["Authorization"] == f"Bearer {BLOB_TOKEN}"
