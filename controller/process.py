"""Start and stop the controller as a child process (`python -m controller`).

Owns the child's lifecycle only: its own session and process group (so stopping it never
touches the caller's group and every helper it might spawn goes too), ports passed in, output
appended to a log file, readiness checked through the API. `with ControllerProcess(...)` stops
it in every case; `kill()` is the SIGKILL used for fault injection.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from controller.api import get_status
from controller.auth import read_token_file
from controller.errors import ControllerAuthError, ControllerError, ControllerStartError

_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class ControllerProcess:
    """One controller child process.

    Args:
        of_port: OpenFlow TCP port the switches connect to.
        api_port: port of the local HTTP API (see controller/api.py).
        log_path: file the child's stdout/stderr are appended to.
        token_file: the run's bearer token (mode 0600); every API call must carry it
            (`token=ctl.token`). None starts the API without a token (`--insecure-no-token`),
            kept only until the orchestrator passes one.
        state_path: file keeping the applied snapshot across restarts (None: not kept).
        host: listen address of both ports.
        start_timeout_s: how long `start` waits for the API to answer.

    Example:
        >>> ctl = ControllerProcess(of_port=6653, api_port=8181, log_path=p)  # doctest: +SKIP
        >>> with ctl:  # doctest: +SKIP
        ...     push_snapshot(ctl.endpoint, snapshot)
    """

    def __init__(
        self,
        *,
        of_port: int,
        api_port: int,
        log_path: Path,
        token_file: Path | None = None,
        state_path: Path | None = None,
        host: str = "127.0.0.1",
        start_timeout_s: float = 30.0,
        reply_timeout_s: float = 5.0,
        log_level: str = "INFO",
        python: str = sys.executable,
    ) -> None:
        self.of_port = of_port
        self.api_port = api_port
        self.log_path = Path(log_path)
        self.state_path = state_path
        self.token_file = Path(token_file) if token_file is not None else None
        self.token = read_token_file(self.token_file) if self.token_file is not None else None
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self.log_level = log_level
        self.python = python
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The API endpoint ('host:port') to pass to controller.api functions."""
        return f"{self.host}:{self.api_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        argv = [
            self.python,
            "-m",
            "controller",
            "--of-port",
            str(self.of_port),
            "--api-port",
            str(self.api_port),
            "--host",
            self.host,
            "--reply-timeout-s",
            str(self.reply_timeout_s),
            "--log-level",
            self.log_level,
        ]
        if self.state_path is not None:
            argv += ["--state-file", str(self.state_path)]
        if self.token_file is not None:
            argv += ["--token-file", str(self.token_file)]
        else:
            argv += ["--insecure-no-token"]
        return argv

    def start(self) -> None:
        """Spawn the child and wait until its API answers.

        Raises ControllerStartError (with the log's tail) when it exits or stays silent.
        """
        if self.running():
            raise ControllerStartError(f"controller already running as pid {self.pid}")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
            )
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ControllerStartError(
                    f"controller exited with status {code} while starting; log "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            try:
                get_status(self.endpoint, timeout_s=1.0, token=self.token)
                return
            except ControllerAuthError:
                self.stop()
                raise
            except ControllerError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise ControllerStartError(
                    f"controller API {self.endpoint} silent for {self.start_timeout_s} s; log "
                    f"{self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def _signal_group(self, signum: int) -> None:
        if self._proc is None:
            return
        try:
            os.killpg(self._proc.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self, timeout_s: float = 5.0) -> int | None:
        """SIGTERM the child's process group, SIGKILL after `timeout_s`; returns its status."""
        if self._proc is None:
            return None
        proc = self._proc
        self._signal_group(signal.SIGTERM)
        try:
            code = proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            code = proc.wait(timeout_s)
        self._signal_group(signal.SIGKILL)  # anything left in the group
        self._proc = None
        return code

    def kill(self) -> None:
        """SIGKILL the process group (a crash, for fault injection) and reap the child."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._proc.wait(10.0)
        self._proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(log unreadable: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ControllerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
