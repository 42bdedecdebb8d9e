"""The Azure default storage's account is checked while the Snakefile is parsed, before Snakemake uses it.

As on a real driver, every test runs without AZURITE_CONNECTION_STRING (with it, the storage plugin ignores
the account and the DNS lookup is skipped). DNS answers come from a fake resolver: the tests need no network.
Not covered: a real DNS lookup, and the Storage Blob Data Contributor role (nothing checks it before the run).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from snakemake_executor_plugin_kubernetes_kueue import storage_account
from snakemake_executor_plugin_kubernetes_kueue.storage_account import (
    CONTROL_HOST,
    check_default_storage_account,
)
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import ExecMode
from testkit import REPO, run_snakemake

PREFIX = "az://snakemake/kd-gat"
NO_SUCH_NAME = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
TRY_AGAIN = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


def driver_workflow(account: str | None, provider: str | None = "azure", mode=ExecMode.DEFAULT):
    """The parts of snakemake's Workflow the check reads, as on the driver of `snakemake --profile ...`."""
    return SimpleNamespace(
        storage_settings=SimpleNamespace(default_storage_provider=provider, default_storage_prefix=PREFIX),
        exec_mode=mode,
        storage_registry=SimpleNamespace(
            default_storage_provider=SimpleNamespace(settings=SimpleNamespace(account_name=account))
        ),
    )


@pytest.mark.parametrize(
    "prefix, container",
    [
        ("az://KD_GAT/run1", "KD_GAT"),
        ("az://kd_gat/run1", "kd_gat"),
        ("az://kd--gat", "kd--gat"),
        ("az://kd-gat-/run1", "kd-gat-"),
        ("az://kd/run1", "kd"),
    ],
)
def test_a_malformed_container_in_the_storage_prefix_stops_the_parse_naming_it(prefix, container):
    """Azure refuses such a container with HTTP 400 (InvalidResourceName) only when Snakemake first reads the
    storage, from deep inside the SDK; the rule is Azure's "Naming and Referencing Containers, Blobs, and
    Metadata"."""
    workflow = driver_workflow("acct1")
    workflow.storage_settings.default_storage_prefix = prefix
    with pytest.raises(WorkflowError) as refused:
        check_default_storage_account(workflow, resolve=FakeDns(acct1_blob_core_windows_net="found"))
    assert str(refused.value).startswith(
        f"default-storage-prefix {prefix!r}: {container!r} is not an Azure blob container name (3-63 lowercase "
        "letters, digits and single hyphens, starting and ending with a letter or digit)"
    )
    for good in ("az://kd-gat/run1", "az://snakemake", "az://" + "a" * 63 + "/x", "az://0ab/x"):
        workflow.storage_settings.default_storage_prefix = good
        assert check_default_storage_account(workflow, resolve=FakeDns(acct1_blob_core_windows_net="found"))


class FakeDns:
    """getaddrinfo with fixed answers per host: an exception to raise, "hang", or else an address."""

    def __init__(self, **answers):
        self.answers = {host.replace("_", "."): answer for host, answer in answers.items()}
        self.asked: list[str] = []

    def __call__(self, host, port, *args, **kwargs):
        self.asked.append(host)
        answer = self.answers.get(host, NO_SUCH_NAME)
        if isinstance(answer, Exception):
            raise answer
        if answer == "hang":
            time.sleep(5)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.7", port))]


@pytest.fixture(autouse=True)
def real_driver(monkeypatch):
    """No Azurite short-cut and no proxy: the storage plugin would contact <account>.blob.core.windows.net."""
    for name in (
        "AZURITE_CONNECTION_STRING",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)


def test_an_account_that_dns_knows_passes():
    dns = FakeDns(mylab42_blob_core_windows_net="ok")
    assert check_default_storage_account(driver_workflow("mylab42"), resolve=dns) == "mylab42"
    assert dns.asked == ["mylab42.blob.core.windows.net"]


def test_an_account_unknown_to_dns_stops_the_run_naming_the_setting_and_the_fix():
    dns = FakeDns(login_microsoftonline_com="ok")  # the account's name: NXDOMAIN
    with pytest.raises(WorkflowError) as refused:
        check_default_storage_account(driver_workflow("mylab43"), resolve=dns)
    message = str(refused.value)
    assert message.startswith(
        "SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME: there is no Azure storage account 'mylab43'"
    )
    assert "--storage-azure-account-name" in message and "profile key storage-azure-account-name" in message
    assert f"default-storage-prefix '{PREFIX}'" in message and "az storage account list" in message
    assert dns.asked == ["mylab43.blob.core.windows.net", CONTROL_HOST]


