"""One satellite's DLRC payload on the wire: header, hyperprior bitstream, latent bitstream, map.

Little-endian layout (version 2):

    magic   4s   b"DLRC"
    version B    2
    flags   B    bit 0: representatives are cluster means (informational)
    codec   B    the architecture's id in CODEC_IDS (1 = bmshj2018-hyperprior, ...)
    fixed   <HBIIHHHHHHHHII
            sat_id, rank, base, n_new, channels, latent_h, latent_w, z_h, z_w, image_h, image_w,
            len(z_string), len(y_string), len(map)
    z_string, y_string, map   the three payloads, in that order (the map delta coded,
                              mapcodec.py)
    crc32   <I   zlib.crc32 of every byte before it

46 bytes of header and CRC per satellite. Version 1 carried the codec's ASCII name (up to 20
bytes) and 32-bit ranks and z lengths: 71 bytes, 3.5 % of what the plain codec sends for a
256 px patch at lambda 0.0067; the ground is configured with its codec anyway, so one id byte
names it. The codec says which architecture (and, with the lambda the ground is configured with,
which weights) decodes it; rank and base let the ground check it decodes satellites in the same
priority order the arbiter used. The CRC turns a corrupted rANS bitstream, which would decode to
garbage without complaint, into CorruptPayloadError.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from nodes.dlrc.errors import CorruptPayloadError, DlrcConfigError, TruncatedPayloadError

MAGIC = b"DLRC"
VERSION = 2
CODEC_IDS = {"bmshj2018-hyperprior": 1, "mbt2018": 2, "cheng2020-attn": 3,
             "elic2022-official": 4}
_CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
_HEAD = struct.Struct("<4sBBB")
_FIXED = struct.Struct("<HBIIHHHHHHHHII")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class SatellitePayload:
    """A parsed payload (see module docstring for the fields)."""

    codec: str
    sat_id: int
    rank: int
    base: int
    n_new: int
    channels: int
    latent_h: int
    latent_w: int
    z_h: int
    z_w: int
    image_h: int
    image_w: int
    z_string: bytes
    y_string: bytes
    map_blob: bytes
    mean_representatives: bool = False

    def to_bytes(self) -> bytes:
        """Serialise with the trailing CRC32."""
        if self.codec not in CODEC_IDS:
            raise DlrcConfigError(f"DLRC payload codec {self.codec!r}; expected one of "
                                  f"{', '.join(CODEC_IDS)}")
        head = _HEAD.pack(MAGIC, VERSION, int(self.mean_representatives), CODEC_IDS[self.codec])
        try:
            fixed = _FIXED.pack(self.sat_id, self.rank, self.base, self.n_new, self.channels,
                                self.latent_h, self.latent_w, self.z_h, self.z_w, self.image_h,
                                self.image_w, len(self.z_string), len(self.y_string),
                                len(self.map_blob))
        except struct.error:
            raise DlrcConfigError(
                f"DLRC payload of satellite {self.sat_id}: a field out of range (sat_id < "
                f"65536, rank < 256, z bitstream < 64 KiB, sizes < 65536 px expected; rank "
                f"{self.rank}, z {len(self.z_string)} bytes, image {self.image_h}x"
                f"{self.image_w})") from None
        body = head + fixed + self.z_string + self.y_string + self.map_blob
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> SatellitePayload:
        """Parse; TruncatedPayloadError or CorruptPayloadError say what is wrong."""
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise TruncatedPayloadError(f"DLRC payload of {len(data)} bytes; expected a header "
                                        f"of at least {_HEAD.size}")
        magic, version, flags, codec_id = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise CorruptPayloadError(f"DLRC payload magic {magic!r}; expected {MAGIC!r}")
        if version != VERSION:
            raise CorruptPayloadError(f"DLRC payload version {version}; expected {VERSION}")
        start = _HEAD.size + _FIXED.size
        if len(data) < start:
            raise TruncatedPayloadError(f"DLRC payload of {len(data)} bytes; header needs {start}")
        f = _FIXED.unpack_from(data, _HEAD.size)
        lz, ly, lm = f[11], f[12], f[13]
        total = start + lz + ly + lm + _CRC.size
        if len(data) < total:
            raise TruncatedPayloadError(
                f"DLRC payload of satellite {f[0]}: {len(data)} bytes; header says {total}")
        if len(data) > total:
            raise CorruptPayloadError(
                f"DLRC payload of satellite {f[0]}: {len(data)} bytes; header says {total}")
        (crc,) = _CRC.unpack_from(data, total - _CRC.size)
        if zlib.crc32(data[:total - _CRC.size]) != crc:
            raise CorruptPayloadError(f"DLRC payload of satellite {f[0]}: CRC32 mismatch")
        codec = _CODEC_NAMES.get(codec_id)
        if codec is None:
            raise CorruptPayloadError(f"DLRC payload of satellite {f[0]}: codec id {codec_id}; "
                                      f"expected one of {sorted(_CODEC_NAMES)}")
        z = data[start:start + lz]
        y = data[start + lz:start + lz + ly]
        m = data[start + lz + ly:start + lz + ly + lm]
        return cls(codec, *f[:11], z_string=z, y_string=y, map_blob=m,
                   mean_representatives=bool(flags & 1))
