"""Snapshot schema: valid ones round-trip through JSON, invalid ones name what is wrong."""

from __future__ import annotations

import pytest

from controller.errors import SnapshotError
from controller.model import RouteEntry, RouteTable, Snapshot


def _snap(**overrides: object) -> dict:
    data: dict = {
        "generation": 3,
        "switches": [{"dpid": 1, "name": "sat0"}, {"dpid": 2, "name": "gs0"}],
        "hosts": [
            {"node": "sat0", "ip": "10.128.0.1", "mac": "02:00:00:00:00:01", "port_no": 1},
            {"node": "gs0", "ip": "10.128.0.2", "mac": "02:00:00:00:00:02", "port_no": 1},
        ],
        "links": [
            {"a": {"dpid": 1, "port_no": 10}, "b": {"dpid": 2, "port_no": 10}, "weight_us": 2500.5}
        ],
    }
    data.update(overrides)
    return data


def test_snapshot_round_trips_through_json() -> None:
    snap = Snapshot.parse(_snap(label="handover-1", at_ns=123))
    again = Snapshot.parse(snap.model_dump_json())
    assert again == snap
    assert again.links[0].up is True
    assert str(again.hosts[1].ip) == "10.128.0.2"
    assert again.dpid_of() == {"sat0": 1, "gs0": 2}


def test_mac_is_normalised_to_lower_case() -> None:
    hosts = _snap()["hosts"]
    hosts[0]["mac"] = "02:AB:00:00:00:01"
    assert Snapshot.parse(_snap(hosts=hosts)).hosts[0].mac == "02:ab:00:00:00:01"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"generation": 0}, "generation"),
        (
            {
                "switches": [{"dpid": 1, "name": "a"}, {"dpid": 1, "name": "b"}],
                "hosts": [],
                "links": [],
            },
            "duplicate switch dpid",
        ),
        (
            {
                "switches": [{"dpid": 1, "name": "a"}, {"dpid": 2, "name": "a"}],
                "hosts": [],
                "links": [],
            },
            "duplicate switch name",
        ),
        (
            {
                "hosts": [
                    {"node": "moon", "ip": "10.0.0.1", "mac": "02:00:00:00:00:09", "port_no": 1}
                ]
            },
            "node='moon' is not a switch",
        ),
        ({"hosts": [{"node": "sat0", "ip": "10.0.0.1", "mac": "zz", "port_no": 1}]}, "mac="),
        (
            {
                "links": [
                    {
                        "a": {"dpid": 1, "port_no": 10},
                        "b": {"dpid": 9, "port_no": 10},
                        "weight_us": 1,
                    }
                ]
            },
            "dpid=0x9 is not a switch",
        ),
        (
            {
                "links": [
                    {
                        "a": {"dpid": 1, "port_no": 10},
                        "b": {"dpid": 1, "port_no": 11},
                        "weight_us": 1,
                    }
                ]
            },
            "both ends on dpid=0x1",
        ),
        (
            {
                "links": [
                    {
                        "a": {"dpid": 1, "port_no": 1},
                        "b": {"dpid": 2, "port_no": 10},
                        "weight_us": 1,
                    }
                ]
            },
            "duplicate (dpid, port_no)",
        ),
        (
            {
                "links": [
                    {
                        "a": {"dpid": 1, "port_no": 10},
                        "b": {"dpid": 2, "port_no": 10},
                        "weight_us": -1,
                    }
                ]
            },
            "weight_us",
        ),
        (
            {
                "links": [
                    {
                        "a": {"dpid": 1, "port_no": 10},
                        "b": {"dpid": 2, "port_no": 10},
                        "weight_us": "inf",
                    }
                ]
            },
            "weight_us",
        ),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_snapshots_are_rejected_with_the_reason(change: dict, expected: str) -> None:
    with pytest.raises(SnapshotError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Snapshot.parse(_snap(**change))


def test_same_topology_ignores_schedule_and_label() -> None:
    a = Snapshot.parse(_snap())
    b = Snapshot.parse(_snap(at_ns=5, label="x"))
    c = Snapshot.parse(_snap(generation=4))
    assert a.same_topology(b)
    assert not a.same_topology(c)


def test_route_table_path_follows_next_hops_and_detects_loops() -> None:
    def entry(dpid: int, nxt: int | None) -> RouteEntry:
        return RouteEntry(
            dpid=dpid,
            node=f"n{dpid}",
            ipv4_dst="10.0.0.3",
            out_port=1,
            next_dpid=nxt,
            hops=0,
            delay_us=0.0,
        )

    table = RouteTable(generation=1, routes=[entry(1, 2), entry(2, 3), entry(3, None)])
    assert table.path(1, "10.0.0.3") == [1, 2, 3]
    with pytest.raises(SnapshotError, match="unreachable"):
        table.path(1, "10.0.0.9")
    looped = RouteTable(generation=1, routes=[entry(1, 2), entry(2, 1)])
    with pytest.raises(SnapshotError, match="loop"):
        looped.path(1, "10.0.0.3")
