"""The management API over HTTP (stdlib server, one thread per request): routes to NodeAgent.

| method | path | body | answer |
|---|---|---|---|
| GET | /health | | name, role, uptime_s, workload {kind, state}, jobs_running (no token) |
| GET | /metrics | | Prometheus text format 0.0.4 |
| POST | /context | RunContext (context.py) | the context as kept |
| GET | /context | | the context as kept (409 before a push) |
| POST | /jobs | {"kind", "options", "id"?} | id, kind, state, submitted_utc |
| GET | /jobs | | {"jobs": [job info, ...]} |
| GET | /jobs/<id> | | id, kind, state, submitted/started/ended_utc, elapsed_s, progress, error |
| GET | /jobs/<id>/results[?events=0] | | the workload's results (RESULT_KEYS) |
| GET | /jobs/<id>/files | | {"files": [{name, size_bytes}, ...]} |
| GET | /jobs/<id>/files/<name> | | the file's bytes (application/octet-stream) |
| POST | /jobs/<id>/cancel | {"timeout_s"}? | job info |
| POST | /workload/start, /workload/stop; GET /results | | aliases onto jobs (old API) |

Every request but `GET /health` must carry `Authorization: Bearer <token>` when the agent has a
token; otherwise 401 with a JSON error and a log line naming the remote address and the path
(never the token). Errors answer JSON {"error": <class name>, "message": ..., ["valid": [...]]}:
400 bad request, unknown kind, option or context field, a file name leaving the job's folder;
401 no/wrong token; 404 unknown path, job or file; 405 wrong method; 409 wrong state; 500 bug.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from nodes.auth import bearer_matches
from nodes.errors import (
    ConfigError,
    DataPlaneError,
    JobFileError,
    UnknownJobError,
    UnknownWorkloadError,
    WorkloadStateError,
)
from nodes.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from nodes.service import NodeAgent

log = logging.getLogger("nodes.api")
MAX_BODY_BYTES = 1 << 20
_STATIC = {"/health": "GET", "/metrics": "GET", "/results": "GET", "/workload/start": "POST",
           "/workload/stop": "POST", "/jobs": "GET POST", "/context": "GET POST"}
_JOB = re.compile(r"/jobs/(?P<id>[^/]+)(?P<rest>/results|/files|/files/(?P<file>.+)|/cancel)?")
_UNAUTHENTICATED = {("GET", "/health")}


class _BadRequest(Exception):
    """Internal: the request itself is malformed (answered 400)."""


class _NoRoute(Exception):
    """Internal: no such path (404) or method (405)."""

    def __init__(self, status: int, error: str, message: str):
        self.status, self.error = status, error
        super().__init__(message)


class AgentHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, agent: NodeAgent, address: tuple[str, int], token: str | None):
        self.agent = agent
        self.token = token
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)


def make_server(agent: NodeAgent, host: str, port: int, *,
                token: str | None) -> AgentHTTPServer:
    """Binds now (OSError when the address is taken); call `serve_forever` to answer.
    `token=None` serves without authentication (the agent's `--insecure-no-token`)."""
    return AgentHTTPServer(agent, (host, port), token)


def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
    """(route name, parameters) or _NoRoute."""
    expected = _STATIC.get(path)
    params: dict[str, str] = {}
    if expected is None:
        m = _JOB.fullmatch(path)
        if m is None:
            raise _NoRoute(404, "NotFound", f"no route {path}; routes: "
                           + ", ".join(f"{m} {p}" for p, m in _STATIC.items())
                           + ", GET /jobs/<id>[/results|/files|/files/<name>], "
                             "POST /jobs/<id>/cancel")
        params = {"id": unquote(m.group("id")), "file": unquote(m.group("file") or "")}
        rest = m.group("rest") or ""
        name = "/jobs/<id>/files/<name>" if m.group("file") else f"/jobs/<id>{rest}"
        expected = "POST" if rest == "/cancel" else "GET"
        path = name
    if method not in expected.split():
        raise _NoRoute(405, "MethodNotAllowed", f"{method} {path}: expected {expected}")
    return f"{method} {path}", params


def _flag(query: str, name: str, default: bool = True) -> bool:
    values = parse_qs(query).get(name)
    if not values:
        return default
    return values[-1].lower() not in ("0", "false", "no")


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

    def _authorized(self, method: str, path: str) -> bool:
        token = self.server.token
        if token is None or (method, path) in _UNAUTHENTICATED:
            return True
        if bearer_matches(self.headers.get("Authorization"), token):
            return True
        reason = "missing" if not self.headers.get("Authorization") else "wrong"
        log.warning("unauthorized request", extra={"remote": self.client_address[0],
                                                    "path": path, "method": method,
                                                    "token": reason})
        try:  # read what was sent, or closing with unread bytes resets the connection
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        if 0 < length <= MAX_BODY_BYTES:
            self.rfile.read(length)
        self._json(401, {"error": "Unauthorized",
                         "message": f"{method} {path}: {reason} bearer token"})
        return False

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if not self._authorized(method, path):
            return
        try:
            route, params = _route(method, path)
            self._answer(route, params, url.query)
        except _NoRoute as exc:
            self._json(exc.status, {"error": exc.error, "message": str(exc)})
        except UnknownWorkloadError as exc:
            self._json(400, {"error": type(exc).__name__, "message": str(exc),
                             "valid": exc.valid})
        except (ConfigError, _BadRequest) as exc:
            self._json(400, {"error": type(exc).__name__.lstrip("_"), "message": str(exc)})
        except UnknownJobError as exc:
            self._json(404, {"error": type(exc).__name__, "message": str(exc)})
        except JobFileError as exc:
            self._json(404 if exc.missing else 400,
                       {"error": type(exc).__name__, "message": str(exc)})
        except (WorkloadStateError, DataPlaneError) as exc:
            self._json(409, {"error": type(exc).__name__, "message": str(exc)})
        except Exception as exc:  # noqa: BLE001 -- answered as 500 and logged with traceback
            log.exception("request failed", extra={"path": path})
            self._json(500, {"error": type(exc).__name__, "message": str(exc)})

    def _answer(self, route: str, params: dict[str, str], query: str) -> None:
        agent = self.server.agent
        if route == "GET /health":
            return self._json(200, agent.health())
        if route == "GET /metrics":
            return self._send(200, agent.render_metrics().encode(), METRICS_CONTENT_TYPE)
        if route == "GET /results":
            return self._json(200, agent.results(include_events=_flag(query, "events")))
        if route == "GET /context":
            return self._json(200, agent.get_context())
        if route == "GET /jobs":
            return self._json(200, {"jobs": [j.info() for j in agent.jobs.all()]})
        if route.startswith("GET /jobs/<id>"):
            job = agent.jobs.get(params["id"])
            if route == "GET /jobs/<id>":
                return self._json(200, job.info())
            if route == "GET /jobs/<id>/results":
                return self._json(200, job.workload.results(
                    include_events=_flag(query, "events")))
            if route == "GET /jobs/<id>/files":
                return self._json(200, {"files": job.files()})
            return self._file(job.file_path(params["file"]))
        body = self._body()
        if route == "POST /context":
            return self._json(200, agent.set_context(body))
        if route in ("POST /jobs", "POST /workload/start"):
            kind = body.get("kind")
            if not isinstance(kind, str):
                raise _BadRequest(f"field kind={kind!r}: expected a workload name")
            options = body.get("options", {})
            if not isinstance(options, dict):
                raise _BadRequest(f"field options={options!r}: expected a JSON object")
            if route == "POST /workload/start":
                return self._json(200, agent.start_workload(kind, options))
            job_id = body.get("id")
            if job_id is not None and not isinstance(job_id, str):
                raise _BadRequest(f"field id={job_id!r}: expected a string")
            return self._json(200, agent.submit_job(kind, options, job_id))
        timeout_s = body.get("timeout_s", 10.0)
        if type(timeout_s) not in (int, float) or timeout_s <= 0:
            raise _BadRequest(f"field timeout_s={timeout_s!r}: expected a number > 0")
        if route == "POST /jobs/<id>/cancel":
            return self._json(200, agent.jobs.cancel(params["id"], float(timeout_s)).info())
        return self._json(200, agent.stop_workload(float(timeout_s)))

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

    def _file(self, path: object) -> None:
        with open(path, "rb") as f:  # type: ignore[call-overload]
            size = f.seek(0, 2)
            f.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(f, self.wfile, 256 * 1024)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
