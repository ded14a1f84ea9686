"""Client of the controller's local API: plain functions the orchestrator and tests call.

Owns the client side of the HTTP/JSON protocol in controller/server.py, with the standard
library only (no proxy: the API is on the local host). Every function takes the endpoint as
"host:port" or "http://host:port", and the run's bearer token as the keyword `token` (None only
for a controller started with `--insecure-no-token`), and raises ControllerError subclasses:
ControllerUnavailableError (nothing answers), ControllerAuthError (401: missing or wrong
token), SnapshotError (400), StaleGenerationError (409), ApplyTimeoutError (not applied in
time), ControllerRequestError (anything else).

Example:
    >>> push_snapshot("127.0.0.1:8181", snapshot)            # doctest: +SKIP
    >>> wait_applied("127.0.0.1:8181", snapshot.generation, timeout_s=5)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from controller.errors import (
    ApplyTimeoutError,
    ControllerAuthError,
    ControllerRequestError,
    ControllerUnavailableError,
    SnapshotError,
    StaleGenerationError,
)
from controller.model import ControllerStatus, RouteTable, Snapshot

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def base_url(endpoint: str) -> str:
    """'host:port' or 'http://host:port' -> 'http://host:port'."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.startswith("http://") else f"http://{endpoint}"


def _request(
    endpoint: str,
    method: str,
    path: str,
    *,
    body: bytes | None = None,
    timeout_s: float,
    ok: tuple[int, ...] = (200, 202),
    token: str | None = None,
) -> tuple[int, Any]:
    url = base_url(endpoint) + path
    req = urllib.request.Request(url, data=body, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = {"message": raw.decode(errors="replace")}
        if exc.code in ok:
            return exc.code, payload
        raise _typed_error(exc.code, payload) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ControllerUnavailableError(f"controller at {url}: {reason}") from None


def _typed_error(status: int, payload: Any) -> Exception:
    if not isinstance(payload, dict):
        return ControllerRequestError(str(payload), status=status)
    kind = payload.get("error")
    message = str(payload.get("message", payload))
    if status == 401:
        return ControllerAuthError(f"controller API refused the request: {message}")
    if kind == "SnapshotError":
        return SnapshotError(message)
    if kind == "StaleGenerationError":
        return StaleGenerationError(int(payload["generation"]), int(payload["latest"]))
    return ControllerRequestError(f"{kind}: {message}", status=status)


def push_snapshot(
    endpoint: str,
    snapshot: Snapshot | Mapping[str, Any],
    *,
    timeout_s: float = 10.0,
    token: str | None = None,
) -> bool:
    """Hand the controller a new topology; returns False if it repeats the latest exactly.

    Returns as soon as the controller accepted it (validated, routes computed); use
    `wait_applied` to wait until the switches hold its flows. A mapping is validated here first.
    """
    if not isinstance(snapshot, Snapshot):
        snapshot = Snapshot.parse(snapshot)
    body = snapshot.model_dump_json().encode()
    _, payload = _request(
        endpoint, "POST", "/v1/snapshot", body=body, timeout_s=timeout_s, token=token
    )
    return bool(payload.get("changed", True))


def get_status(
    endpoint: str, *, timeout_s: float = 5.0, token: str | None = None
) -> ControllerStatus:
    """Switches connected, generation pushed and applied, flows per switch, recent errors."""
    _, payload = _request(endpoint, "GET", "/v1/status", timeout_s=timeout_s, token=token)
    return ControllerStatus.model_validate(payload)


def get_routes(endpoint: str, *, timeout_s: float = 5.0, token: str | None = None) -> RouteTable:
    """The routes of the generation the controller enforces."""
    _, payload = _request(endpoint, "GET", "/v1/routes", timeout_s=timeout_s, token=token)
    return RouteTable.model_validate(payload)


def wait_applied(
    endpoint: str,
    generation: int,
    timeout_s: float,
    *,
    all_switches: bool = True,
    token: str | None = None,
) -> ControllerStatus:
    """Block until `generation` (or newer) is applied, by default on every switch it names.

    Raises ApplyTimeoutError naming the switches not yet synchronised.
    """
    query = urlencode(
        {"generation": generation, "timeout_s": timeout_s, "all_switches": int(all_switches)}
    )
    status_code, payload = _request(
        endpoint,
        "GET",
        f"/v1/applied?{query}",
        timeout_s=timeout_s + 10.0,
        ok=(200, 408),
        token=token,
    )
    status = ControllerStatus.model_validate(payload)
    if status_code == 408:
        lagging = [
            f"{sw.name or hex(sw.dpid)}(connected={sw.connected}, synced={sw.synced_generation})"
            for sw in status.switches
            if sw.name is not None
            and (sw.synced_generation != status.generation_applied or not sw.connected)
        ]
        raise ApplyTimeoutError(
            f"generation {generation} not applied within {timeout_s} s: applied="
            f"{status.generation_applied}, pushed={status.generation_pushed}, "
            f"lagging switches: {lagging[:10]}{' ...' if len(lagging) > 10 else ''}"
        )
    return status
