"""One connected OpenFlow 1.3 switch as the reconciler drives it, and the replies it waits for.

Owns the OpenFlow exchange with a switch: batches of flow-mods closed by a barrier, flow-stats
reads, and matching barrier replies, multipart replies and error messages to the request that
waits for them. Knows nothing of topology or routes. The os-ken event handlers of the app feed
`ReplyRouter`; the reconciler's worker thread calls `OFSwitch` and blocks on `Pending.wait`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser

from controller import ofwire
from controller.errors import SwitchError
from controller.flows import FlowEntry, FlowKey

if TYPE_CHECKING:  # importing it at run time first trips an os-ken import cycle
    from os_ken.controller.controller import Datapath


class Pending:
    """A request waiting for its reply (a barrier or a multipart flow-stats read)."""

    def __init__(self, dpid: int, what: str, first_xid: int, last_xid: int) -> None:
        self.dpid = dpid
        self.what = what
        self.first_xid = first_xid
        self.last_xid = last_xid
        self.bodies: list[Any] = []
        self.errors: list[str] = []
        self._done = threading.Event()
        self._failure: str | None = None
        self.forget: Callable[[], None] = lambda: None
        """Set by ReplyRouter.register: drops the registration after a timeout."""

    def covers(self, xid: int) -> bool:
        return self.first_xid <= xid <= self.last_xid

    def resolve(self) -> None:
        self._done.set()

    def fail(self, reason: str) -> None:
        self._failure = reason
        self._done.set()

    def wait(self, timeout_s: float) -> list[Any]:
        """Block until answered; raises SwitchError on an error reply, disconnect or timeout."""
        if not self._done.wait(timeout_s):
            self.forget()
            raise SwitchError(self.dpid, f"no reply to {self.what} within {timeout_s} s")
        if self._failure is not None:
            raise SwitchError(self.dpid, f"{self.what}: {self._failure}")
        if self.errors:
            shown = "; ".join(self.errors[:3])
            raise SwitchError(self.dpid, f"{self.what}: {len(self.errors)} error(s): {shown}")
        return self.bodies


class ReplyRouter:
    """Routes replies from switches (received on os-ken threads) to waiting `Pending`s."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_reply_xid: dict[tuple[int, int], Pending] = {}
        self._by_datapath: dict[int, list[Pending]] = {}

    def register(self, datapath: Datapath, reply_xid: int, pending: Pending) -> None:
        with self._lock:
            self._by_reply_xid[(id(datapath), reply_xid)] = pending
            self._by_datapath.setdefault(id(datapath), []).append(pending)

        def forget() -> None:
            self._pop(datapath, reply_xid)

        pending.forget = forget

    def _pop(self, datapath: Datapath, xid: int) -> Pending | None:
        with self._lock:
            pending = self._by_reply_xid.pop((id(datapath), xid), None)
            if pending is not None:
                waiting = self._by_datapath.get(id(datapath), [])
                if pending in waiting:
                    waiting.remove(pending)
            return pending

    def on_barrier_reply(self, msg: Any) -> None:
        pending = self._pop(msg.datapath, msg.xid)
        if pending is not None:
            pending.resolve()

    def on_flow_stats_reply(self, msg: Any) -> None:
        key = (id(msg.datapath), msg.xid)
        with self._lock:
            pending = self._by_reply_xid.get(key)
        if pending is None:
            return
        pending.bodies.extend(msg.body)
        if not msg.flags & ofp.OFPMPF_REPLY_MORE:
            self._pop(msg.datapath, msg.xid)
            pending.resolve()

    def on_error(self, msg: Any) -> None:
        """Attach an OFPT_ERROR to the request whose xid range contains it."""
        text = f"OFPT_ERROR type={msg.type} code={msg.code} xid={msg.xid}"
        with self._lock:
            waiting = list(self._by_datapath.get(id(msg.datapath), []))
        for pending in waiting:
            if pending.covers(msg.xid):
                pending.errors.append(text)
                if pending.what == "flow stats":
                    self._pop(msg.datapath, pending.last_xid)
                    pending.resolve()
                return

    def on_disconnect(self, datapath: Datapath) -> None:
        """Fail every request still waiting on this connection."""
        with self._lock:
            waiting = self._by_datapath.pop(id(datapath), [])
            for key in [k for k in self._by_reply_xid if k[0] == id(datapath)]:
                del self._by_reply_xid[key]
        for pending in waiting:
            pending.fail("switch disconnected")


