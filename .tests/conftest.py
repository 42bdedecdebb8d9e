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
def service_factory(tmp_path_factory):
    """Start ``simcal serve`` subprocesses on 127.0.0.1 (servicekit.services); stopped at the end of the module.
    Request a module's Dask cluster fixture before this one, so that the cluster outlives the services."""
    with services(tmp_path_factory) as make:
        yield make
