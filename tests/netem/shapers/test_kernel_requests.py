"""tc request construction (no root): kernel units, netem parameters, and the encoded bytes
read back by an independent decoder (pyroute2's stock tcmsg) and by hand from the uapi layout."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from pyroute2.netlink.rtnl import RTM_NEWQDISC, RTM_NEWTCLASS, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import tcmsg

from netem.errors import LinkStateError
from netem.linkstate import GilbertElliott, LinkState
from netem.shapers import tc_requests as tcr
from netem.shapers.kernel import (
    MIN_BURST_BYTES,
    PARKED_RATE_BYTES_PER_S,
    RateParams,
    make_rate_qdisc,
    netem_params,
    rate_params,
)

U32 = 2**32 - 1


def test_ticks_match_proc_net_psched():
    """Our tick constant is what this kernel reports (t2us / us2t in /proc/net/psched)."""
    path = Path("/proc/net/psched")
    if not path.exists():
        pytest.skip("/proc/net/psched not present (not Linux?)")
    t2us, us2t, _, _ = (int(x, 16) for x in path.read_text().split())
    assert tcr.TICKS_PER_US == t2us / us2t == 15.625


def test_unit_conversions_by_hand():
    assert tcr.us_to_ticks(10_000) == 156_250  # 10 ms of 64 ns ticks
    assert tcr.xmit_ticks(3028, 2_500_000) == 1211 * 15.625 // 1  # tc truncates µs first
    assert tcr.ratio_to_u32(0.01) == 42_949_673  # round(0.01 * (2**32 - 1))
    assert tcr.ratio_to_u32(0.3) == 1_288_490_189  # .5 rounds away from zero, like iproute2
    assert tcr.ratio_to_u32(1.0) == U32
    with pytest.raises(LinkStateError, match="expected a ratio"):
        tcr.ratio_to_u32(1.5)
    with pytest.raises(LinkStateError, match="psched ticks"):
        tcr.us_to_ticks(300 * 1_000_000)  # 300 s does not fit a u32 of ticks
    assert tcr.format_handle(tcr.handle(1, 1)) == "1:1" and tcr.format_handle(TC_H_ROOT) == "root"


def test_htb_class_request():
    req = tcr.htb_class(7, tcr.handle(1, 1), tcr.handle(1), rate_bytes_per_s=2_500_000,
                        burst_bytes=3028, create=False)
    assert (req.op, req.obj, req.kind, req.msg_type) == ("change", "class", "htb", RTM_NEWTCLASS)
    parms = req.option("TCA_HTB_PARMS")
    assert parms["rate_rate"] == parms["ceil_rate"] == 2_500_000
    assert parms["rate_linklayer"] == parms["ceil_linklayer"] == tcr.LINKLAYER_ETHERNET
    assert parms["buffer"] == parms["cbuffer"] == int(1211 * 15.625)
    assert parms["quantum"] == tcr.HTB_MAX_QUANTUM_BYTES
    assert [k for k, _ in req.options] == ["TCA_HTB_PARMS"]  # no rate tables, no RATE64


def test_htb_class_above_u32_bytes_per_second_uses_rate64():
    rate = 40_000_000_000 // 8  # 40 Gbit/s = 5e9 B/s > 2**32 - 1
    req = tcr.htb_class(1, 0x10001, 0x10000, rate_bytes_per_s=rate, burst_bytes=5_000_000,
                        create=True)
    assert req.option("TCA_HTB_PARMS")["rate_rate"] == U32
    assert req.option("TCA_HTB_RATE64") == rate and req.option("TCA_HTB_CEIL64") == rate


def test_tbf_request_carries_burst_and_limit():
    req = tcr.tbf_qdisc(3, tcr.handle(1), rate_bytes_per_s=625_000, burst_bytes=3028, limit=50,
                        create=True)
    assert (req.op, req.parent, req.msg_type) == ("add", TC_H_ROOT, RTM_NEWQDISC)
    parms = req.option("TCA_TBF_PARMS")
    assert parms["rate_rate"] == 625_000 and parms["limit"] == 50
    assert parms["buffer"] == int(4844 * 15.625)  # 3028 B at 625 kB/s = 4844.8 µs
    assert req.option("TCA_TBF_BURST") == 3028


def test_rate_params_burst_and_parking():
    assert rate_params(LinkState(20_000_000), burst_us=1000) == RateParams(2_500_000, 3028)
    assert rate_params(LinkState(10**9), burst_us=1000) == RateParams(125_000_000, 125_000)
    parked = rate_params(LinkState(0), burst_us=1000)
    assert parked.rate_bytes_per_s == PARKED_RATE_BYTES_PER_S
    assert parked.burst_bytes == MIN_BURST_BYTES


def test_netem_params_delay_jitter_loss():
    p = netem_params(LinkState(10_000_000, delay_us=20_000, jitter_us=1_000, loss_ratio=0.01,
                               queue_limit_packets=300))
    assert p.delay_ticks == 20_000 * 15.625
    # uniform in ±a has standard deviation a/sqrt(3): a = 1000 µs * sqrt(3) = 1732 µs
    assert p.jitter_ticks == int(1732 * 15.625)
    assert p.loss_u32 == 42_949_673 and p.limit_packets == 300 and p.gemodel is None


def test_netem_params_gilbert_elliott_folds_random_loss():
    ge = GilbertElliott(p_enter_bad=0.01, p_exit_bad=0.1, loss_in_bad=0.7, loss_in_good=0.001)
    p = netem_params(LinkState(10_000_000, loss_ratio=0.1, burst_loss=ge))
    loss_bad = 1 - (1 - 0.7) * 0.9
    loss_good = 1 - (1 - 0.001) * 0.9
    assert p.loss_u32 == 0  # the kernel ignores random loss once a loss model is set
    assert p.gemodel == (
        tcr.ratio_to_u32(0.01),
        tcr.ratio_to_u32(0.1),
        tcr.ratio_to_u32(1 - loss_bad),  # kernel h: probability of delivering in bad
        tcr.ratio_to_u32(loss_good),  # kernel k1: loss in good
    )
    # the kernel's stationary loss equals the model's mean with random loss on top
    pi_bad = 0.01 / (0.01 + 0.1)
    kernel_mean = pi_bad * loss_bad + (1 - pi_bad) * loss_good
    assert math.isclose(kernel_mean, 1 - (1 - ge.mean_loss_ratio) * 0.9, rel_tol=1e-12)


def test_netem_params_for_a_down_link_drop_everything():
    p = netem_params(LinkState(0, delay_us=5_000, queue_limit_packets=64))
    assert p.loss_u32 == U32 and p.gemodel is None and p.limit_packets == 64


def test_registry_lists_names_on_unknown():
    from netem.errors import UnsupportedError

    assert make_rate_qdisc("tbf").name == "tbf"
    with pytest.raises(UnsupportedError, match=r"unknown rate qdisc 'hbt'; choose: htb, tbf"):
        make_rate_qdisc("hbt")


def _decode(data: bytes) -> tcmsg:
    msg = tcmsg(data)
    msg.decode()
    return msg


def test_encoded_netem_decodes_with_stock_pyroute2():
    params = tcr.NetemParams(delay_ticks=156_250, jitter_ticks=31_250, loss_u32=42_949_673,
                             limit_packets=500)
    data = tcr.netem_qdisc(9, 0x100000, 0x10001, params, create=False).encode(seq=5)
    msg = _decode(data)
    assert (msg["index"], msg["handle"], msg["parent"]) == (9, 0x100000, 0x10001)
    assert msg["header"]["sequence_number"] == 5
    assert msg.get_attr("TCA_KIND") == "netem"
    opts = msg.get_attr("TCA_OPTIONS")
    assert (opts["delay"], opts["jitter"], opts["loss"], opts["limit"]) == (
        156_250, 31_250, 42_949_673, 500)


def test_encoded_htb_class_by_hand_from_uapi_layout():
    data = tcr.htb_class(4, 0x10001, 0x10000, rate_bytes_per_s=2_500_000, burst_bytes=3028,
                         create=True).encode()
    length, msg_type, flags = struct.unpack_from("<IHH", data, 0)
    assert length == len(data) and msg_type == RTM_NEWTCLASS
    index, handle, parent = struct.unpack_from("<iII", data, 16 + 4)
    assert (index, handle, parent) == (4, 0x10001, 0x10000)
    attrs = dict(_attrs(data[36:]))
    assert attrs[1] == b"htb\x00"
    inner = dict(_attrs(attrs[2]))
    # struct tc_htb_opt: two tc_ratespec (12 B) then buffer, cbuffer, quantum, level, prio
    parms = inner[1]
    cell_log, linklayer, _, _, _, rate = struct.unpack_from("<BBHhHI", parms, 0)
    ceil = struct.unpack_from("<I", parms, 20)[0]
    buffer, cbuffer, quantum = struct.unpack_from("<III", parms, 24)
    assert (linklayer, rate, ceil) == (1, 2_500_000, 2_500_000)
    assert buffer == cbuffer == 18_921 and quantum == 200_000
    assert set(inner) == {1}  # TCA_HTB_PARMS only


def _attrs(data: bytes):
    """Netlink attributes (type without flags, payload) of a buffer."""
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("<HH", data, offset)
        if length < 4:
            raise ValueError(f"malformed netlink attribute at offset {offset}: length {length}")
        yield kind & 0x3FFF, data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
