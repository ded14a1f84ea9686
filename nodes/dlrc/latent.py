"""Filter and reconstructor at the latent level: entropy-code only the retained vectors.

The distribution parameters come from the codec's own hyperprior, computed on the full latent,
so no retraining is needed:

- scale hyperprior (bmshj2018-hyperprior): sigma at each position from h_s(z_hat); each new
  vector is coded with the sigmas of its position; copies cost nothing.
- joint autoregressive models (mbt2018, cheng2020-attn): (mu, sigma) at a position come from the
  hyperprior and the masked 5x5 context of the latent decoded so far in raster order. Encoder and
  decoder walk the map in raster order over the same buffer: new vectors are quantised around mu
  and coded; copies of the satellite's own earlier vectors are filled in before later positions
  use them as context. A vector the satellite drops because a higher-priority satellite sends it
  is unknown to the dropping satellite, so in both walks that position holds its predicted mean
  mu (what the hyperprior and the context decoded so far predict there: the best guess encoder
  and decoder can both compute) and the other satellite's vector replaces it after the walk.
- ELIC's channel groups with checkerboard passes: nodes.dlrc.latent_grouped.

With every position new (no duplicates) both walks do exactly what CompressAI's compress and
decompress do, so y_hat and x_hat are bit-identical to the plain codec's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from compressai.ans import BufferedRansEncoder, RansDecoder

from nodes.dlrc.errors import (
    CorruptPayloadError,
    DlrcConfigError,
    MissingReferenceError,
    UnsupportedCodecError,
)
from nodes.models.codecs.registry import codec_spec

KERNEL = 5
PAD = (KERNEL - 1) // 2


def check_image(x: torch.Tensor, margin_px: int) -> tuple[int, int]:
    """(height, width) of the image inside `margin_px`, after checking the tensor's shape and
    that the codec's 64-pixel grid fits it."""
    if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
        raise DlrcConfigError(f"image tensor shape {tuple(x.shape)}; expected (1, 3, H, W)")
    if margin_px < 0 or margin_px % 16:
        raise DlrcConfigError(f"margin_px={margin_px}; expected a multiple of 16 >= 0")
    h, w = x.shape[2] - 2 * margin_px, x.shape[3] - 2 * margin_px
    if h <= 0 or w <= 0 or h % 64 or w % 64:
        inside = f" inside a {margin_px} px margin" if margin_px else ""
        raise DlrcConfigError(f"image size {w}x{h} px{inside}; expected multiples of 64")
    return int(h), int(w)


