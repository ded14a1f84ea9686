"""DLRC's filter and reconstructor for ELIC: uneven channel groups, each a checkerboard pair.

ELIC (CompressAI's `elic2022-official`) decodes the latent group by group (channels split
unevenly); inside group k, first the anchors (half the positions, a checkerboard), then the
non-anchors, whose parameters come from the anchors' 5x5 spatial context; every pass also sees
the hyperprior and the channel context of groups 0..k-1 at all positions. So a position's
vector is not decoded at one moment but in 2 x groups slices, and its neighbours and later
groups use each slice as context.

How DLRC's copies fit that order (the same rule on the satellite and on the ground, so both
compute the same means and scales for every coded symbol):

- a new vector is coded slice by slice, each slice as round(y - mu) + mu around its pass's mean,
  exactly as CompressAI's compress does (with no copies the result is the plain codec's y_hat);
- a copy of the satellite's own earlier vector takes the source's slice once the source's slice
  is decoded: in the same pass when both are anchors (or both non-anchors), otherwise the mean
  mu until the group's second pass has decoded the source, then the source's slice (so later
  groups see the copy exactly);
- a copy of another satellite's vector is unknown on board: its slices are the pass's mean mu
  (what the model predicts there from everything decoded before) in both walks, and the ground
  puts the other satellite's vector in after the walk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from compressai.ans import BufferedRansEncoder, RansDecoder

from nodes.dlrc.errors import CorruptPayloadError, DlrcConfigError, MissingReferenceError
from nodes.dlrc.latent import Analysis, analyse_with, hyper_params_with

PASSES = 2  # anchors, then non-anchors


class _MapPlan:
    """Where each position's vector comes from, in the coordinates a pass works in."""

    def __init__(self, seq: np.ndarray, base: int):
        hh, ww = seq.shape
        flat = seq.reshape(-1)
        first: dict[int, int] = {}
        for p in np.flatnonzero(flat >= base).tolist():
            first.setdefault(int(flat[p]), p)
        self.new = np.array(sorted(first.values()), dtype=np.int64)  # raster order
        self.new_number = flat[self.new] - base  # row in the new-vector table
        intra = [(p, first[int(flat[p])]) for p in np.flatnonzero(flat >= base).tolist()
                 if first[int(flat[p])] != p]
        self.intra = np.array([p for p, _ in intra], dtype=np.int64)
        self.source = np.array([s for _, s in intra], dtype=np.int64)
        self.cross = np.flatnonzero(flat < base)
        self.shape = (hh, ww)

    def in_pass(self, positions: np.ndarray, i: int) -> np.ndarray:
        """Which of `positions` (raster indices) pass i decodes (anchors: h + w even)."""
        ww = self.shape[1]
        return ((positions // ww + positions % ww) % 2) == i

    def half(self, positions: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, column) of raster `positions` in a pass's half-width tensor."""
        ww = self.shape[1]
        return torch.from_numpy(positions // ww), torch.from_numpy((positions % ww) // 2)


class GroupedLatentCoder:
    """DLRC's filter (encode) and reconstructor (decode) for ELIC (module docstring)."""

    def __init__(self, model: Any, codec: str, cross_context: str = "mean"):
        self.model = model
        self.cross_mean = cross_context == "mean"
        self.codec = codec
        groups_codec = model.latent_codec["y"]
        self._groups_codec = groups_codec
        self.groups = list(groups_codec.groups)
        self.channels = sum(self.groups)
        self._hyper = model.latent_codec["hyper"]
        checkerboards = [groups_codec.latent_codec[f"y{k}"] for k in range(len(self.groups))]
        for cb in checkerboards:
            if cb.anchor_parity != "even":
                raise DlrcConfigError(f"{codec}: anchor parity {cb.anchor_parity!r}; "
                                      "DLRC's ELIC walk expects 'even'")
        self._checkerboards = checkerboards
        gc = checkerboards[0].latent_codec["y"].gaussian_conditional
        self._cdf = gc.quantized_cdf.tolist()
        self._cdf_lengths = gc.cdf_length.tolist()
        self._offsets = gc.offset.tolist()

    @torch.no_grad()
    def analyse(self, x: torch.Tensor, margin_px: int = 0) -> Analysis:
        """g_a, the hyperprior's bitstream and h_s(z_hat), as ELIC's compress computes them
        (`margin_px`: see LatentCoder.analyse)."""
        hyper = self._hyper
        return analyse_with(self.model.g_a, hyper.h_a, hyper.entropy_bottleneck, hyper.h_s, x,
                            margin_px)

    def hyper_params(self, z_string: bytes, z_shape: tuple[int, int]) -> torch.Tensor:
        """Ground side: h_s(z_hat) from the hyperprior bitstream."""
        return hyper_params_with(self._hyper.entropy_bottleneck, self._hyper.h_s, z_string,
                                 z_shape)

    def _walk(self, params: torch.Tensor, plan: _MapPlan, code_slice) -> torch.Tensor:
        """ELIC's decode order over one latent; `code_slice(k, i, idx, means)` returns the
        (C_k, n) slices of the new vectors pass (k, i) decodes, in raster order. Copies follow
        the module docstring's rule. Returns y_hat with cross-satellite copies at their means."""
        hh, ww = plan.shape
        y_hat = torch.zeros((1, self.channels, hh, ww))
        y_hat_groups = y_hat.split(self.groups, dim=1)  # views, as ChannelGroupsLatentCodec
        intra_src_rows, intra_src_cols = plan.half(plan.source)
        for k, cb in enumerate(self._checkerboards):
            ctx_params = self._groups_codec._get_ctx_params(k, params, y_hat_groups)
            gcl = cb.latent_codec["y"]
            halves = ctx_params.new_zeros((PASSES, 1, self.groups[k], hh, ww // 2))
            side = cb.unembed(ctx_params)
            late: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
            for i in range(PASSES):
                y_ctx = cb.unembed(cb.context_prediction(cb.embed(halves)))[i]
                if i == 0:
                    y_ctx = cb._mask_all(y_ctx)
                gauss = gcl.entropy_parameters(cb.entropy_parameters(cb.merge(y_ctx, side[i])))
                scales, means = gcl._chunk(gauss)
                idx = gcl.gaussian_conditional.build_indexes(scales)
                # every position not decoded below keeps its mean (or zero: latent_coder)
                out = means[0].clone() if self.cross_mean else torch.zeros_like(means[0])
                sel = plan.in_pass(plan.new, i)
                rows, cols = plan.half(plan.new[sel])
                if len(rows):
                    out[:, rows, cols] = code_slice(k, i, idx[0][:, rows, cols],
                                                    means[0][:, rows, cols])
                halves[i, 0] = out
                # own copies whose source's slice is decoded: in this pass, or an anchor
                here = plan.in_pass(plan.intra, i)
                src_non_anchor = plan.in_pass(plan.source, 1)
                ready = here & ~src_non_anchor if i == 0 else here
                if ready.any():
                    r, c = plan.half(plan.intra[ready])
                    s_pass = torch.from_numpy(src_non_anchor[ready].astype(np.int64))
                    halves[i, 0][:, r, c] = _gather(halves, s_pass, intra_src_rows[ready],
                                                    intra_src_cols[ready])
                if i == 0:
                    wait = here & src_non_anchor
                    if wait.any():
                        r, c = plan.half(plan.intra[wait])
                        late.append((r, c, intra_src_rows[wait], intra_src_cols[wait]))
            for r, c, sr, sc in late:  # anchor copies of non-anchor sources, now decoded
                halves[0, 0][:, r, c] = halves[1, 0][:, sr, sc]
            y_hat_groups[k][:] = cb.embed(halves)
        return y_hat

    @torch.no_grad()
    def encode(
        self, analysis: Analysis, seq_map: np.ndarray, base: int, new_vectors: np.ndarray
    ) -> tuple[bytes, torch.Tensor]:
        """(y bitstream, encoder-side y_hat) coding `new_vectors` ((n_new, C), raster order of
        their first position) slice by slice in ELIC's order."""
        _, c, hh, ww = analysis.y.shape
        plan = _MapPlan(np.asarray(seq_map, dtype=np.int64).reshape(hh, ww), base)
        new = torch.from_numpy(np.ascontiguousarray(new_vectors, dtype=np.float32))
        if new.shape != (len(plan.new), c):
            raise DlrcConfigError(f"{tuple(new.shape)} new vectors; the map has "
                                  f"{len(plan.new)} new positions of {c} channels")
        starts = np.cumsum([0] + self.groups)
        symbols: list[int] = []
        indexes: list[int] = []

        def code_slice(k: int, i: int, idx: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            rows = torch.from_numpy(plan.new_number[plan.in_pass(plan.new, i)])
            v = new[rows, starts[k]:starts[k + 1]].T  # (C_k, n)
            q = torch.round(v - means)
            symbols.extend(q.T.reshape(-1).to(torch.int32).tolist())
            indexes.extend(idx.T.reshape(-1).tolist())
            return q + means

        y_hat = self._walk(analysis.params, plan, code_slice)
        if not symbols:
            return b"", y_hat
        enc = BufferedRansEncoder()
        enc.encode_with_indexes(symbols, indexes, self._cdf, self._cdf_lengths, self._offsets)
        return enc.flush(), y_hat

    @torch.no_grad()
    def decode(
        self,
        y_string: bytes,
        params: torch.Tensor,
        seq_map: np.ndarray,
        base: int,
        table: Mapping[int, torch.Tensor],
        channels: int,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """(y_hat, this satellite's new vectors by sequence number); `table` holds the vectors of
        the satellites decoded before it."""
        if channels != self.channels:
            raise CorruptPayloadError(f"{channels} latent channels; this ELIC has "
                                      f"{self.channels}")
        plan = _MapPlan(np.asarray(seq_map, dtype=np.int64), base)
        if len(plan.new) and not y_string:
            raise CorruptPayloadError(
                f"latent bitstream is empty; the map asks for {len(plan.new)} vectors")
        dec = RansDecoder()
        if y_string:
            dec.set_stream(y_string)

        def code_slice(k: int, i: int, idx: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
            n = idx.shape[1]
            rv = dec.decode_stream(idx.T.reshape(-1).tolist(), self._cdf, self._cdf_lengths,
                                   self._offsets)
            return torch.tensor(rv, dtype=torch.float32).reshape(n, -1).T + means

        y_hat = self._walk(params, plan, code_slice)
        hh, ww = plan.shape
        flat = y_hat[0].reshape(self.channels, -1)
        seq_flat = np.asarray(seq_map).reshape(-1)
        for p in plan.cross.tolist():
            vec = table.get(int(seq_flat[p]))
            if vec is None:
                raise MissingReferenceError(
                    f"map position ({p // ww}, {p % ww}) copies vector {int(seq_flat[p])} of a "
                    "higher-priority satellite that was not decoded; expected its payload first")
            flat[:, p] = vec
        new = {int(base + n): flat[:, p].clone()
               for p, n in zip(plan.new.tolist(), plan.new_number.tolist(), strict=True)}
        return y_hat, new

    @torch.no_grad()
    def synthesise(self, y_hat: torch.Tensor) -> torch.Tensor:
        """x_hat = g_s(y_hat) clamped to [0, 1], as ELIC's decompress does."""
        return self.model.g_s(y_hat).clamp_(0, 1)


def _gather(halves: torch.Tensor, passes: torch.Tensor, rows: torch.Tensor,
            cols: torch.Tensor) -> torch.Tensor:
    """(C_k, n) slices at (pass, row, col) triples of a (PASSES, 1, C_k, H, W/2) tensor."""
    return halves[passes, 0, :, rows, cols].T
