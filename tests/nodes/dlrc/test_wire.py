"""Wire format of one satellite's payload: round trip, truncation and corruption are named."""

from __future__ import annotations

import pytest

from nodes.dlrc.errors import CorruptPayloadError, TruncatedPayloadError
from nodes.dlrc.wire import SatellitePayload


def _payload() -> SatellitePayload:
    return SatellitePayload(codec="mbt2018", sat_id=7, rank=1, base=120, n_new=33, channels=32,
                            latent_h=16, latent_w=16, z_h=4, z_w=4, image_h=256, image_w=256,
                            z_string=b"zz" * 10, y_string=bytes(range(200)), map_blob=b"m" * 17,
                            mean_representatives=True)


def test_round_trip() -> None:
    p = _payload()
    data = p.to_bytes()
    assert SatellitePayload.from_bytes(data) == p
    assert len(data) == 7 + 35 + 20 + 200 + 17 + 4  # head, fixed, z, y, map, CRC


def test_unknown_codec_and_out_of_range_fields_are_named() -> None:
    from dataclasses import replace

    from nodes.dlrc.errors import DlrcConfigError

    with pytest.raises(DlrcConfigError, match="codec 'jpeg'; expected one of bmshj2018"):
        replace(_payload(), codec="jpeg").to_bytes()
    with pytest.raises(DlrcConfigError, match="rank 300"):
        replace(_payload(), rank=300).to_bytes()
    data = bytearray(_payload().to_bytes())
    data[6] = 99  # codec id; the CRC is checked first, so fix it up
    import struct
    import zlib

    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(CorruptPayloadError, match="codec id 99"):
        SatellitePayload.from_bytes(bytes(data))


@pytest.mark.parametrize("cut", [0, 3, 10, 30, 60, -50, -1])
def test_truncated(cut: int) -> None:
    data = _payload().to_bytes()
    with pytest.raises(TruncatedPayloadError, match="bytes"):
        SatellitePayload.from_bytes(data[:cut])


@pytest.mark.parametrize("where", [80, 150, 280])
def test_flipped_byte_fails_the_checksum(where: int) -> None:
    data = bytearray(_payload().to_bytes())
    data[where] ^= 0x40
    with pytest.raises(CorruptPayloadError, match="CRC32"):
        SatellitePayload.from_bytes(bytes(data))


def test_bad_magic_version_and_trailing_bytes() -> None:
    data = _payload().to_bytes()
    with pytest.raises(CorruptPayloadError, match="magic"):
        SatellitePayload.from_bytes(b"JPEG" + data[4:])
    with pytest.raises(CorruptPayloadError, match="version 9"):
        SatellitePayload.from_bytes(data[:4] + b"\x09" + data[5:])
    with pytest.raises(CorruptPayloadError, match="header says"):
        SatellitePayload.from_bytes(data + b"\0")
