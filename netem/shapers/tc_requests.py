"""Netlink tc requests as plain data: what the kernel shaper sends, testable without root.

Owns the translation from kernel-level parameters (bytes per second, psched ticks, u32 ratios)
to tc requests (qdisc/class, handle, parent, TCA_OPTIONS attributes) and their pyroute2 netlink
messages. It does not decide what to send (that is `netem.shapers.kernel`) and never touches a
socket. Units follow the kernel's uapi headers (include/uapi/linux/pkt_sched.h):

- rates in the tc_ratespec are bytes per second (u32; TCA_*_RATE64 carries larger ones);
- times in tc structs are psched ticks of 64 ns (PSCHED_SHIFT = 6, /proc/net/psched);
- probabilities are u32 fractions of 2**32 - 1, rounded like iproute2 (half away from zero).

We build our own pyroute2 message classes instead of `IPRoute.tc()` keyword plug-ins because
those compute a 256-entry rate table in Python on every call (~1 ms) that kernels with a
linklayer-aware ratespec ignore, and because they cannot encode netem's Gilbert-Elliott model
or tbf's 64-bit rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pyroute2.netlink import (
    NLA_F_NESTED,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    nla,
    nlmsg,
)
from pyroute2.netlink.rtnl import (
    RTM_DELQDISC,
    RTM_DELTCLASS,
    RTM_NEWQDISC,
    RTM_NEWTCLASS,
    TC_H_ROOT,
)

from netem.errors import LinkStateError

TC_H_INGRESS = 0xFFFFFFF1  # also TC_H_CLSACT
INGRESS_HANDLE = 0xFFFF0000
NSEC_PER_TICK = 64  # PSCHED_TICKS2NS(1)
TICKS_PER_US = 1000 / NSEC_PER_TICK
U32_MAX = 2**32 - 1
LINKLAYER_ETHERNET = 1  # TC_LINKLAYER_ETHERNET: the kernel ignores rate tables when set
HTB_MAX_QUANTUM_BYTES = 200_000  # above this the kernel warns "quantum of class is big"
HTB_MIN_QUANTUM_BYTES = 1_514
NETEM_LOSS_GE = 2  # nested attribute of TCA_NETEM_LOSS: Gilbert-Elliott (p, r, h, k1)

Op = Literal["add", "change", "delete"]
Obj = Literal["qdisc", "class"]


def handle(major: int, minor: int = 0) -> int:
    """tc handle major:minor (hex in tc's notation) as the 32-bit integer netlink carries."""
    return (major << 16) | minor


def format_handle(value: int) -> str:
    """'1:1' for 0x10001, 'root' for TC_H_ROOT, like `tc` prints."""
    if value == TC_H_ROOT:
        return "root"
    if value == TC_H_INGRESS:
        return "ingress"
    return f"{value >> 16:x}:{value & 0xFFFF:x}"


def us_to_ticks(duration_us: float) -> int:
    """Microseconds to psched ticks, truncated like iproute2 (whole µs first, then ticks)."""
    ticks = int(int(duration_us) * TICKS_PER_US)
    if not 0 <= ticks <= U32_MAX:
        raise LinkStateError(
            f"duration {duration_us} us is {ticks} psched ticks, expected 0..{U32_MAX}"
        )
    return ticks


def xmit_ticks(size_bytes: int, rate_bytes_per_s: int) -> int:
    """Time to send `size_bytes` at `rate_bytes_per_s`, in ticks (iproute2's tc_calc_xmittime)."""
    return us_to_ticks(1_000_000 * size_bytes / rate_bytes_per_s)


def ratio_to_u32(ratio: float) -> int:
    """A probability in [0, 1] as the kernel's u32 fraction, rounded half away from zero."""
    if not 0.0 <= ratio <= 1.0:
        raise LinkStateError(f"probability {ratio}, expected a ratio in [0, 1]")
    return int(math.floor(ratio * U32_MAX + 0.5))


def ratespec(rate_bytes_per_s: int) -> dict[str, int]:
    """Fields of a tc_ratespec for `rate_bytes_per_s` (saturated at u32; see RATE64)."""
    return {
        "cell_log": 0,
        "linklayer": LINKLAYER_ETHERNET,
        "overhead": 0,
        "cell_align": 0,
        "mpu": 0,
        "rate": min(rate_bytes_per_s, U32_MAX),
    }


def _prefixed(prefix: str, spec: Mapping[str, int]) -> dict[str, int]:
    return {f"{prefix}_{k}": v for k, v in spec.items()}


# -- pyroute2 message classes -------------------------------------------------------------

_RATESPEC_FIELDS = (
    ("cell_log", "B"),
    ("linklayer", "B"),
    ("overhead", "H"),
    ("cell_align", "h"),
    ("mpu", "H"),
    ("rate", "I"),
)


def _ratespec_fields(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}_{name}", fmt) for name, fmt in _RATESPEC_FIELDS)


class HtbOptions(nla):
    """TCA_OPTIONS of htb (qdisc: TCA_HTB_INIT; class: TCA_HTB_PARMS, no rate tables)."""

    nla_map = (
        ("TCA_HTB_UNSPEC", "none"),
        ("TCA_HTB_PARMS", "htb_parms"),
        ("TCA_HTB_INIT", "htb_glob"),
        ("TCA_HTB_CTAB", "hex"),
        ("TCA_HTB_RTAB", "hex"),
        ("TCA_HTB_DIRECT_QLEN", "uint32"),
        ("TCA_HTB_RATE64", "uint64"),
        ("TCA_HTB_CEIL64", "uint64"),
    )

    class htb_glob(nla):
        fields = (
            ("version", "I"),
            ("rate2quantum", "I"),
            ("defcls", "I"),
            ("debug", "I"),
            ("direct_pkts", "I"),
        )

    class htb_parms(nla):
        fields = (
            *_ratespec_fields("rate"),
            *_ratespec_fields("ceil"),
            ("buffer", "I"),
            ("cbuffer", "I"),
            ("quantum", "I"),
            ("level", "I"),
            ("prio", "I"),
        )


class TbfOptions(nla):
    """TCA_OPTIONS of tbf, with the 64-bit rate and byte burst pyroute2's plug-in lacks."""

    nla_map = (
        ("TCA_TBF_UNSPEC", "none"),
        ("TCA_TBF_PARMS", "tbf_parms"),
        ("TCA_TBF_RTAB", "hex"),
        ("TCA_TBF_PTAB", "hex"),
        ("TCA_TBF_RATE64", "uint64"),
        ("TCA_TBF_PRATE64", "uint64"),
        ("TCA_TBF_BURST", "uint32"),
        ("TCA_TBF_PBURST", "uint32"),
    )

    class tbf_parms(nla):
        fields = (
            *_ratespec_fields("rate"),
            *_ratespec_fields("peak"),
            ("limit", "I"),
            ("buffer", "I"),
            ("mtu", "I"),
        )


class NetemOptions(nla):
    """TCA_OPTIONS of netem: struct tc_netem_qopt, then attributes (Gilbert-Elliott loss)."""

    nla_map = (
        ("TCA_NETEM_UNSPEC", "none"),
        ("TCA_NETEM_CORR", "hex"),
        ("TCA_NETEM_DELAY_DIST", "hex"),
        ("TCA_NETEM_REORDER", "hex"),
        ("TCA_NETEM_CORRUPT", "hex"),
        ("TCA_NETEM_LOSS", "netem_loss", NLA_F_NESTED),
    )
    fields = (
        ("delay", "I"),
        ("limit", "I"),
        ("loss", "I"),
        ("gap", "I"),
        ("duplicate", "I"),
        ("jitter", "I"),
    )

    class netem_loss(nla):
        nla_map = (
            ("NETEM_LOSS_UNSPEC", "none"),
            ("NETEM_LOSS_GI", "hex"),
            ("NETEM_LOSS_GE", "gemodel"),
        )

        class gemodel(nla):
            fields = (("p", "I"), ("r", "I"), ("h", "I"), ("k1", "I"))


class FifoOptions(nla):
    """TCA_OPTIONS of pfifo/bfifo: struct tc_fifo_qopt."""

    fields = (("limit", "I"),)


class NoOptions(nla):
    """Qdiscs created without options (fq, ingress, clsact)."""


OPTION_CLASSES: dict[str, type[nla]] = {
    "htb": HtbOptions,
    "tbf": TbfOptions,
    "netem": NetemOptions,
    "pfifo": FifoOptions,
    "bfifo": FifoOptions,
}


class TcMessage(nlmsg):
    """struct tcmsg with TCA_KIND and TCA_OPTIONS typed by kind (our option classes)."""

    prefix = "TCA_"
    fields = (
        ("family", "B"),
        ("pad1", "B"),
        ("pad2", "H"),
        ("index", "i"),
        ("handle", "I"),
        ("parent", "I"),
        ("info", "I"),
    )
    nla_map = (
        ("TCA_UNSPEC", "none"),
        ("TCA_KIND", "asciiz"),
        ("TCA_OPTIONS", "get_options"),
    )

    @staticmethod
    def get_options(self: TcMessage, *argv: Any, **kwarg: Any) -> type[nla]:
        return OPTION_CLASSES.get(self.get_attr("TCA_KIND"), NoOptions)


# -- requests -----------------------------------------------------------------------------

_MSG_TYPES = {
    ("add", "qdisc"): RTM_NEWQDISC,
    ("change", "qdisc"): RTM_NEWQDISC,
    ("delete", "qdisc"): RTM_DELQDISC,
    ("add", "class"): RTM_NEWTCLASS,
    ("change", "class"): RTM_NEWTCLASS,
    ("delete", "class"): RTM_DELTCLASS,
}
_FLAGS = {
    # add: fail if it exists (never silently take over someone else's qdisc)
    "add": NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
    # change: modify in place, fail if it does not exist (tc's `change`)
    "change": NLM_F_REQUEST | NLM_F_ACK | NLM_F_REPLACE,
    "delete": NLM_F_REQUEST | NLM_F_ACK,
}


@dataclass(frozen=True, slots=True)
class TcRequest:
    """One tc netlink request as data: operation, object, where, and TCA_OPTIONS attributes.

    `options` is a tuple of (attribute name, value) pairs in kernel units, e.g.
    (("TCA_HTB_PARMS", {"rate_rate": 2_500_000, ...}),); struct-only options (netem, pfifo)
    put their struct fields in a ("fields", {...}) pair.
    """

    op: Op
    obj: Obj
    ifindex: int
    handle: int
    parent: int
    kind: str | None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def msg_type(self) -> int:
        return _MSG_TYPES[(self.op, self.obj)]

    @property
    def flags(self) -> int:
        return _FLAGS[self.op]

    def option(self, name: str) -> Any:
        """The value of one TCA_OPTIONS attribute (KeyError naming it when absent)."""
        for key, value in self.options:
            if key == name:
                return value
        raise KeyError(f"{self.describe()} has no option {name}")

    def describe(self) -> str:
        """Human form for errors, e.g. 'change class htb 1:1 (parent 1:0) on ifindex 7'."""
        return (
            f"{self.op} {self.obj} {self.kind or ''} {format_handle(self.handle)} "
            f"(parent {format_handle(self.parent)}) on ifindex {self.ifindex}"
        ).replace("  ", " ")

    def to_message(self) -> TcMessage:
        """The pyroute2 message (header type and flags set; the socket fills seq and pid)."""
        msg = TcMessage()
        msg["family"] = 0
        msg["index"] = self.ifindex
        msg["handle"] = self.handle
        msg["parent"] = self.parent
        msg["header"]["type"] = self.msg_type
        msg["header"]["flags"] = self.flags
        attrs: list[list[Any]] = []
        if self.kind is not None:
            attrs.append(["TCA_KIND", self.kind])
        if self.options:
            opts: dict[str, Any] = {"attrs": []}
            for key, value in self.options:
                if key == "fields":
                    opts.update(value)
                else:
                    opts["attrs"].append([key, value])
            attrs.append(["TCA_OPTIONS", opts])
        elif self.kind is not None and self.op != "delete" and self.kind in OPTION_CLASSES:
            raise LinkStateError(f"{self.describe()}: kind {self.kind} needs options")
        msg["attrs"] = attrs
        return msg

    def encode(self, seq: int = 0, pid: int = 0) -> bytes:
        """The netlink bytes of this request (for tests and golden comparisons)."""
        msg = self.to_message()
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = pid
        msg.encode()
        return bytes(msg.data)


def _op(create: bool) -> Op:
    return "add" if create else "change"


def htb_qdisc(ifindex: int, qdisc_handle: int, default_classid: int) -> TcRequest:
    """Create the htb root qdisc whose unclassified traffic goes to `default_classid`."""
    glob = {
        "version": 3,
        "rate2quantum": 10,
        "defcls": default_classid & 0xFFFF,
        "debug": 0,
        "direct_pkts": 0,
    }
    return TcRequest(
        "add", "qdisc", ifindex, qdisc_handle, TC_H_ROOT, "htb", (("TCA_HTB_INIT", glob),)
    )


def htb_class(
    ifindex: int,
    classid: int,
    parent: int,
    *,
    rate_bytes_per_s: int,
    burst_bytes: int,
    create: bool,
) -> TcRequest:
    """Add or change the htb class that carries the link: rate = ceil, burst = cburst."""
    if rate_bytes_per_s < 1:
        raise LinkStateError(f"htb class rate {rate_bytes_per_s} B/s, expected >= 1")
    buffer_ticks = xmit_ticks(burst_bytes, rate_bytes_per_s)
    quantum = max(HTB_MIN_QUANTUM_BYTES, min(rate_bytes_per_s // 10, HTB_MAX_QUANTUM_BYTES))
    parms = {
        **_prefixed("rate", ratespec(rate_bytes_per_s)),
        **_prefixed("ceil", ratespec(rate_bytes_per_s)),
        "buffer": buffer_ticks,
        "cbuffer": buffer_ticks,
        "quantum": quantum,
        "level": 0,
        "prio": 0,
    }
    options: list[tuple[str, Any]] = [("TCA_HTB_PARMS", parms)]
    if rate_bytes_per_s > U32_MAX:
        options += [("TCA_HTB_RATE64", rate_bytes_per_s), ("TCA_HTB_CEIL64", rate_bytes_per_s)]
    return TcRequest(_op(create), "class", ifindex, classid, parent, "htb", tuple(options))


def tbf_qdisc(
    ifindex: int,
    qdisc_handle: int,
    *,
    rate_bytes_per_s: int,
    burst_bytes: int,
    limit: int,
    create: bool,
) -> TcRequest:
    """Add or change a root tbf.

    `limit` is handed by the kernel to tbf's fifo child (fifo_set_limit): bytes for the default
    bfifo, packets when the child is a pfifo we grafted; netem children ignore it.
    """
    if rate_bytes_per_s < 1:
        raise LinkStateError(f"tbf rate {rate_bytes_per_s} B/s, expected >= 1")
    parms = {
        **_prefixed("rate", ratespec(rate_bytes_per_s)),
        **_prefixed("peak", {**ratespec(0), "linklayer": 0}),
        "limit": limit,
        "buffer": xmit_ticks(burst_bytes, rate_bytes_per_s),
        "mtu": 0,
    }
    options: list[tuple[str, Any]] = [("TCA_TBF_PARMS", parms)]
    if rate_bytes_per_s > U32_MAX:
        options.append(("TCA_TBF_RATE64", rate_bytes_per_s))
    options.append(("TCA_TBF_BURST", burst_bytes))
    return TcRequest(_op(create), "qdisc", ifindex, qdisc_handle, TC_H_ROOT, "tbf", tuple(options))


@dataclass(frozen=True, slots=True)
class NetemParams:
    """netem's parameters in kernel units (ticks, u32 fractions, packets)."""

    delay_ticks: int
    jitter_ticks: int
    loss_u32: int
    limit_packets: int
    gemodel: tuple[int, int, int, int] | None = None  # (p, r, h, k1) as u32 fractions


def netem_qdisc(
    ifindex: int, qdisc_handle: int, parent: int, params: NetemParams, *, create: bool
) -> TcRequest:
    """Add or change a netem qdisc. netem's change replaces every parameter, so all are sent;
    without a Gilbert-Elliott attribute the kernel falls back to random loss."""
    qopt = {
        "delay": params.delay_ticks,
        "limit": params.limit_packets,
        "loss": params.loss_u32,
        "gap": 0,
        "duplicate": 0,
        "jitter": params.jitter_ticks,
    }
    options: list[tuple[str, Any]] = [("fields", qopt)]
    if params.gemodel is not None:
        p, r, h, k1 = params.gemodel
        loss = {"attrs": [["NETEM_LOSS_GE", {"p": p, "r": r, "h": h, "k1": k1}]]}
        options.append(("TCA_NETEM_LOSS", loss))
    return TcRequest(_op(create), "qdisc", ifindex, qdisc_handle, parent, "netem", tuple(options))


def pfifo_qdisc(
    ifindex: int, qdisc_handle: int, parent: int, *, limit_packets: int, create: bool
) -> TcRequest:
    """Add or change a pfifo (limit 0 drops every packet: how a rate-0 link is emulated)."""
    options = (("fields", {"limit": limit_packets}),)
    return TcRequest(_op(create), "qdisc", ifindex, qdisc_handle, parent, "pfifo", options)


def bare_qdisc(ifindex: int, kind: str, qdisc_handle: int, parent: int) -> TcRequest:
    """Add a qdisc with no options (fq, ingress, clsact): used by the capability probe."""
    return TcRequest("add", "qdisc", ifindex, qdisc_handle, parent, kind)


def delete_qdisc(ifindex: int, qdisc_handle: int, parent: int = TC_H_ROOT) -> TcRequest:
    """Delete a qdisc (and everything below it)."""
    return TcRequest("delete", "qdisc", ifindex, qdisc_handle, parent, None)
