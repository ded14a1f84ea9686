"""The controller's local HTTP/JSON API (server side), served on 127.0.0.1 from a thread.

Owns the wire protocol only; every decision is the reconciler's. Endpoints (all JSON):

    POST /v1/snapshot                    body: Snapshot   -> 202 {"generation", "changed"}
    GET  /v1/status                                      -> 200 ControllerStatus
    GET  /v1/routes                                      -> 200 RouteTable
    GET  /v1/applied?generation=N&timeout_s=T&all_switches=1
                                                         -> 200 ControllerStatus | 408 on timeout

Errors answer {"error": <class name>, "message": ..., plus the error's fields}: 400 for
SnapshotError, 409 for StaleGenerationError, 404 for an unknown path. With a token, every
request must carry `Authorization: Bearer <token>`, else 401 {"error": "Unauthorized"} and a log
line naming the remote address and the path (never the token).
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from controller.auth import bearer_matches
from controller.errors import SnapshotError, StaleGenerationError
from controller.model import Snapshot
from controller.reconciler import Reconciler

LOG = logging.getLogger("controller.server")

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_WAIT_S = 600.0


class ApiServer(ThreadingHTTPServer):
    """HTTP server bound to (host, port) answering for one Reconciler; `token=None` serves
    without authentication (`--insecure-no-token`)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, reconciler: Reconciler, *,
                 token: str | None = None) -> None:
        self.reconciler = reconciler
        self.token = token
        super().__init__((host, port), _Handler)

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="controller-api", daemon=True)
        thread.start()
        return thread


class _Handler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        LOG.debug("%s %s", self.address_string(), format % args)

    def _reply(self, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, exc: Exception, **fields: Any) -> None:
        self._reply(status, {"error": type(exc).__name__, "message": str(exc), **fields})

    def _authorized(self) -> bool:
        token = self.server.token
        header = self.headers.get("Authorization")
        if token is None or bearer_matches(header, token):
            return True
        reason = "missing" if not header else "wrong"
        LOG.warning("unauthorized request from %s: %s %s (%s token)", self.client_address[0],
                    self.command, urlsplit(self.path).path, reason)
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)  # keep the HTTP/1.1 connection in step
        self._reply(HTTPStatus.UNAUTHORIZED, {"error": "Unauthorized",
                                              "message": f"{reason} bearer token"})
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if not self._authorized():
            return
        url = urlsplit(self.path)
        rec = self.server.reconciler
        if url.path == "/v1/status":
            self._reply(HTTPStatus.OK, rec.status().model_dump_json().encode())
        elif url.path == "/v1/routes":
            self._reply(HTTPStatus.OK, rec.routes().model_dump_json().encode())
        elif url.path == "/v1/applied":
            query = parse_qs(url.query)
            try:
                generation = int(query["generation"][0])
                timeout_s = min(MAX_WAIT_S, float(query.get("timeout_s", ["0"])[0]))
                all_switches = query.get("all_switches", ["1"])[0] not in ("0", "false")
            except (KeyError, ValueError) as exc:
                self._error(
                    HTTPStatus.BAD_REQUEST, SnapshotError(f"bad query {url.query!r}: {exc}")
                )
                return
            reached = rec.wait_applied(generation, timeout_s, all_switches)
            status = rec.status().model_dump_json().encode()
            self._reply(HTTPStatus.OK if reached else HTTPStatus.REQUEST_TIMEOUT, status)
        else:
            self._reply(HTTPStatus.NOT_FOUND, {"error": "NotFound", "message": url.path})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if not self._authorized():
            return
        url = urlsplit(self.path)
        if url.path != "/v1/snapshot":
            self._reply(HTTPStatus.NOT_FOUND, {"error": "NotFound", "message": url.path})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY_BYTES:
            exc = SnapshotError(f"body of {length} bytes: expected 1..{MAX_BODY_BYTES}")
            self._error(HTTPStatus.BAD_REQUEST, exc)
            return
        body = self.rfile.read(length)
        try:
            snapshot = Snapshot.parse(body)
            changed = self.server.reconciler.submit(snapshot)
        except SnapshotError as exc:
            self._error(HTTPStatus.BAD_REQUEST, exc)
            return
        except StaleGenerationError as exc:
            self._error(HTTPStatus.CONFLICT, exc, generation=exc.generation, latest=exc.latest)
            return
        self._reply(HTTPStatus.ACCEPTED, {"generation": snapshot.generation, "changed": changed})
