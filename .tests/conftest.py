"""Session-wide fixtures. Shared helpers live in testkit.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from servicekit import services
from testkit import REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def restore_logging():
    """Put the root logger back as it was after a test that configures logging (kdgat.logs, simcal.logs)."""
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
