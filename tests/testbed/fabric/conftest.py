"""Fixtures for fabric tests that touch the host: root, and a running Open vSwitch."""

from __future__ import annotations

import os
import shutil

import pytest

from testbed.fabric import ensure_ovs_daemon
from testbed.sysrun import Runner


@pytest.fixture
def root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates namespaces, links, OVS bridges")


@pytest.fixture(scope="session")
def ovs_runner() -> Runner:
    """A Runner with Open vSwitch running (started with ovs-ctl when needed, left running)."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates OVS bridges")
    for binary in ("ovs-vsctl", "ovs-ofctl", "ip"):
        if shutil.which(binary) is None:
            pytest.skip(f"binary '{binary}' not found on PATH (Open vSwitch / iproute2)")
    runner = Runner()
    ensure_ovs_daemon(runner)
    return runner
