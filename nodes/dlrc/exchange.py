"""The signature list one satellite sends every other over the inter-satellite links.

Owns the bytes of that message only (the data plane carries it; the arbiter reads it). It holds
what the arbitration needs from a satellite: its id, the state the priority rules look at, and
its unique signatures in spatial order. Every satellite runs `arbitrate` on the same set of
messages, so each reaches the same plan without a coordinator.

Little-endian layout (version 1):

    magic    4s   b"DLSG"
    version  B    1
    flags    B    0 (reserved)
    fixed    <IddI   sat_id, link_quality, energy_j, count
    sigs     count x <q   signatures, spatial order of their representatives
    crc32    <I   zlib.crc32 of every byte before it
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from nodes.dlrc.arbiter import SatelliteState
from nodes.dlrc.errors import CorruptPayloadError, TruncatedPayloadError

MAGIC = b"DLSG"
VERSION = 1
_HEAD = struct.Struct("<4sBBIddI")
_CRC = struct.Struct("<I")


@dataclass(frozen=True)
class SignatureMessage:
    """One satellite's contribution to a sync round."""

    state: SatelliteState
    signatures: np.ndarray  # (n,) int64

    @property
    def sat_id(self) -> int:
        return self.state.sat_id

    def to_bytes(self) -> bytes:
        sigs = np.ascontiguousarray(self.signatures, dtype="<i8")
        if sigs.ndim != 1:
            raise CorruptPayloadError(f"satellite {self.sat_id}: signatures of shape "
                                      f"{sigs.shape}, expected one dimension")
        body = _HEAD.pack(MAGIC, VERSION, 0, self.state.sat_id, float(self.state.link_quality),
                          float(self.state.energy_j), len(sigs)) + sigs.tobytes()
        return body + _CRC.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes, src: str = "?") -> SignatureMessage:
        """Parses a message; `src` (the sending node) only names it in errors."""
        where = f"signature list from {src}"
        if len(data) < _HEAD.size + _CRC.size:
            raise TruncatedPayloadError(f"{where}: {len(data)} bytes, expected at least "
                                        f"{_HEAD.size + _CRC.size}")
        magic, version, _, sat_id, quality, energy, count = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise CorruptPayloadError(f"{where}: magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise CorruptPayloadError(f"{where}: version {version}, expected {VERSION}")
        want = _HEAD.size + 8 * count + _CRC.size
        if len(data) != want:
            raise TruncatedPayloadError(f"{where}: {len(data)} bytes for {count} signatures, "
                                        f"expected {want}")
        (crc,) = _CRC.unpack_from(data, want - _CRC.size)
        if zlib.crc32(data[:want - _CRC.size]) != crc:
            raise CorruptPayloadError(f"{where}: CRC32 mismatch (corrupted in transit)")
        sigs = np.frombuffer(data, dtype="<i8", count=count, offset=_HEAD.size).astype(np.int64)
        return cls(SatelliteState(sat_id, quality, energy), sigs)
