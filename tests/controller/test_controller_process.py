"""The controller child process: start, API readiness, stop, SIGKILL, restart, failed start."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from controller import api
from controller.errors import ControllerStartError, ControllerUnavailableError
from controller.process import ControllerProcess
from tests.controller.ctl_fabric import free_port, process_alive


def _pgid_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_start_stop_kill_restart(tmp_path: Path) -> None:
    log = tmp_path / "ctl.log"
    ctl = ControllerProcess(of_port=free_port(), api_port=free_port(), log_path=log)
    with ctl:
        pid = ctl.pid
        assert pid is not None and os.getpgid(pid) == pid, "own process group"
        status = api.get_status(ctl.endpoint)
        assert status.pid == pid and status.generation_applied == 0 and status.switches == []
        ctl.kill()
        assert not process_alive(pid) and not _pgid_alive(pid)
        with pytest.raises(ControllerUnavailableError):
            api.get_status(ctl.endpoint, timeout_s=1.0)
        ctl.start()  # the same ports again, right after a crash
        second = ctl.pid
        assert second != pid and api.get_status(ctl.endpoint).pid == second
    assert second is not None and not process_alive(second) and not _pgid_alive(second)
    assert ctl.stop() is None  # stopping twice is harmless
    text = log.read_text()
    assert text.count("starting: OpenFlow") == 2 and "exiting" in text


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
