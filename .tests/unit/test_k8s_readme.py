"""profiles/k8s/README.md against the libraries it quotes: the NVIDIA driver minimums (kdgat.runtime), the
storage plugin's retry timing (snakemake-interface-storage-plugins), the Azure SDKs' error texts, the
executor's API retry timing and the package versions the README names. An
upgrade that changes one of them fails here instead of leaving the README wrong."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import tenacity
import yaml
from testkit import REPO, flat_text, role_grants

README = REPO / "profiles" / "k8s" / "README.md"
# Every README that states a driver minimum; the SLURM one states the same numbers.
DRIVER_DOCUMENTS = [README, REPO / "profiles" / "slurm" / "README.md"]


def stated_driver_numbers(text: str) -> list[tuple[int, str]]:
    """Each NVIDIA driver major version (3 digits, 400-699) said in a sentence that names a driver, with
    that sentence. Numbers in a sentence that says "recommend" are recommendations, not minimums."""
    found = []
    for sentence in re.split(r"(?<=[.;])\s", text):
        if "driver" not in sentence.lower() or "recommend" in sentence.lower():
            continue
        for match in re.finditer(r"(?<![\w.-])([4-6]\d\d)(?![\w-])", sentence):
            found.append((int(match.group(1)), sentence))
    return found


def test_every_driver_minimum_the_readmes_state_is_runtimes():
    from kdgat.runtime import MINIMUM_DRIVER

    for document in DRIVER_DOCUMENTS:
        numbers = stated_driver_numbers(flat_text(document))
        assert numbers, f"{document.name}: no driver version found; the pattern no longer matches"
        for number, sentence in numbers:
            assert number in MINIMUM_DRIVER.values(), (
                f"{document.relative_to(REPO)} states driver {number}, which kdgat.runtime.MINIMUM_DRIVER "
                f"({MINIMUM_DRIVER}) does not have; word it as a recommendation or fix it: {sentence!r}"
            )
    text = flat_text(README)
    assert re.search(rf"\*\*{MINIMUM_DRIVER[13]} or newer\*\*", text), "cu130's minimum"
    assert f"The cu126 build needs driver {MINIMUM_DRIVER[12]} or newer" in text


def test_the_driver_pattern_catches_a_number_that_is_not_a_minimum():
    assert [n for n, _ in stated_driver_numbers("It needs driver 560 or newer to be safe.")] == [560]
    assert stated_driver_numbers("We recommend driver 560 or newer.") == []
    assert stated_driver_numbers("--node-osdisk-size 256 and 110 pods.") == []


def test_the_storage_retry_timing_the_readme_states_is_the_plugins():
    """Known limits: each size lookup of a missing input is tried 3 times, waiting 3 s, then 6 s."""
    from snakemake_storage_plugin_azure import StorageObject

    calls, sleeps = [], []

    def missing():
        calls.append(1)
        raise FileNotFoundError("no such blob")

    # The azure plugin's own size(), decorated with the interface's retry_decorator; only the sleep is stubbed.
    size = StorageObject.size.retry_with(sleep=sleeps.append)
    with pytest.raises(tenacity.RetryError):
        size(SimpleNamespace(is_dir=missing))
    stated = re.search(
        r"3 tries, waiting (\d+) s and then (\d+) s, so (\d+) s per missing input", flat_text(README)
    )
    assert stated, "README 'Known limits' no longer states the retry timing"
    first, second, total = map(int, stated.groups())
    assert len(calls) == 3
    assert sleeps == [first, second] and sum(sleeps) == total


def test_the_azure_error_texts_the_readme_quotes_are_the_sdks():
    """The codes are in the Blob REST API's list the SDK is generated from, and the SDK prints a 403 with
    one of them as `ErrorCode:<code>`. The service's message texts themselves are not checked here."""
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.identity import ChainedTokenCredential, CredentialUnavailableError
    from azure.storage.blob._generated.models import StorageErrorCode
    from azure.storage.blob._shared.response_handlers import process_storage_error

    text = flat_text(README)
    quoted = re.findall(r"`ErrorCode:(\w+)`", text)
    assert sorted(quoted) == ["AuthorizationFailure", "AuthorizationPermissionMismatch"], quoted
    for code in quoted:
        assert StorageErrorCode(code).value == code
        body = f"<?xml version='1.0' encoding='utf-8'?><Error><Code>{code}</Code><Message>m</Message></Error>"
        response = SimpleNamespace(
            status_code=403,
            reason="Forbidden",
            headers={"x-ms-error-code": code, "Content-Type": "application/xml"},
            content_type="application/xml",
            text=lambda encoding=None, body=body: body,
            body=lambda body=body: body.encode(),
        )
        with pytest.raises(HttpResponseError) as forbidden:
            process_storage_error(HttpResponseError(message="Forbidden", response=response))
        assert f"ErrorCode:{code}" in forbidden.value.message.splitlines()

    class NoLogin:
        def get_token(self, *scopes, **kwargs):
            raise CredentialUnavailableError("az login has not been run")

        def get_token_info(self, *scopes, **kwargs):
            raise CredentialUnavailableError("az login has not been run")

    with pytest.raises(ClientAuthenticationError) as failed:
        ChainedTokenCredential(NoLogin()).get_token("https://storage.azure.com/.default")
    chained = re.search(r'"(ChainedTokenCredential failed to retrieve a token)"', text)
    assert chained and str(failed.value).startswith(chained.group(1))


