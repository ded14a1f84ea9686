"""Shared test fixtures: real data location, root/binary requirements with precise skip reasons."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from testbed.paths import data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder; skips (with the path) when it is absent."""
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} not found (set TESTBED_DATA)")
    return path


def require_root() -> None:
    """Skip unless running as root (namespaces, tc, cgroups, OVS need it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces / qdiscs / cgroups")


def require_binary(*names: str) -> None:
    """Skip naming the first missing binary (installed by `make setup`)."""
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"binary '{name}' not found on PATH (installed by `make setup`)")


@pytest.fixture
def unique_prefix() -> str:
    """A short, unique name prefix for resources a test creates (fits IFNAMSIZ with suffixes)."""
    return "t" + uuid.uuid4().hex[:5]
