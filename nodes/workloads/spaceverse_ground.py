"""The ground half of `spaceverse`: receive offloads, rebuild, run W^g, hold, answer back.

Owns three loops: the receiver (data-plane topic `spaceverse/req`, from any satellite) hands
requests to `workers` compute threads (one per emulated ground accelerator); each rebuilds the
image from its SVRW bytes, runs W^g, holds the answer until the emulated ground time has passed
(at the run's speed) and queues the answer; the reply thread sends each answer back to its
satellite (topic `spaceverse/ans`), waiting for a contact with it and retrying when a send
fails, up to `reply_timeout_s`. Every request is recorded, answered back or not.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from nodes.dataplane import Message
from nodes.errors import DataPlaneError, RecvTimeoutError
from nodes.workloads.base import NodeContext
from nodes.workloads.spaceverse_metrics import hold_until
from nodes.workloads.spaceverse_satellite import ANS_TOPIC, REQ_TOPIC


class GroundSide:
    """See the module docstring. `build_runner()` loads W^g (in the job's thread) and returns a
    `GroundRunner`."""

    def __init__(self, ctx: NodeContext, build_runner: Callable[[], Any], *, workers: int = 1,
                 hold: bool = True, reply_timeout_s: float = 60.0, send_timeout_s: float = 10.0):
        self.ctx = ctx
        self._build_runner = build_runner
        self.workers, self.hold = workers, hold
        self.reply_timeout_s, self.send_timeout_s = reply_timeout_s, send_timeout_s
        self._lock = threading.Lock()
        self.records: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.load_s = 0.0
        self._work: queue.Queue[Message | None] = queue.Queue()
        self._replies: queue.Queue[tuple[dict[str, Any], bytes] | None] = queue.Queue()
        self.runner: Any = None

    def _fail(self, message: str) -> None:
        with self._lock:
            if len(self.errors) < 100:
                self.errors.append(message)

    def run(self, stop: threading.Event) -> bool:
        t0 = time.monotonic()
        self.runner = self._build_runner()
        self.load_s = time.monotonic() - t0
        speed = self.ctx.run_context().speed
        halt = threading.Event()
        self._warm_up()
        threads = [threading.Thread(target=self._compute_loop, args=(halt, speed), daemon=True,
                                    name=f"spaceverse-ground-{i}") for i in range(self.workers)]
        threads.append(threading.Thread(target=self._reply_loop, args=(halt,), daemon=True,
                                        name="spaceverse-reply"))
        for t in threads:
            t.start()
        dp = self.ctx.require_dataplane()
        try:
            while not stop.is_set():
                try:
                    self._work.put(dp.recv(REQ_TOPIC, timeout_s=0.2))
                except RecvTimeoutError:
                    continue
        finally:
            halt.set()
            for t in threads:
                t.join(timeout=self.send_timeout_s + 2)
        return False  # the ground serves until it is stopped

    def _warm_up(self) -> None:
        """One answer to a grey image, so first-call costs stay out of the first request."""
        import torch

        from nodes.spaceverse.methods import raw_wire

        self.runner.answer(raw_wire(torch.full((3, 64, 64), 0.5)), "warm up")

    def _compute_loop(self, halt: threading.Event, speed: float) -> None:
        from nodes.spaceverse.envelope import decode_request, encode_answer
        from nodes.spaceverse.errors import SpaceVerseError

        while not halt.is_set():
            try:
                msg = self._work.get(timeout=0.2)
            except queue.Empty:
                continue
            if msg is None:
                return
            start_ns, start_unix_ns = time.monotonic_ns(), time.time_ns()
            try:
                meta, image_wire = decode_request(msg.payload)
                out = self.runner.answer(image_wire, str(meta["prompt"]))
            except SpaceVerseError as exc:
                self._fail(f"request from {msg.src}: {exc}")
                continue
            held_s = hold_until(start_ns, out.device_s, speed, halt) if self.hold else 0.0
            method = str(meta.get("method", ""))
            rec = {"sample": str(meta["sample"]), "src": msg.src, "method": method,
                   "bytes": len(msg.payload), "answer": out.answer, "tokens": out.tokens,
                   "image_hw": list(out.image_hw),
                   "ground_queue_s": (start_unix_ns - msg.t_recv_unix_ns) / 1e9,
                   "ground_device_s": out.device_s, "ground_host_s": out.host_s,
                   "ground_held_s": held_s, "ground_timing": out.timing_label,
                   "t_recv_unix_ns": msg.t_recv_unix_ns, "t_sent_unix_ns": msg.t_send_unix_ns,
                   "t_done_unix_ns": time.time_ns(), "reply": "pending", "reply_attempts": 0}
            with self._lock:
                self.records.append(rec)
            self.ctx.metrics.inc("leo_spaceverse_ground_requests_total", 1, method=method)
            self.ctx.metrics.inc("leo_spaceverse_ground_compute_seconds_total", out.device_s,
                                 method=method)
            answer = {k: rec[k] for k in ("sample", "answer", "tokens", "ground_queue_s",
                                          "ground_device_s", "ground_host_s", "ground_timing")}
            self._replies.put((rec, encode_answer(answer)))

    def _reply_loop(self, halt: threading.Event) -> None:
        dp = self.ctx.require_dataplane()
        schedule = self.ctx.contacts()
        while not halt.is_set():
            try:
                item = self._replies.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is None:
                return
            rec, body = item
            deadline = time.monotonic() + self.reply_timeout_s
            while not halt.is_set():
                rec["reply_attempts"] += 1
                try:
                    dp.send(rec["src"], ANS_TOPIC, body, timeout_s=self.send_timeout_s)
                    rec["reply"] = "sent"
                    break
                except DataPlaneError as exc:
                    if time.monotonic() > deadline:
                        rec["reply"] = "failed"
                        self._fail(f"answer of {rec['sample']} to {rec['src']}: {exc}")
                        break
                    if schedule.next_contact(time.time(), rec["src"]) is not None:
                        halt.wait(min(1.0, max(0.2, schedule.next_contact(
                            time.time(), rec["src"]).start_unix_s - time.time())))
                    else:
                        halt.wait(0.5)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self.records]

    def summary(self) -> dict[str, Any]:
        rows = self.events()
        by_src: dict[str, int] = {}
        for r in rows:
            by_src[r["src"]] = by_src.get(r["src"], 0) + 1
        with self._lock:
            errors = list(self.errors)

        def mean(key: str) -> float | None:
            return sum(float(r[key]) for r in rows) / len(rows) if rows else None

        return {"requests": len(rows), "bytes_received": sum(r["bytes"] for r in rows),
                "by_satellite": by_src,
                "replies": {s: sum(r["reply"] == s for r in rows)
                            for s in ("sent", "pending", "failed")},
                "mean_ground_device_s": mean("ground_device_s"),
                "mean_ground_host_s": mean("ground_host_s"),
                "mean_ground_queue_s": mean("ground_queue_s"), "workers": self.workers,
                "model_load_s": self.load_s, "errors": errors}
