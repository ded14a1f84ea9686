"""The management API over HTTP (stdlib server, one thread per request): routes to NodeAgent.

| method | path | body | answer |
|---|---|---|---|
| GET | /health | | name, role, uptime_s, workload {kind, state} |
| GET | /metrics | | Prometheus text format 0.0.4 |
| POST | /workload/start | {"kind": "downlink-files", "options": {...}} | kind, state, started_utc |
| POST | /workload/stop | | results without events |
| GET | /results[?events=0] | | results of the current/last workload |

Errors answer JSON {"error": <class name>, "message": ..., ["valid": [...]]}: 400 bad request,
unknown kind or option; 404 unknown path; 405 wrong method; 409 wrong workload state; 500 bug.
"""

from __future__ import annotations

import json
import logging
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from nodes.errors import UnknownWorkloadError, WorkloadOptionsError, WorkloadStateError
from nodes.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from nodes.service import NodeAgent

log = logging.getLogger("nodes.api")
MAX_BODY_BYTES = 1 << 20
_ROUTES = {"/health": "GET", "/metrics": "GET", "/results": "GET", "/workload/start": "POST",
           "/workload/stop": "POST"}


class _BadRequest(Exception):
    """Internal: the request itself is malformed (answered 400)."""


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, agent: NodeAgent, address: tuple[str, int]):
        self.agent = agent
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


def make_server(agent: NodeAgent, host: str, port: int) -> AgentHTTPServer:
    """Binds now (OSError when the address is taken); call `serve_forever` to answer."""
    return AgentHTTPServer(agent, (host, port))


class _Handler(BaseHTTPRequestHandler):
    server: AgentHTTPServer
    server_version = "leo-node-agent/1"
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- stdlib name
        log.debug("http %s", format % args)

    def do_GET(self) -> None:  # noqa: N802 -- stdlib hook name
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802 -- stdlib hook name
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        expected = _ROUTES.get(path)
        if expected is None:
            return self._json(404, {"error": "NotFound", "message": f"no route {path}; routes: "
                                    + ", ".join(f"{m} {p}" for p, m in _ROUTES.items())})
        if expected != method:
            return self._json(405, {"error": "MethodNotAllowed",
                                    "message": f"{method} {path}: expected {expected}"})
        agent = self.server.agent
        try:
            if path == "/health":
                return self._json(200, agent.health())
            if path == "/metrics":
                return self._send(200, agent.render_metrics().encode(), METRICS_CONTENT_TYPE)
            if path == "/results":
                query = parse_qs(url.query)
                events = query.get("events", ["1"])[-1].lower() not in ("0", "false", "no")
                return self._json(200, agent.results(include_events=events))
            body = self._body()
            if path == "/workload/start":
                kind = body.get("kind")
                if not isinstance(kind, str):
                    raise _BadRequest(f"field kind={kind!r}: expected a workload name")
                options = body.get("options", {})
                if not isinstance(options, dict):
                    raise _BadRequest(f"field options={options!r}: expected a JSON object")
                return self._json(200, agent.start_workload(kind, options))
            timeout_s = body.get("timeout_s", 10.0)
            if type(timeout_s) not in (int, float) or timeout_s <= 0:
                raise _BadRequest(f"field timeout_s={timeout_s!r}: expected a number > 0")
            return self._json(200, agent.stop_workload(float(timeout_s)))
        except UnknownWorkloadError as exc:
            return self._json(400, {"error": type(exc).__name__, "message": str(exc),
                                    "valid": exc.valid})
        except (WorkloadOptionsError, _BadRequest) as exc:
            return self._json(400, {"error": type(exc).__name__.lstrip("_"),
                                    "message": str(exc)})
        except WorkloadStateError as exc:
            return self._json(409, {"error": type(exc).__name__, "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 -- answered as 500 and logged with traceback
            log.exception("request failed", extra={"path": path})
            return self._json(500, {"error": type(exc).__name__, "message": str(exc)})

    def _body(self) -> dict[str, object]:
        length_text = self.headers.get("Content-Length", "0")
        try:
            length = int(length_text)
        except ValueError:
            raise _BadRequest(f"Content-Length {length_text!r}: expected an integer") from None
        if not 0 <= length <= MAX_BODY_BYTES:
            raise _BadRequest(f"body of {length} bytes: expected 0..{MAX_BODY_BYTES}")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest(f"body is not UTF-8 JSON: {exc}") from None
        if not isinstance(body, dict):
            raise _BadRequest(f"body {type(body).__name__}: expected a JSON object")
        return body

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
