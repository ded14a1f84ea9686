"""Plain functions the orchestrator calls on a node agent's management API (stdlib urllib).

`addr` is `IP:PORT` of the agent's management listener; `token` is the run's bearer token
(None only for an agent started with `--insecure-no-token`). Errors: AgentUnreachableError (no
answer), AgentAuthError (401: missing or wrong token), AgentApiError (another error status;
`.error` is the agent-side error class name, e.g. `UnknownWorkloadError`, `UnknownJobError`,
`WorkloadOptionsError`, `WorkloadStateError`).

Example:
    wait_healthy("10.255.0.2:9100", timeout_s=10)
    job = submit_job("10.255.0.2:9100", "message-exchange", {"mode": "echo"}, token=tok)
    final = wait_job("10.255.0.2:9100", job["id"], timeout_s=60, token=tok)
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

from nodes.addr import format_hostport, parse_hostport
from nodes.auth import bearer_header
from nodes.errors import AgentApiError, AgentAuthError, AgentUnreachableError, JobTimeoutError

FINAL_STATES = ("finished", "stopped", "failed")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _url(addr: str, path: str) -> str:
    host, port = parse_hostport(addr)
    return f"http://{format_hostport(host, port)}{path}"


def _open(addr: str, method: str, path: str, body: Mapping[str, object] | None,
          timeout_s: float, token: str | None) -> http.client.HTTPResponse:
    data = json.dumps(body).encode() if body is not None else None
    headers = bearer_header(token)
    if data:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(_url(addr, path), data=data, method=method, headers=headers)
    try:
        return _OPENER.open(req, timeout=timeout_s)  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        exc.close()
        try:
            err = json.loads(raw.decode("utf-8"))
            error, message = str(err.get("error", "")), str(err.get("message", ""))
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            error, message = "HTTPError", raw[:200].decode("utf-8", "replace")
        cls = AgentAuthError if exc.code == 401 else AgentApiError
        raise cls(addr, method, path, exc.code, error, message) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AgentUnreachableError(addr, f"{method} {path}: {reason}") from None


def _request(addr: str, method: str, path: str, body: Mapping[str, object] | None,
             timeout_s: float, token: str | None = None) -> bytes:
    resp = _open(addr, method, path, body, timeout_s, token)
    try:
        with resp:
            return resp.read()
    except OSError as exc:
        raise AgentUnreachableError(addr, f"{method} {path}: {exc}") from None


def _json(addr: str, method: str, path: str, body: Mapping[str, object] | None = None, *,
          timeout_s: float, token: str | None) -> dict[str, object]:
    raw = _request(addr, method, path, body, timeout_s, token)
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AgentApiError(addr, method, path, 200, "BadResponse", str(exc)) from None
    if not isinstance(obj, dict):
        raise AgentApiError(addr, method, path, 200, "BadResponse",
                            f"{type(obj).__name__}, expected a JSON object")
    return obj


def _job_path(job_id: str, rest: str = "") -> str:
    return f"/jobs/{quote(job_id, safe='')}{rest}"


def health(addr: str, timeout_s: float = 2.0, *, token: str | None = None) -> dict[str, object]:
    """name, role, data_ip, pid, uptime_s, workload {kind, state} or None, jobs_running.
    Needs no token (the agent answers /health to anyone); one is sent when given."""
    return _json(addr, "GET", "/health", timeout_s=timeout_s, token=token)


def metrics(addr: str, timeout_s: float = 2.0, *, token: str | None = None) -> str:
    """The Prometheus text exposition."""
    return _request(addr, "GET", "/metrics", None, timeout_s, token).decode("utf-8")


def push_context(addr: str, context: Mapping[str, object], timeout_s: float = 5.0, *,
                 token: str | None = None) -> dict[str, object]:
    """Pushes the run context (nodes/context.py); returns it as the agent kept it."""
    return _json(addr, "POST", "/context", context, timeout_s=timeout_s, token=token)


def submit_job(addr: str, kind: str, options: Mapping[str, object] | None = None,
               job_id: str | None = None, timeout_s: float = 5.0, *,
               token: str | None = None) -> dict[str, object]:
    """Starts a job of `kind`; returns id, kind, state, submitted_utc."""
    body: dict[str, object] = {"kind": kind, "options": dict(options or {})}
    if job_id is not None:
        body["id"] = job_id
    return _json(addr, "POST", "/jobs", body, timeout_s=timeout_s, token=token)


def jobs(addr: str, timeout_s: float = 5.0, *, token: str | None = None) -> list[dict[str, object]]:
    """Every job of the agent, in submission order (the same fields as `job`)."""
    return list(_json(addr, "GET", "/jobs", timeout_s=timeout_s, token=token)["jobs"])  # type: ignore[call-overload]


def job(addr: str, job_id: str, timeout_s: float = 5.0, *,
        token: str | None = None) -> dict[str, object]:
    """id, kind, state, submitted/started/ended_utc, elapsed_s, progress, cancelled, error."""
    return _json(addr, "GET", _job_path(job_id), timeout_s=timeout_s, token=token)


def job_results(addr: str, job_id: str, events: bool = True, timeout_s: float = 10.0, *,
                token: str | None = None) -> dict[str, object]:
    """The job's results (keys: nodes.workloads.RESULT_KEYS)."""
    path = _job_path(job_id, "/results" if events else "/results?events=0")
    return _json(addr, "GET", path, timeout_s=timeout_s, token=token)


