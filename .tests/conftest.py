"""Session-wide fixtures. Shared helpers live in testkit.py."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from servicekit import services
from testkit import REPO

# Under `pytest -n N --dist loadgroup` (make test) the tests of one group run on one worker, one after another:
# SLURM tests size jobs against the one node and check its queue; the k8s tests share session fixtures (Azurite,
# the TLS Dask cluster of profiles/k8s/dask). The modules reading the shared tiny pipeline (evaluation/
# pipeline_run.py, built once per session under a file lock) run together, so that one worker builds it while
# the other goes on; test_slurm_pipeline.py reads it too, from the SLURM worker, by when it is usually built.
SERIAL_GROUPS = {
    "slurm": lambda item: item.get_closest_marker("slurm") is not None,
    "evaluation_pipeline": lambda item: (
        item.path.name
        in {
            "test_evaluation_module.py",
            "test_report.py",
            "test_notebook.py",
            "test_kdgat_cli_pipeline.py",
            "test_tracking_workflow.py",
        }
        and "integration" in item.path.parts[-2]
    ),
    "k8s": lambda item: item.path.name.startswith("test_k8s_") and "integration" in item.path.parts[-2],
}
# Modules outside the evaluation group that read the shared tiny pipeline: they run last in their group, by when
# the other worker has built it (a module that asks first builds it, and the group's other tests wait behind it).
# test_kdgat_cli_pipeline.py's srun test is marked slurm too: the single node's SLURM tests must not overlap (an
# interactive allocation held during another test's scancel or time-limit retry made both time out in a trial).
READ_THE_SHARED_PIPELINE_LATE = {"test_slurm_pipeline.py", "test_kdgat_cli_pipeline.py"}

# A service's log line of a request answered with 2xx (left out of a failed test's report).
ACCESS_OK = re.compile(r'uvicorn\.access: .*" 2\d\d$')


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the markers into group names
def pytest_collection_modifyitems(config, items):
    for item in items:
        # Every other module is a group of its own, so that its module-scoped fixtures are built once.
        group = next(
            (name for name, belongs in SERIAL_GROUPS.items() if belongs(item)), item.nodeid.split("::")[0]
        )
        item.add_marker(pytest.mark.xdist_group(group))
    # A stable sort: xdist's workers run a group's tests in collection order.
    items.sort(key=lambda item: item.path.name in READ_THE_SHARED_PIPELINE_LATE)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test that started services (``service_factory``) shows the end of each one's log in its report: the
    service runs in a subprocess, and a failure under CI's load is otherwise seen only from the client's side."""
    report = yield
    factory = getattr(item, "funcargs", {}).get("service_factory")
    if report.failed and factory is not None:
        for number, service in enumerate(getattr(factory, "started", []), 1):
            # Without the access lines of answered requests: a test polling a job writes ten a second.
            lines = [line for line in service.log_text().splitlines() if not ACCESS_OK.search(line)]
            report.sections.append((f"service {number} log ({service.log})", "\n".join(lines)[-12000:]))
    return report


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def no_slurm_profile_marker_after_the_test(monkeypatch):
    """A test that renders profiles/slurm/profile.yaml in the test process sets SNAKEMAKE_SLURM_PROFILE (the
    workflow then refuses evaluation.gpu in a group job): take it away afterwards, or a later test's Snakemake
    would run as if under that profile."""
    monkeypatch.setenv("SNAKEMAKE_SLURM_PROFILE", "recorded, so that teardown restores the original")
    monkeypatch.delenv("SNAKEMAKE_SLURM_PROFILE")
    yield


@pytest.fixture(autouse=True)
def restore_logging():
    """Put the root logger back as it was after every test: one that configures logging (kdgat.logs, simcal.logs,
    a CLI's main) left the root at INFO for the tests after it on the same worker, and a test that counted a
    logger's records then saw INFO lines that it never sees alone (test_tracking, CI of stop 54)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        handler.close()
    root.handlers[:], root.level = handlers, level


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tests that train or run tiny models: with tiny matrices a second thread
    only adds synchronisation, 10-15x slower on a busy 2-core machine (CI's size). Restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def service_factory(tmp_path_factory):
    """Start ``simcal serve`` subprocesses on 127.0.0.1 (servicekit.services); stopped at the end of the module.
    Request a module's Dask cluster fixture before this one, so that the cluster outlives the services."""
    with services(tmp_path_factory) as make:
        yield make
