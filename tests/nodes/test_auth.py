"""The per-run bearer token: token file rules, 401 on every route but /health, the log line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from nodes import client
from nodes.auth import bearer_matches, read_token_file
from nodes.errors import AgentAuthError, AuthError
from tests.nodes.conftest import REPO_ROOT, AgentProcess


def write_token(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_token_file_private_modes_are_read_stripped(tmp_path: Path, mode: int) -> None:
    path = write_token(tmp_path / "t", "  abcdefghijklmnopqrstuvwx\n", mode)
    assert read_token_file(path) == "abcdefghijklmnopqrstuvwx"


@pytest.mark.parametrize("mode,text,match", [
    (0o644, "abcdefghijklmnopqrstuvwx", "mode 0644, expected 0600 or stricter"),
    (0o620, "abcdefghijklmnopqrstuvwx", "mode 0620, expected 0600 or stricter"),
    (0o604, "abcdefghijklmnopqrstuvwx", "mode 0604"),
    (0o600, "short\n", "a token of 5 characters, expected at least 16"),
    (0o600, "abcdefghij klmnopqrstuvwx", "without whitespace"),
])
def test_token_file_refused(tmp_path: Path, mode: int, text: str, match: str) -> None:
    with pytest.raises(AuthError, match=match):
        read_token_file(write_token(tmp_path / "t", text, mode))


def test_token_file_missing_names_it(tmp_path: Path) -> None:
    with pytest.raises(AuthError, match="token file .*nope.*No such file"):
        read_token_file(tmp_path / "nope")


def test_bearer_matches() -> None:
    token = "abcdefghijklmnopqrstuvwx"
    assert bearer_matches(f"Bearer {token}", token)
    assert bearer_matches(f"bearer  {token} ", token)
    for header in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer "):
        assert not bearer_matches(header, token), header


def test_agent_refuses_an_open_token_file(tmp_path: Path) -> None:
    path = write_token(tmp_path / "t", "abcdefghijklmnopqrstuvwx", 0o644)
    proc = subprocess.run([sys.executable, "-m", "nodes.agent", "--name", "s", "--role",
                           "satellite", "--mgmt-listen", "127.0.0.1:0", "--token-file",
                           str(path)], capture_output=True, text=True, timeout=20,
                          cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)))
    assert proc.returncode == 2 and "mode 0644, expected 0600" in proc.stderr, proc.stderr


def test_every_route_but_health_needs_the_token(agent_factory: Callable[..., AgentProcess],
                                                token_file: tuple[Path, str]) -> None:
    path, token = token_file
    sat = agent_factory("--name", "sat1", "--role", "satellite", "--mgmt-listen",
                        "127.0.0.1:0", "--token-file", str(path))
    assert client.wait_healthy(sat.mgmt, timeout_s=10)["name"] == "sat1"  # no token needed
    calls = [lambda tok: client.metrics(sat.mgmt, token=tok),
             lambda tok: client.jobs(sat.mgmt, token=tok),
             lambda tok: client.job(sat.mgmt, "x", token=tok),
             lambda tok: client.submit_job(sat.mgmt, "message-exchange", {}, token=tok),
             lambda tok: client.push_context(sat.mgmt, {"node": "sat1"}, token=tok),
             lambda tok: client.results(sat.mgmt, token=tok),
             lambda tok: client.stop_workload(sat.mgmt, token=tok)]
    wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
    for call in calls:
        for tok in (None, wrong):
            with pytest.raises(AgentAuthError) as info:
                call(tok)
            assert (info.value.status, info.value.error) == (401, "Unauthorized")
    assert client.jobs(sat.mgmt, token=token) == []
    assert client.metrics(sat.mgmt, token=token).startswith("# HELP")
    # unknown paths answer 401 too: nothing is revealed without the token
    req = urllib.request.Request(f"http://{sat.mgmt}/nope")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    with err.value as resp:
        assert resp.code == 401 and json.loads(resp.read())["error"] == "Unauthorized"
    assert sat.terminate() == 0
    lines = [json.loads(line) for line in sat.stderr().splitlines() if line.startswith("{")]
    refused = [rec for rec in lines if rec["msg"] == "unauthorized request"]
    assert len(refused) == 2 * len(calls) + 1
    assert {rec["remote"] for rec in refused} == {"127.0.0.1"}
    assert {"/metrics", "/jobs", "/jobs/x", "/context", "/nope"} <= {r["path"] for r in refused}
    assert token not in sat.stderr() and wrong not in sat.stderr()
