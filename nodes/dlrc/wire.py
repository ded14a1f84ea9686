"""One satellite's DLRC payload on the wire: header, hyperprior bitstream, latent bitstream, map.

Little-endian layout (version 2: the map is delta coded, see mapcodec.py):

    magic   4s   b"DLRC"
    version B    2
    flags   B    bit 0: representatives are cluster means (informational)
    nlen    B    length of the codec name, then the ASCII codec name (e.g. "mbt2018")
    fixed   <IHIIHHHHHHHIII
            sat_id, rank, base, n_new, channels, latent_h, latent_w, z_h, z_w, image_h, image_w,
            len(z_string), len(y_string), len(map)
    z_string, y_string, map   the three payloads, in that order
    crc32   <I   zlib.crc32 of every byte before it

The codec name says which architecture (and, with the lambda the ground is configured with,
which weights) decodes it; rank and base let the ground check it decodes satellites in the same
priority order the arbiter used. The CRC turns a corrupted rANS bitstream, which would decode to
garbage without complaint, into CorruptPayloadError.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from nodes.dlrc.errors import CorruptPayloadError, TruncatedPayloadError

MAGIC = b"DLRC"
VERSION = 2
_HEAD = struct.Struct("<4sBBB")
_FIXED = struct.Struct("<IHIIHHHHHHHIII")
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
        name = self.codec.encode("ascii")
        head = _HEAD.pack(MAGIC, VERSION, int(self.mean_representatives), len(name)) + name
        fixed = _FIXED.pack(self.sat_id, self.rank, self.base, self.n_new, self.channels,
                            self.latent_h, self.latent_w, self.z_h, self.z_w, self.image_h,
                            self.image_w, len(self.z_string), len(self.y_string),
                            len(self.map_blob))
        body = head + fixed + self.z_string + self.y_string + self.map_blob
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> SatellitePayload:
        """Parse; TruncatedPayloadError or CorruptPayloadError say what is wrong."""
        data = bytes(data)
        if len(data) < _HEAD.size:
            raise TruncatedPayloadError(f"DLRC payload of {len(data)} bytes; expected a header "
                                        f"of at least {_HEAD.size}")
        magic, version, flags, nlen = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise CorruptPayloadError(f"DLRC payload magic {magic!r}; expected {MAGIC!r}")
        if version != VERSION:
            raise CorruptPayloadError(f"DLRC payload version {version}; expected {VERSION}")
        start = _HEAD.size + nlen + _FIXED.size
        if len(data) < start:
            raise TruncatedPayloadError(f"DLRC payload of {len(data)} bytes; header needs {start}")
        name = data[_HEAD.size:_HEAD.size + nlen]
        f = _FIXED.unpack_from(data, _HEAD.size + nlen)
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
        try:
            codec = name.decode("ascii")
        except UnicodeDecodeError:
            raise CorruptPayloadError(f"DLRC payload codec name {name!r}; expected ASCII") from None
        z = data[start:start + lz]
        y = data[start + lz:start + lz + ly]
        m = data[start + lz + ly:start + lz + ly + lm]
        return cls(codec, *f[:11], z_string=z, y_string=y, map_blob=m,
                   mean_representatives=bool(flags & 1))
