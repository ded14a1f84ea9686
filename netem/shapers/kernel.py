"""The kernel shaper: link directions shaped by tc qdiscs on an interface's egress, via netlink.

Owns, per direction, one qdisc tree it creates on one interface and removes in close():

    root 1:  htb (default class 1:1)  ──  class 1:1 (rate = ceil)  ──  10: child
    root 1:  tbf                      ──────────────────────────────  10: child

The rate qdisc is chosen by name from RATE_QDISCS ('htb', 'tbf'). The child is netem (delay,
jitter, loss, Gilbert-Elliott burst loss, queue limit) on kernels that have it, else a pfifo
(queue limit only): a state that needs delay, jitter or loss is then refused with
UnsupportedError. Changes are made in place (netlink 'change', never delete and re-create),
only on the qdiscs whose parameters changed, and all directions of one namespace go out in one
netlink batch. A rate of 0 (link down) keeps a minimal rate and makes the child drop every
packet (pfifo limit 0, or netem loss 100 %).

It does not decide when to change (that is netem.player) nor what (traces, the timeline).
"""

from __future__ import annotations

import errno
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pyroute2.netlink.exceptions import NetlinkError

from netem.errors import LinkStateError, NetemError, UnsupportedError
from netem.linkstate import LinkState
from netem.shapers import tc_requests as tcr
from netem.shapers.base import Shaper
from netem.shapers.tc_session import (
    IPRouteFactory,
    TcSession,
    default_ipr_factory,
    describe_error,
)

if TYPE_CHECKING:  # netem.probe imports this package; only the type is needed here
    from netem.probe import Capabilities

ROOT_HANDLE = tcr.handle(1)
CLASS_ID = tcr.handle(1, 1)
CHILD_HANDLE = tcr.handle(0x10)
MIN_RATE_BPS = 1_000  # below this the burst time overflows a u32 of psched ticks
PARKED_RATE_BYTES_PER_S = 1_000  # what the rate qdisc keeps while the link is down (rate 0)
MIN_BURST_BYTES = 2 * 1514  # two full Ethernet frames: tbf drops frames larger than its burst
NETEM_FIELDS = ("delay_us", "jitter_us", "loss_ratio", "burst_loss")


@dataclass(frozen=True, slots=True)
class RateParams:
    rate_bytes_per_s: int
    burst_bytes: int


@dataclass(frozen=True, slots=True)
class PfifoParams:
    limit_packets: int


ChildParams = tcr.NetemParams | PfifoParams


class RateQdisc(Protocol):
    """How one rate qdisc is created and changed (an entry of RATE_QDISCS)."""

    name: str
    child_parent: int

    def create(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]: ...

    def change(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]: ...


class HtbRate:
    """htb root + one class; the class is what changes."""

    name = "htb"
    child_parent = CLASS_ID

    def create(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]:
        return [
            tcr.htb_qdisc(ifindex, ROOT_HANDLE, CLASS_ID),
            self._class(ifindex, rate, create=True),
        ]

    def change(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]:
        return [self._class(ifindex, rate, create=False)]

    @staticmethod
    def _class(ifindex: int, rate: RateParams, *, create: bool) -> tcr.TcRequest:
        return tcr.htb_class(
            ifindex,
            CLASS_ID,
            ROOT_HANDLE,
            rate_bytes_per_s=rate.rate_bytes_per_s,
            burst_bytes=rate.burst_bytes,
            create=create,
        )


class TbfRate:
    """A root tbf; its `limit` is passed by the kernel to a pfifo child, so it is kept equal."""

    name = "tbf"
    child_parent = tcr.handle(1, 1)

    def create(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]:
        return [self._qdisc(ifindex, rate, child_limit, create=True)]

    def change(self, ifindex: int, rate: RateParams, child_limit: int) -> list[tcr.TcRequest]:
        return [self._qdisc(ifindex, rate, child_limit, create=False)]

    @staticmethod
    def _qdisc(ifindex: int, rate: RateParams, child_limit: int, *, create: bool) -> tcr.TcRequest:
        return tcr.tbf_qdisc(
            ifindex,
            ROOT_HANDLE,
            rate_bytes_per_s=rate.rate_bytes_per_s,
            burst_bytes=rate.burst_bytes,
            limit=child_limit,
            create=create,
        )


RATE_QDISCS: dict[str, type[RateQdisc]] = {"htb": HtbRate, "tbf": TbfRate}


def make_rate_qdisc(name: str) -> RateQdisc:
    """The rate qdisc registered under `name`; the error lists the valid names."""
    try:
        return RATE_QDISCS[name]()
    except KeyError:
        raise UnsupportedError(
            f"unknown rate qdisc {name!r}; choose: {', '.join(sorted(RATE_QDISCS))}"
        ) from None


