"""The controller child process: start, API readiness, stop, SIGKILL, restart, failed start."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from controller import api
from controller.errors import (
    ControllerAuthError,
    ControllerStartError,
    ControllerUnavailableError,
)
from controller.process import ControllerProcess
from tests.controller.ctl_fabric import free_port, process_alive

REPO_ROOT = Path(__file__).resolve().parents[2]


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_stop_kill_restart(tmp_path: Path) -> None:
    log = tmp_path / "ctl.log"
    token = secrets.token_urlsafe(24)
    token_file = tmp_path / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n")
    ctl = ControllerProcess(
        of_port=free_port(), api_port=free_port(), log_path=log, token_file=token_file
    )
    assert ctl.token == token
    with ctl:
        pid = ctl.pid
        assert pid is not None and os.getpgid(pid) == pid, "own process group"
        status = api.get_status(ctl.endpoint, token=token)
        assert status.pid == pid and status.generation_applied == 0 and status.switches == []
        for wrong in (None, token + "x"):
            with pytest.raises(ControllerAuthError, match="bearer token"):
                api.get_status(ctl.endpoint, token=wrong)
        ctl.kill()
        assert not process_alive(pid) and not _pgid_alive(pid)
        with pytest.raises(ControllerUnavailableError):
            api.get_status(ctl.endpoint, timeout_s=1.0, token=token)
        ctl.start()  # the same ports again, right after a crash
        second = ctl.pid
        assert second != pid and api.get_status(ctl.endpoint, token=token).pid == second
    assert second is not None and not process_alive(second) and not _pgid_alive(second)
    assert ctl.stop() is None  # stopping twice is harmless
    text = log.read_text()
    assert text.count("starting: OpenFlow") == 2 and "exiting" in text
    assert "unauthorized request from 127.0.0.1: GET /v1/status (missing token)" in text
    assert token not in text


@pytest.mark.parametrize("extra,mode,message", [
    ([], None, "expected exactly one of --token-file"),
    (["--token-file", "TOKEN"], 0o644, "mode 0644, expected 0600 or stricter"),
])
def test_controller_refuses_to_start_without_a_private_token(
    tmp_path: Path, extra: list[str], mode: int | None, message: str
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("abcdefghijklmnopqrstuvwx")
    if mode is not None:
        token_file.chmod(mode)
    argv = [a.replace("TOKEN", str(token_file)) for a in extra]
    proc = subprocess.run(
        [sys.executable, "-m", "controller", "--of-port", "1", "--api-port", "1", *argv],
        capture_output=True, text=True, timeout=60, cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_failed_start_names_the_cause(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ctl = ControllerProcess(
            of_port=free_port(),
            api_port=busy.getsockname()[1],
            log_path=tmp_path / "ctl.log",
            start_timeout_s=15.0,
        )
        with pytest.raises(ControllerStartError, match="Address already in use"):
            ctl.start()
    assert not ctl.running()


def test_bad_state_file_fails_the_start(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"snapshot": {"generation": 0}}')
    ctl = ControllerProcess(
        of_port=free_port(), api_port=free_port(), log_path=tmp_path / "ctl.log", state_path=state
    )
    with pytest.raises(ControllerStartError, match="state file"):
        ctl.start()
