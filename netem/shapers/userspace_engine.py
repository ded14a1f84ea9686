"""The per-direction packet engine of the userspace shaper: loss, drop-tail queue, release on a
rate or on delivery opportunities, then a FIFO delay line. Pure logic on (time, frame) pairs:
it never reads a clock or a socket itself, so it is tested with a fake clock and sender.

Model (one direction):

    arrival -> loss (random, Gilbert-Elliott) -> drop-tail queue (packets, bytes)
            -> departure (rate_bps serialisation, or mahimahi opportunities)
            -> + one-way delay sampled at departure (+ jitter) -> FIFO delay line -> send

Ordering when the delay drops: frames are never reordered. A frame's delivery time is
max(departure + delay(departure), delivery time of the previous frame), so when the delay falls
by D the frames behind the change leave back to back until the backlog of in-flight frames has
drained (at most D), after which the new delay holds exactly. Jitter is clamped the same way
(netem would reorder instead). A rising delay takes effect at once.

Byte accounting: rate_bps counts whole Ethernet frames (as the kernel's htb does); delivery
opportunities count IP bytes (frame minus its 14-byte header) as mahimahi does on its TUN
device, so one 1500-byte IP packet uses exactly one opportunity.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from netem.linkstate import LinkState
from netem.shapers.userspace_program import OPPORTUNITY_BYTES, TraceProgram

ETH_HEADER_BYTES = 14

QUEUE_DELAY_BUCKET_NS = 100_000
LATENESS_BUCKET_NS = 10_000


@dataclass
class Histogram:
    """Counts in fixed-width buckets (sparse), enough for percentiles to one bucket's width."""

    bucket_ns: int
    counts: dict[int, int] = field(default_factory=dict)
    n: int = 0
    sum_ns: int = 0
    max_ns: int = 0

    def add(self, value_ns: int) -> None:
        b = value_ns // self.bucket_ns
        c = self.counts
        c[b] = c.get(b, 0) + 1
        self.n += 1
        self.sum_ns += value_ns
        if value_ns > self.max_ns:
            self.max_ns = value_ns

    def percentile_ns(self, q: float) -> int:
        """Upper edge of the bucket holding the q-quantile (0 when empty)."""
        if self.n == 0:
            return 0
        rank = q * self.n
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min((b + 1) * self.bucket_ns, self.max_ns)
        return self.max_ns

    def summary_us(self) -> dict[str, float]:
        """count, mean, p50, p99, max in microseconds."""
        mean = self.sum_ns / self.n / 1e3 if self.n else 0.0
        return {
            "count": self.n,
            "mean_us": mean,
            "p50_us": self.percentile_ns(0.5) / 1e3,
            "p99_us": self.percentile_ns(0.99) / 1e3,
            "max_us": self.max_ns / 1e3,
        }


@dataclass
class DirectionCounters:
    """What a direction did so far (monotonic counts since it was added)."""

    received_packets: int = 0
    forwarded_packets: int = 0
    forwarded_bytes: int = 0
    dropped_queue: int = 0
    dropped_loss: int = 0
    dropped_tx: int = 0
    queue_delay: Histogram = field(default_factory=lambda: Histogram(QUEUE_DELAY_BUCKET_NS))
    send_lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKET_NS))
    opportunity_lateness: Histogram = field(default_factory=lambda: Histogram(LATENESS_BUCKET_NS))
    opportunities_used: int = 0

    def summary(self) -> dict[str, object]:
        """A plain dict (for the control channel and reports)."""
        return {
            "received_packets": self.received_packets,
            "forwarded_packets": self.forwarded_packets,
            "forwarded_bytes": self.forwarded_bytes,
            "dropped_queue": self.dropped_queue,
            "dropped_loss": self.dropped_loss,
            "dropped_tx": self.dropped_tx,
            "queue_delay": self.queue_delay.summary_us(),
            "send_lateness": self.send_lateness.summary_us(),
            "opportunities_used": self.opportunities_used,
            "opportunity_lateness": self.opportunity_lateness.summary_us(),
        }