@pytest.mark.parametrize(
    "dns",
    [
        FakeDns(),  # a resolver that knows no public name at all (a sandbox, split-horizon DNS)
        FakeDns(mylab44_blob_core_windows_net=TRY_AGAIN, login_microsoftonline_com="ok"),  # no answer
        FakeDns(mylab44_blob_core_windows_net="hang", login_microsoftonline_com="ok"),  # past the timeout
    ],
    ids=["no public names", "temporary failure", "timeout"],
)
def test_dns_that_cannot_tell_only_warns(monkeypatch, dns):
    monkeypatch.setattr(storage_account, "DNS_TIMEOUT_S", 0.5)
    warnings = []
    started = time.monotonic()
    assert check_default_storage_account(driver_workflow("mylab44"), resolve=dns, warn=warnings.append)
    assert time.monotonic() - started < 3
    (warning,) = warnings
    assert warning.startswith("Could not check that the Azure storage account 'mylab44' exists")


def test_a_lookup_that_never_answers_does_not_hold_up_the_end_of_the_process():
    """getaddrinfo has no timeout of its own: the lookup runs in a daemon thread, so a resolver that never answers
    costs the driver DNS_TIMEOUT_S and a warning, and never its exit (a thread left waiting would keep the process
    alive until the resolver gave up)."""
    script = (
        "import threading\n"
        "from snakemake_executor_plugin_kubernetes_kueue import storage_account\n"
        "storage_account.DNS_TIMEOUT_S = 0.2\n"
        "never = threading.Event()\n"
        "print(storage_account.account_exists('mylab47', lambda host, port: never.wait(120)))\n"
    )
    path = os.pathsep.join(filter(None, [str(REPO / "executors"), os.environ.get("PYTHONPATH")]))
    ended = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (ended.returncode, ended.stdout) == (0, "None\n"), ended.stderr


@pytest.mark.parametrize("account", [None, "", "My_Lab", "mylab.blob.core.windows.net", "x" * 25])
def test_an_unset_or_malformed_account_stops_the_run_without_a_lookup(account):
    dns = FakeDns()
    with pytest.raises(WorkflowError, match="^SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME"):
        check_default_storage_account(driver_workflow(account), resolve=dns)
    assert dns.asked == []


@pytest.mark.parametrize(
    "workflow, env",
    [
        (driver_workflow("My_Lab", provider=None), {}),  # no default storage
        (driver_workflow("My_Lab", provider="s3"), {}),
        (
            driver_workflow("My_Lab", mode=ExecMode.REMOTE),
            {},
        ),  # a job: the driver checked before submitting it
        (driver_workflow("My_Lab", mode=ExecMode.SUBPROCESS), {}),
        (driver_workflow("mylab45"), {"AZURITE_CONNECTION_STRING": "UseDevelopmentStorage=true"}),
        (driver_workflow("mylab45"), {"HTTPS_PROXY": "http://proxy.example:3128"}),  # the proxy resolves
    ],
    ids=["no storage", "other storage", "remote job", "subprocess job", "azurite", "proxy"],
)
def test_where_the_account_is_not_resolved_here_nothing_is_looked_up(monkeypatch, workflow, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    dns = FakeDns()
    check_default_storage_account(workflow, resolve=dns)
    assert dns.asked == []


def test_a_proxy_that_the_blob_endpoint_bypasses_does_not_skip_the_lookup(monkeypatch):
    """NO_PROXY covering *.blob.core.windows.net: the storage plugin connects directly, so local DNS must know
    the account, and an unknown one is refused as without a proxy."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", ".blob.core.windows.net")
    dns = FakeDns(login_microsoftonline_com="ok")
    with pytest.raises(WorkflowError, match="there is no Azure storage account 'mylab46'"):
        check_default_storage_account(driver_workflow("mylab46"), resolve=dns)
    assert dns.asked == ["mylab46.blob.core.windows.net", CONTROL_HOST]


def test_the_main_workflow_checks_the_account_while_it_is_parsed(tmp_path):
    """The real Snakefile: the check in workflow/rules/common.smk refuses the account before the DAG is built,
    i.e. before Snakemake reads the storage's inventory (a malformed name fails before any lookup)."""
    (tmp_path / "config").symlink_to(REPO / "config")
    proc = run_snakemake(
        "--snakefile", str(REPO / "workflow" / "Snakefile"),
        "--default-storage-provider", "azure",
        "--default-storage-prefix", PREFIX,
        "--dry-run",
        cwd=tmp_path,
        env={"SNAKEMAKE_STORAGE_AZURE_ACCOUNT_NAME": "https://mylab.blob.core.windows.net"},
        without=["AZURITE_CONNECTION_STRING"],
        timeout=300,
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "workflow/rules/common.smk" in proc.stdout, proc.stdout[-3000:]
    assert "'https://mylab.blob.core.windows.net' is not an Azure storage account name" in proc.stdout
    assert "Building DAG of jobs" not in proc.stdout