def rate_params(state: LinkState, burst_us: int) -> RateParams:
    """Kernel rate and burst for a state: burst is `burst_us` worth of bytes, at least two
    frames. A down link (rate 0) keeps PARKED_RATE (the child drops everything)."""
    if state.rate_bps == 0:
        rate_bytes_per_s = PARKED_RATE_BYTES_PER_S
    else:
        rate_bytes_per_s = state.rate_bps // 8
    burst_bytes = max(MIN_BURST_BYTES, rate_bytes_per_s * burst_us // 1_000_000)
    return RateParams(rate_bytes_per_s, burst_bytes)


def netem_params(state: LinkState) -> tcr.NetemParams:
    """netem's parameters for a state.

    Jitter: without a distribution table netem draws delay uniformly in delay ± jitter, whose
    standard deviation is jitter/sqrt(3); LinkState.jitter_us is a standard deviation, so the
    bound sent is jitter_us * sqrt(3). Loss: netem applies either random loss or the
    Gilbert-Elliott model, so independent loss_ratio is folded into the per-state loss
    probabilities (1 - (1 - l_state)(1 - loss_ratio)). Gilbert-Elliott as the kernel stores
    it: p = good->bad, r = bad->good, h = 1 - loss in bad, k1 = loss in good.
    """
    limit = state.queue_limit_packets
    if state.rate_bps == 0:
        return tcr.NetemParams(0, 0, tcr.U32_MAX, limit)
    delay = tcr.us_to_ticks(state.delay_us)
    jitter = tcr.us_to_ticks(round(state.jitter_us * math.sqrt(3)))
    ge = state.burst_loss
    if ge is None:
        return tcr.NetemParams(delay, jitter, tcr.ratio_to_u32(state.loss_ratio), limit)
    keep = 1.0 - state.loss_ratio
    loss_bad = 1.0 - (1.0 - ge.loss_in_bad) * keep
    loss_good = 1.0 - (1.0 - ge.loss_in_good) * keep
    model = (
        tcr.ratio_to_u32(ge.p_enter_bad),
        tcr.ratio_to_u32(ge.p_exit_bad),
        tcr.ratio_to_u32(1.0 - loss_bad),
        tcr.ratio_to_u32(loss_good),
    )
    return tcr.NetemParams(delay, jitter, 0, limit, model)


def needs_netem(state: LinkState) -> dict[str, object]:
    """The fields of `state` that only netem can emulate, with their values. A down state
    (rate 0) needs none: the child's zero-length queue drops every frame."""
    out: dict[str, object] = {}
    if state.rate_bps == 0:
        return out
    if state.delay_us:
        out["delay_us"] = state.delay_us
    if state.jitter_us:
        out["jitter_us"] = state.jitter_us
    if state.loss_ratio:
        out["loss_ratio"] = state.loss_ratio
    if state.burst_loss is not None:
        out["burst_loss"] = state.burst_loss
    return out


@dataclass(frozen=True, slots=True)
class Attachment:
    """Where a direction lives in the kernel (for diagnostics and tests)."""

    key: str
    ifname: str
    netns: str | None
    ifindex: int
    root_handle: int
    child_handle: int
    rate_qdisc: str
    child_kind: str


@dataclass
class _Direction:
    attachment: Attachment
    state: LinkState
    rate: RateParams
    child: ChildParams


@dataclass(frozen=True, slots=True)
class _Planned:
    key: str
    request: tcr.TcRequest
    part: str  # "rate" or "child"


class KernelShaper(Shaper):
    """Shapes link directions with htb/tbf (+ netem where the kernel has it) via pyroute2.

    capabilities: from netem.probe.probe_capabilities() (or Capabilities.assume in the lab);
    rate_qdisc: 'htb' or 'tbf'; ipr_factory: netns name (None: host) -> a new IPRoute the
    shaper owns; burst_us: token-bucket depth as time at the link's rate (at least 2 frames).

    Not thread-safe: drive it from one thread (e.g. the LinkPlayer's).

        >>> from netem.probe import probe_capabilities              # doctest: +SKIP
        >>> with KernelShaper(probe_capabilities()) as shaper:       # doctest: +SKIP
        ...     shaper.add_direction("s1-gs1/down", "veth0", "gs1", LinkState(20_000_000))
        ...     shaper.apply("s1-gs1/down", LinkState(5_000_000))
    """

    def __init__(
        self,
        capabilities: Capabilities,
        *,
        rate_qdisc: str = "htb",
        ipr_factory: IPRouteFactory = default_ipr_factory,
        burst_us: int = 1_000,
    ) -> None:
        self._rate = make_rate_qdisc(rate_qdisc)
        self._caps = capabilities
        if not capabilities.has(self._rate.name):
            raise UnsupportedError(
                f"rate qdisc {self._rate.name!r} is not available on this kernel "
                f"({capabilities.reason(self._rate.name)})"
            )
        self._child_kind = "netem" if capabilities.netem else "pfifo"
        if not capabilities.has(self._child_kind):
            raise UnsupportedError(
                f"child qdisc {self._child_kind!r} is not available on this kernel "
                f"({capabilities.reason(self._child_kind)})"
            )
        if burst_us < 1:
            raise LinkStateError(f"kernel shaper burst_us={burst_us}, expected >= 1")
        self._factory = ipr_factory
        self._burst_us = burst_us
        self._sessions: dict[str | None, TcSession] = {}
        self._directions: dict[str, _Direction] = {}
        self._closed = False

    # -- public API ------------------------------------------------------------------------

    @property
    def rate_qdisc_name(self) -> str:
        return self._rate.name

    @property
    def child_kind(self) -> str:
        """'netem' where the kernel has it, else 'pfifo'."""
        return self._child_kind

    def directions(self) -> list[str]:
        return list(self._directions)

    def attachment(self, key: str) -> Attachment:
        return self._get(key).attachment

    def add_direction(self, key: str, ifname: str, netns: str | None, initial: LinkState) -> None:
        """Create the qdisc tree for `key` on `ifname`'s egress in `netns` with `initial`.

        Raises UnsupportedError (state needs netem, kernel lacks it), LinkStateError (rate out
        of range), NetemError (interface missing, already has a root qdisc, kernel refusal).
        """
        self._check_open()
        if key in self._directions:
            raise NetemError(f"direction {key!r} already added")
        for d in self._directions.values():
            if (d.attachment.ifname, d.attachment.netns) == (ifname, netns):
                raise NetemError(
                    f"direction {key!r}: interface {ifname!r} in {netns or 'host'} namespace "
                    f"already shapes direction {d.attachment.key!r}"
                )
        rate, child = self._params(key, initial)
        session = self._session(netns)
        ifindex = session.ifindex(ifname)
        requests = self._rate.create(ifindex, rate, self._child_limit(child))
        requests.append(self._child_request(ifindex, child, create=True))
        results = session.send(requests)
        failed = [(r, e) for r, e in zip(requests, results, strict=True) if e is not None]
        if failed:
            request, error = failed[0]
            if results[0] is None:  # root created: do not leave half a tree behind
                session.send([tcr.delete_qdisc(ifindex, ROOT_HANDLE)])
            hint = ""
            if request is requests[0] and error.code == errno.EEXIST:
                hint = "; it already has a root qdisc, which this shaper does not take over"
            raise NetemError(
                f"direction {key!r}: cannot shape {ifname!r} in {session.where}: "
                f"{request.describe()} failed with {describe_error(error)}{hint}"
            )
        attachment = Attachment(
            key,
            ifname,
            netns,
            ifindex,
            ROOT_HANDLE,
            CHILD_HANDLE,
            self._rate.name,
            self._child_kind,
        )
        self._directions[key] = _Direction(attachment, initial, rate, child)

    def plan(self, changes: Mapping[str, LinkState]) -> list[tcr.TcRequest]:
        """The requests apply_many would send for `changes` (validates, sends nothing)."""
        return [p.request for p in self._plan(changes)[0]]

    def apply_many(self, changes: Mapping[str, LinkState]) -> None:
        """Apply new states: validated first (nothing is sent if one is refused), then only
        the changed qdiscs, one netlink batch per namespace."""
        self._check_open()
        planned, params = self._plan(changes)
        by_ns: dict[str | None, list[_Planned]] = {}
        for p in planned:
            by_ns.setdefault(self._directions[p.key].attachment.netns, []).append(p)
        failures: dict[str, list[str]] = {}
        failed_parts: dict[str, set[str]] = {}
        for ns, items in by_ns.items():
            results = self._session(ns).send([p.request for p in items])
            for p, error in zip(items, results, strict=True):
                if error is not None:
                    failures.setdefault(p.key, []).append(
                        f"{p.request.describe()}: {describe_error(error)}"
                    )
                    failed_parts.setdefault(p.key, set()).add(p.part)
        for key, state in changes.items():
            d = self._directions[key]
            rate, child = params[key]
            bad = failed_parts.get(key, set())
            if "rate" not in bad:
                d.rate = rate
            if "child" not in bad:
                d.child = child
            if not bad:
                d.state = state
            else:
                d.state = self._partial_state(d.state, state, bad)
        if failures:
            detail = "; ".join(f"{k}: {', '.join(v)}" for k, v in failures.items())
            raise NetemError(f"kernel refused changes for {len(failures)} direction(s): {detail}")

    def current(self, direction: str) -> LinkState:
        return self._get(direction).state

    def close(self) -> None:
        """Delete the root qdiscs this shaper created (a gone interface counts as deleted),
        then close the netlink sockets. Idempotent; raises the first failure after trying all."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        by_ns: dict[str | None, list[Attachment]] = {}
        for d in self._directions.values():
            by_ns.setdefault(d.attachment.netns, []).append(d.attachment)
        for ns, attachments in by_ns.items():
            requests = [tcr.delete_qdisc(a.ifindex, a.root_handle) for a in attachments]
            try:
                results = self._sessions[ns].send(requests)
            except (NetlinkError, OSError) as exc:
                problems.append(f"{ns or 'host'} namespace: {exc}")
                continue
            for a, error in zip(attachments, results, strict=True):
                if error is not None and error.code not in (errno.ENODEV, errno.ENOENT):
                    problems.append(f"{a.key} on {a.ifname}: {describe_error(error)}")
        self._directions.clear()
        for session in self._sessions.values():
            session.close()
        self._sessions.clear()
        if problems:
            raise NetemError(f"kernel shaper close: {'; '.join(problems)}")

    # -- internals -------------------------------------------------------------------------

    def _get(self, key: str) -> _Direction:
        try:
            return self._directions[key]
        except KeyError:
            known = ", ".join(sorted(self._directions)) or "none"
            raise NetemError(f"unknown direction {key!r}; known: {known}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise NetemError("kernel shaper is closed")

    def _session(self, netns: str | None) -> TcSession:
        if netns not in self._sessions:
            self._sessions[netns] = TcSession(self._factory(netns), netns)
        return self._sessions[netns]

    def _params(self, key: str, state: LinkState) -> tuple[RateParams, ChildParams]:
        """Validate `state` for this kernel and compute the kernel parameters."""
        if 0 < state.rate_bps < MIN_RATE_BPS:
            raise LinkStateError(
                f"link {state.name!r}, direction {key!r}: rate_bps={state.rate_bps}, expected 0 "
                f"or >= {MIN_RATE_BPS} with the kernel shaper"
            )
        if self._child_kind != "netem":
            netem_only = needs_netem(state)
            if netem_only:
                fields = ", ".join(f"{k}={v}" for k, v in netem_only.items())
                raise UnsupportedError(
                    f"link {state.name!r}, direction {key!r}: {fields} needs the netem qdisc, "
                    f"which this kernel lacks ({self._caps.reason('netem')}); the kernel "
                    "shaper can only apply rate and queue limit here; use the userspace "
                    "shaper (netem.shapers.UserspaceShaper) for delay, jitter and loss"
                )
            limit = 0 if state.rate_bps == 0 else state.queue_limit_packets
            child: ChildParams = PfifoParams(limit)
        else:
            child = netem_params(state)
        return rate_params(state, self._burst_us), child

    @staticmethod
    def _child_limit(child: ChildParams) -> int:
        return child.limit_packets

    def _child_request(self, ifindex: int, child: ChildParams, *, create: bool) -> tcr.TcRequest:
        if isinstance(child, tcr.NetemParams):
            return tcr.netem_qdisc(
                ifindex, CHILD_HANDLE, self._rate.child_parent, child, create=create
            )
        return tcr.pfifo_qdisc(
            ifindex,
            CHILD_HANDLE,
            self._rate.child_parent,
            limit_packets=child.limit_packets,
            create=create,
        )

    def _plan(
        self, changes: Mapping[str, LinkState]
    ) -> tuple[list[_Planned], dict[str, tuple[RateParams, ChildParams]]]:
        planned: list[_Planned] = []
        params: dict[str, tuple[RateParams, ChildParams]] = {}
        for key, state in changes.items():
            self._get(key)  # unknown keys fail before anything is sent
            params[key] = self._params(key, state)
        for key, (rate, child) in params.items():
            d = self._directions[key]
            ifindex = d.attachment.ifindex
            if rate != d.rate:
                for request in self._rate.change(ifindex, rate, self._child_limit(child)):
                    planned.append(_Planned(key, request, "rate"))
            if child != d.child:
                request = self._child_request(ifindex, child, create=False)
                planned.append(_Planned(key, request, "child"))
        return planned, params

    @staticmethod
    def _partial_state(old: LinkState, new: LinkState, failed: set[str]) -> LinkState:
        """What the kernel holds when some of a direction's requests failed."""
        changes = old.diff(new)
        keep_old = set()
        if "rate" in failed:
            keep_old.add("rate_bps")
        if "child" in failed:
            keep_old.update(("queue_limit_packets", *NETEM_FIELDS))
        return old.with_changes(**{k: v for k, v in changes.items() if k not in keep_old})
