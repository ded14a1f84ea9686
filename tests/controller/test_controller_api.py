"""The local API end to end over real HTTP: in-process server, fake switches, client functions."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from controller import api
from controller.errors import (
    ApplyTimeoutError,
    ControllerAuthError,
    ControllerRequestError,
    ControllerUnavailableError,
    SnapshotError,
    StaleGenerationError,
)
from controller.reconciler import Reconciler
from controller.server import ApiServer
from tests.controller.ctl_fakes import FakeFabric, ring_snapshot


@pytest.fixture
def served() -> Iterator[tuple[str, Reconciler, FakeFabric]]:
    rec = Reconciler()
    fabric = FakeFabric(ring_snapshot(1, 500.0))
    server = ApiServer("127.0.0.1", 0, rec)
    server.serve_in_thread()
    worker = threading.Thread(target=rec.run, daemon=True)
    worker.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", rec, fabric
    finally:
        server.shutdown()
        server.server_close()
        rec.stop()
        worker.join(5.0)
    assert not worker.is_alive()


def test_push_wait_status_routes(served: tuple[str, Reconciler, FakeFabric]) -> None:
    endpoint, rec, fabric = served
    for sw in fabric.switches.values():
        rec.switch_connected(sw)
    assert api.push_snapshot(endpoint, ring_snapshot(1, 500.0)) is True
    status = api.wait_applied(endpoint, 1, timeout_s=5.0)
    assert status.generation_applied == 1 and status.complete
    assert [sw.connected for sw in status.switches] == [True] * 4
    routes = api.get_routes(endpoint)
    assert routes.generation == 1 and routes.path(1, "10.0.0.3") == [1, 2, 3]
    # a mapping is validated client-side first
    assert api.push_snapshot(
        f"http://{endpoint}/", ring_snapshot(2, 9000.0).model_dump(mode="json")
    )
    api.wait_applied(endpoint, 2, timeout_s=5.0)
    assert api.get_routes(endpoint).path(1, "10.0.0.3") == [1, 4, 3]
    assert api.get_status(endpoint).last_apply.generation == 2


def test_errors_are_typed(served: tuple[str, Reconciler, FakeFabric]) -> None:
    endpoint, rec, fabric = served
    api.push_snapshot(endpoint, ring_snapshot(5, 500.0))
    with pytest.raises(StaleGenerationError) as info:
        api.push_snapshot(endpoint, ring_snapshot(4, 500.0))
    assert (info.value.generation, info.value.latest) == (4, 5)
    with pytest.raises(SnapshotError, match="node='nowhere'"):
        api.push_snapshot(
            endpoint,
            {
                "generation": 6,
                "switches": [{"dpid": 1, "name": "a"}],
                "hosts": [
                    {"node": "nowhere", "ip": "10.0.0.1", "mac": "02:00:00:00:00:01", "port_no": 1}
                ],
            },
        )
    with pytest.raises(ApplyTimeoutError, match="n1"):  # no switch connected
        api.wait_applied(endpoint, 5, timeout_s=0.2)
    assert api.wait_applied(endpoint, 5, timeout_s=2.0, all_switches=False).generation_applied == 5


def test_server_rejects_bad_bodies_with_snapshot_error(
    served: tuple[str, Reconciler, FakeFabric],
) -> None:
    import urllib.request

    endpoint, _, _ = served
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(f"http://{endpoint}/v1/snapshot", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(req, timeout=5)
    with info.value as error:
        assert error.code == 400
        assert b"SnapshotError" in error.read()
    with pytest.raises(ControllerRequestError, match="NotFound"):
        api._request(endpoint, "GET", "/v1/nothing", timeout_s=5)


def test_unavailable_endpoint() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ControllerUnavailableError, match=str(port)):
        api.get_status(f"127.0.0.1:{port}", timeout_s=2.0)


def test_token_is_required_when_set(caplog: pytest.LogCaptureFixture) -> None:
    token = "controller-token-0123456789"
    rec = Reconciler()
    server = ApiServer("127.0.0.1", 0, rec, token=token)
    server.serve_in_thread()
    endpoint = f"127.0.0.1:{server.server_address[1]}"
    try:
        with caplog.at_level("WARNING", logger="controller.server"):
            for wrong in (None, "controller-token-012345678X"):
                with pytest.raises(ControllerAuthError, match=r"(missing|wrong) bearer token"):
                    api.push_snapshot(endpoint, ring_snapshot(1, 500.0), token=wrong)
                with pytest.raises(ControllerAuthError):
                    api.get_routes(endpoint, token=wrong)
                with pytest.raises(ControllerAuthError):
                    api.wait_applied(endpoint, 1, timeout_s=0.1, token=wrong)
        assert rec.status().generation_pushed == 0  # nothing got through
        assert api.push_snapshot(endpoint, ring_snapshot(1, 500.0), token=token) is True
        assert api.get_status(endpoint, token=token).generation_pushed == 1
        refused = [r.getMessage() for r in caplog.records if "unauthorized" in r.getMessage()]
        assert len(refused) == 6
        assert "from 127.0.0.1: POST /v1/snapshot (missing token)" in refused[0]
        assert all(token not in m and "012345678X" not in m for m in refused)
    finally:
        server.shutdown()
        server.server_close()
