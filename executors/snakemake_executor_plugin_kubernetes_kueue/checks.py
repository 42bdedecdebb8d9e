"""Checks of the executor's settings that need no cluster: names and formats, each failure naming the setting.

Pure Python (no kubernetes client), so the rules are unit-tested on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Kubernetes object names of namespaces, LocalQueues and ServiceAccounts are DNS-1123 labels/subdomains; the
# queue name is also a label value (kueue.x-k8s.io/queue-name), which caps it at 63 characters.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# Azure: storage account names are 3-24 characters, lowercase letters and digits only.
STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
WORKLOAD_IDENTITY_CLIENT_ID = "azure.workload.identity/client-id"
# The placeholder client id in profiles/k8s/serviceaccount.yaml: never a real identity.
PLACEHOLDER_CLIENT_ID = "00000000-0000-0000-0000-000000000000"
PROFILE = "profiles/k8s/config.yaml"


class SettingError(ValueError):
    """A setting of the executor is wrong; the message names the setting and the fix."""


@dataclass(frozen=True)
class SecretVolume:
    """A Kubernetes Secret mounted read-only into every Job's pod (by name: no key material in the run)."""

    secret: str
    path: str

    @classmethod
    def parse(cls, text: str) -> SecretVolume:
        secret, _, path = text.partition(":")
        if not DNS_SUBDOMAIN.match(secret) or len(secret) > 253 or not path.startswith("/"):
            raise SettingError(
                f"kubernetes-kueue-secret-volumes: {text!r} is not <secret-name>:<absolute mount path> "
                "(for example dask-tls:/etc/dask-tls)"
            )
        return cls(secret, path.rstrip("/") or "/")

    def unparse(self) -> str:
        return f"{self.secret}:{self.path}"


def parse_env(items: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` items of kubernetes-kueue-env as a dict (values are plain text in the Job spec)."""
    parsed = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not ENV_NAME.match(name):
            raise SettingError(
                f"kubernetes-kueue-env: {item!r} is not NAME=VALUE; secrets never go here "
                "(they would be readable in the Job spec): use envvars or workload identity"
            )
        parsed[name] = value
    return parsed


def check_name(value: str | None, setting: str, what: str, fix: str) -> str:
    """A namespace, LocalQueue or ServiceAccount name; a missing or malformed one stops the run."""
    if not value:
        raise SettingError(f"{setting} is not set: {fix}")
    if len(value) > 63 or not DNS_LABEL.match(value):
        raise SettingError(
            f"{setting}: {value!r} is not a valid {what} name (lowercase letters, digits and '-', "
            f"at most 63 characters, starting and ending with a letter or digit): {fix}"
        )
    return value


def check_storage_account(value: str | None) -> str:
    """The Azure storage account of the default storage (SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME)."""
    if not value:
        raise SettingError(
            "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME is not set: export it to the name of the storage account "
            "that holds default-storage-prefix (the --storage-azure-account-name flag is not forwarded to "
            "the jobs, the variable is)"
        )
    if not STORAGE_ACCOUNT.match(value):
        raise SettingError(
            f"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME: {value!r} is not an Azure storage account name "
            "(3-24 lowercase letters and digits; the name, not the URL): "
            "see `az storage account list --query [].name`"
        )
    return value


def check_workload_identity_annotations(
    annotations: dict[str, str] | None, account: str, namespace: str
) -> str:
    """The client id a workload-identity ServiceAccount carries; the placeholder or none stops the run."""
    client_id = (annotations or {}).get(WORKLOAD_IDENTITY_CLIENT_ID, "")
    fix = (
        f"kubectl -n {namespace} annotate serviceaccount {account} --overwrite "
        f"{WORKLOAD_IDENTITY_CLIENT_ID}=$(az identity show -g <group> -n <identity> --query clientId -o tsv) "
        "(profiles/k8s/README.md, 'Azure without secrets')"
    )
    if not client_id:
        raise SettingError(
            f"kubernetes-kueue-service-account-name: ServiceAccount {namespace}/{account} has no "
            f"{WORKLOAD_IDENTITY_CLIENT_ID} annotation, so its pods get no Azure token: {fix}"
        )
    if client_id == PLACEHOLDER_CLIENT_ID:
        raise SettingError(
            f"kubernetes-kueue-service-account-name: ServiceAccount {namespace}/{account} still carries the "
            f"placeholder {WORKLOAD_IDENTITY_CLIENT_ID} of profiles/k8s/serviceaccount.yaml: {fix}"
        )
    return client_id
