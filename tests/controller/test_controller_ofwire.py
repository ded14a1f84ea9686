"""The struct encoder against os-ken's own serialisation, byte for byte (the reference)."""

from __future__ import annotations

import pytest
from os_ken.ofproto import ofproto_protocol
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import ofwire
from controller.flows import MISS_KEY, cookie_for, route_key
from controller.ofswitch import flow_entry, normalize_match

DP = ofproto_protocol.ProtocolDesc(ofp.OFP_VERSION)


def _osken_add(xid: int, cookie: int, priority: int, match: dict, out_port: int | None) -> bytes:
    instructions = []
    if out_port is not None:
        instructions = [
            parser.OFPInstructionActions(
                ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(out_port)]
            )
        ]
    msg = parser.OFPFlowMod(
        DP,
        cookie=cookie,
        cookie_mask=0,
        table_id=0,
        command=ofp.OFPFC_ADD,
        priority=priority,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**match),
        instructions=instructions,
    )
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


@pytest.mark.parametrize(
    ("match", "out_port"),
    [
        ({"eth_type": 0x0800, "ipv4_dst": "10.128.0.7"}, 11),
        ({"eth_type": 0x0800, "ipv4_dst": "192.168.255.1"}, 0xFFFFFF00),
        ({}, None),
        ({"eth_type": 0x0800}, 3),
        ({"eth_type": 0x0800, "ipv4_dst": "10.0.0.1"}, None),
    ],
)
def test_flow_add_matches_osken(match: dict, out_port: int | None) -> None:
    ours = ofwire.flow_add(
        0x1234, cookie=cookie_for(42), priority=100, match=tuple(match.items()), out_port=out_port
    )
    assert ours == _osken_add(0x1234, cookie_for(42), 100, match, out_port)


def test_flow_delete_strict_matches_osken() -> None:
    key = route_key("10.128.3.4")
    ours = ofwire.flow_delete_strict(
        99, cookie=cookie_for(5), priority=key.priority, match=key.match
    )
    msg = parser.OFPFlowMod(
        DP,
        cookie=cookie_for(5),
        cookie_mask=0xFFFFFFFFFFFFFFFF,
        table_id=0,
        command=ofp.OFPFC_DELETE_STRICT,
        priority=100,
        buffer_id=ofp.OFP_NO_BUFFER,
        out_port=ofp.OFPP_ANY,
        out_group=ofp.OFPG_ANY,
        match=parser.OFPMatch(**dict(key.match)),
    )
    msg.set_xid(99)
    msg.serialize()
    assert ours == bytes(msg.buf)


def test_barrier_matches_osken() -> None:
    msg = parser.OFPBarrierRequest(DP)
    msg.set_xid(7)
    msg.serialize()
    assert ofwire.barrier_request(7) == bytes(msg.buf)


def test_unsupported_match_field_is_refused() -> None:
    with pytest.raises(ValueError, match="in_port"):
        ofwire.encode_match((("in_port", 1),))


def test_flow_stats_parse_back_into_the_same_keys() -> None:
    """A flow-stats reply built by os-ken parses into the FlowKey the controller writes."""
    route = route_key("10.1.2.3")
    stats = [
        parser.OFPFlowStats(
            table_id=0,
            duration_sec=3,
            duration_nsec=500_000_000,
            priority=100,
            idle_timeout=0,
            hard_timeout=0,
            flags=0,
            cookie=cookie_for(9),
            packet_count=17,
            byte_count=0,
            match=parser.OFPMatch(eth_type=0x0800, ipv4_dst="10.1.2.3"),
            instructions=[
                parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(12)])
            ],
        ),
        parser.OFPFlowStats(
            table_id=0,
            duration_sec=1,
            duration_nsec=0,
            priority=0,
            idle_timeout=0,
            hard_timeout=0,
            flags=0,
            cookie=cookie_for(1),
            packet_count=0,
            byte_count=0,
            match=parser.OFPMatch(),
            instructions=[],
        ),
        parser.OFPFlowStats(
            table_id=0,
            duration_sec=1,
            duration_nsec=0,
            priority=100,
            idle_timeout=0,
            hard_timeout=0,
            flags=0,
            cookie=0,
            packet_count=0,
            byte_count=0,
            match=parser.OFPMatch(eth_type=0x0800, ipv4_dst="10.1.2.4"),
            instructions=[
                parser.OFPInstructionActions(
                    ofp.OFPIT_APPLY_ACTIONS, [parser.OFPActionOutput(1), parser.OFPActionOutput(2)]
                )
            ],
        ),
    ]
    entries = [flow_entry(s) for s in stats]
    assert entries[0].key == route and entries[0].out_port == 12 and entries[0].simple
    assert entries[0].packets == 17 and entries[0].duration_s == pytest.approx(3.5)
    assert entries[1].key == MISS_KEY and entries[1].out_port is None and entries[1].simple
    assert not entries[2].simple
    assert normalize_match([("ipv4_dst", ("10.0.0.1", "255.255.255.255"))]) == (
        ("ipv4_dst", "10.0.0.1"),
    )
    assert normalize_match([("ipv4_dst", ("10.0.0.0", "255.255.0.0"))]) == (
        ("ipv4_dst", ("10.0.0.0", "255.255.0.0")),
    )