@torch.no_grad()
def analyse_with(g_a: Any, h_a: Any, entropy_bottleneck: Any, h_s: Any, x: torch.Tensor,
                 margin_px: int) -> Analysis:
    """g_a, the hyperprior's bitstream and h_s(z_hat) of one image, from a codec's own modules
    (`h_a`: whatever the codec applies to y; the scale hyperprior takes |y|). With `margin_px`
    only the inner image's latent is kept (LatentCoder.analyse)."""
    h, w = check_image(x, margin_px)
    y = g_a(x)
    if margin_px:
        c = margin_px // 16
        y = y[:, :, c:c + h // 16, c:c + w // 16].contiguous()
    z = h_a(y)
    z_strings = entropy_bottleneck.compress(z)
    z_shape = tuple(z.shape[-2:])
    z_hat = entropy_bottleneck.decompress(z_strings, z_shape)
    return Analysis(y, z_strings[0], z_shape, h_s(z_hat))


@torch.no_grad()
def hyper_params_with(entropy_bottleneck: Any, h_s: Any, z_string: bytes,
                      z_shape: tuple[int, int]) -> torch.Tensor:
    """Ground side: h_s(z_hat) from one hyperprior bitstream."""
    return h_s(entropy_bottleneck.decompress([z_string], z_shape))


CROSS_CONTEXTS = ("mean", "zero")


def latent_coder(model: Any, codec: str, cross_context: str = "mean") -> Any:
    """The filter and reconstructor for `codec`'s entropy model (LatentCoder or, for ELIC's
    channel groups, GroupedLatentCoder); UnsupportedCodecError for a codec DLRC cannot filter.
    `cross_context`: what a context model sees where another satellite's vector goes, its
    predicted mean (default) or zero (kept to measure what the mean gains); satellites and
    ground must agree."""
    if cross_context not in CROSS_CONTEXTS:
        raise DlrcConfigError(f"cross_context={cross_context!r}; expected one of "
                              f"{', '.join(CROSS_CONTEXTS)}")
    spec = codec_spec(codec)
    if spec.dlrc and spec.context == "checkerboard-groups":
        from nodes.dlrc.latent_grouped import GroupedLatentCoder

        return GroupedLatentCoder(model, codec, cross_context)
    return LatentCoder(model, codec, cross_context)


@dataclass
class Analysis:
    """The satellite-side analysis of one image."""

    y: torch.Tensor  # (1, C, H, W) continuous latent
    z_string: bytes
    z_shape: tuple[int, int]
    params: torch.Tensor  # h_s(z_hat): scales (C) or hyper params (2C) per position

    def vectors(self) -> np.ndarray:
        """(H*W, C) float32 latent vectors in raster order."""
        c = self.y.shape[1]
        return self.y[0].reshape(c, -1).T.contiguous().numpy()


def _rans_encode(symbols: list[int], indexes: list[int], cdf, lengths, offsets) -> bytes:
    """One rANS stream; empty when nothing is new (CompressAI's coder crashes on empty input)."""
    if not symbols:
        return b""
    enc = BufferedRansEncoder()
    enc.encode_with_indexes(symbols, indexes, cdf, lengths, offsets)
    return enc.flush()


def _rans_decoder(y_string: bytes, n_new: int) -> RansDecoder:
    """A decoder on the stream, after checking a stream exists when vectors are to be decoded."""
    if n_new and not y_string:
        raise CorruptPayloadError(f"latent bitstream is empty; the map asks for {n_new} vectors")
    dec = RansDecoder()
    if y_string:
        dec.set_stream(y_string)
    return dec


class LatentCoder:
    """DLRC's filter (encode) and reconstructor (decode) for one trained codec."""

    def __init__(self, model: Any, codec: str, cross_context: str = "mean"):
        spec = codec_spec(codec)
        if not spec.dlrc or spec.context not in ("hyperprior", "raster"):
            raise UnsupportedCodecError(
                f"codec {codec!r} ({spec.context} context): LatentCoder handles the scale "
                "hyperprior and raster-order context models (bmshj2018-hyperprior, mbt2018, "
                "cheng2020-attn); use latent_coder() to get the coder for any codec")
        self.model = model
        self.codec = codec
        self.autoregressive = spec.autoregressive
        self.channels = int(model.M)
        self.cross_mean = cross_context == "mean"
        gc = model.gaussian_conditional
        self._cdf = gc.quantized_cdf.tolist()
        self._cdf_lengths = gc.cdf_length.tolist()
        self._offsets = gc.offset.tolist()

    @torch.no_grad()
    def analyse(self, x: torch.Tensor, margin_px: int = 0) -> Analysis:
        """g_a, the hyperprior's bitstream and h_s(z_hat) for a (1, 3, H, W) image in [0, 1].

        `margin_px` (a multiple of 16): `x` holds the image plus this much of the scene around
        it on every side; g_a sees it all and the latent of the inner image is kept, so a
        ground cell's vector no longer depends on where the image's border falls (two views of
        the same cell then give the same vector, which the LSH can merge)."""
        m = self.model
        h_a = m.h_a if self.autoregressive else (lambda y: m.h_a(torch.abs(y)))
        return analyse_with(m.g_a, h_a, m.entropy_bottleneck, m.h_s, x, margin_px)

    def hyper_params(self, z_string: bytes, z_shape: tuple[int, int]) -> torch.Tensor:
        """Ground side: h_s(z_hat) from the hyperprior bitstream."""
        return hyper_params_with(self.model.entropy_bottleneck, self.model.h_s, z_string,
                                 z_shape)

    def _ar_params(
        self, buf: torch.Tensor, params: torch.Tensor, h: int, w: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale-table indexes, means) at (h, w) from the hyperprior and the 5x5 context."""
        m = self.model
        crop = buf[:, :, h:h + KERNEL, w:w + KERNEL]
        ctx = F.conv2d(crop, m.context_prediction.weight, bias=m.context_prediction.bias)
        gp = m.entropy_parameters(torch.cat((params[:, :, h:h + 1, w:w + 1], ctx), dim=1))
        scales, means = gp.chunk(2, 1)
        return m.gaussian_conditional.build_indexes(scales), means

    @torch.no_grad()
    def encode(
        self, analysis: Analysis, seq_map: np.ndarray, base: int, new_vectors: np.ndarray
    ) -> tuple[bytes, torch.Tensor]:
        """(y bitstream, encoder-side y_hat) coding `new_vectors` ((n_new, C), raster order of
        their first position) where `seq_map` has a new number; cross-satellite copies hold
        their predicted means (autoregressive codecs) or 0."""
        gc = self.model.gaussian_conditional
        _, c, hh, ww = analysis.y.shape
        seq = np.asarray(seq_map, dtype=np.int64).reshape(hh, ww)
        new = torch.from_numpy(np.ascontiguousarray(new_vectors, dtype=np.float32))
        if not self.autoregressive:
            return self._encode_hyperprior(analysis.params, seq, base, new)
        symbols: list[int] = []
        indexes: list[int] = []
        own: dict[int, tuple[int, int]] = {}
        fresh = base
        buf = torch.zeros((1, c, hh + 2 * PAD, ww + 2 * PAD))
        off = PAD
        for h in range(hh):
            for w in range(ww):
                g = int(seq[h, w])
                if g == fresh:
                    v = new[fresh - base].reshape(1, c, 1, 1)
                    idx, means = self._ar_params(buf, analysis.params, h, w)
                    q = gc.quantize(v, "symbols", means)
                    buf[:, :, h + off:h + off + 1, w + off:w + off + 1] = gc.dequantize(q, means)
                    symbols.extend(q.reshape(-1).tolist())
                    indexes.extend(idx.reshape(-1).tolist())
                    own[fresh] = (h, w)
                    fresh += 1
                elif g in own:
                    sh, sw = own[g]
                    buf[:, :, h + off, w + off] = buf[:, :, sh + off, sw + off]
                elif self.cross_mean:  # another satellite's vector: its predicted mean
                    _, means = self._ar_params(buf, analysis.params, h, w)
                    buf[:, :, h + off:h + off + 1, w + off:w + off + 1] = means
        y_hat = F.pad(buf, (-PAD, -PAD, -PAD, -PAD))
        return _rans_encode(symbols, indexes, self._cdf, self._cdf_lengths, self._offsets), y_hat

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
        the satellites decoded before it (raster-order walk, module docstring)."""
        gc = self.model.gaussian_conditional
        c = channels
        hh, ww = seq_map.shape
        if not self.autoregressive:
            return self._decode_hyperprior(y_string, params, seq_map, base, table, c)
        dec = _rans_decoder(y_string, len(np.unique(seq_map[seq_map >= base])))
        own: dict[int, tuple[int, int]] = {}
        cross: list[tuple[int, int, int]] = []
        fresh = base
        off = PAD
        buf = torch.zeros((1, c, hh + 2 * PAD, ww + 2 * PAD))
        for h in range(hh):
            for w in range(ww):
                g = int(seq_map[h, w])
                if g == fresh:
                    idx, means = self._ar_params(buf, params, h, w)
                    rv = dec.decode_stream(idx.reshape(-1).tolist(), self._cdf,
                                           self._cdf_lengths, self._offsets)
                    rv = torch.Tensor(rv).reshape(1, -1, 1, 1)
                    buf[:, :, h + off:h + off + 1, w + off:w + off + 1] = gc.dequantize(rv, means)
                    own[fresh] = (h, w)
                    fresh += 1
                elif g in own:
                    sh, sw = own[g]
                    buf[:, :, h + off, w + off] = buf[:, :, sh + off, sw + off]
                elif g < base:
                    if self.cross_mean:
                        _, means = self._ar_params(buf, params, h, w)
                        buf[:, :, h + off:h + off + 1, w + off:w + off + 1] = means
                    cross.append((h, w, g))
                else:  # mapcodec.decode already rejects forward references
                    raise MissingReferenceError(f"map position ({h}, {w}): vector {g} unknown")
        y_hat = F.pad(buf, (-PAD, -PAD, -PAD, -PAD))
        for h, w, g in cross:
            vec = table.get(g)
            if vec is None:
                raise MissingReferenceError(
                    f"map position ({h}, {w}) copies vector {g} of a higher-priority satellite "
                    "that was not decoded; expected its payload first")
            y_hat[0, :, h, w] = vec
        new = {g: y_hat[0, :, h, w].clone() for g, (h, w) in own.items()}
        return y_hat, new

    def _positions(self, seq: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raster indices of (new vectors, intra copies, cross copies) and, for intra copies,
        the raster index of the new vector they copy."""
        flat = seq.reshape(-1)
        new_pos = np.flatnonzero(flat >= base)
        first = {}
        for p in new_pos.tolist():
            first.setdefault(int(flat[p]), p)
        is_new = np.array([first[int(flat[p])] == p for p in new_pos.tolist()], dtype=bool)
        intra = new_pos[~is_new]
        source = np.array([first[int(flat[p])] for p in intra.tolist()], dtype=np.int64)
        return new_pos[is_new], np.stack([intra, source]), np.flatnonzero(flat < base)

    def _encode_hyperprior(
        self, params: torch.Tensor, seq: np.ndarray, base: int, new: torch.Tensor
    ) -> tuple[bytes, torch.Tensor]:
        """Scale hyperprior: no context, so all new vectors are coded in one call."""
        gc = self.model.gaussian_conditional
        c, hh, ww = params.shape[1:]
        new_pos, (intra, source), _ = self._positions(seq, base)
        idx = gc.build_indexes(params)[0].reshape(c, -1)[:, new_pos].T  # (n_new, C)
        q = gc.quantize(new, "symbols")  # round(y): the plain codec's symbols
        flat = torch.zeros((c, hh * ww))
        flat[:, new_pos] = gc.dequantize(q).T
        flat[:, intra] = flat[:, source]
        y_string = _rans_encode(q.reshape(-1).tolist(), idx.reshape(-1).tolist(), self._cdf,
                                self._cdf_lengths, self._offsets)
        return y_string, flat.reshape(1, c, hh, ww)

    def _decode_hyperprior(
        self, y_string: bytes, params: torch.Tensor, seq: np.ndarray, base: int,
        table: Mapping[int, torch.Tensor], c: int,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        gc = self.model.gaussian_conditional
        hh, ww = seq.shape
        new_pos, (intra, source), cross = self._positions(seq, base)
        idx = gc.build_indexes(params)[0].reshape(c, -1)[:, new_pos].T
        dec = _rans_decoder(y_string, len(new_pos))
        flat = torch.zeros((c, hh * ww))
        if len(new_pos):
            rv = dec.decode_stream(idx.reshape(-1).tolist(), self._cdf, self._cdf_lengths,
                                   self._offsets)
            flat[:, new_pos] = torch.Tensor(rv).reshape(len(new_pos), c).T
        flat[:, intra] = flat[:, source]
        seq_flat = seq.reshape(-1)
        for p in cross.tolist():
            vec = table.get(int(seq_flat[p]))
            if vec is None:
                raise MissingReferenceError(
                    f"map position {p} copies vector {int(seq_flat[p])} of a higher-priority "
                    "satellite that was not decoded; expected its payload first")
            flat[:, p] = vec
        y_hat = flat.reshape(1, c, hh, ww)
        new = {int(seq_flat[p]): flat[:, p].clone() for p in new_pos.tolist()}
        return y_hat, new

    @torch.no_grad()
    def synthesise(self, y_hat: torch.Tensor) -> torch.Tensor:
        """x_hat = g_s(y_hat) clamped to [0, 1], as the plain codec's decompress does."""
        return self.model.g_s(y_hat).clamp_(0, 1)
