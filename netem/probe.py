"""Capability probe: which qdiscs and link kinds this kernel really has.

Owns the probe and its per-process cache. It decides by doing, not by reading module lists
(kernels here are built without modules): in a throwaway network namespace it creates a veth
pair and tries to add each qdisc (then deletes it) and each link kind. The namespace is
removed in `finally`, also when a probe step fails.

    >>> caps = Capabilities.assume(qdiscs={"htb", "tbf", "pfifo"})
    >>> caps.has("netem"), caps.has("htb")
    (False, True)
"""

from __future__ import annotations

import errno
import functools
import os
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from netem.errors import NetemError, UnsupportedError
from netem.shapers import tc_requests as tcr
from netem.shapers.tc_session import TcSession, describe_error

QDISC_KINDS = ("htb", "tbf", "netem", "fq", "pfifo", "ingress", "clsact")
LINK_KINDS = ("ifb",)
# errno meaning "this kernel does not know that kind" (qdisc: ENOENT; link: EOPNOTSUPP)
_ABSENT_ERRNOS = {errno.ENOENT, errno.EOPNOTSUPP}


@dataclass(frozen=True)
class Capabilities:
    """What the kernel can do, as found by the probe (or assumed, for tests and the lab).

    qdiscs / link_kinds: kinds that were created successfully; missing: kind -> why not.
    """

    qdiscs: frozenset[str]
    link_kinds: frozenset[str] = frozenset()
    missing: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    kernel_release: str = ""
    probed: bool = True

    def has(self, kind: str) -> bool:
        """Whether a qdisc or link kind (e.g. 'netem', 'ifb') exists."""
        return kind in self.qdiscs or kind in self.link_kinds

    def reason(self, kind: str) -> str:
        """Why `kind` is missing, as the probe saw it ('' when present)."""
        if self.has(kind):
            return ""
        if kind in self.missing:
            return self.missing[kind]
        return "not probed" if not self.probed else "not among the probed kinds"

    @property
    def netem(self) -> bool:
        return self.has("netem")

    @classmethod
    def assume(
        cls,
        qdiscs: Iterable[str],
        link_kinds: Iterable[str] = (),
        kernel_release: str = "assumed",
    ) -> Capabilities:
        """Capabilities declared rather than probed (unit tests; a lab host known to have netem)."""
        qset = frozenset(qdiscs)
        lset = frozenset(link_kinds)
        missing = {k: "assumed absent" for k in (*QDISC_KINDS, *LINK_KINDS) if k not in qset | lset}
        return cls(qset, lset, MappingProxyType(missing), kernel_release, probed=False)

    def to_dict(self) -> dict[str, Any]:
        """For the run manifest."""
        return {
            "qdiscs": sorted(self.qdiscs),
            "link_kinds": sorted(self.link_kinds),
            "missing": dict(self.missing),
            "kernel_release": self.kernel_release,
            "probed": self.probed,
        }


def _qdisc_request(ifindex: int, kind: str) -> tcr.TcRequest:
    """The smallest valid 'add' of each kind, at the place it attaches."""
    root = tcr.handle(1)
    if kind == "htb":
        return tcr.htb_qdisc(ifindex, root, tcr.handle(1, 1))
    if kind == "tbf":
        return tcr.tbf_qdisc(
            ifindex, root, rate_bytes_per_s=125_000, burst_bytes=3028, limit=30_000, create=True
        )
    if kind == "netem":
        params = tcr.NetemParams(
            delay_ticks=tcr.us_to_ticks(1000), jitter_ticks=0, loss_u32=0, limit_packets=1000
        )
        return tcr.netem_qdisc(ifindex, root, tcr.TC_H_ROOT, params, create=True)
    if kind == "pfifo":
        return tcr.pfifo_qdisc(ifindex, root, tcr.TC_H_ROOT, limit_packets=100, create=True)
    if kind in ("ingress", "clsact"):
        return tcr.bare_qdisc(ifindex, kind, tcr.INGRESS_HANDLE, tcr.TC_H_INGRESS)
    return tcr.bare_qdisc(ifindex, kind, root, tcr.TC_H_ROOT)


def _probe_qdiscs(session: TcSession, ifindex: int) -> tuple[set[str], dict[str, str]]:
    present: set[str] = set()
    missing: dict[str, str] = {}
    for kind in QDISC_KINDS:
        add = _qdisc_request(ifindex, kind)
        [error] = session.send([add])
        if error is None:
            present.add(kind)
            [del_error] = session.send([tcr.delete_qdisc(ifindex, add.handle, add.parent)])
            if del_error is not None:
                raise NetemError(
                    f"capability probe: qdisc {kind} was created but deleting it failed: "
                    f"{describe_error(del_error)}"
                )
        elif error.code in _ABSENT_ERRNOS:
            missing[kind] = f"kernel refused qdisc kind {kind!r}: {describe_error(error)}"
        else:
            raise NetemError(
                f"capability probe: adding qdisc {kind} failed unexpectedly: "
                f"{describe_error(error)} (request: {add.describe()})"
            )
    return present, missing


def _probe_links(ipr: IPRoute, prefix: str) -> tuple[set[str], dict[str, str]]:
    present: set[str] = set()
    missing: dict[str, str] = {}
    for kind in LINK_KINDS:
        ifname = f"{prefix}{kind}"[:15]
        try:
            ipr.link("add", ifname=ifname, kind=kind)
        except NetlinkError as exc:
            if exc.code not in _ABSENT_ERRNOS:
                raise NetemError(
                    f"capability probe: creating a {kind} link failed unexpectedly: "
                    f"{describe_error(exc)}"
                ) from exc
            missing[kind] = f"kernel refused link kind {kind!r}: {describe_error(exc)}"
            continue
        present.add(kind)
        ipr.link("del", ifname=ifname)
    return present, missing


def probe_uncached() -> Capabilities:
    """Run the probe now (needs root). Prefer `probe_capabilities()`, which caches."""
    if os.geteuid() != 0:
        raise UnsupportedError(
            f"the capability probe needs root (euid is {os.geteuid()}): it creates a network "
            "namespace, a veth pair and qdiscs"
        )
    tag = uuid.uuid4().hex[:6]
    ns_name = f"netem-probe-{os.getpid()}-{tag}"
    netns.create(ns_name)
    try:
        ipr = IPRoute(netns=ns_name, flags=0, groups=0)
        session = TcSession(ipr, ns_name)
        try:
            ipr.link("add", ifname=f"np{tag}a", kind="veth", peer={"ifname": f"np{tag}b"})
            ifindex = session.ifindex(f"np{tag}a")
            qdiscs, missing = _probe_qdiscs(session, ifindex)
            links, missing_links = _probe_links(ipr, f"np{tag}")
        finally:
            session.close()
    finally:
        netns.remove(ns_name)
    return Capabilities(
        qdiscs=frozenset(qdiscs),
        link_kinds=frozenset(links),
        missing=MappingProxyType({**missing, **missing_links}),
        kernel_release=os.uname().release,
    )


@functools.cache
def probe_capabilities() -> Capabilities:
    """This kernel's capabilities, probed once per process (`probe_capabilities.cache_clear()`
    forgets them). Raises UnsupportedError when not root."""
    return probe_uncached()
