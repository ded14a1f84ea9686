"""`message-exchange`: N messages to a peer over the data plane, echoed back, timed at both ends.

A small job kind every backend can run to check its data network: the sender's job sends
`count` messages of `size_bytes` to `peer` (topic `<topic>/req`), the peer's echo job sends each
one back (topic `<topic>/rep`), and the sender records per message the one-way time (peer's
arrival stamp minus send stamp: two clocks), the acknowledged time and the round trip (its own
clock only); the echo's own one-way times are in `reply_one_way_s`. It writes `messages.csv` to
the job's folder. Summary: `mode, count, messages, bytes` (payload bytes one way), `one_way_s`,
`rtt_s`, `ack_s`, `reply_one_way_s` (each `{min, mean, p50, max}` or null), `errors`; events:
one record per message with the instants in unix ns (the CSV columns).

| option | mode | default | meaning |
|---|---|---|---|
| `mode` | both | required | `send` or `echo` |
| `peer` | send | required | the peer's node name (from the pushed context) |
| `count` | both | 10 / none | send: messages; echo: stop after this many (none: until cancel) |
| `size_bytes` | send | 1024 | payload size, at least 8 (the sequence number) |
| `topic` | both | `message-exchange` | topic prefix (two exchanges at once need two) |
| `timeout_s` | send | 10.0 | how long to wait for each echo |
| `interval_s` | send | 0 | pause between messages |
| `wait_contact` | send | false | wait for a contact window with `peer` before each message |
"""

from __future__ import annotations

import statistics
import struct
import threading
from collections.abc import Callable, Mapping

from nodes.dataplane import Message
from nodes.errors import (
    ContextError,
    DataPlaneError,
    RecvTimeoutError,
    WorkloadError,
    WorkloadOptionsError,
)
from nodes.workloads.base import NodeContext, Workload
from nodes.workloads.options import Options
from nodes.workloads.registry import register_workload

_SEQ = struct.Struct(">Q")
_SEND_ONLY = ("peer", "size_bytes", "timeout_s", "interval_s", "wait_contact")
CSV_COLUMNS = ("seq", "bytes", "t_send_unix_ns", "t_peer_recv_unix_ns", "t_acked_unix_ns",
               "t_reply_send_unix_ns", "t_reply_recv_unix_ns", "one_way_s", "reply_one_way_s",
               "ack_s", "rtt_s")


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": min(values), "mean": statistics.fmean(values),
            "p50": statistics.median(values), "max": max(values)}