class Direction:
    """One shaped direction. `on_frame` takes arrivals; `service(now)` releases what is due and
    returns when it next needs to run (None: nothing pending, costs nothing until a frame comes).
    """

    __slots__ = (
        "name", "send", "rng", "early_ns", "state", "queue_limit_bytes", "program", "t0_ns",
        "queue", "queue_bytes", "line", "last_deliver_ns", "busy_until_ns", "head_depart_ns",
        "ns_per_byte", "opp", "opp_n", "period_ns", "opp_k", "head_remaining", "ge_bad",
        "counters", "scheduled_ns",
    )

    def __init__(
        self, name: str, send: Callable[[bytes], object], state: LinkState, *,
        rng: random.Random, queue_limit_bytes: int | None = None, early_ns: int = 20_000,
    ) -> None:
        self.name = name
        self.send = send
        self.rng = rng
        self.early_ns = early_ns
        self.queue_limit_bytes = queue_limit_bytes
        self.queue: deque[tuple[int, bytes]] = deque()
        self.queue_bytes = 0
        self.line: deque[tuple[int, bytes]] = deque()
        self.last_deliver_ns = 0
        self.busy_until_ns = 0
        self.head_depart_ns: int | None = None
        self.program: TraceProgram | None = None
        self.t0_ns = 0
        self.opp = None
        self.opp_n = 0
        self.period_ns = 0
        self.opp_k = 0
        self.head_remaining = 0
        self.ge_bad = False
        self.counters = DirectionCounters()
        self.scheduled_ns: int | None = None  # the worker's bookkeeping: latest timer entry
        self.state = state
        self.ns_per_byte = 0.0
        self.set_state(state, 0)

    # ---- configuration -------------------------------------------------------------------

    def set_state(self, state: LinkState, now_ns: int) -> None:
        """Take a new LinkState (fields a followed trace governs are overridden by the trace)."""
        self.state = state
        self.ns_per_byte = 8e9 / state.rate_bps if state.rate_bps > 0 else 0.0
        if state.burst_loss is None:
            self.ge_bad = False
        self._restart_head(now_ns)

    def follow(self, program: TraceProgram, t0_ns: int, now_ns: int) -> None:
        """Replay `program` with its offset 0 at monotonic time t0_ns."""
        self.program = program
        self.t0_ns = t0_ns
        self.opp = program.opportunities_ns
        self.opp_n = len(self.opp) if self.opp is not None else 0
        self.period_ns = program.period_ns
        self.opp_k = 0
        self._restart_head(now_ns)

    def unfollow(self, now_ns: int) -> None:
        """Back to the LinkState alone."""
        self.program = None
        self.opp = None
        self.opp_n = 0
        self._restart_head(now_ns)

    def _restart_head(self, now_ns: int) -> None:
        """Recompute when the head frame leaves after the capacity model changed."""
        self.busy_until_ns = min(self.busy_until_ns, now_ns)
        if self.opp is not None:
            self.opp_k = max(self.opp_k, self._first_opportunity(now_ns))
            if self.queue:
                self.head_remaining = max(len(self.queue[0][1]) - ETH_HEADER_BYTES, 0)
        elif self.queue:
            self._start_head(now_ns)
        else:
            self.head_depart_ns = None

    # ---- arrivals --------------------------------------------------------------------------

    def on_frame(self, frame: bytes, now_ns: int) -> bool:
        """Take one frame arriving at now_ns; False when it was dropped (loss or full queue)."""
        c = self.counters
        c.received_packets += 1
        state = self.state
        program = self.program
        rnd = self.rng.random
        if program is not None and program.loss_ratio is not None:
            loss = program.loss_ratio.at(now_ns - self.t0_ns)
        else:
            loss = state.loss_ratio
        if loss and rnd() < loss:
            c.dropped_loss += 1
            return False
        ge = state.burst_loss
        if ge is not None:
            if self.ge_bad:
                if rnd() < ge.p_exit_bad:
                    self.ge_bad = False
            elif rnd() < ge.p_enter_bad:
                self.ge_bad = True
            p = ge.loss_in_bad if self.ge_bad else ge.loss_in_good
            if p and rnd() < p:
                c.dropped_loss += 1
                return False
        q = self.queue
        size = len(frame)
        limit_bytes = self.queue_limit_bytes
        if len(q) >= state.queue_limit_packets or (
            limit_bytes is not None and self.queue_bytes + size > limit_bytes
        ):
            c.dropped_queue += 1
            return False
        q.append((now_ns, frame))
        self.queue_bytes += size
        if len(q) == 1:
            if self.opp is not None:
                self.opp_k = max(self.opp_k, self._first_opportunity(now_ns))
                self.head_remaining = max(size - ETH_HEADER_BYTES, 0)
            else:
                self._start_head(now_ns)
        return True

    def _start_head(self, now_ns: int) -> None:
        q = self.queue
        if not q or self.ns_per_byte == 0.0:
            self.head_depart_ns = None
            return
        arrival, frame = q[0]
        start = max(arrival, self.busy_until_ns, now_ns)
        self.head_depart_ns = start + int(len(frame) * self.ns_per_byte)

    def _first_opportunity(self, at_ns: int) -> int:
        """Absolute index of the first opportunity at or after monotonic time at_ns."""
        offset = at_ns - self.t0_ns
        if offset <= 0:
            return 0
        loops, within = divmod(offset, self.period_ns)
        return loops * self.opp_n + bisect_left(self.opp, within)

    def _opportunity_ns(self, k: int) -> int:
        loops, i = divmod(k, self.opp_n)
        return self.t0_ns + loops * self.period_ns + self.opp[i]

    # ---- releases --------------------------------------------------------------------------

    def service(self, now_ns: int) -> int | None:
        """Release every frame due by now; the monotonic time of the next due event or None."""
        limit = now_ns + self.early_ns
        q = self.queue
        next_depart: int | None = None
        if q:
            if self.opp is not None:
                next_depart = self._service_opportunities(now_ns, limit)
            else:
                next_depart = self._service_rate(limit)
        line = self.line
        if line:
            self._flush_line(now_ns, limit)
        if line:
            head = line[0][0]
            if next_depart is None or head < next_depart:
                return head
        return next_depart

    def _service_rate(self, limit: int) -> int | None:
        q = self.queue
        npb = self.ns_per_byte
        while q:
            dep = self.head_depart_ns
            if dep is None or dep > limit:
                return dep
            arrival, frame = q.popleft()
            self.queue_bytes -= len(frame)
            self.busy_until_ns = dep
            self._depart(arrival, frame, dep)
            if q:
                nxt_arrival, nxt = q[0]
                self.head_depart_ns = max(dep, nxt_arrival) + int(len(nxt) * npb)
            else:
                self.head_depart_ns = None
        return None

    def _service_opportunities(self, now_ns: int, limit: int) -> int | None:
        q = self.queue
        c = self.counters
        while q:
            t = self._opportunity_ns(self.opp_k)
            if t > limit:
                return t
            if now_ns > t:
                c.opportunity_lateness.add(now_ns - t)
            else:
                c.opportunity_lateness.add(0)
            c.opportunities_used += 1
            credit = OPPORTUNITY_BYTES
            while q and credit > 0:
                need = self.head_remaining
                if need > credit:
                    self.head_remaining = need - credit
                    break
                credit -= need
                arrival, frame = q.popleft()
                self.queue_bytes -= len(frame)
                self._depart(arrival, frame, t)
                if q:
                    self.head_remaining = max(len(q[0][1]) - ETH_HEADER_BYTES, 0)
            self.opp_k += 1
        return None

    def _depart(self, arrival_ns: int, frame: bytes, depart_ns: int) -> None:
        c = self.counters
        c.queue_delay.add(depart_ns - arrival_ns if depart_ns > arrival_ns else 0)
        program = self.program
        if program is not None and program.delay_us is not None:
            delay_us = program.delay_us.at(depart_ns - self.t0_ns)
        else:
            delay_us = self.state.delay_us
        jitter_us = self.state.jitter_us
        if jitter_us:
            delay_ns = int((delay_us + self.rng.gauss(0.0, jitter_us)) * 1000)
            if delay_ns < 0:
                delay_ns = 0
        else:
            delay_ns = delay_us * 1000
        deliver = depart_ns + delay_ns
        if deliver < self.last_deliver_ns:
            deliver = self.last_deliver_ns
        self.last_deliver_ns = deliver
        self.line.append((deliver, frame))

    def _flush_line(self, now_ns: int, limit: int) -> None:
        line = self.line
        c = self.counters
        send = self.send
        lateness = c.send_lateness
        while line and line[0][0] <= limit:
            due, frame = line.popleft()
            try:
                send(frame)
            except OSError:
                c.dropped_tx += 1
                continue
            c.forwarded_packets += 1
            c.forwarded_bytes += len(frame)
            lateness.add(now_ns - due if now_ns > due else 0)

    def next_event_ns(self) -> int | None:
        """When service() next has something to do (None when idle)."""
        t: int | None = None
        if self.queue:
            t = self._opportunity_ns(self.opp_k) if self.opp is not None else self.head_depart_ns
        if self.line and (t is None or self.line[0][0] < t):
            t = self.line[0][0]
        return t

    def drop_all(self) -> None:
        """Forget queued and in-flight frames (the link is being removed)."""
        self.queue.clear()
        self.line.clear()
        self.queue_bytes = 0
