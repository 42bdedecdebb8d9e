"""Session-wide fixtures. Shared helpers live in testkit.py."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
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
