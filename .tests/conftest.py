"""Session-wide fixtures. Shared helpers live in testkit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from testkit import REPO


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO
