"""nodes deploys alone: importing it (and the agent) pulls in none of the orchestrator's world."""

from __future__ import annotations

import subprocess
import sys

from tests.nodes.conftest import REPO_ROOT

FORBIDDEN = ("testbed", "netem", "controller", "skyfield", "pyroute2", "numpy", "pydantic")


def test_nodes_imports_only_stdlib() -> None:
    code = ("import sys, nodes, nodes.agent, nodes.api, nodes.client; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=30, check=True).stdout
    assert out.strip() == "[]"
