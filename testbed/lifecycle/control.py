"""A run's control socket: `testbed fault ...` and `testbed status` reach the process that
holds the network through `<run dir>/control.sock` (JSON request, JSON reply, one per
connection)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class ControlServer:
    """Serves requests on a unix socket in a daemon thread until close()."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self.handler = handler
        path.unlink(missing_ok=True)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(str(path))
        self._sock.listen(4)
        self._sock.settimeout(0.5)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(30)
                try:
                    request = json.loads(_read_all(conn))
                    reply = {"ok": True, **self.handler(request)}
                except (TestbedError, ValueError, KeyError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                try:
                    conn.sendall(json.dumps(reply, default=str).encode())
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._sock.close()
        self._thread.join(timeout=2)
        self.path.unlink(missing_ok=True)


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def request(path: Path, payload: dict[str, Any], timeout_s: float = 90.0) -> dict[str, Any]:
    """Send one request to a run's control socket; raises TestbedError when no run answers."""
    if not path.exists():
        raise TestbedError(f"no running testbed at {path.parent} (no control socket): start it "
                           "with `testbed up` or `testbed run`")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
            s.sendall(json.dumps(payload).encode())
            s.shutdown(socket.SHUT_WR)
            reply = json.loads(_read_all(s))
        except (OSError, json.JSONDecodeError) as exc:
            raise TestbedError(f"run at {path.parent} did not answer: {exc}") from exc
    if not reply.get("ok"):
        raise TestbedError(str(reply.get("error")))
    return reply
