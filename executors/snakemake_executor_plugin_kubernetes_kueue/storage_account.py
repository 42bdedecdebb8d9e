"""The Azure default storage's account, checked while the Snakefile is parsed: before Snakemake first uses it.

On the driver, Snakemake uses the default storage long before any executor starts: building the DAG reads
the storage inventory, and a remote run uploads the source archive (snakemake 9, ``Workflow.execute``). A
malformed or non-existent account then fails deep inside the Azure SDK, with a DNS or authentication error
that names neither the setting nor the fix. The workflow calls ``check_default_storage_account(workflow)``
while it is parsed (workflow/rules/common.smk), which is the earliest point where the storage settings are
known and nothing has touched the storage yet.

Checked without any credential: that the account name is set and well formed, that default-storage-prefix
names a well-formed blob container, and that ``<account>.blob.core.windows.net`` exists in DNS. Not checked: the data-plane role (Storage Blob Data
Contributor) of the driver's login or of the pods' identity, which needs a token; profiles/k8s/README.md
says what a missing role looks like.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.request
from collections.abc import Callable

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode

from .checks import SettingError, check_storage_account, check_storage_container

# The endpoint snakemake-storage-plugin-azure 0.4 builds from the account name (public Azure cloud only).
BLOB_HOST = "{account}.blob.core.windows.net"
# Resolved when the account's name is unknown to DNS, to tell "no such account" from "this resolver knows no
# public names": the Entra ID endpoint that every credential of the driver (az login) needs anyway.
CONTROL_HOST = "login.microsoftonline.com"
DNS_TIMEOUT_S = 10.0
# The test hook of the storage plugin: with it set, the plugin talks to Azurite and ignores the account name.
AZURITE_VARIABLE = "AZURITE_CONNECTION_STRING"
ACCOUNT_SETTING = (
    "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME (or --storage-azure-account-name, "
    "profile key storage-azure-account-name)"
)

Resolver = Callable[..., object]
FOUND, NO_SUCH_NAME, UNKNOWN = "found", "no such name", "unknown"


def check_default_storage_account(
    workflow, resolve: Resolver = socket.getaddrinfo, warn: Callable[[str], None] | None = None
) -> str | None:
    """Stop the run if the Azure default storage's account is unset, malformed or does not exist.

    A no-op unless the default storage provider is ``azure``, and in jobs (the driver checked before
    submitting them). Returns the account name that was checked, or None.
    """
    if workflow.storage_settings.default_storage_provider != "azure":
        return None
    if workflow.exec_mode != ExecMode.DEFAULT:
        return None
    settings = workflow.storage_registry.default_storage_provider.settings
    try:
        account = check_storage_account(settings.account_name)
        check_storage_container(workflow.storage_settings.default_storage_prefix)
    except SettingError as error:
        raise WorkflowError(str(error)) from None
    host = BLOB_HOST.format(account=account)
    if os.environ.get(AZURITE_VARIABLE) or _behind_proxy(host):
        # Azurite: the account is not used. A proxy: it resolves the name, local DNS may know nothing.
        return account
    exists = account_exists(account, resolve)
    if exists is False:
        raise WorkflowError(
            f"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME: there is no Azure storage account {account!r}: DNS knows "
            f"no {host}, while it resolves {CONTROL_HOST}. Set {ACCOUNT_SETTING} to the account that holds "
            f"default-storage-prefix {workflow.storage_settings.default_storage_prefix!r} "
            "(`az storage account list --query [].name -o tsv`)"
        )
    if exists is None:
        (warn or _snakemake_warning)(
            f"Could not check that the Azure storage account {account!r} exists: DNS gave no usable answer "
            f"for {host} (offline, a timeout, or a resolver that does not even know {CONTROL_HOST}). "
            f"Continuing; a wrong {ACCOUNT_SETTING} fails when the storage is first used."
        )
    return account


def account_exists(account: str, resolve: Resolver = socket.getaddrinfo) -> bool | None:
    """Whether ``<account>.blob.core.windows.net`` exists: True or False where DNS can tell, else None."""
    outcome = _lookup(BLOB_HOST.format(account=account), resolve)
    if outcome != NO_SUCH_NAME:
        return True if outcome == FOUND else None
    # Some resolvers (sandboxes, split-horizon DNS) answer "no such name" for every public name.
    return False if _lookup(CONTROL_HOST, resolve) == FOUND else None


def _lookup(host: str, resolve: Resolver) -> str:
    outcome = [UNKNOWN]

    def run() -> None:
        try:
            resolve(host, 443)
            outcome[0] = FOUND
        except socket.gaierror as error:
            # EAI_NONAME is the resolver's NXDOMAIN; temporary failures and the rest prove nothing.
            outcome[0] = NO_SUCH_NAME if error.errno == socket.EAI_NONAME else UNKNOWN
        except OSError:
            outcome[0] = UNKNOWN

    # getaddrinfo has no timeout of its own; a daemon thread never holds up the run's exit.
    lookup = threading.Thread(target=run, name=f"dns {host}", daemon=True)
    lookup.start()
    lookup.join(DNS_TIMEOUT_S)
    return outcome[0]


def _behind_proxy(host: str) -> bool:
    return bool(urllib.request.getproxies().get("https")) and not urllib.request.proxy_bypass(host)


def _snakemake_warning(message: str) -> None:
    from snakemake.logging import logger

    logger.warning(message)
