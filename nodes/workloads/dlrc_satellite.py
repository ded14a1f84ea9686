"""The satellite half of `dlrc`: crop, analyse, exchange signatures over the ISLs, arbitrate,
encode, and downlink the payload during a ground contact.

Owns one satellite's sync round and downlink; the codec work is nodes.dlrc's. Times: each stage
measured here (`time.perf_counter`, on this node's CPU), and, with the `accelerator` option,
the transforms' time emulated for that board through nodes.compute's roofline (labelled
`emulated`; the entropy coder is never emulated, see nodes/dlrc/work.py).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from nodes.dlrc.arbiter import SatelliteState, arbitrate, global_map, priority_order
from nodes.dlrc.exchange import SignatureMessage
from nodes.dlrc.mapcodec import raw_bytes
from nodes.dlrc.wire import SatellitePayload
from nodes.errors import DataPlaneError, RecvTimeoutError, WorkloadError
from nodes.workloads.base import NodeContext
from nodes.workloads.dlrc_settings import (
    PAYLOAD_TOPIC,
    SIG_TOPIC,
    DlrcSettings,
    load_views,
    to_tensor,
)

RETRY_S = 0.5
SEND_TIMEOUT_S = 5.0


class SatelliteSide:
    """One observer's whole job; `summary()` and `events()` are readable while it runs."""

    def __init__(self, ctx: NodeContext, s: DlrcSettings, *, state: SatelliteState,
                 downlink: str, accelerator: str | None, plain_baseline: bool,
                 sync_timeout_s: float):
        self.ctx, self.s, self.state = ctx, s, state
        self.downlink, self.accelerator = downlink, accelerator
        self.plain_baseline, self.sync_timeout_s = plain_baseline, sync_timeout_s
        self._lock = threading.Lock()
        self._summary: dict[str, Any] = {"sat_id": state.sat_id, "stage": "starting"}
        self._events: list[dict[str, Any]] = []

    # bookkeeping ----------------------------------------------------------------------------
    def _set(self, **values: Any) -> None:
        with self._lock:
            self._summary.update(values)

    def _event(self, **values: Any) -> None:
        with self._lock:
            self._events.append(values)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._summary)

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events]

    # the job --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> bool:
        import torch

        from nodes.dlrc.pipeline import DlrcConfig, SatelliteEncoder
        from nodes.models.codecs import store

        torch.set_num_threads(1)  # one core per job; timings comparable across nodes
        s, me = self.s, self.ctx.name
        model, _prov = store.load(s.models, s.codec, s.lmbda)
        x = to_tensor(load_views(s)[me])
        seen = to_tensor(load_views(s, with_margin=True)[me]) if s.margin_px else x
        config = DlrcConfig(s.rounds, s.seed, s.representative, s.margin_px)
        enc = SatelliteEncoder(model, s.codec, config)
        t1: dict[str, float] = {}
        with torch.no_grad():
            local = enc.analyse(self.state.sat_id, seen, t1)
        positions = local.analysis.y.shape[2] * local.analysis.y.shape[3]
        self._set(stage="exchanging", positions=positions,
                  local_unique=int(len(local.signature_list)))
        lists = self._exchange(stop, SignatureMessage(self.state, local.signature_list))
        if lists is None:
            return False
        t0 = time.perf_counter()
        order = priority_order([m.state for m in lists.values()], s.priority)
        arb = arbitrate({sid: m.signatures for sid, m in lists.items()}, order)
        t_arb = time.perf_counter() - t0
        plan = arb.plans[self.state.sat_id]
        t2: dict[str, float] = {}
        with torch.no_grad():
            payload, _ = enc.encode(local, plan, t2)
        self._account(model, x, seen, local, plan, payload,
                      {**t1, **t2, "arbitrate_s": t_arb}, order, arb.total_vectors)
        return self._downlink(stop, payload)

    def _exchange(self, stop: threading.Event,
                  mine: SignatureMessage) -> dict[int, SignatureMessage] | None:
        """Sends this satellite's list to every other observer (in parallel) and collects
        theirs; None when stopped first. Every send is acknowledged by its receiver."""
        dp = self.ctx.require_dataplane()
        s, me = self.s, self.ctx.name
        peers = [n for n in s.satellites if n != me]
        blob = mine.to_bytes()
        t_start = time.time_ns()

        deadline = time.monotonic() + self.sync_timeout_s

        def send(peer: str) -> Any:
            """Until acknowledged: a route may not exist yet (or be changing) at first."""
            while True:
                try:
                    receipt = dp.send(peer, SIG_TOPIC, blob, timeout_s=SEND_TIMEOUT_S)
                    break
                except DataPlaneError as exc:
                    self._event(what="signatures-send-failed", peer=peer, error=str(exc),
                                t_unix_s=time.time())
                    if time.monotonic() > deadline:
                        raise
                    if stop.wait(RETRY_S):
                        return None
            self.ctx.metrics.inc("leo_dlrc_signature_bytes_total", receipt.bytes, peer=peer)
            return receipt

        lists = {mine.sat_id: mine}
        pool = ThreadPoolExecutor(max_workers=max(1, len(peers)))
        try:
            futures = {peer: pool.submit(send, peer) for peer in peers}
            while len(lists) < len(s.satellites) or not all(f.done() for f in futures.values()):
                if stop.is_set():
                    return None
                for f in futures.values():
                    if f.done() and f.exception() is not None:
                        raise f.exception()  # type: ignore[misc]
                if time.monotonic() > deadline:
                    missing = [s.node_of[i] for i in s.node_of if i not in lists]
                    raise WorkloadError(f"workload dlrc on {me}: no signature list from "
                                        f"{', '.join(missing)} within {self.sync_timeout_s} s")
                if len(lists) == len(s.satellites):
                    stop.wait(0.01)
                    continue
                try:
                    msg = dp.recv(SIG_TOPIC, timeout_s=0.2)
                except RecvTimeoutError:
                    continue
                parsed = SignatureMessage.from_bytes(msg.payload, msg.src)
                if msg.src not in peers or s.sat_id(msg.src) != parsed.sat_id:
                    raise WorkloadError(f"workload dlrc on {me}: signature list from "
                                        f"{msg.src} claims satellite id {parsed.sat_id}; "
                                        f"observers are {s.satellites}")
                lists[parsed.sat_id] = parsed
                self._event(what="signatures-received", peer=msg.src,
                            bytes=len(msg.payload), signatures=int(len(parsed.signatures)),
                            t_send_unix_ns=msg.t_send_unix_ns, t_recv_unix_ns=msg.t_recv_unix_ns,
                            one_way_s=(msg.t_recv_unix_ns - msg.t_send_unix_ns) / 1e9)
            receipts = {peer: f.result() for peer, f in futures.items()}
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        t_done = max([time.time_ns()] + [r.t_acked_unix_ns for r in receipts.values()])
        for peer, r in receipts.items():
            self._event(what="signatures-sent", peer=peer, bytes=r.bytes,
                        t_send_unix_ns=r.t_send_unix_ns,
                        t_peer_recv_unix_ns=r.t_peer_recv_unix_ns,
                        one_way_s=(r.t_peer_recv_unix_ns - r.t_send_unix_ns) / 1e9,
                        ack_s=(r.t_acked_unix_ns - r.t_send_unix_ns) / 1e9)
        sync_s = (t_done - t_start) / 1e9
        self.ctx.metrics.set("leo_dlrc_sync_round_seconds", sync_s)
        self._set(sync_round_s=sync_s, signature_list_bytes=len(blob))
        return lists

    def _account(self, model: Any, x: Any, seen: Any, local: Any, plan: Any, payload: bytes,
                 t: dict[str, float], order: list[int], total_vectors: int) -> None:
        """Bytes by part, bpp, measured and emulated encode times, into summary and metrics.
        `x`: the patch; `seen`: what the analysis saw (the patch and its margin)."""

        me, pixels = self.ctx.name, int(x.shape[2] * x.shape[3])
        p = SatellitePayload.from_bytes(payload)
        seq = global_map(local.selection.assignment, plan)
        parts = {"total": len(payload), "entropy_coded": len(p.z_string) + len(p.y_string),
                 "map_lzma": len(p.map_blob), "map_raw": raw_bytes(seq, plan.base),
                 "header": len(payload) - len(p.z_string) - len(p.y_string) - len(p.map_blob)}
        if self.plain_baseline:
            t0 = time.perf_counter()
            parts["plain"] = self._plain_bytes(model, x, seen)
            t["plain_codec_s"] = time.perf_counter() - t0
        bpp = {k: v * 8 / pixels for k, v in parts.items()}
        for part, value in bpp.items():
            self.ctx.metrics.set("leo_dlrc_bpp", value, satellite=me, part=part)
        codec_s = t["codec_analyse_s"] + t["codec_entropy_s"]
        dlrc_s = t["lsh_s"] + t["select_s"] + t["arbitrate_s"] + t["map_s"]
        times = {"measured": {"codec_s": codec_s, "dlrc_s": dlrc_s,
                              "overhead_ratio": dlrc_s / codec_s, **t}}
        if self.accelerator:
            times["emulated"] = self._emulated(model, seen, local)
        for mode, v in times.items():
            self.ctx.metrics.set("leo_dlrc_encode_seconds", v["codec_s"], part="codec", mode=mode)
            self.ctx.metrics.set("leo_dlrc_encode_seconds", v["dlrc_s"], part="dlrc", mode=mode)
            self.ctx.metrics.set("leo_dlrc_encoder_overhead_ratio", v["overhead_ratio"],
                                 mode=mode)
        self._set(stage="encoded", priority_order=[self.s.node_of[i] for i in order],
                  rank=plan.rank, kept_vectors=plan.n_new, total_vectors=total_vectors,
                  bytes=parts, bpp=bpp, times=times, payload_sha256=_sha256(payload))

    def _plain_bytes(self, model: Any, x: Any, seen: Any) -> int:
        """What the same codec sends for this patch without DLRC: CompressAI's compress, or,
        with a margin, the margin analysis's two bitstreams with nothing left out."""
        if not self.s.margin_px:
            from nodes.models.codecs.roundtrip import roundtrip

            return roundtrip(model, x).nbytes
        from nodes.dlrc.pipeline import DlrcConfig, run

        s = self.s
        alone, _, _ = run(model, s.codec, {1: seen}, [1],
                          DlrcConfig(s.rounds, s.seed, s.representative, s.margin_px))
        p = SatellitePayload.from_bytes(alone[1])
        return len(p.z_string) + len(p.y_string)

    def _emulated(self, model: Any, x: Any, local: Any) -> dict[str, Any]:
        """Roofline times of the codec's transforms and of the LSH on `self.accelerator`."""
        from nodes.compute import accelerator, roofline_s
        from nodes.dlrc.work import codec_analysis_work, lsh_work

        acc = accelerator(self.accelerator)  # type: ignore[arg-type]
        cw = codec_analysis_work(model, (int(x.shape[2]), int(x.shape[3])))
        _, c, h, w = local.analysis.y.shape
        lw = lsh_work(h * w, c, self.s.rounds)
        codec_s = roofline_s(cw.flops, cw.bytes, acc)
        dlrc_s = roofline_s(lw.flops, lw.bytes, acc)
        return {"accelerator": acc.name, "codec_s": codec_s, "dlrc_s": dlrc_s,
                "overhead_ratio": dlrc_s / codec_s, "codec_flops": cw.flops,
                "dlrc_flops": lw.flops,
                "note": "transforms and LSH only (roofline); entropy coding is not emulated"}

    def _downlink(self, stop: threading.Event, payload: bytes) -> bool:
        """Sends the payload to the ground: inside a contact window of this satellite (mode
        `contact`) or at once (mode `route`), retrying while a window stays open."""
        dp = self.ctx.require_dataplane()
        ground = self.s.ground
        schedule = self.ctx.contacts() if self.downlink == "contact" else None
        t_ready = time.time()
        while not stop.is_set():
            window = None
            if schedule is not None:
                self._set(stage="waiting for contact")
                window = schedule.wait_for_contact(stop, ground)
                if window is None:
                    self._set(stage="no contact left" if not stop.is_set() else "stopped")
                    return False
            self._set(stage="downlinking")
            try:
                r = dp.send(ground, PAYLOAD_TOPIC, payload, timeout_s=SEND_TIMEOUT_S)
            except DataPlaneError as exc:
                self._event(what="downlink-failed", error=str(exc), t_unix_s=time.time())
                if stop.wait(RETRY_S):
                    return False
                continue
            self.ctx.metrics.inc("leo_dlrc_payload_bytes_total", r.bytes, peer=ground)
            self._event(what="payload-sent", peer=ground, bytes=r.bytes,
                        t_send_unix_ns=r.t_send_unix_ns,
                        t_peer_recv_unix_ns=r.t_peer_recv_unix_ns,
                        one_way_s=(r.t_peer_recv_unix_ns - r.t_send_unix_ns) / 1e9)
            self._set(stage="done", waited_for_contact_s=r.t_send_unix_ns / 1e9 - t_ready,
                      contact=None if window is None or schedule is None else
                      {"start_s": window.start_s, "end_s": window.end_s,
                       "sent_s": schedule.scenario_s(r.t_send_unix_ns / 1e9),
                       "delivered_s": schedule.scenario_s(r.t_peer_recv_unix_ns / 1e9)})
            return True
        return False


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