class OFSwitch:
    """Sends the reconciler's batches to one connected switch (one os-ken Datapath)."""

    def __init__(self, datapath: Datapath, router: ReplyRouter) -> None:
        self.datapath = datapath
        self.dpid: int = datapath.id
        self.address = f"{datapath.address[0]}:{datapath.address[1]}" if datapath.address else None
        self._router = router
        self._xid_lock = threading.Lock()

    def _xids(self, count: int) -> int:
        """Reserve `count` consecutive xids (shares os-ken's per-datapath counter)."""
        with self._xid_lock:
            first = (self.datapath.xid + 1) & ofp.MAX_XID
            if first + count > ofp.MAX_XID:
                first = 1
            self.datapath.xid = first + count - 1
            return first

    def send_batch(
        self,
        installs: Sequence[tuple[FlowKey, int | None]],
        removes: Sequence[FlowEntry],
        cookie: int,
    ) -> Pending:
        """Send flow-mods then a barrier in one write; wait on the returned Pending.

        `installs` are OFPFC_ADD with `cookie`; `removes` are exact deletes of each flow's own
        cookie. Errors the switch reports for any of these messages fail the Pending.
        """
        count = len(installs) + len(removes)
        first = self._xids(count + 1)
        chunks: list[bytes] = []
        xid = first
        for key, out_port in installs:
            chunks.append(
                ofwire.flow_add(
                    xid,
                    cookie=cookie,
                    priority=key.priority,
                    match=key.match,
                    out_port=out_port,
                    table_id=key.table_id,
                )
            )
            xid += 1
        for entry in removes:
            chunks.append(self._delete_strict(xid, entry))
            xid += 1
        chunks.append(ofwire.barrier_request(xid))
        pending = Pending(self.dpid, f"batch of {count} flow-mods", first, xid)
        self._router.register(self.datapath, xid, pending)
        if not self.datapath.send(b"".join(chunks)):
            self._router.on_disconnect(self.datapath)
        return pending

    def _delete_strict(self, xid: int, entry: FlowEntry) -> bytes:
        key = entry.key
        try:
            return ofwire.flow_delete_strict(
                xid,
                cookie=entry.cookie,
                priority=key.priority,
                match=key.match,
                table_id=key.table_id,
            )
        except ValueError:
            pass  # a match ofwire cannot encode (another controller's flow): os-ken encodes it
        match = (
            entry.raw_match if entry.raw_match is not None else parser.OFPMatch(**dict(key.match))
        )
        msg = parser.OFPFlowMod(
            self.datapath,
            cookie=entry.cookie,
            cookie_mask=0xFFFFFFFFFFFFFFFF,
            table_id=key.table_id,
            command=ofp.OFPFC_DELETE_STRICT,
            priority=key.priority,
            buffer_id=ofp.OFP_NO_BUFFER,
            out_port=ofp.OFPP_ANY,
            out_group=ofp.OFPG_ANY,
            match=match,
        )
        msg.set_xid(xid)
        msg.serialize()
        return bytes(msg.buf)

    def read_flows(self, timeout_s: float) -> list[FlowEntry]:
        """Every flow in every table of the switch (OFPMP_FLOW, multipart)."""
        xid = self._xids(1)
        req = parser.OFPFlowStatsRequest(
            self.datapath, 0, ofp.OFPTT_ALL, ofp.OFPP_ANY, ofp.OFPG_ANY, 0, 0, parser.OFPMatch()
        )
        req.set_xid(xid)
        pending = Pending(self.dpid, "flow stats", xid, xid)
        self._router.register(self.datapath, xid, pending)
        if not self.datapath.send_msg(req):
            self._router.on_disconnect(self.datapath)
        return [flow_entry(stat) for stat in pending.wait(timeout_s)]


def normalize_match(items: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """Match fields as a sorted tuple; an all-ones mask is dropped (exact value)."""
    out = []
    for name, value in items:
        if isinstance(value, tuple) and len(value) == 2 and _all_ones(value[1]):
            value = value[0]
        out.append((name, value))
    return tuple(sorted(out))


def _all_ones(mask: Any) -> bool:
    if isinstance(mask, str):
        return mask in ("255.255.255.255", "ff:ff:ff:ff:ff:ff")
    return isinstance(mask, int) and mask != 0 and (mask + 1) & mask == 0


def flow_entry(stat: Any) -> FlowEntry:
    """A FlowEntry from an os-ken OFPFlowStats (reply to a flow-stats request)."""
    out_port: int | None = None
    simple = True
    instructions = list(stat.instructions)
    if instructions:
        simple = False
        if len(instructions) == 1:
            inst = instructions[0]
            actions = getattr(inst, "actions", None)
            if (
                inst.type == ofp.OFPIT_APPLY_ACTIONS
                and actions is not None
                and len(actions) == 1
                and isinstance(actions[0], parser.OFPActionOutput)
            ):
                out_port = actions[0].port
                simple = True
    key = FlowKey(stat.table_id, stat.priority, normalize_match(stat.match.items()))
    return FlowEntry(
        key=key,
        out_port=out_port,
        cookie=stat.cookie,
        simple=simple,
        packets=stat.packet_count,
        duration_s=stat.duration_sec + stat.duration_nsec / 1e9,
        raw_match=stat.match,
    )
