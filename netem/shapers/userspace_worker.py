"""The userspace shaper's process: one epoll loop forwarding frames for every link it serves.

Started and owned by UserspaceShaper (`python -m netem.shapers.userspace_worker --control-fd N`);
it exits when told to, when its control channel closes, or when its parent dies. Owns the
packet sockets, the timer, the per-direction engines and the record of applied changes; never
creates or removes interfaces. Idle links cost nothing: a direction only enters the timer heap
while it holds frames, and a socket only wakes the loop when a frame arrives.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import heapq
import itertools
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from netem.errors import NetemError
from netem.linkstate import LinkState
from netem.shapers.userspace_engine import Direction
from netem.shapers.userspace_program import TraceProgram
from netem.shapers.userspace_protocol import MessageBuffer, send_message
from netem.shapers.userspace_sockets import kernel_drops, open_packet_socket
from netem.shapers.userspace_timer import MonotonicTimer

RX_BATCH = 64
_TIMESPEC = struct.Struct("@qq")
MAX_FRAME_BYTES = 65536
MAX_EVENTS = 1_000_000
PR_SET_PDEATHSIG = 1
MAX_ADVANCE_NS = 200_000
PR_SET_TIMERSLACK = 29


@dataclass
class _Port:
    """One interface of a link: its socket and the direction its arrivals feed."""

    ifname: str
    sock: socket.socket
    feeds: Direction
    rx_packets: int = 0
    rx_kernel_drops: int = 0


@dataclass
class _Link:
    name: str
    netns: str | None
    ports: tuple[_Port, _Port]


class Worker:
    """The event loop. `run()` returns when stopped; `close()` releases sockets and fds."""

    def __init__(self, control: socket.socket, *, seed: int | None, early_ns: int) -> None:
        self.control = control
        self.control.setblocking(False)
        self.rng = random.Random(seed)
        self.early_ns = early_ns
        self.ep = select.epoll()
        self.timer = MonotonicTimer()
        self.ep.register(self.timer.fd, select.EPOLLIN)
        self.ep.register(self.control.fileno(), select.EPOLLIN)
        self.links: dict[str, _Link] = {}
        self.directions: dict[str, Direction] = {}
        self.ports: dict[int, _Port] = {}
        self.heap: list[tuple[int, int, Direction]] = []
        self.seq = itertools.count()
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.events_dropped = 0
        self.inbox = MessageBuffer()
        self.running = True
        self.advance_ns = 50_000
        self.max_busy_ns = 0  # longest loop iteration (frames + control + releases)
        self.max_wake_ns = 0  # latest timer wake-up after the instant it was armed for

    # ---- loop --------------------------------------------------------------------------------

    def run(self) -> None:
        poll = self.ep.poll
        timer = self.timer
        timer_fd = timer.fd
        control_fd = self.control.fileno()
        ports = self.ports
        clock = time.monotonic_ns
        due: int | None = None  # the heap deadline the timer is armed for
        armed_at = 0  # the (earlier) time the timer was set to fire
        while self.running:
            heap = self.heap
            if heap:
                if heap[0][0] != due:
                    due = heap[0][0]
                    armed_at = due - self.advance_ns
                    timer.arm(armed_at)
            elif due is not None:
                timer.disarm()
                due = None
            touched: set[Direction] = set()
            events = poll()
            woke = clock()
            for fd, _mask in events:
                if fd == timer_fd:
                    timer.consume()
                    if due is not None:
                        self._on_wake(woke, armed_at, due, clock)
                        due = None
                elif fd == control_fd:
                    self._on_control()
                else:
                    port = ports.get(fd)
                    if port is not None:
                        self._drain(port, clock)
                        touched.add(port.feeds)
            self._service(touched, clock())
            busy = clock() - woke
            if busy > self.max_busy_ns:
                self.max_busy_ns = busy

    def _on_wake(self, woke: int, armed_at: int, due: int, clock: Any) -> None:
        """Learn the wake-up latency and spin out the little that is left before `due`.

        The timer is armed `advance_ns` before the deadline, advance_ns tracking the observed
        latency (EWMA), so frames leave on time instead of one wake-up latency late.
        """
        if woke - armed_at > self.max_wake_ns:
            self.max_wake_ns = woke - armed_at
        latency = min(max(woke - armed_at, 0), MAX_ADVANCE_NS)
        self.advance_ns += (latency - self.advance_ns) >> 3
        target = due - self.early_ns
        if woke < target and target - woke <= MAX_ADVANCE_NS:
            while clock() < target:
                pass

    def _drain(self, port: _Port, clock: Any) -> None:
        """Read up to RX_BATCH frames, each stamped with its kernel arrival time.

        Kernel stamps (CLOCK_REALTIME, moved onto the monotonic clock) keep the loop's own
        wake-up latency out of every frame's delay; they cost ~1.5 us per frame over recv().
        """
        recvmsg = port.sock.recvmsg
        on_frame = port.feeds.on_frame
        unpack = _TIMESPEC.unpack
        offset = time.time_ns() - clock()
        n = 0
        for _ in range(RX_BATCH):
            try:
                frame, ancillary, _flags, _addr = recvmsg(MAX_FRAME_BYTES, 64)
            except BlockingIOError:
                break
            if ancillary:
                sec, nsec = unpack(ancillary[0][2])
                on_frame(frame, sec * 1_000_000_000 + nsec - offset)
            else:
                on_frame(frame, clock())
            n += 1
        port.rx_packets += n

    def _service(self, touched: set[Direction], now: int) -> None:
        heap = self.heap
        push = heapq.heappush
        seq = self.seq
        for d in touched:
            t = d.service(now)
            if t is not None and t != d.scheduled_ns:
                push(heap, (t, next(seq), d))
            d.scheduled_ns = t
        limit = now + self.early_ns
        pop = heapq.heappop
        while heap and heap[0][0] <= limit:
            t, _, d = pop(heap)
            if t != d.scheduled_ns:
                continue  # stale: the direction was rescheduled (or removed) since
            nxt = d.service(now)
            d.scheduled_ns = nxt
            if nxt is not None:
                push(heap, (nxt, next(seq), d))

    def _reschedule(self, d: Direction, now: int) -> None:
        self._service({d}, now)

    # ---- control ----------------------------------------------------------------------------

    def _on_control(self) -> None:
        while True:
            try:
                data = self.control.recv(1 << 20)
            except BlockingIOError:
                return
            if not data:
                self.running = False  # the owner has gone: stop forwarding
                return
            for message in self.inbox.feed(data):
                self._reply(self._dispatch(message))

    def _reply(self, reply: dict[str, Any]) -> None:
        self.control.setblocking(True)
        try:
            send_message(self.control, reply)
        except OSError:
            self.running = False
        finally:
            self.control.setblocking(False)

    def _dispatch(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            return {"ok": False, "error": f"unknown control operation {op!r}"}
        try:
            return {"ok": True, "result": handler(message)}
        except (NetemError, OSError, ValueError) as exc:
            return {"ok": False, "error": str(exc), "kind": type(exc).__name__}

    def _op_ping(self, message: dict[str, Any]) -> dict[str, Any]:
        return {"pid": os.getpid()}

    def _op_stop(self, message: dict[str, Any]) -> None:
        self.running = False

    def _op_add_link(self, message: dict[str, Any]) -> None:
        name: str = message["name"]
        netns: str | None = message["netns"]
        iface_a, iface_b = message["ifaces"]
        dir_ab, dir_ba = message["directions"]
        state_ab, state_ba = message["states"]
        limit_bytes = message.get("queue_limit_bytes")
        if name in self.links:
            raise NetemError(f"userspace shaper: link '{name}' already added")
        for d in (dir_ab, dir_ba):
            if d in self.directions:
                raise NetemError(f"userspace shaper: direction '{d}' already exists")
        sock_a = open_packet_socket(iface_a, netns)
        try:
            sock_b = open_packet_socket(iface_b, netns)
        except BaseException:
            sock_a.close()
            raise
        early = self.early_ns
        d_ab = Direction(dir_ab, sock_b.send, state_ab, rng=self.rng,
                         queue_limit_bytes=limit_bytes, early_ns=early)
        d_ba = Direction(dir_ba, sock_a.send, state_ba, rng=self.rng,
                         queue_limit_bytes=limit_bytes, early_ns=early)
        port_a, port_b = _Port(iface_a, sock_a, d_ab), _Port(iface_b, sock_b, d_ba)
        self.links[name] = _Link(name, netns, (port_a, port_b))
        self.directions[dir_ab] = d_ab
        self.directions[dir_ba] = d_ba
        for port in (port_a, port_b):
            fd = port.sock.fileno()
            self.ports[fd] = port
            self.ep.register(fd, select.EPOLLIN)
        now = time.monotonic_ns()
        for d, state in ((d_ab, state_ab), (d_ba, state_ba)):
            self._record({"kind": "add", "direction": d.name, "state": state,
                          "scheduled_ns": None, "applied_ns": now})

    def _op_remove_link(self, message: dict[str, Any]) -> None:
        link = self.links.pop(message["name"], None)
        if link is None:
            raise NetemError(f"userspace shaper: no link '{message['name']}'")
        for port in link.ports:
            fd = port.sock.fileno()
            self.ep.unregister(fd)
            del self.ports[fd]
            port.sock.close()
            d = port.feeds
            d.drop_all()
            d.scheduled_ns = None
            del self.directions[d.name]

    def _direction(self, name: str) -> Direction:
        d = self.directions.get(name)
        if d is None:
            known = ", ".join(sorted(self.directions)) or "none"
            raise NetemError(f"userspace shaper: unknown direction '{name}'; known: {known}")
        return d

    def _op_apply(self, message: dict[str, Any]) -> int:
        changes: dict[str, LinkState] = message["changes"]
        received = time.monotonic_ns()
        targets = [(self._direction(name), state) for name, state in changes.items()]
        for d, state in targets:
            fields = d.state.diff(state)
            d.set_state(state, received)
            self._reschedule(d, received)
            self._record({"kind": "apply", "direction": d.name, "fields": fields,
                          "scheduled_ns": message.get("scheduled_ns"),
                          "sent_ns": message.get("sent_ns"), "received_ns": received,
                          "applied_ns": time.monotonic_ns()})
        return received

    def _op_follow(self, message: dict[str, Any]) -> int:
        d = self._direction(message["direction"])
        program: TraceProgram = message["program"]
        now = time.monotonic_ns()
        t0 = message.get("start_ns") or now
        d.follow(program, t0, now)
        self._reschedule(d, now)
        self._record({"kind": "follow", "direction": d.name, "trace": program.name,
                      "period_ns": program.period_ns, "t0_ns": t0,
                      "scheduled_ns": message.get("start_ns"), "applied_ns": time.monotonic_ns()})
        return t0

    def _op_unfollow(self, message: dict[str, Any]) -> None:
        d = self._direction(message["direction"])
        now = time.monotonic_ns()
        d.unfollow(now)
        self._reschedule(d, now)
        self._record({"kind": "unfollow", "direction": d.name, "scheduled_ns": None,
                      "applied_ns": now})

    def _op_counters(self, message: dict[str, Any]) -> dict[str, Any]:
        directions: dict[str, Any] = {}
        for link in self.links.values():
            for port in link.ports:
                _packets, drops = kernel_drops(port.sock)
                port.rx_kernel_drops += drops
                summary = port.feeds.counters.summary()
                summary["rx_kernel_drops"] = port.rx_kernel_drops
                summary["queued_packets"] = len(port.feeds.queue)
                summary["in_flight_packets"] = len(port.feeds.line)
                directions[port.feeds.name] = summary
        times = os.times()
        return {"directions": directions, "cpu_s": times.user + times.system,
                "pid": os.getpid(), "events_dropped": self.events_dropped,
                "max_loop_busy_us": self.max_busy_ns / 1e3,
                "max_timer_wake_us": self.max_wake_ns / 1e3,
                "timer_advance_us": self.advance_ns / 1e3}

    def _op_events(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        out = list(self.events)
        if message.get("clear"):
            self.events.clear()
        return out

    def _record(self, event: dict[str, Any]) -> None:
        if len(self.events) == self.events.maxlen:
            self.events_dropped += 1
        self.events.append(event)

    def close(self) -> None:
        for port in list(self.ports.values()):
            port.sock.close()
        self.ports.clear()
        self.timer.close()
        self.ep.close()
        self.control.close()


def _prctl_setup() -> None:
    """Die with the owner (SIGKILL if it dies without closing us) and ask for 1 ns timer
    slack: the default 50 us would add straight to every frame's delay."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="userspace shaper worker (started by "
                                     "netem.shapers.userspace.UserspaceShaper)")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--early-us", type=int, default=20)
    parser.add_argument("--cpu", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    parser.add_argument("--rt-priority", type=int, default=0)
    args = parser.parse_args(argv)
    _prctl_setup()
    if args.parent_pid is not None and os.getppid() != args.parent_pid:
        return 1  # the parent died before we could ask to die with it
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the owner stops us; Ctrl-C goes to it
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    if args.rt_priority:
        # Wake-ups must preempt ordinary tasks or frames leave milliseconds late on a busy
        # host; the kernel's RT throttling still leaves others 5% of the CPU.
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt_priority))
    control = socket.socket(fileno=args.control_fd)
    worker = Worker(control, seed=args.seed, early_ns=args.early_us * 1000)
    gc.freeze()  # nothing the loop allocates forms cycles; keep the collector off its path
    gc.set_threshold(100_000, 50, 100)
    try:
        worker._reply({"ok": True, "result": {"pid": os.getpid()}})
        worker.run()
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
