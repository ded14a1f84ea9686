"""DLRC end to end, in process: satellites' two encoding stages and the ground's reconstruction.

    satellite:  x -> analyse (g_a, hyperprior, LSH, selector) -> signature list ----\
                                                                      exchange (ISL) |
    every satellite: arbitrate(all lists, priority order) -> its plan <-------------/
    satellite:  encode(plan) -> payload bytes (header, z bitstream, y bitstream, LZMA map)
    ground:     decode(payloads) in priority order -> x_hat per satellite

The testbed's agents run the same calls on separate nodes; here they run in one process.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nodes.dlrc import mapcodec
from nodes.dlrc.arbiter import Arbitration, SatellitePlan, arbitrate, global_map
from nodes.dlrc.errors import CorruptPayloadError, DlrcConfigError
from nodes.dlrc.latent import Analysis, latent_coder
from nodes.dlrc.lsh import CrossPolytopeLSH
from nodes.dlrc.selector import Selection, select
from nodes.dlrc.wire import SatellitePayload


@dataclass(frozen=True)
class DlrcConfig:
    """Settings every satellite and the ground share."""

    rounds: int = 20
    seed: int = 0
    representative: str = "original"  # or "mean"
    margin_px: int = 0  # scene around each image that g_a sees (LatentCoder.analyse)
    cross_context: str = "mean"  # context at other satellites' vectors (latent_coder)


@dataclass
class LocalResult:
    """A satellite's first stage: what it keeps until the arbitration is known."""

    sat_id: int
    analysis: Analysis
    signatures: np.ndarray  # (H*W,) int64 per position
    selection: Selection
    image_hw: tuple[int, int]

    @property
    def signature_list(self) -> np.ndarray:
        """What the satellite sends to the others: unique signatures in spatial order."""
        return self.selection.signatures


class SatelliteEncoder:
    """The on-board side for one codec."""

    def __init__(self, model: Any, codec: str, config: DlrcConfig | None = None):
        self.config = config or DlrcConfig()
        self.coder = latent_coder(model, codec, self.config.cross_context)
        self.codec = codec
        self._lsh: CrossPolytopeLSH | None = None

    def lsh(self, dim: int) -> CrossPolytopeLSH:
        if self._lsh is None or self._lsh.dim != dim:
            self._lsh = CrossPolytopeLSH(dim, self.config.rounds, self.config.seed)
        return self._lsh

    def analyse(self, sat_id: int, x: torch.Tensor,
                timings: dict[str, float] | None = None) -> LocalResult:
        """Stage 1: latent, hyperprior, signatures and local clusters. `timings`, when given,
        gets the seconds of the codec's part (`codec_analyse_s`: g_a, h_a, z coding, h_s) and
        of DLRC's (`lsh_s`, `select_s`)."""
        t0 = time.perf_counter()
        a = self.coder.analyse(x, self.config.margin_px)
        t1 = time.perf_counter()
        vecs = a.vectors()
        sigs = self.lsh(vecs.shape[1]).signatures(vecs)
        t2 = time.perf_counter()
        sel = select(sigs, vecs, self.config.representative)
        t3 = time.perf_counter()
        if timings is not None:
            timings.update(codec_analyse_s=t1 - t0, lsh_s=t2 - t1, select_s=t3 - t2)
        pad = 2 * self.config.margin_px
        return LocalResult(sat_id, a, sigs, sel, (int(x.shape[2]) - pad, int(x.shape[3]) - pad))

    def encode(self, local: LocalResult, plan: SatellitePlan,
               timings: dict[str, float] | None = None) -> tuple[bytes, torch.Tensor]:
        """Stage 2: (payload bytes, encoder-side y_hat) for this satellite's plan. `timings`
        gets `codec_entropy_s` (entropy coding of the kept vectors) and `map_s` (the
        assignment map's remapping and LZMA)."""
        t0 = time.perf_counter()
        seq = global_map(local.selection.assignment, plan)
        map_blob = mapcodec.encode(seq, plan.base)
        t1 = time.perf_counter()
        new_vectors = local.selection.rep_vectors[plan.kept]
        y_string, y_hat = self.coder.encode(local.analysis, seq, plan.base, new_vectors)
        t2 = time.perf_counter()
        if timings is not None:
            timings.update(map_s=t1 - t0, codec_entropy_s=t2 - t1)
        _, c, hh, ww = local.analysis.y.shape
        payload = SatellitePayload(
            codec=self.codec, sat_id=local.sat_id, rank=plan.rank, base=plan.base,
            n_new=plan.n_new, channels=c, latent_h=hh, latent_w=ww,
            z_h=local.analysis.z_shape[0], z_w=local.analysis.z_shape[1],
            image_h=local.image_hw[0], image_w=local.image_hw[1],
            z_string=local.analysis.z_string, y_string=y_string,
            map_blob=map_blob,
            mean_representatives=self.config.representative == "mean",
        )
        return payload.to_bytes(), y_hat