def test_the_api_retry_timing_and_admission_report_interval_the_readme_states_are_the_executors():
    """ "a call answered with 429 or 5xx is sent again after 1, 2 and 4 s (or the server's `Retry-After`, at most
    30 s)"; "A Job Kueue keeps suspended for 10 minutes ... is reported then and every 10 minutes after"."""
    from snakemake_executor_plugin_kubernetes_kueue import executor

    text = flat_text(README)
    first, second, third = (f"{delay:g}" for delay in executor.RETRY_DELAYS_S)
    assert len(executor.RETRY_DELAYS_S) == 3
    assert (
        f"is sent again after {first}, {second} and {third} s (or the server's `Retry-After`, "
        f"at most {executor.MAX_RETRY_AFTER_S:g} s)"
    ) in text
    minutes = executor.ADMISSION_WAIT_REPORT_S / 60
    assert f"suspended for {minutes:g} minutes" in text and f"every {minutes:g} minutes after" in text


def test_the_package_versions_the_readme_names_are_the_pins_and_the_lock():
    """The executor wraps snakemake-executor-plugin-kubernetes 0.5.1 ("pinned"); the Azure SDKs whose texts it
    quotes are azure-storage-blob 12.31.1 and azure-identity 1.27.0, the versions of constraints.txt."""
    pyproject = (REPO / "pyproject.toml").read_text()
    lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (REPO / "constraints.txt").read_text(), re.M))
    (pin,) = re.findall(r'"snakemake-executor-plugin-kubernetes==([\d.]+)"', pyproject)
    text = flat_text(README)
    stated = re.findall(r"snakemake-executor-plugin-kubernetes (\d[\d.]*\d)", text)
    assert len(stated) >= 2 and set(stated) == {pin}, stated
    assert f"snakemake-executor-plugin-kubernetes {pin}, pinned" in text
    sdks = re.findall(r"(azure-storage-blob|azure-identity) (\d[\d.]*\d)", text)
    assert len(sdks) >= 3, sdks
    for package, version in sdks:  # "azure-identity 1.27" (minor only) reads as the lock's 1.27.x
        assert lock[package] == version or lock[package].startswith(f"{version}."), (package, version)


def readme_permissions() -> list[tuple[str, list[str], list[str]]]:
    """The README's table of the Role's rules: (API group, resources, verbs) per row."""
    lines = README.read_text().splitlines()
    start = lines.index(
        "| API group | Resources | Verbs | What the executor does with it | Where a Role lacks it |"
    )
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        group, resources, verbs = (cell.strip() for cell in line.strip("|").split("|")[:3])
        rows.append(
            (
                group.strip("`").replace('""', ""),
                [resource.strip().strip("`") for resource in resources.split(",")],
                [verb.strip() for verb in verbs.split(",")],
            )
        )
    return rows


def test_the_readmes_table_of_permissions_is_rbac_yamls_role():
    """Each row of the README's table is one rule of rbac.yaml's Role, in its order, with its group, resources and
    verbs: a rule added to (or removed from) the Role without the README saying what it is for fails here."""
    (role,) = [
        document
        for document in yaml.safe_load_all((REPO / "profiles" / "k8s" / "rbac.yaml").read_text())
        if document and document["kind"] == "Role"
    ]
    rules = [
        (group, rule["resources"], rule["verbs"]) for rule in role["rules"] for group in rule["apiGroups"]
    ]
    assert readme_permissions() == rules
    # Every rule whose refusal the executor says once per run (a Role from an older rbac.yaml, or trimmed by hand) is
    # one of them, in its API group.
    from snakemake_executor_plugin_kubernetes_kueue.refusals import GROUPS, LOST

    assert {(GROUPS.get(resource, ""), resource, verb) for resource, verb in LOST} <= role_grants(role)
