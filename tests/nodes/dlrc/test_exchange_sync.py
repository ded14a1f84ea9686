"""The signature-list message, the sync-time model against hand-computed figures, the map's raw
size and the roofline work counters (numpy; the counter test builds small torch modules)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nodes.dlrc.arbiter import SatelliteState
from nodes.dlrc.errors import CorruptPayloadError, TruncatedPayloadError
from nodes.dlrc.exchange import SignatureMessage
from nodes.dlrc.mapcodec import raw_bytes
from nodes.dlrc.sync_model import sync_round
from nodes.dlrc.work import lsh_work


def test_signature_message_round_trip() -> None:
    sigs = np.array([-5, 0, 2**62, -(2**63)], dtype=np.int64)
    msg = SignatureMessage(SatelliteState(7, 0.25, 1e4), sigs)
    back = SignatureMessage.from_bytes(msg.to_bytes(), "sat7")
    assert back.state == SatelliteState(7, 0.25, 1e4)
    assert back.signatures.dtype == np.int64 and list(back.signatures) == list(sigs)
    assert len(msg.to_bytes()) == 30 + 8 * 4 + 4


def test_signature_message_errors_are_named() -> None:
    blob = SignatureMessage(SatelliteState(1), np.arange(3, dtype=np.int64)).to_bytes()
    with pytest.raises(TruncatedPayloadError, match=r"from sat1: 40 bytes for 3 signatures"):
        SignatureMessage.from_bytes(blob[:40], "sat1")
    bad = bytearray(blob)
    bad[40] ^= 1
    with pytest.raises(CorruptPayloadError, match="from sat1: CRC32 mismatch"):
        SignatureMessage.from_bytes(bytes(bad), "sat1")
    with pytest.raises(CorruptPayloadError, match=r"magic b'XLSG'"):
        SignatureMessage.from_bytes(b"X" + blob[1:], "sat1")


def test_sync_round_hand_computed() -> None:
    # three observers on a line: 0 -(10 ms)- 1 -(12 ms)- 2, 100 Mbit/s ISLs
    prop = np.array([[0, 0.010, 0.022], [0.010, 0, 0.012], [0.022, 0.012, 0]])
    hops = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]])
    lists = np.array([2000, 1000, 4000])  # bytes
    r = sync_round(prop, hops, lists, 100e6)
    # slowest: 2 -> 0: 22 ms + 2 x 0.5 ms + 32,000 bits / 100 Mbit/s = 23.32 ms
    assert r.slowest_pair == (2, 0)
    assert r.network_s == pytest.approx(0.02332)
    assert r.control_s == pytest.approx(0.09)
    assert r.total_s == pytest.approx(0.11332)
    assert math.isinf(sync_round(np.array([[0, np.inf], [1, 0]]), np.ones((2, 2)),
                                 np.array([8, 8]), 1e6).total_s)
    with pytest.raises(ValueError, match="expected"):
        sync_round(np.zeros((1, 1)), np.zeros((1, 1)), np.zeros(1), 1e6)


def test_map_raw_bytes_is_the_fixed_width_packing() -> None:
    # 4 positions, base 0: new, new, copy of 0, new -> tokens 0, 0, 1, 0: 1 bit each -> 1 byte
    assert raw_bytes(np.array([0, 1, 0, 2]), 0) == 1
    # 256 new positions then a copy of vector 200: token 201 needs 8 bits -> 257 bytes
    assert raw_bytes(np.append(np.arange(256), 200), 0) == 257


def test_lsh_work_hand_computed() -> None:
    w = lsh_work(positions=256, channels=64, rounds=20)
    assert w.flops == 20 * 256 * (2 * 64 * 64 + 2 * 64)
    assert w.bytes == 20 * 64 * 64 * 4 + 256 * 64 * 4 + 256 * 8


def test_codec_work_counts_convolutions() -> None:
    torch = pytest.importorskip("torch", reason="the counter needs the ml extra (torch)")
    pytest.importorskip("compressai", reason="the counter needs the ml extra (compressai)")
    from nodes.dlrc.work import codec_analysis_work

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.g_a = torch.nn.Conv2d(3, 4, 5, stride=2, padding=2)
            self.h_a = torch.nn.Conv2d(4, 2, 3, padding=1)
            self.h_s = torch.nn.ConvTranspose2d(2, 4, 4, stride=2, padding=1)

    w = codec_analysis_work(Tiny(), (16, 16))
    # g_a: 4x8x8 outputs x 3x25 MACs; h_a: 2x8x8 x 4x9; h_s: 2x8x8 inputs x 4x16 outputs each
    assert w.flops == 2 * 256 * 75 + 2 * 128 * 36 + 2 * 128 * 64


def test_sync_model_docstring_example() -> None:
    import doctest

    from nodes.dlrc import sync_model

    assert doctest.testmod(sync_model).failed == 0
