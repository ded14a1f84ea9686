"""The ground half of `dlrc`: receive every observer's payload, reconstruct in priority order,
and score each reconstruction against the satellite's original patch.

Owns the ground's receive loop and the quality figures. A payload is decoded as soon as every
higher-priority payload has been (its copies refer to their vectors); the priority rank is in
each payload's header. The originals come from the same scene file the satellites cropped (an
evaluation aid: a real ground station would not have them). Writes `recon-<satellite>.png`
into the job's folder.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import numpy as np

from nodes.dlrc.wire import SatellitePayload
from nodes.errors import RecvTimeoutError, WorkloadError
from nodes.workloads.base import NodeContext
from nodes.workloads.dlrc_settings import PAYLOAD_TOPIC, DlrcSettings, load_views, to_tensor

MS_SSIM_MIN_PX = 161  # pytorch_msssim's 5 scales with an 11 px window need a side > 160


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float arrays in [0, 1]."""
    return float(10.0 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def ms_ssim(x_hat: Any, x: Any) -> float | None:
    """MS-SSIM (pytorch_msssim, data range 1); None for patches too small for 5 scales."""
    if min(x.shape[-2:]) < MS_SSIM_MIN_PX:
        return None
    from pytorch_msssim import ms_ssim as _ms_ssim

    return float(_ms_ssim(x_hat.clamp(0, 1), x, data_range=1.0))


class GroundSide:
    """Receives, decodes in rank order, scores; `summary()` is readable while it runs."""

    def __init__(self, ctx: NodeContext, s: DlrcSettings, timeout_s: float | None):
        self.ctx, self.s, self.timeout_s = ctx, s, timeout_s
        self._lock = threading.Lock()
        self._per_sat: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._stage = "waiting"

    def summary(self) -> dict[str, Any]:
        with self._lock:
            per_sat = {k: dict(v) for k, v in self._per_sat.items()}
            stage = self._stage
        done = [v for v in per_sat.values() if "psnr_db" in v]
        out: dict[str, Any] = {"stage": stage, "received": len(per_sat),
                               "decoded": len(done), "expected": len(self.s.satellites),
                               "per_satellite": per_sat}
        if done:
            pixels = sum(v["pixels"] for v in done)
            out["bpp"] = sum(v["bytes"] for v in done) * 8 / pixels
            out["psnr_db"] = float(np.mean([v["psnr_db"] for v in done]))
            scores = [v["ms_ssim"] for v in done if v["ms_ssim"] is not None]
            out["ms_ssim"] = float(np.mean(scores)) if scores else None
        return out

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._events]

    def run(self, stop: threading.Event) -> bool:
        import torch

        from nodes.dlrc.pipeline import GroundDecoder
        from nodes.models.codecs import store

        torch.set_num_threads(1)
        s = self.s
        model, _ = store.load(s.models, s.codec, s.lmbda)
        originals = {node: to_tensor(p) for node, p in load_views(s).items()}
        decoder = GroundDecoder(model, s.codec)
        pending: dict[int, tuple[str, bytes]] = {}  # rank -> (sender, payload)
        table: dict[int, Any] = {}
        next_rank = 0
        t_start = time.monotonic()
        while next_rank < len(s.satellites):
            if stop.is_set():
                return False
            if self.timeout_s is not None and time.monotonic() - t_start > self.timeout_s:
                with self._lock:
                    self._stage = "timed out"
                return False
            try:
                msg = self.ctx.require_dataplane().recv(PAYLOAD_TOPIC, timeout_s=0.2)
            except RecvTimeoutError:
                continue
            if msg.src not in s.satellites:
                raise WorkloadError(f"workload dlrc on {self.ctx.name}: payload from "
                                    f"{msg.src}, which is not an observer ({s.satellites})")
            head = SatellitePayload.from_bytes(msg.payload)
            with self._lock:
                again = msg.src in self._per_sat
            if again:  # a resend whose first ack was lost: already counted
                with self._lock:
                    self._events.append({"what": "payload-duplicate", "peer": msg.src,
                                         "t_recv_unix_ns": msg.t_recv_unix_ns})
                continue
            pending[head.rank] = (msg.src, msg.payload)
            self.ctx.metrics.inc("leo_dlrc_payload_bytes_total", len(msg.payload), peer=msg.src)
            with self._lock:
                self._per_sat[msg.src] = {"rank": head.rank, "bytes": len(msg.payload),
                                          "pixels": head.image_h * head.image_w,
                                          "payload_sha256": hashlib.sha256(msg.payload)
                                          .hexdigest()}
                self._events.append({"what": "payload-received", "peer": msg.src,
                                     "bytes": len(msg.payload), "rank": head.rank,
                                     "t_send_unix_ns": msg.t_send_unix_ns,
                                     "t_recv_unix_ns": msg.t_recv_unix_ns})
            while next_rank in pending:
                node, payload = pending.pop(next_rank)
                self._decode(decoder, table, node, payload, originals[node])
                next_rank += 1
        with self._lock:
            self._stage = "done"
        return True

    def _decode(self, decoder: Any, table: dict[int, Any], node: str, payload: bytes,
                x: Any) -> None:
        """One satellite's reconstruction (all higher ranks are in `table`), scored."""
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            rec = decoder.decode_next(payload, table)
        decode_s = time.perf_counter() - t0
        x_hat = rec.x_hat.clamp(0, 1)
        psnr = psnr_db(x_hat.numpy(), x.numpy())
        score = ms_ssim(x_hat, x)
        self.ctx.metrics.set("leo_dlrc_psnr_decibels", psnr, satellite=node)
        if score is not None:
            self.ctx.metrics.set("leo_dlrc_ms_ssim", score, satellite=node)
        bpp = None
        with self._lock:
            entry = self._per_sat[node]
            bpp = entry["bytes"] * 8 / entry["pixels"]
            entry.update(psnr_db=psnr, ms_ssim=score, decode_s=decode_s, bpp=bpp,
                         x_hat_sha256=hashlib.sha256(
                             rec.x_hat.numpy().astype("<f4").tobytes()).hexdigest())
            self._events.append({"what": "decoded", "peer": node, "psnr_db": psnr,
                                 "t_unix_s": time.time()})
        out = self.ctx.output_dir
        if out is not None:
            from PIL import Image

            out.mkdir(parents=True, exist_ok=True)
            img = (x_hat[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
            Image.fromarray(img).save(out / f"recon-{node}.png")
