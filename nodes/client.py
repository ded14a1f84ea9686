"""Plain functions the orchestrator calls on a node agent's management API (stdlib urllib).

`addr` is `IP:PORT` of the agent's management listener. Errors: AgentUnreachableError (no
answer), AgentApiError (an error status; `.error` is the agent-side error class name, e.g.
`UnknownWorkloadError`, `WorkloadOptionsError`, `WorkloadStateError`).

Example:
    wait_healthy("10.255.0.2:9100", timeout_s=10)
    start_workload("10.255.0.2:9100", "downlink-files", {"source": "...", "ground_ip": "..."})
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from nodes.addr import format_hostport, parse_hostport
from nodes.errors import AgentApiError, AgentUnreachableError


def _url(addr: str, path: str) -> str:
    host, port = parse_hostport(addr)
    return f"http://{format_hostport(host, port)}{path}"


def _request(addr: str, method: str, path: str, body: Mapping[str, object] | None,
             timeout_s: float) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(_url(addr, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 -- http only
            return resp.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        try:
            err = json.loads(raw.decode("utf-8"))
            error, message = str(err.get("error", "")), str(err.get("message", ""))
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            error, message = "HTTPError", raw[:200].decode("utf-8", "replace")
        raise AgentApiError(addr, method, path, exc.code, error, message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AgentUnreachableError(addr, f"{method} {path}: {reason}") from None


def _json(addr: str, method: str, path: str, body: Mapping[str, object] | None = None,
          timeout_s: float = 5.0) -> dict[str, object]:
    raw = _request(addr, method, path, body, timeout_s)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentApiError(addr, method, path, 200, "BadResponse", str(exc)) from None
    if not isinstance(obj, dict):
        raise AgentApiError(addr, method, path, 200, "BadResponse",
                            f"{type(obj).__name__}, expected a JSON object")
    return obj


def health(addr: str, timeout_s: float = 2.0) -> dict[str, object]:
    """name, role, data_ip, pid, uptime_s, workload {kind, state} or None."""
    return _json(addr, "GET", "/health", timeout_s=timeout_s)


def metrics(addr: str, timeout_s: float = 2.0) -> str:
    """The Prometheus text exposition."""
    return _request(addr, "GET", "/metrics", None, timeout_s).decode("utf-8")


def start_workload(addr: str, kind: str, options: Mapping[str, object] | None = None,
                   timeout_s: float = 5.0) -> dict[str, object]:
    """Starts `kind` (kebab-case) with `options`; returns kind, state, started_utc."""
    return _json(addr, "POST", "/workload/start", {"kind": kind, "options": dict(options or {})},
                 timeout_s=timeout_s)


def stop_workload(addr: str, timeout_s: float = 15.0) -> dict[str, object]:
    """Stops the current workload (idempotent); returns its results without events."""
    agent_timeout_s = max(0.5, timeout_s - 2.0)
    return _json(addr, "POST", "/workload/stop", {"timeout_s": agent_timeout_s},
                 timeout_s=timeout_s)


def results(addr: str, events: bool = True, timeout_s: float = 10.0) -> dict[str, object]:
    """Results of the current or last workload (keys: nodes.workloads.RESULT_KEYS)."""
    return _json(addr, "GET", "/results" if events else "/results?events=0",
                 timeout_s=timeout_s)


def wait_healthy(addr: str, timeout_s: float, poll_s: float = 0.05) -> dict[str, object]:
    """Polls /health until it answers; AgentUnreachableError (with the last reason) after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            return health(addr, timeout_s=max(0.05, min(2.0, remaining)))
        except AgentUnreachableError as exc:
            last = exc.reason
        if time.monotonic() + poll_s > deadline:
            raise AgentUnreachableError(addr, f"not healthy within {timeout_s} s; last: {last}")
        time.sleep(poll_s)
