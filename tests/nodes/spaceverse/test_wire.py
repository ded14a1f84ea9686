"""Wire format: round trips (raw and PNG), rebuild geometry, and errors on bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from nodes.spaceverse.errors import WireFormatError
from nodes.spaceverse.wire import Region, WireImage, decode, encode, rebuild


def _image() -> WireImage:
    rng = np.random.default_rng(1)
    return WireImage(50, 40, 5, 4, [
        Region(0, 0, rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)),
        Region(2, 3, rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)),   # downsampled by 2
        Region(4, 1, np.full((10, 10, 3), 200, dtype=np.uint8)),
    ])


@pytest.mark.parametrize("codec", ["raw", "png"])
def test_round_trip_is_lossless(codec: str) -> None:
    img = _image()
    back = decode(encode(img, codec))
    assert (back.height_px, back.width_px, back.grid_rows, back.grid_cols) == (50, 40, 5, 4)
    assert [(r.row, r.col) for r in back.regions] == [(0, 0), (2, 3), (4, 1)]
    for a, b in zip(img.regions, back.regions, strict=True):
        assert np.array_equal(a.pixels, b.pixels)


def test_rebuild_places_cells_and_blacks_out_dropped() -> None:
    out = rebuild(decode(encode(_image(), "raw")))
    assert out.shape == (50, 40, 3)
    assert (out[40:50, 10:20] == 200).all()          # kept cell (4, 1)
    assert (out[10:20, 0:10] == 0).all()             # dropped cell (1, 0)
    assert out[20:30, 30:40].std() > 0               # downsampled cell upsampled into place


def test_truncated_message_is_refused() -> None:
    data = encode(_image(), "png")
    for cut in (3, 16, len(data) // 2, len(data) - 1):
        with pytest.raises(WireFormatError):
            decode(data[:cut])


def test_flipped_byte_fails_the_crc() -> None:
    data = bytearray(encode(_image(), "raw"))
    data[40] ^= 0xFF
    with pytest.raises(WireFormatError, match="CRC mismatch"):
        decode(bytes(data))


def test_bad_magic_and_version_are_named() -> None:
    data = encode(_image(), "raw")
    with pytest.raises(WireFormatError, match="bad magic"):
        decode(b"XXXX" + data[4:])
    with pytest.raises(WireFormatError, match="unsupported version 9"):
        decode(data[:4] + bytes([9]) + data[5:])


def test_region_length_lie_is_caught_even_with_a_fresh_crc() -> None:
    body = bytearray(encode(_image(), "raw")[:-4])
    # first region header starts after the 14-byte header; payload_len is its last 4 bytes
    struct.pack_into(">I", body, 14 + 6, 10**6)
    import zlib
    with pytest.raises(WireFormatError, match="truncated"):
        decode(bytes(body) + struct.pack(">I", zlib.crc32(bytes(body))))


def test_encode_refuses_region_outside_grid() -> None:
    img = WireImage(10, 10, 2, 2, [Region(2, 0, np.zeros((5, 5, 3), dtype=np.uint8))])
    with pytest.raises(WireFormatError, match=r"region \(2,0\) outside"):
        encode(img)
