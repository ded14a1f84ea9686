"""The satellite half of `spaceverse`: W^s on board, contact-gated offloads, answers collected.

Owns the on-board loop and its two helpers:
- the board: for each question in order, run the method's on-board rule (nodes.spaceverse
  .methods), hold the result until the emulated device time has passed (at the run's speed),
  then keep the answer or queue the offload;
- the sender thread: sends queued offloads to the ground over the data plane, only while this
  satellite is in contact with the ground station (the pushed contact schedule), retrying
  after a failed send once a contact is open again;
- the answer thread: receives the ground's answers (topic `spaceverse/ans`).

Per sample it records the decision, exit stage, bytes, the latency split (on-board device
time, wait for contact, transfer, ground queue and compute, reply) and correctness; latency
within contact = on-board + transfer + ground (the paper's), time to answer = from the start
of the sample's on-board work to the answer's arrival (includes the wait for a contact).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodes.errors import DataPlaneError, RecvTimeoutError
from nodes.workloads.base import NodeContext
from nodes.workloads.spaceverse_metrics import hold_until

REQ_TOPIC = "spaceverse/req"
ANS_TOPIC = "spaceverse/ans"


def norm_answer(text: str) -> str:
    """The comparison form of an answer (case and spaces ignored), as the pipeline scores."""
    return " ".join(str(text).lower().split())


@dataclass
class SatelliteConfig:
    """What the satellite half needs beyond the models (parsed from the options)."""

    method: str
    ground: str
    questions: list[dict[str, Any]]
    send_timeout_s: float = 30.0
    answer_timeout_s: float = 60.0
    hold: bool = True


class SatelliteSide:
    """See the module docstring. `build_runner()` loads the models (in the job's thread) and
    returns an `OnboardRunner`; `load_image(question)` returns the question's image tensor."""

    def __init__(self, ctx: NodeContext, cfg: SatelliteConfig,
                 build_runner: Callable[[], Any], load_image: Callable[[dict[str, Any]], Any]):
        self.ctx, self.cfg = ctx, cfg
        self._build_runner, self._load_image = build_runner, load_image
        self._lock = threading.Lock()
        self.records: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.load_s = 0.0
        self.warmup_s = 0.0
        self._outbox: queue.Queue[str | None] = queue.Queue()
        self._sent_all = threading.Event()
        self._halt = threading.Event()  # ends the helper threads (set when run() returns)
        self.runner: Any = None

    # bookkeeping ------------------------------------------------------------------------------
    def _metric(self, op: str, name: str, amount: float, **labels: str) -> None:
        getattr(self.ctx.metrics, op)(name, amount, method=self.cfg.method, **labels)

    def _answered(self, rec: dict[str, Any], where: str) -> None:
        """Score an answer and update the live metrics (caller holds no lock)."""
        rec["correct"] = norm_answer(rec["answer"]) == norm_answer(rec["reference"])
        self._metric("inc", "leo_spaceverse_answered_total", 1, where=where)
        if rec["correct"]:
            self._metric("inc", "leo_spaceverse_correct_total", 1)
        m = self.ctx.metrics
        answered = sum(m.value("leo_spaceverse_answered_total", method=self.cfg.method, where=w)
                       for w in ("board", "ground"))
        correct = m.value("leo_spaceverse_correct_total", method=self.cfg.method)
        m.set("leo_spaceverse_accuracy_ratio", correct / answered if answered else 0.0,
              method=self.cfg.method)
        for part in ("onboard", "wait_contact", "transfer", "ground", "reply"):
            value = rec.get(f"{part}_s")
            if value is not None and part != "ground":
                self._metric("inc", "leo_spaceverse_latency_seconds_total", max(0.0, value),
                             part=part)
        if rec.get("ground_device_s") is not None:
            self._metric("inc", "leo_spaceverse_latency_seconds_total", rec["ground_device_s"],
                         part="ground")

    # the three loops --------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> bool:
        t0 = time.monotonic()
        self.runner = self._build_runner()
        self.load_s = time.monotonic() - t0
        if self.cfg.questions:  # first-call costs (FLOP counts, allocator) stay out of timing
            t0 = time.monotonic()
            q = self.cfg.questions[0]
            self.runner.run(self._load_image(q), q["prompt"])
            self.warmup_s = time.monotonic() - t0
        speed = self.ctx.run_context().speed
        sender = threading.Thread(target=self._send_loop, args=(self._halt,), daemon=True,
                                  name="spaceverse-send")
        answers = threading.Thread(target=self._answer_loop, args=(self._halt,), daemon=True,
                                   name="spaceverse-answers")
        sender.start()
        answers.start()
        try:
            for q in self.cfg.questions:
                if stop.is_set():
                    return False
                self._onboard(q, speed, stop)
            self._outbox.put(None)
            return self._wait_answers(stop)
        finally:
            self._halt.set()
            sender.join(timeout=self.cfg.send_timeout_s + 2)
            answers.join(timeout=2)

    def _onboard(self, q: dict[str, Any], speed: float, stop: threading.Event) -> None:
        start_ns, start_unix_ns = time.monotonic_ns(), time.time_ns()
        image = self._load_image(q)
        out = self.runner.run(image, q["prompt"])
        held_s = hold_until(start_ns, out.device_s, speed, stop) if self.cfg.hold else 0.0
        stage = str(out.exit_stage + 1) if out.exit_stage >= 0 else "-"
        rec: dict[str, Any] = {
            "sample": q["id"], "task": q.get("task", ""), "qtype": q.get("qtype", ""),
            "method": self.cfg.method, "offload": out.offload, "exit_stage": out.exit_stage,
            "confidences": [round(c, 4) for c in out.confidences], "tokens_onboard": out.tokens,
            "bytes_offloaded": len(out.payload), "bytes_sent": 0, "answer": out.answer,
            "reference": q["answer"], "correct": False, "status": "kept",
            "onboard_s": out.device_s, "onboard_host_s": out.host_s, "onboard_held_s": held_s,
            "onboard_timing": out.timing_label, "wait_contact_s": None, "transfer_s": None,
            "ground_queue_s": None, "ground_device_s": None, "ground_host_s": None,
            "ground_timing": None, "reply_s": None, "send_attempts": 0,
            "t_start_unix_ns": start_unix_ns, "t_ready_unix_ns": time.time_ns(),
            "t_send_unix_ns": None, "t_peer_recv_unix_ns": None, "t_answer_unix_ns": None,
            "latency_s": None, "time_to_answer_s": None}
        self._metric("inc", "leo_spaceverse_decisions_total", 1, stage=stage,
                     decision="offload" if out.offload else "keep")
        with self._lock:
            self.records[q["id"]] = rec
            if out.offload:
                rec["status"] = "queued"
                rec["_payload"] = out.payload
                rec["_confidence"] = out.confidences[0] if out.confidences else 0.0
                rec["_onboard_answer"] = out.answer
        if out.offload:
            self._outbox.put(q["id"])
            return
        rec["latency_s"] = out.device_s
        rec["time_to_answer_s"] = (rec["t_ready_unix_ns"] - start_unix_ns) / 1e9
        self._answered(rec, "board")

    def _send_loop(self, stop: threading.Event) -> None:
        """Send queued offloads in order, only while in contact with the ground."""
        from nodes.spaceverse.envelope import encode_request

        dp = self.ctx.require_dataplane()
        schedule = self.ctx.contacts()
        try:
            while not stop.is_set():
                try:
                    sample = self._outbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                if sample is None:
                    return
                with self._lock:
                    rec = self.records[sample]
                    q = next(x for x in self.cfg.questions if x["id"] == sample)
                body = encode_request({"sample": sample, "prompt": q["prompt"],
                                       "method": self.cfg.method,
                                       "t_ready_unix_ns": rec["t_ready_unix_ns"]},
                                      rec["_payload"])
                while not stop.is_set():
                    if schedule.wait_for_contact(stop, self.cfg.ground) is None:
                        with self._lock:
                            rec["status"] = "no-contact"
                        if not stop.is_set():
                            self._fail("no contact with the ground is left in the run")
                        return
                    rec["send_attempts"] += 1
                    try:
                        receipt = dp.send(self.cfg.ground, REQ_TOPIC, body,
                                          timeout_s=self.cfg.send_timeout_s)
                    except DataPlaneError as exc:
                        self._fail(f"sample {sample}: send attempt {rec['send_attempts']}: {exc}")
                        stop.wait(0.5)
                        continue
                    transfer_s = (receipt.t_peer_recv_unix_ns - receipt.t_send_unix_ns) / 1e9
                    with self._lock:
                        rec.update(status="sent", bytes_sent=len(body),
                                   t_send_unix_ns=receipt.t_send_unix_ns,
                                   t_peer_recv_unix_ns=receipt.t_peer_recv_unix_ns,
                                   transfer_s=transfer_s,
                                   wait_contact_s=(receipt.t_send_unix_ns
                                                   - rec["t_ready_unix_ns"]) / 1e9)
                    self.runner.observe_transfer(len(body), transfer_s)
                    self._metric("inc", "leo_spaceverse_offloaded_bytes_total", len(body))
                    break
        finally:
            self._sent_all.set()

    def _fail(self, message: str) -> None:
        with self._lock:
            if len(self.errors) < 100:
                self.errors.append(message)

    def _answer_loop(self, stop: threading.Event) -> None:
        from nodes.spaceverse.envelope import decode_answer
        from nodes.spaceverse.errors import WireFormatError

        dp = self.ctx.require_dataplane()
        while not stop.is_set():
            try:
                msg = dp.recv(ANS_TOPIC, timeout_s=0.2)
            except RecvTimeoutError:
                continue
            try:
                ans = decode_answer(msg.payload)
            except WireFormatError as exc:
                self._fail(f"answer from {msg.src}: {exc}")
                continue
            self._take_answer(ans, msg.t_send_unix_ns, msg.t_recv_unix_ns)

    def _take_answer(self, ans: dict[str, Any], t_send_ns: int, t_recv_ns: int) -> None:
        with self._lock:
            rec = self.records.get(str(ans["sample"]))
            if rec is None or rec["status"] == "answered":
                return
            rec.update(status="answered", answer=str(ans["answer"]),
                       ground_queue_s=ans.get("ground_queue_s"),
                       ground_device_s=ans.get("ground_device_s"),
                       ground_host_s=ans.get("ground_host_s"),
                       ground_timing=ans.get("ground_timing"),
                       reply_s=(t_recv_ns - t_send_ns) / 1e9, t_answer_unix_ns=t_recv_ns)
            rec["latency_s"] = (rec["onboard_s"] + (rec["transfer_s"] or 0.0)
                                + float(rec["ground_device_s"] or 0.0))
            rec["time_to_answer_s"] = (t_recv_ns - rec["t_start_unix_ns"]) / 1e9
            conf, onboard_answer = rec["_confidence"], rec["_onboard_answer"]
        if self.cfg.method == "ai-rg":
            self.runner.observe_ground(float(ans.get("ground_device_s") or 0.0))
            self.runner.observe_answer(conf, onboard_answer, str(ans["answer"]))
        self._answered(rec, "ground")

    def _wait_answers(self, stop: threading.Event) -> bool:
        """True once every offload is answered; False when stopped, out of contacts, or no
        answer came `answer_timeout_s` after the last send."""
        while not stop.is_set():
            with self._lock:
                statuses = [r["status"] for r in self.records.values()]
                last_send = max((r["t_send_unix_ns"] or 0 for r in self.records.values()),
                                default=0)
            if all(s in ("kept", "answered") for s in statuses):
                return True
            if self._sent_all.is_set():  # the sender ended: what is queued stays unsent
                waited_s = (time.time_ns() - last_send) / 1e9
                if "sent" not in statuses or waited_s > self.cfg.answer_timeout_s:
                    with self._lock:
                        for r in self.records.values():
                            if r["status"] == "queued":
                                r["status"] = "no-contact"
                    return False
            stop.wait(0.1)
        return False

    # results ----------------------------------------------------------------------------------
    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{k: v for k, v in r.items() if not k.startswith("_")}
                    for r in self.records.values()]

    def summary(self) -> dict[str, Any]:
        rows = self.events()
        answered = [r for r in rows if r["status"] in ("kept", "answered")]
        offloaded = [r for r in rows if r["offload"]]

        def mean(key: str, rs: list[dict[str, Any]]) -> float | None:
            vals = [float(r[key]) for r in rs if r.get(key) is not None]
            return sum(vals) / len(vals) if vals else None

        with self._lock:
            errors = list(self.errors)
        return {"method": self.cfg.method, "ground": self.cfg.ground,
                "questions": len(self.cfg.questions), "processed": len(rows),
                "answered": len(answered), "correct": sum(r["correct"] for r in answered),
                "accuracy": (sum(r["correct"] for r in answered) / len(answered)
                             if answered else None),
                "offloaded": len(offloaded),
                "bytes_offloaded": sum(r["bytes_offloaded"] for r in offloaded
                                       if r["status"] in ("sent", "answered")),
                "bytes_sent": sum(r["bytes_sent"] for r in rows),
                "unanswered": {s: sum(r["status"] == s for r in rows)
                               for s in ("queued", "sent", "no-contact")},
                "mean_latency_s": mean("latency_s", answered),
                "mean_time_to_answer_s": mean("time_to_answer_s", answered),
                "mean_onboard_s": mean("onboard_s", rows),
                "mean_onboard_host_s": mean("onboard_host_s", rows),
                "model_load_s": self.load_s, "warmup_s": self.warmup_s, "errors": errors}
