"""UserspaceShaper: trace-driven link emulation by a forwarding process, for kernels without
netem (delay, jitter, loss) and for exact replay of mahimahi delivery-opportunity traces.

The shaper object owns one worker process (netem.shapers.userspace_worker) and a control
socket to it; it never touches interfaces itself. Each link is a pair of interfaces the worker
bridges: frames entering iface_a leave by iface_b (direction `a_to_b`) and the other way round.
The peers of those interfaces must not hand the worker offloaded frames: turn off tx
checksumming, TSO and GSO on them (see `disable_offloads`), as for any AF_PACKET forwarder.

>>> with UserspaceShaper() as shaper:                                   # doctest: +SKIP
...     shaper.add_link(UserspaceLink("gs1", "gs1-t", "gs1-g", a_to_b="gs1/up",
...                                   b_to_a="gs1/down"),
...                     LinkState(rate_bps=20_000_000, delay_us=20_000),
...                     LinkState(rate_bps=100_000_000, delay_us=20_000))
...     shaper.apply("gs1/down", LinkState(rate_bps=50_000_000, delay_us=30_000))
...     shaper.counters()["gs1/down"]["forwarded_packets"]
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netem.errors import LinkStateError, NetemError, UnsupportedError
from netem.linkstate import LinkState
from netem.shapers.base import Shaper
from netem.shapers.userspace_program import TraceProgram
from netem.shapers.userspace_protocol import recv_message, send_message

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent
_ERRORS: dict[str, type[NetemError]] = {
    "LinkStateError": LinkStateError,
    "UnsupportedError": UnsupportedError,
}


@dataclass(frozen=True)
class UserspaceLink:
    """Two interfaces (in `netns`, or the shaper's own namespace) the worker bridges.

    a_to_b / b_to_a: the direction keys (e.g. "gs1/up", "gs1/down") used by apply/counters.
    """

    name: str
    iface_a: str
    iface_b: str
    a_to_b: str
    b_to_a: str
    netns: str | None = None

    def __post_init__(self) -> None:
        if self.iface_a == self.iface_b:
            raise NetemError(f"link {self.name}: iface_a and iface_b are both '{self.iface_a}', "
                             "expected two interfaces")
        if self.a_to_b == self.b_to_a:
            raise NetemError(f"link {self.name}: both directions are named '{self.a_to_b}'")


class UserspaceShaper(Shaper):
    """Shaper whose links are forwarded by a separate userspace process (started here).

    seed: seeds loss and jitter (None: from the OS); cpu: pin the worker to this CPU;
    early_us: how early a due frame may leave to save a wake-up (bounds timing error);
    rt_priority: SCHED_FIFO priority of the worker (0: ordinary scheduling), so its wake-ups
    are not delayed by busy neighbours.
    Raises UnsupportedError when the worker cannot start (e.g. not root: AF_PACKET needs
    CAP_NET_RAW).
    """

    def __init__(
        self, *, seed: int | None = None, cpu: int | None = None, early_us: int = 20,
        rt_priority: int = 10, start_timeout_s: float = 10.0,
    ) -> None:
        self._states: dict[str, LinkState] = {}
        self._links: dict[str, UserspaceLink] = {}
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr = tempfile.TemporaryFile(prefix="ushaper-")
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = parent_sock
        argv = [sys.executable, "-m", "netem.shapers.userspace_worker",
                "--control-fd", str(child_sock.fileno()), "--early-us", str(int(early_us)),
                "--parent-pid", str(os.getpid())]
        if seed is not None:
            argv += ["--seed", str(int(seed))]
        if cpu is not None:
            argv += ["--cpu", str(int(cpu))]
        if rt_priority:
            argv += ["--rt-priority", str(int(rt_priority))]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p
        )
        try:
            self._proc = subprocess.Popen(
                argv, pass_fds=(child_sock.fileno(),), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=self._stderr, env=env,
                start_new_session=True,
            )
        finally:
            child_sock.close()
        self._sock.settimeout(start_timeout_s)
        try:
            hello = recv_message(self._sock)
        except (NetemError, TimeoutError) as exc:
            self.close()
            raise UnsupportedError(
                f"userspace shaper worker did not start: {exc}; {self._stderr_tail()}"
            ) from exc
        self._sock.settimeout(None)
        self.pid: int = hello["result"]["pid"]

    # ---- links ------------------------------------------------------------------------------

    def add_link(
        self, link: UserspaceLink, a_to_b: LinkState, b_to_a: LinkState, *,
        queue_limit_bytes: int | None = None,
    ) -> None:
        """Start forwarding between the link's interfaces with these states.

        queue_limit_bytes: a byte limit on each direction's drop-tail queue, on top of
        LinkState.queue_limit_packets. Raises NetemError when a name is taken or an interface
        or namespace does not exist.
        """
        if link.name in self._links:
            raise NetemError(f"userspace shaper: link '{link.name}' already added")
        for d in (link.a_to_b, link.b_to_a):
            if d in self._states:
                raise NetemError(f"userspace shaper: direction '{d}' already exists")
        if queue_limit_bytes is not None and queue_limit_bytes < 1:
            raise NetemError(f"link {link.name}: queue_limit_bytes={queue_limit_bytes}, "
                             "expected >= 1")
        self._call({"op": "add_link", "name": link.name, "netns": link.netns,
                    "ifaces": (link.iface_a, link.iface_b),
                    "directions": (link.a_to_b, link.b_to_a), "states": (a_to_b, b_to_a),
                    "queue_limit_bytes": queue_limit_bytes})
        self._links[link.name] = link
        self._states[link.a_to_b] = a_to_b
        self._states[link.b_to_a] = b_to_a

    def remove_link(self, name: str) -> None:
        """Stop forwarding a link; its queued and in-flight frames are discarded."""
        link = self._links.get(name)
        if link is None:
            raise NetemError(f"userspace shaper: no link '{name}'; known: "
                             f"{', '.join(sorted(self._links)) or 'none'}")
        self._call({"op": "remove_link", "name": name})
        del self._links[name]
        self._states.pop(link.a_to_b, None)
        self._states.pop(link.b_to_a, None)

    # ---- Shaper contract -------------------------------------------------------------------

    def apply_many(
        self, changes: Mapping[str, LinkState], *, scheduled_ns: int | None = None
    ) -> None:
        """Apply new states in one control message (directions whose state is unchanged are
        not sent). scheduled_ns: when the caller meant it to apply (recorded beside the
        applied time, see events())."""
        changed: dict[str, LinkState] = {}
        for name, state in changes.items():
            old = self._known(name)
            if old.diff(state):
                changed[name] = state
        if not changed:
            return
        self._call({"op": "apply", "changes": changed, "scheduled_ns": scheduled_ns,
                    "sent_ns": time.monotonic_ns()})
        self._states.update(changed)

    def current(self, direction: str) -> LinkState:
        return self._known(direction)

    def follow(self, direction: str, program: TraceProgram, *, start_ns: int | None = None) -> int:
        """Replay `program` on a direction inside the worker, its offset 0 at monotonic time
        start_ns (None: now). The trace's capacity, delay and loss override the LinkState's
        while followed. Returns the t0_ns the worker used."""
        self._known(direction)
        return int(self._call({"op": "follow", "direction": direction, "program": program,
                               "start_ns": start_ns}))

    def unfollow(self, direction: str) -> None:
        """Stop replaying a trace: the direction goes back to its LinkState."""
        self._known(direction)
        self._call({"op": "unfollow", "direction": direction})

    def counters(self) -> dict[str, dict[str, Any]]:
        """Per direction: received/forwarded packets and bytes, drops (queue, loss, tx,
        rx_kernel_drops), queue delay and send lateness summaries in us, opportunities used."""
        return self._call({"op": "counters"})["directions"]

    def worker_stats(self) -> dict[str, Any]:
        """The worker's pid, CPU seconds used so far (user + system), and its loop's health:
        longest iteration and latest timer wake-up (us), the current timer advance (us)."""
        reply = self._call({"op": "counters"})
        return {k: v for k, v in reply.items() if k != "directions"}

    def events(self, *, clear: bool = False) -> list[dict[str, Any]]:
        """Changes applied, oldest first: kind (add/apply/follow/unfollow), direction, fields,
        scheduled_ns (None when unscheduled), applied_ns; follow records carry t0_ns."""
        return list(self._call({"op": "events", "clear": clear}))

    def close(self) -> None:
        """Stop the worker (politely, then SIGKILL) and release the control channel."""
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            try:
                self._sock.settimeout(1.0)
                send_message(self._sock, {"op": "stop"})
                recv_message(self._sock)
            except (OSError, NetemError):
                pass  # the worker is killed below either way
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=5.0)
        self._sock.close()
        self._stderr.close()

    # ---- internals -------------------------------------------------------------------------

    def _known(self, direction: str) -> LinkState:
        state = self._states.get(direction)
        if state is None:
            known = ", ".join(sorted(self._states)) or "none"
            raise NetemError(f"userspace shaper: unknown direction '{direction}'; known: {known}")
        return state

    def _call(self, message: dict[str, Any]) -> Any:
        if self._closed:
            raise NetemError("userspace shaper: already closed")
        try:
            send_message(self._sock, message)
            reply = recv_message(self._sock)
        except (OSError, NetemError) as exc:
            raise NetemError(
                f"userspace shaper worker (pid {self._proc.pid if self._proc else '?'}) failed "
                f"during {message['op']}: {exc}; {self._stderr_tail()}"
            ) from exc
        if not reply.get("ok"):
            cls = _ERRORS.get(reply.get("kind", ""), NetemError)
            raise cls(reply.get("error", "userspace shaper worker refused the request"))
        return reply.get("result")

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return "worker stderr unavailable"
        return f"worker stderr: {text[-2000:]}" if text else "worker stderr empty"