@dataclass
class Reconstruction:
    """What the ground rebuilt for one satellite."""

    sat_id: int
    y_hat: torch.Tensor
    x_hat: torch.Tensor


class GroundDecoder:
    """The ground side for one codec: decodes satellites in priority order."""

    def __init__(self, model: Any, codec: str, config: DlrcConfig | None = None):
        self.coder = latent_coder(model, codec, (config or DlrcConfig()).cross_context)
        self.codec = codec

    def decode(self, payloads: Iterable[bytes]) -> dict[int, Reconstruction]:
        """Rebuild every satellite's image; payloads may come in any order."""
        parsed = sorted((SatellitePayload.from_bytes(p) for p in payloads), key=lambda p: p.rank)
        table: dict[int, torch.Tensor] = {}
        out: dict[int, Reconstruction] = {}
        for rank, p in enumerate(parsed):
            if p.rank != rank:
                raise CorruptPayloadError(
                    f"satellite {p.sat_id}: rank {p.rank}; expected rank {rank} (payloads of "
                    "every higher-priority satellite first)")
            out[p.sat_id] = self.decode_next(p, table)
        return out

    def decode_next(self, payload: bytes | SatellitePayload,
                    table: dict[int, torch.Tensor]) -> Reconstruction:
        """Rebuild one satellite's image once every higher-priority satellite's payload has
        been decoded into `table` (global number -> vector), which this call extends. For a
        ground that decodes as payloads arrive."""
        p = payload if isinstance(payload, SatellitePayload) else \
            SatellitePayload.from_bytes(payload)
        if p.codec != self.codec:
            raise CorruptPayloadError(
                f"satellite {p.sat_id}: codec {p.codec!r}; this ground decodes {self.codec!r}")
        if p.base != len(table):
            raise CorruptPayloadError(
                f"satellite {p.sat_id}: rank {p.rank}, base {p.base}; expected base "
                f"{len(table)} (payloads of every higher-priority satellite first)")
        seq = mapcodec.decode(p.map_blob, p.latent_h * p.latent_w, p.base)
        n_new = len(np.unique(seq[seq >= p.base]))
        if n_new != p.n_new:
            raise CorruptPayloadError(
                f"satellite {p.sat_id}: map has {n_new} new vectors; header says {p.n_new}")
        if p.channels != self.coder.channels:
            raise CorruptPayloadError(
                f"satellite {p.sat_id}: {p.channels} latent channels; this ground's "
                f"{self.codec} has {self.coder.channels}")
        params = self.coder.hyper_params(p.z_string, (p.z_h, p.z_w))
        if params.shape[-2:] != (p.latent_h, p.latent_w):
            raise CorruptPayloadError(
                f"satellite {p.sat_id}: latent {p.latent_h}x{p.latent_w} does not match "
                f"hyperprior {p.z_h}x{p.z_w}")
        y_hat, new = self.coder.decode(p.y_string, params, seq.reshape(p.latent_h, p.latent_w),
                                       p.base, table, p.channels)
        table.update(new)
        return Reconstruction(p.sat_id, y_hat, self.coder.synthesise(y_hat))


def run(
    model: Any,
    codec: str,
    images: Mapping[int, torch.Tensor],
    order: list[int],
    config: DlrcConfig | None = None,
) -> tuple[dict[int, bytes], Arbitration, dict[int, LocalResult]]:
    """All satellites' stages in one process: (payload bytes by satellite, arbitration, locals)."""
    if sorted(order) != sorted(images):
        raise DlrcConfigError(f"priority order {order}; expected each of {sorted(images)} once")
    enc = SatelliteEncoder(model, codec, config)
    locals_ = {sat: enc.analyse(sat, x) for sat, x in images.items()}
    arb = arbitrate({sat: loc.signature_list for sat, loc in locals_.items()}, order)
    payloads = {sat: enc.encode(locals_[sat], arb.plans[sat])[0] for sat in order}
    return payloads, arb, locals_
