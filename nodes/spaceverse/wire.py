"""Wire format of a preprocessed image: kept regions at their scales plus the grid layout.

Owns encoding and decoding only (no scoring, no sockets). Layout, big-endian:

    header  b"SVRW" | u8 version=1 | u16 height_px | u16 width_px | u8 grid_rows | u8 grid_cols
            | u8 codec (0 = raw RGB bytes, 1 = PNG) | u16 n_regions
    region  u8 row | u8 col | u16 sent_h_px | u16 sent_w_px | u32 payload_len | payload
    trailer u32 CRC-32 of everything before it

A region is the (row, col) cell of a rows x cols grid over the image (cell edges at
`i * height // rows`); it travels at `sent_h x sent_w` pixels (its cell size when kept whole,
smaller when downsampled). Dropped cells are absent. `rebuild` upsamples each region back into
its cell and leaves dropped cells black, which is the image the ground model sees.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from nodes.spaceverse.errors import WireFormatError

__all__ = ["CODECS", "VERSION", "Region", "WireImage", "cell_bounds", "decode", "encode",
           "rebuild"]

MAGIC = b"SVRW"
VERSION = 1
CODECS = {"raw": 0, "png": 1}
_HEADER = struct.Struct(">4sBHHBBBH")
_REGION = struct.Struct(">BBHHI")
_CRC = struct.Struct(">I")


@dataclass
class Region:
    """One sent region: its grid cell and its pixels `[h, w, 3]` uint8 at the sent scale."""

    row: int
    col: int
    pixels: np.ndarray


@dataclass
class WireImage:
    """What travels: image size, grid, and the kept regions."""

    height_px: int
    width_px: int
    grid_rows: int
    grid_cols: int
    regions: list[Region]


def cell_bounds(size_px: int, cells: int, index: int) -> tuple[int, int]:
    """Start and end pixel of cell `index` of `cells` along a side of `size_px`."""
    return index * size_px // cells, (index + 1) * size_px // cells


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _unpng(data: bytes, h: int, w: int, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise WireFormatError(f"{where}: PNG payload does not decode ({exc})") from exc
    if arr.shape != (h, w, 3):
        raise WireFormatError(f"{where}: PNG is {arr.shape}, expected {(h, w, 3)}")
    return arr


def encode(img: WireImage, codec: str = "png") -> bytes:
    """Serialise `img`; raises WireFormatError for values the format cannot carry."""
    if codec not in CODECS:
        raise WireFormatError(f"unknown codec {codec!r}; choose: {', '.join(CODECS)}")
    if not (0 < img.height_px < 65536 and 0 < img.width_px < 65536):
        raise WireFormatError(f"image {img.height_px}x{img.width_px} px, expected 1..65535")
    if not (0 < img.grid_rows < 256 and 0 < img.grid_cols < 256):
        raise WireFormatError(f"grid {img.grid_rows}x{img.grid_cols}, expected 1..255")
    parts = [_HEADER.pack(MAGIC, VERSION, img.height_px, img.width_px, img.grid_rows,
                          img.grid_cols, CODECS[codec], len(img.regions))]
    for r in img.regions:
        px = np.ascontiguousarray(r.pixels, dtype=np.uint8)
        if px.ndim != 3 or px.shape[2] != 3 or min(px.shape[:2]) < 1:
            raise WireFormatError(f"region ({r.row},{r.col}): pixels {px.shape}, "
                                  "expected [h>=1, w>=1, 3]")
        if not (0 <= r.row < img.grid_rows and 0 <= r.col < img.grid_cols):
            raise WireFormatError(f"region ({r.row},{r.col}) outside the "
                                  f"{img.grid_rows}x{img.grid_cols} grid")
        payload = px.tobytes() if codec == "raw" else _png(px)
        parts.append(_REGION.pack(r.row, r.col, px.shape[0], px.shape[1], len(payload)))
        parts.append(payload)
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _take(data: bytes, offset: int, n: int, what: str) -> bytes:
    if offset + n > len(data):
        raise WireFormatError(f"truncated message: {what} needs bytes {offset}..{offset + n}, "
                              f"message has {len(data)}")
    return data[offset:offset + n]


def decode(data: bytes) -> WireImage:
    """Parse a message; raises WireFormatError naming the field on truncation or corruption."""
    if len(data) < _HEADER.size + _CRC.size:
        raise WireFormatError(f"truncated message: {len(data)} bytes, expected at least "
                              f"{_HEADER.size + _CRC.size}")
    magic, version, h, w, rows, cols, codec, n = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise WireFormatError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise WireFormatError(f"unsupported version {version}, expected {VERSION}")
    body, (crc,) = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])
    if zlib.crc32(body) != crc:
        raise WireFormatError(f"CRC mismatch: message says {crc:#010x}, "
                              f"content gives {zlib.crc32(body):#010x} (corrupted or truncated)")
    if codec not in CODECS.values():
        raise WireFormatError(f"unknown codec id {codec}, expected one of "
                              f"{sorted(CODECS.values())}")
    off, regions = _HEADER.size, []
    for i in range(n):
        row, col, rh, rw, plen = _REGION.unpack(_take(body, off, _REGION.size, f"region {i}"))
        off += _REGION.size
        payload = _take(body, off, plen, f"region {i} payload")
        off += plen
        where = f"region {i} ({row},{col})"
        if row >= rows or col >= cols:
            raise WireFormatError(f"{where}: outside the {rows}x{cols} grid")
        if codec == CODECS["raw"]:
            if plen != rh * rw * 3:
                raise WireFormatError(f"{where}: raw payload {plen} bytes, expected {rh * rw * 3}")
            px = np.frombuffer(payload, dtype=np.uint8).reshape(rh, rw, 3).copy()
        else:
            px = _unpng(payload, rh, rw, where)
        regions.append(Region(row, col, px))
    if off != len(body):
        raise WireFormatError(f"{len(body) - off} bytes after the last region, expected none")
    return WireImage(h, w, rows, cols, regions)


def rebuild(img: WireImage) -> np.ndarray:
    """The `[H, W, 3]` uint8 image the ground sees: regions upsampled into their cells."""
    from PIL import Image

    out = np.zeros((img.height_px, img.width_px, 3), dtype=np.uint8)
    for r in img.regions:
        y0, y1 = cell_bounds(img.height_px, img.grid_rows, r.row)
        x0, x1 = cell_bounds(img.width_px, img.grid_cols, r.col)
        px = r.pixels
        if px.shape[:2] != (y1 - y0, x1 - x0):
            px = np.asarray(Image.fromarray(px, "RGB").resize((x1 - x0, y1 - y0),
                                                              Image.Resampling.BILINEAR))
        out[y0:y1, x0:x1] = px
    return out
