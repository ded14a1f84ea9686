"""Benchmark: deploying the agent to boards over SSH (stand-in boards: sshd in namespaces).

Per board: first deploy (new connection, Python check, folder and venv, SFTP copy of `nodes/`),
redeploy in the same run (connection kept), and the agent's start until /health answers.
Then both boards deployed together by `create_nodes` (parallel). Printed as a table.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from testbed.backends.remote import RemoteBackend
from testbed.fabric.addressing import AddressPlan, NodeSpec
from testbed.inventory import Inventory
from testbed.ledger import Ledger, teardown
from testbed.sysrun import Runner
from tests.testbed.backends.sshboard import ssh_board

pytestmark = [pytest.mark.bench, pytest.mark.root]

BOARDS = 2
STEPS = ("connect", "check python", "folder + venv", "copy nodes/")


def test_bench_remote_deploy(tmp_path: Path, unique_prefix: str) -> None:
    ledger = Ledger(tmp_path / "ledger.jsonl")
    rows: list[tuple[str, str, dict[str, float], float]] = []
    with ExitStack() as stack:
        boards = [stack.enter_context(ssh_board(unique_prefix, i)) for i in range(BOARDS)]
        inv = Inventory(hosts=[b.host() for b in boards])
        sats = [f"sat{i}" for i in range(BOARDS)]
        plan = AddressPlan.build(unique_prefix, [NodeSpec(s) for s in sats])
        be = RemoteBackend(Runner(), ledger, plan, inv, run_dir=tmp_path / "run",
                           attach_fabric=False)
        try:
            for sat, board in zip(sats, boards, strict=True):
                for label in ("first deploy", "redeploy"):
                    t0 = time.monotonic()
                    steps = be.deploy(sat)
                    rows.append((board.name, label, steps, time.monotonic() - t0))
                t0 = time.monotonic()
                argv = [be.python(sat), "-m", "nodes.agent", "--name", sat, "--role",
                        "satellite", "--mgmt-listen", f"{board.ip}:9100", "--results",
                        be.node_path(sat, tmp_path / "run")]
                be.spawn(sat, argv)
                be.wait_agent(sat, f"{board.ip}:9100", timeout_s=20)
                rows.append((board.name, "agent start->healthy", {}, time.monotonic() - t0))
            be.close()
            be2 = RemoteBackend(Runner(), ledger, plan, inv, run_dir=tmp_path / "run",
                                attach_fabric=False)
            t0 = time.monotonic()
            be2.create_nodes()
            rows.append((f"{BOARDS} boards", "create_nodes (parallel)", {},
                         time.monotonic() - t0))
            be2.close()
        finally:
            be.close()
            report = teardown(ledger, Runner())
            ledger.close()
    head = f"{'board':<16} {'what':<26} {'total s':>8}  " + "  ".join(f"{s:>14}" for s in STEPS)
    print("\n" + head)
    for board_name, label, steps, total in rows:
        cells = "  ".join(f"{steps[s]:>14.3f}" if s in steps else f"{'':>14}" for s in STEPS)
        print(f"{board_name:<16} {label:<26} {total:>8.3f}  {cells}")
    assert report.ok, report.summary()
    assert all(total < 30 for *_, total in rows)