def job_files(addr: str, job_id: str, timeout_s: float = 5.0, *,
              token: str | None = None) -> list[dict[str, object]]:
    """Files the job wrote to its folder: [{name, size_bytes}, ...]."""
    return list(_json(addr, "GET", _job_path(job_id, "/files"), timeout_s=timeout_s,  # type: ignore[call-overload]
                      token=token)["files"])


def fetch_job_file(addr: str, job_id: str, name: str, dest: Path, timeout_s: float = 30.0, *,
                   token: str | None = None) -> int:
    """Downloads the job's file `name` into `dest` (streamed); returns the bytes written."""
    path = _job_path(job_id, "/files/" + quote(name, safe="/"))
    resp = _open(addr, "GET", path, None, timeout_s, token)
    written = 0
    tmp = dest.with_name(dest.name + ".part")
    try:
        with resp, tmp.open("wb") as out:
            while chunk := resp.read(256 * 1024):
                out.write(chunk)
                written += len(chunk)
        tmp.replace(dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise AgentUnreachableError(addr, f"GET {path}: {exc}") from None
    return written


def cancel_job(addr: str, job_id: str, timeout_s: float = 15.0, *,
               token: str | None = None) -> dict[str, object]:
    """Stops a running job; returns its info. AgentApiError 409 when it had already ended."""
    agent_timeout_s = max(0.5, timeout_s - 2.0)
    return _json(addr, "POST", _job_path(job_id, "/cancel"), {"timeout_s": agent_timeout_s},
                 timeout_s=timeout_s, token=token)


def wait_job(addr: str, job_id: str, timeout_s: float, poll_s: float = 0.1, *,
             token: str | None = None) -> dict[str, object]:
    """Polls until the job ended; returns its final results (with events). JobTimeoutError
    naming the last state and progress when it still runs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        info = job(addr, job_id, token=token)
        if info["state"] in FINAL_STATES:
            return job_results(addr, job_id, token=token)
        if time.monotonic() + poll_s > deadline:
            raise JobTimeoutError(f"node agent {addr}: job {job_id} still {info['state']} "
                                  f"after {timeout_s} s (progress {info.get('progress')})")
        time.sleep(poll_s)


# the one-workload API (aliases onto jobs on the agent) ---------------------------------------
def start_workload(addr: str, kind: str, options: Mapping[str, object] | None = None,
                   timeout_s: float = 5.0, *, token: str | None = None) -> dict[str, object]:
    """Starts `kind` (kebab-case) with `options`; returns kind, state, started_utc, id."""
    return _json(addr, "POST", "/workload/start", {"kind": kind, "options": dict(options or {})},
                 timeout_s=timeout_s, token=token)


def stop_workload(addr: str, timeout_s: float = 15.0, *,
                  token: str | None = None) -> dict[str, object]:
    """Stops the last workload (idempotent); returns its results without events."""
    agent_timeout_s = max(0.5, timeout_s - 2.0)
    return _json(addr, "POST", "/workload/stop", {"timeout_s": agent_timeout_s},
                 timeout_s=timeout_s, token=token)


def results(addr: str, events: bool = True, timeout_s: float = 10.0, *,
            token: str | None = None) -> dict[str, object]:
    """Results of the last workload (keys: nodes.workloads.RESULT_KEYS)."""
    return _json(addr, "GET", "/results" if events else "/results?events=0",
                 timeout_s=timeout_s, token=token)


def wait_healthy(addr: str, timeout_s: float, poll_s: float = 0.05, *,
                 token: str | None = None) -> dict[str, object]:
    """Polls /health until it answers; AgentUnreachableError (with the last reason) after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = "no attempt"
    while True:
        remaining = deadline - time.monotonic()
        try:
            return health(addr, timeout_s=max(0.05, min(2.0, remaining)), token=token)
        except AgentUnreachableError as exc:
            last = exc.reason
        if time.monotonic() + poll_s > deadline:
            raise AgentUnreachableError(addr, f"not healthy within {timeout_s} s; last: {last}")
        time.sleep(poll_s)
