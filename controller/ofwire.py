"""OpenFlow 1.3 wire encoding of the few messages the controller sends in bulk.

os-ken builds a flow-mod in about 140 µs of Python; a route swap on a 66-switch mesh sends
hundreds, so the hot path packs them with `struct` here (a few µs each). Only the shapes the
controller uses are supported: match on eth_type and/or an exact ipv4_dst, one output action or
none (drop). Tests check every shape byte for byte against os-ken's own serialisation.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from typing import Any

OFP_VERSION = 0x04
OFPT_FLOW_MOD = 14
OFPT_BARRIER_REQUEST = 20

OFPFC_ADD = 0
OFPFC_DELETE_STRICT = 4

OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFP_NO_BUFFER = 0xFFFFFFFF
OFPCML_MAX = 0xFFE5
OFPIT_APPLY_ACTIONS = 4
OFPAT_OUTPUT = 0
OFPMT_OXM = 1

_OXM_OF_ETH_TYPE = (0x8000 << 16) | (5 << 9) | 2
_OXM_OF_IPV4_DST = (0x8000 << 16) | (12 << 9) | 4

_HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")
_APPLY_OUTPUT = struct.Struct("!HH4xHHIH6x")

SUPPORTED_FIELDS = ("eth_type", "ipv4_dst")

MatchItems = Sequence[tuple[str, Any]]
"""Match fields as (OXM name, value) pairs: (("eth_type", 0x800), ("ipv4_dst", "10.0.0.1"))."""


def encode_match(match: MatchItems) -> bytes:
    """An OXM match (padded to 8 bytes) for eth_type / exact ipv4_dst fields.

    Raises ValueError naming a field it cannot encode.
    """
    fields = dict(match)
    unknown = set(fields) - set(SUPPORTED_FIELDS)
    if unknown:
        raise ValueError(f"match fields {sorted(unknown)}: expected only {SUPPORTED_FIELDS}")
    body = b""
    if "eth_type" in fields:
        body += struct.pack("!IH", _OXM_OF_ETH_TYPE, int(fields["eth_type"]))
    if "ipv4_dst" in fields:
        body += (
            struct.pack("!I", _OXM_OF_IPV4_DST) + ipaddress.IPv4Address(fields["ipv4_dst"]).packed
        )
    length = 4 + len(body)
    padded = (length + 7) // 8 * 8
    return struct.pack("!HH", OFPMT_OXM, length) + body + b"\0" * (padded - length)


def _apply_output(out_port: int | None) -> bytes:
    if out_port is None:
        return b""
    return _APPLY_OUTPUT.pack(OFPIT_APPLY_ACTIONS, 24, OFPAT_OUTPUT, 16, out_port, OFPCML_MAX)


def flow_add(
    xid: int,
    *,
    cookie: int,
    priority: int,
    match: MatchItems,
    out_port: int | None,
    table_id: int = 0,
) -> bytes:
    """OFPFC_ADD (replaces a flow with the same table, priority and match, keeping counters).

    `out_port=None` installs a drop flow (no instructions).
    """
    tail = encode_match(match) + _apply_output(out_port)
    fixed = _FLOW_MOD.pack(
        cookie, 0, table_id, OFPFC_ADD, 0, 0, priority, OFP_NO_BUFFER, OFPP_ANY, OFPG_ANY, 0
    )
    length = _HEADER.size + len(fixed) + len(tail)
    return _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, length, xid) + fixed + tail


def flow_delete_strict(
    xid: int,
    *,
    cookie: int,
    priority: int,
    match: MatchItems,
    table_id: int = 0,
) -> bytes:
    """OFPFC_DELETE_STRICT of exactly one flow, and only while it still carries `cookie`.

    The full cookie mask means a flow re-added meanwhile by a newer generation survives.
    """
    tail = encode_match(match)
    fixed = _FLOW_MOD.pack(
        cookie,
        0xFFFFFFFFFFFFFFFF,
        table_id,
        OFPFC_DELETE_STRICT,
        0,
        0,
        priority,
        OFP_NO_BUFFER,
        OFPP_ANY,
        OFPG_ANY,
        0,
    )
    length = _HEADER.size + len(fixed) + len(tail)
    return _HEADER.pack(OFP_VERSION, OFPT_FLOW_MOD, length, xid) + fixed + tail


def barrier_request(xid: int) -> bytes:
    """OFPT_BARRIER_REQUEST: the switch answers once every earlier message is processed."""
    return _HEADER.pack(OFP_VERSION, OFPT_BARRIER_REQUEST, _HEADER.size, xid)
