"""The assignment map on the wire: tokens, then raw LZMA2.

One token per raster position, uint32 little-endian: 0 means "a new vector", which takes the
satellite's next own sequence number (base, base+1, ... in raster order: dense numbering makes
it implicit); t > 0 means "copy the vector with global sequence number t-1" (an earlier vector of
this satellite, or one of a higher-priority satellite).

On the wire each copy token is replaced by its difference to the previous copy token, zigzag
coded, plus 1 (0 still means "new"): two overlapping views copy runs of consecutive numbers, so
the differences are mostly 1 (and a constant jump per row) and LZMA finds long repeats. On the
held-out o_exp 2.0 windows this cut the maps from 8.2 kB to 3.2 kB (experiments/dlrc). The codes
are compressed with LZMA2 in raw format (preset 9|extreme with a 64 KiB dictionary, no container
header: the payload header carries the lengths), about 20 bytes for a 16x16 map with no copies.
"""

from __future__ import annotations

import lzma

import numpy as np

from nodes.dlrc.errors import MapFormatError

# A 64 KiB window holds a 128x128-position map (a 2048 px image) and sets up in under 1 ms;
# preset 9's default 64 MiB dictionary costs about 0.25 s per map to allocate
_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 16}]


def tokens(seq_map: np.ndarray, base: int) -> np.ndarray:
    """Token array of a global map (see module docstring); checks the numbering is dense."""
    seq = np.asarray(seq_map, dtype=np.int64).reshape(-1)
    out = np.empty(len(seq), dtype=np.uint32)
    fresh = base
    for i, g in enumerate(seq.tolist()):
        if g == fresh:
            out[i] = 0
            fresh += 1
        elif g < fresh:
            out[i] = g + 1
        else:
            raise MapFormatError(
                f"map position {i}: sequence number {g}; expected <= {fresh} (dense, raster order)"
            )
    return out


def delta_codes(tok: np.ndarray) -> np.ndarray:
    """Wire codes of a token array: 0 stays 0; a copy token becomes zigzag(t - previous copy
    token) + 1."""
    out = np.zeros(len(tok), dtype=np.int64)
    prev = 0
    for i, t in enumerate(np.asarray(tok, dtype=np.int64).tolist()):
        if t:
            d = t - prev
            out[i] = (2 * d if d >= 0 else -2 * d - 1) + 1
            prev = t
    if len(out) and int(out.max()) >= 1 << 32:
        raise MapFormatError(f"assignment map: a copy jumps by {int(out.max()) // 2} vectors; "
                             "expected fewer than 2^31")
    return out


def undelta(codes: np.ndarray) -> np.ndarray:
    """Token array of wire codes (inverse of delta_codes)."""
    out = np.zeros(len(codes), dtype=np.int64)
    prev = 0
    for i, c in enumerate(np.asarray(codes, dtype=np.int64).tolist()):
        if c:
            z = c - 1
            prev += (z >> 1) if not z & 1 else -((z + 1) >> 1)
            out[i] = prev
    return out


def encode(seq_map: np.ndarray, base: int) -> bytes:
    """The LZMA-compressed, delta-coded token array of a global map."""
    return lzma.compress(delta_codes(tokens(seq_map, base)).astype("<u4").tobytes(),
                         format=lzma.FORMAT_RAW, filters=_FILTERS)


def decode(blob: bytes, positions: int, base: int) -> np.ndarray:
    """(positions,) int64 global map from its LZMA token array; MapFormatError when malformed."""
    try:
        raw = lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=_FILTERS)
    except lzma.LZMAError as exc:
        raise MapFormatError(f"assignment map ({len(blob)} bytes): LZMA says {exc}") from None
    if len(raw) != 4 * positions:
        raise MapFormatError(
            f"assignment map: {len(raw)} bytes after LZMA; expected {4 * positions} "
            f"({positions} positions x uint32)"
        )
    toks = undelta(np.frombuffer(raw, dtype="<u4").astype(np.int64))
    out = np.empty(positions, dtype=np.int64)
    fresh = base
    for i, t in enumerate(toks.tolist()):
        if t == 0:
            out[i] = fresh
            fresh += 1
        elif 0 <= t - 1 < fresh:
            out[i] = t - 1
        else:
            raise MapFormatError(
                f"map position {i}: copies vector {t - 1}, which is not decoded before it "
                f"(next new number {fresh})"
            )
    return out


def raw_bytes(seq_map: np.ndarray, base: int) -> int:
    """Bytes of the token array packed at the fixed width its largest token needs: what the map
    costs without LZMA (the metadata's raw size)."""
    tok = tokens(seq_map, base)
    width_bits = max(1, int(tok.max()).bit_length()) if len(tok) else 1
    return (len(tok) * width_bits + 7) // 8
