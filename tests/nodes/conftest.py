"""Fixtures for node tests: the real images, and agent processes that never outlive a test."""

from __future__ import annotations

import json
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from nodes.api import AgentHTTPServer, make_server
from nodes.service import NodeAgent
from nodes.workloads import Role

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def images_dir(shared_data: Path) -> Path:
    """The real rsvqa-lr images (50 PNGs of 256x256) the downlink job sends."""
    path = shared_data / "images" / "rsvqa-lr"
    if not any(path.glob("*.png")):
        pytest.skip(f"no PNG images in {path}")
    return path


@pytest.fixture(scope="session")
def images(images_dir: Path) -> list[Path]:
    return sorted(images_dir.glob("*.png"))


@pytest.fixture
def token_file(tmp_path: Path) -> tuple[Path, str]:
    """A fresh per-test bearer token in a mode-0600 file: (path, token)."""
    token = secrets.token_urlsafe(24)
    path = tmp_path / "token"
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return path, token


@dataclass
class AgentProcess:
    """A running `python -m nodes.agent`; `mgmt` is the address it printed."""

    proc: subprocess.Popen[bytes]
    mgmt: str
    stderr_path: Path

    def terminate(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def start_agent(args: Sequence[str], stderr_path: Path, prefix: Sequence[str] = (),
                timeout_s: float = 20.0) -> AgentProcess:
    """Starts an agent (optionally under `prefix`, e.g. `ip netns exec NS`) and waits for its
    `listening` line; kills it and raises with its stderr when none comes in `timeout_s`."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONWARNINGS="error")
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen([*prefix, sys.executable, "-m", "nodes.agent", *args],
                                stdout=subprocess.PIPE, stderr=err, cwd=REPO_ROOT, env=env)
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while time.monotonic() < deadline and not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], 0.1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                break
            line += chunk
    if not line.endswith(b"\n"):
        proc.kill()
        proc.wait(5)
        proc.stdout.close()
        raise RuntimeError(f"agent {args} printed no address in {timeout_s} s; stderr:\n"
                           + stderr_path.read_text(errors="replace"))
    info = json.loads(line.decode().splitlines()[0])
    return AgentProcess(proc=proc, mgmt=info["mgmt"], stderr_path=stderr_path)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    """Starts agents; teardown SIGTERMs (then kills) every one still running, also on failure."""
    started: list[AgentProcess] = []

    def factory(*args: str, prefix: Sequence[str] = ()) -> AgentProcess:
        agent = start_agent(args, tmp_path / f"agent{len(started)}.stderr", prefix)
        started.append(agent)
        return agent

    yield factory
    for agent in started:
        if agent.proc.poll() is None:
            agent.proc.send_signal(signal.SIGTERM)
            try:
                agent.proc.wait(10)
            except subprocess.TimeoutExpired:
                agent.proc.kill()
                agent.proc.wait(5)
        if agent.proc.stdout is not None:
            agent.proc.stdout.close()


@dataclass
class InProcessAgent:
    """A NodeAgent served by a real HTTP server on loopback, in this process."""

    agent: NodeAgent
    mgmt: str
    token: str | None


@pytest.fixture
def inproc_agents(tmp_path: Path) -> Iterator[Callable[..., InProcessAgent]]:
    """Starts in-process agents (real HTTP servers on 127.0.0.1); teardown stops their jobs,
    data planes and servers, also on failure."""
    started: list[tuple[InProcessAgent, AgentHTTPServer, threading.Thread]] = []

    def factory(name: str, role: Role = Role.SATELLITE, *, data_ip: str | None = None,
                token: str | None = None, results: bool = True) -> InProcessAgent:
        agent = NodeAgent(name, role, data_ip=data_ip,
                          results_dir=tmp_path / name if results else None)
        server = make_server(agent, "127.0.0.1", 0, token=token)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                  daemon=True)
        thread.start()
        handle = InProcessAgent(agent, f"127.0.0.1:{server.server_address[1]}", token)
        started.append((handle, server, thread))
        return handle

    yield factory
    for handle, server, thread in started:
        try:
            handle.agent.close(5.0)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5.0)