@register_workload("message-exchange")
class MessageExchange(Workload):
    """Sender: send, wait for the echo, record times. Echo: send every request back."""

    def __init__(self, ctx: NodeContext, options: Mapping[str, object] | None,
                 on_end: Callable[[Workload], None] | None = None):
        super().__init__(ctx, options, on_end)
        opts = Options(self.kind, options)
        self.mode = opts.text("mode")
        if self.mode not in ("send", "echo"):
            raise WorkloadOptionsError(f"workload {self.kind}: option mode={self.mode!r}, "
                                       "expected 'send' or 'echo'")
        self.topic = opts.text("topic", "message-exchange")
        if self.mode == "send":
            self.peer = opts.text("peer")
            self.count = opts.integer("count", 10, low=1)
            self.size_bytes = opts.integer("size_bytes", 1024, low=_SEQ.size)
            self.timeout_s = opts.number("timeout_s", 10.0)
            self.interval_s = opts.number("interval_s", 0.0, positive=False)
            self.wait_contact = opts.flag("wait_contact", False)
            if self.interval_s < 0:
                raise WorkloadOptionsError(f"workload {self.kind}: option interval_s="
                                           f"{self.interval_s}, expected >= 0")
        else:
            opts.ignore(*_SEND_ONLY)
            self.count = opts.integer("count", None, low=1)
        opts.finish()
        if ctx.dataplane is None:
            raise WorkloadOptionsError(f"workload {self.kind} on {ctx.name}: the agent has no "
                                       "--data-ip, so no data plane")
        try:
            run = ctx.run_context()
        except ContextError as exc:
            raise WorkloadOptionsError(f"workload {self.kind}: {exc}") from None
        if self.mode == "send" and self.peer not in run.peers:
            raise WorkloadOptionsError(f"workload {self.kind}: option peer={self.peer!r}, "
                                       f"expected one of: {', '.join(sorted(run.peers))}")
        self._lock = threading.Lock()
        self._records: list[dict[str, object]] = []
        self._errors: list[str] = []

    # lifecycle -------------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Nothing to acquire: the agent's data plane already listens."""

    def _cleanup(self) -> None:
        """Writes messages.csv into the job's folder (when the agent has one)."""
        out = self.ctx.output_dir
        if out is None:
            return
        with self._lock:
            rows = list(self._records)
        columns = CSV_COLUMNS if self.mode == "send" else ("seq", "src", "bytes",
                                                           "t_send_unix_ns", "t_recv_unix_ns",
                                                           "one_way_s")
        out.mkdir(parents=True, exist_ok=True)
        lines = [",".join(columns)] + [",".join(str(r[c]) for c in columns) for r in rows]
        (out / "messages.csv").write_text("\n".join(lines) + "\n")

    def progress(self) -> dict[str, object] | None:
        with self._lock:
            done = len(self._records)
        return {"done": done, "total": self.count, "unit": "messages"}

    def _run(self, stop: threading.Event) -> bool:
        return self._send(stop) if self.mode == "send" else self._echo(stop)

    def _send(self, stop: threading.Event) -> bool:
        dp = self.ctx.require_dataplane()
        schedule = self.ctx.contacts() if self.wait_contact else None
        filler = bytes(range(256)) * (self.size_bytes // 256 + 1)
        for seq in range(self.count):
            if stop.is_set():
                return False
            if schedule is not None and schedule.wait_for_contact(stop, self.peer) is None:
                return False
            payload = _SEQ.pack(seq) + filler[:self.size_bytes - _SEQ.size]
            receipt = dp.send(self.peer, f"{self.topic}/req", payload, timeout_s=self.timeout_s)
            reply = self._reply(stop, seq)
            if reply is None:
                return False
            if reply.payload != payload:
                raise WorkloadError(f"workload {self.kind}: echo of message {seq} from "
                                    f"{self.peer} differs from what was sent")
            with self._lock:
                self._records.append({
                    "seq": seq, "bytes": receipt.bytes, "t_send_unix_ns": receipt.t_send_unix_ns,
                    "t_peer_recv_unix_ns": receipt.t_peer_recv_unix_ns,
                    "t_acked_unix_ns": receipt.t_acked_unix_ns,
                    "t_reply_send_unix_ns": reply.t_send_unix_ns,
                    "t_reply_recv_unix_ns": reply.t_recv_unix_ns,
                    "one_way_s": (receipt.t_peer_recv_unix_ns - receipt.t_send_unix_ns) / 1e9,
                    "reply_one_way_s": (reply.t_recv_unix_ns - reply.t_send_unix_ns) / 1e9,
                    "ack_s": (receipt.t_acked_unix_ns - receipt.t_send_unix_ns) / 1e9,
                    "rtt_s": (reply.t_recv_unix_ns - receipt.t_send_unix_ns) / 1e9})
            if self.interval_s and stop.wait(self.interval_s):
                return False
        return True

    def _reply(self, stop: threading.Event, seq: int) -> Message | None:
        """The echo of message `seq` (stale echoes of earlier ones are skipped)."""
        dp = self.ctx.require_dataplane()
        waited_s = 0.0
        while not stop.is_set():
            try:
                reply = dp.recv(f"{self.topic}/rep", timeout_s=0.2)
            except RecvTimeoutError:
                waited_s += 0.2
                if waited_s >= self.timeout_s:
                    raise DataPlaneError(f"workload {self.kind}: no echo of message {seq} from "
                                         f"{self.peer} within {self.timeout_s} s") from None
                continue
            if len(reply.payload) >= _SEQ.size and _SEQ.unpack_from(reply.payload)[0] == seq:
                return reply
        return None

    def _echo(self, stop: threading.Event) -> bool:
        dp = self.ctx.require_dataplane()
        while not stop.is_set():
            try:
                msg = dp.recv(f"{self.topic}/req", timeout_s=0.2)
            except RecvTimeoutError:
                continue
            seq = _SEQ.unpack_from(msg.payload)[0] if len(msg.payload) >= _SEQ.size else -1
            try:
                dp.send(msg.src, f"{self.topic}/rep", msg.payload)
            except DataPlaneError as exc:
                with self._lock:
                    self._errors.append(str(exc))
                continue
            with self._lock:
                self._records.append({"seq": seq, "src": msg.src, "bytes": len(msg.payload),
                                      "t_send_unix_ns": msg.t_send_unix_ns,
                                      "t_recv_unix_ns": msg.t_recv_unix_ns,
                                      "one_way_s": (msg.t_recv_unix_ns - msg.t_send_unix_ns)
                                      / 1e9})
                done = len(self._records)
            if self.count is not None and done >= self.count:
                return True
        return False

    # results ---------------------------------------------------------------------------------
    def _summary(self, elapsed_s: float) -> dict[str, object]:
        with self._lock:
            rows = list(self._records)
            errors = list(self._errors)
        out: dict[str, object] = {"mode": self.mode, "count": self.count, "messages": len(rows),
                                  "bytes": sum(int(r["bytes"]) for r in rows),  # type: ignore[call-overload]
                                  "one_way_s": _stats([float(r["one_way_s"]) for r in rows]),  # type: ignore[arg-type]
                                  "errors": errors}
        if self.mode == "send":
            out["peer"] = self.peer
            out["rtt_s"] = _stats([float(r["rtt_s"]) for r in rows])  # type: ignore[arg-type]
            out["reply_one_way_s"] = _stats([float(r["reply_one_way_s"])  # type: ignore[arg-type]
                                             for r in rows])
            out["ack_s"] = _stats([float(r["ack_s"]) for r in rows])  # type: ignore[arg-type]
        return out

    def _events(self) -> list[dict[str, object]]:
        with self._lock:
            return [dict(r) for r in self._records]
