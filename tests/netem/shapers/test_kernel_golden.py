"""Our tc requests against an independent authority: the bytes iproute2's `tc` sends.

`tc` runs under strace in a throwaway network namespace (`unshare -n`); we read its netlink
request from strace's hex dump and compare it with what we encode for the same parameters.
The kernel may refuse the request (netem is missing here): the request is sent all the same.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess

import pytest
from pyroute2.netlink.rtnl import TC_H_ROOT

from netem.shapers import tc_requests as tcr

_HEX_LINE = re.compile(r"^ \| [0-9a-f]{5}  ([0-9a-f ]{49})")  # 16 bytes, 2 groups of 8


def _require_tools() -> None:
    for tool in ("tc", "strace", "unshare"):
        if shutil.which(tool) is None:
            pytest.skip(f"binary '{tool}' not found on PATH (needed to capture iproute2's bytes)")
    if os.geteuid() != 0:
        probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
        if probe.returncode != 0:
            pytest.skip("needs root or unprivileged user namespaces for `unshare -n`")


def tc_request_bytes(*tc_args: str) -> bytes:
    """The first netlink message `tc tc_args...` sends, captured by strace."""
    _require_tools()
    unshare = ["unshare", "-n"] if os.geteuid() == 0 else ["unshare", "-rn"]
    argv = [*unshare, "strace", "-qq", "-e", "trace=sendmsg", "-e", "write=all", "tc", *tc_args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    data = bytearray()
    for line in out.stderr.splitlines():
        m = _HEX_LINE.match(line)
        if m:
            data += bytes.fromhex(m.group(1))
        elif data:
            break
    if not data:
        pytest.fail(f"no netlink request captured from tc {' '.join(tc_args)}:\n{out.stderr}")
    length = struct.unpack_from("<I", data, 0)[0]
    return bytes(data[:length])


def attrs(data: bytes) -> dict[int, bytes]:
    out = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("<HH", data, offset)
        if length < 4:
            raise ValueError(f"malformed netlink attribute at offset {offset}: length {length}")
        out[kind & 0x3FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return out


def options(message: bytes) -> dict[int, bytes]:
    """Top-level TCA_* attributes after nlmsghdr (16 B) and tcmsg (20 B)."""
    return attrs(message[36:])


def test_netem_with_gilbert_elliott_is_byte_identical_to_iproute2():
    ref = tc_request_bytes("qdisc", "add", "dev", "lo", "root", "netem", "delay", "10ms", "2ms",
                           "loss", "gemodel", "1%", "10%", "70%", "0.1%", "limit", "500")
    params = tcr.NetemParams(
        delay_ticks=tcr.us_to_ticks(10_000),
        jitter_ticks=tcr.us_to_ticks(2_000),
        loss_u32=0,
        limit_packets=500,
        # tc's arguments are p, r, 1-h, 1-k; the kernel stores h and k1 = loss in good
        gemodel=(tcr.ratio_to_u32(0.01), tcr.ratio_to_u32(0.10), tcr.ratio_to_u32(0.30),
                 tcr.ratio_to_u32(0.001)),
    )
    ours = tcr.netem_qdisc(1, 0, TC_H_ROOT, params, create=True).encode()
    assert options(ours)[1] == options(ref)[1] == b"netem\x00"
    assert options(ours)[2] == options(ref)[2]  # TCA_OPTIONS, every byte


def test_netem_random_loss_is_byte_identical_to_iproute2():
    ref = tc_request_bytes("qdisc", "add", "dev", "lo", "root", "netem", "delay", "25ms",
                           "loss", "2.5%", "limit", "1000")
    params = tcr.NetemParams(tcr.us_to_ticks(25_000), 0, tcr.ratio_to_u32(0.025), 1000)
    ours = tcr.netem_qdisc(1, 0, TC_H_ROOT, params, create=True).encode()
    assert options(ours)[2] == options(ref)[2]


def test_tbf_parameters_match_iproute2():
    ref = tc_request_bytes("qdisc", "add", "dev", "lo", "root", "handle", "1:", "tbf", "rate",
                           "20mbit", "burst", "3028", "limit", "50")
    ours = tcr.tbf_qdisc(1, tcr.handle(1), rate_bytes_per_s=2_500_000, burst_bytes=3028,
                         limit=50, create=True).encode()
    ref_opts, our_opts = attrs(options(ref)[2]), attrs(options(ours)[2])
    # struct tc_tbf_qopt: rate (12 B), peakrate (12 B), limit, buffer, mtu
    for name, fmt, offset in (("linklayer", "<B", 1), ("rate", "<I", 8), ("peak", "<I", 20),
                              ("limit", "<I", 24), ("buffer", "<I", 28), ("mtu", "<I", 32)):
        assert struct.unpack_from(fmt, our_opts[1], offset) == struct.unpack_from(
            fmt, ref_opts[1], offset), name
    assert our_opts[6] == ref_opts[6]  # TCA_TBF_BURST
    assert 4 not in ref_opts and 4 not in our_opts  # no RATE64 below 2**32 B/s


def test_htb_class_parameters_match_iproute2():
    ref = tc_request_bytes("class", "add", "dev", "lo", "parent", "1:", "classid", "1:1", "htb",
                           "rate", "20mbit", "ceil", "20mbit", "burst", "3028", "cburst", "3028",
                           "quantum", "200000")
    ours = tcr.htb_class(1, tcr.handle(1, 1), tcr.handle(1), rate_bytes_per_s=2_500_000,
                         burst_bytes=3028, create=True).encode()
    assert struct.unpack_from("<II", ours, 24) == struct.unpack_from("<II", ref, 24)  # handles
    ref_parms, our_parms = attrs(options(ref)[2])[1], attrs(options(ours)[2])[1]
    # struct tc_htb_opt: rate (12 B), ceil (12 B), buffer, cbuffer, quantum, level, prio
    for name, fmt, offset in (("rate.linklayer", "<B", 1), ("rate", "<I", 8),
                              ("ceil.linklayer", "<B", 13), ("ceil", "<I", 20),
                              ("buffer", "<I", 24), ("cbuffer", "<I", 28), ("quantum", "<I", 32),
                              ("level", "<I", 36), ("prio", "<I", 40)):
        assert struct.unpack_from(fmt, our_parms, offset) == struct.unpack_from(
            fmt, ref_parms, offset), name
