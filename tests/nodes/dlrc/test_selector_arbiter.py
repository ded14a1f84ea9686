"""Selector and arbiter on hand-made signature sets; the map's tokens and LZMA round trip."""

from __future__ import annotations

import lzma

import numpy as np
import pytest

from nodes.dlrc import mapcodec
from nodes.dlrc.arbiter import SatelliteState, arbitrate, global_map, priority_order
from nodes.dlrc.errors import DlrcConfigError, MapFormatError
from nodes.dlrc.selector import select


def test_selector_keeps_smallest_index_per_signature() -> None:
    sigs = np.array([5, 3, 5, 7, 3, 5], dtype=np.int64)
    vecs = np.arange(12, dtype=np.float32).reshape(6, 2)
    sel = select(sigs, vecs, "original")
    assert sel.signatures.tolist() == [5, 3, 7]
    assert sel.rep_positions.tolist() == [0, 1, 3]
    assert sel.assignment.tolist() == [0, 1, 0, 2, 1, 0]
    np.testing.assert_array_equal(sel.rep_vectors, vecs[[0, 1, 3]])


def test_selector_mean_representative() -> None:
    sigs = np.array([9, 9, 4], dtype=np.int64)
    vecs = np.array([[1.0, 2.0], [3.0, 6.0], [5.0, 5.0]], dtype=np.float32)
    sel = select(sigs, vecs, "mean")
    np.testing.assert_allclose(sel.rep_vectors, [[2.0, 4.0], [5.0, 5.0]])


def test_selector_rejects_unknown_mode_and_shapes() -> None:
    with pytest.raises(DlrcConfigError, match="representative='median'"):
        select(np.zeros(2, dtype=np.int64), np.zeros((2, 3)), "median")
    with pytest.raises(DlrcConfigError, match="expected"):
        select(np.zeros(3, dtype=np.int64), np.zeros((2, 3)))


LISTS = {
    1: np.array([10, 20, 30], dtype=np.int64),
    2: np.array([20, 40], dtype=np.int64),
    3: np.array([40, 10, 50], dtype=np.int64),
}


def test_arbiter_keeps_shared_signatures_at_highest_priority() -> None:
    arb = arbitrate(LISTS, [1, 2, 3])
    p1, p2, p3 = (arb.plans[s] for s in (1, 2, 3))
    assert (p1.base, p1.kept.tolist(), p1.local_seq.tolist()) == (0, [True] * 3, [0, 1, 2])
    assert (p2.base, p2.kept.tolist(), p2.local_seq.tolist()) == (3, [False, True], [1, 3])
    assert (p3.base, p3.kept.tolist(), p3.local_seq.tolist()) == (4, [False, False, True],
                                                                  [3, 0, 4])
    assert arb.total_vectors == 5


def test_arbiter_other_order_moves_ownership() -> None:
    arb = arbitrate(LISTS, [3, 1, 2])
    assert arb.plans[3].kept.tolist() == [True, True, True]
    assert arb.plans[1].kept.tolist() == [False, True, True]  # 10 is satellite 3's now
    assert arb.plans[2].kept.tolist() == [False, False]
    assert arb.plans[2].local_seq.tolist() == [3, 0]


def test_priority_rules() -> None:
    states = [SatelliteState(1, link_quality=0.2, energy_j=90.0),
              SatelliteState(2, link_quality=0.9, energy_j=10.0),
              SatelliteState(3, link_quality=0.9, energy_j=50.0)]
    assert priority_order(states, "satellite-id") == [1, 2, 3]
    assert priority_order(states, "link-quality") == [2, 3, 1]  # tie 2/3 broken by id
    assert priority_order(states, "energy") == [1, 3, 2]
    with pytest.raises(DlrcConfigError, match="priority rule 'luck'"):
        priority_order(states, "luck")
    with pytest.raises(DlrcConfigError, match="distinct"):
        priority_order([SatelliteState(1), SatelliteState(1)])


def test_arbiter_rejects_bad_inputs() -> None:
    with pytest.raises(DlrcConfigError, match="priority order"):
        arbitrate(LISTS, [1, 2])
    with pytest.raises(DlrcConfigError, match="repeats"):
        arbitrate({1: np.array([4, 4], dtype=np.int64)}, [1])


def test_global_map_and_lzma_round_trip() -> None:
    arb = arbitrate(LISTS, [1, 2, 3])
    assignment = np.array([0, 1, 0, 2, 2, 1])  # satellite 3: 40 10 40 50 50 10
    seq = global_map(assignment, arb.plans[3])
    assert seq.tolist() == [3, 0, 3, 4, 4, 0]
    assert mapcodec.tokens(seq, base=4).tolist() == [4, 1, 4, 0, 5, 1]
    blob = mapcodec.encode(seq, base=4)
    np.testing.assert_array_equal(mapcodec.decode(blob, 6, base=4), seq)


def test_map_of_a_large_latent_without_copies_is_small() -> None:
    seq = np.arange(100, 100 + 32 * 32)
    blob = mapcodec.encode(seq, base=100)
    assert len(blob) < 40
    np.testing.assert_array_equal(mapcodec.decode(blob, 32 * 32, base=100), seq)


def test_map_errors() -> None:
    with pytest.raises(MapFormatError, match="expected <= 0"):
        mapcodec.encode(np.array([1, 0]), base=0)  # not dense
    blob = mapcodec.encode(np.arange(64), base=0)
    with pytest.raises(MapFormatError, match="LZMA"):
        mapcodec.decode(blob[: len(blob) // 2], 64, base=0)
    with pytest.raises(MapFormatError, match="expected 260"):
        mapcodec.decode(blob, 65, base=0)
    import lzma

    # wire code 7 = zigzag(+3) + 1: token 3, a copy of vector 2 before it exists
    forward = lzma.compress(np.array([0, 7], dtype="<u4").tobytes(), format=lzma.FORMAT_RAW,
                            filters=mapcodec._FILTERS)
    with pytest.raises(MapFormatError, match="copies vector 2"):
        mapcodec.decode(forward, 2, base=0)


def test_map_delta_codes_round_trip_and_shrink_runs() -> None:
    tok = np.array([0, 0, 5, 6, 7, 0, 3, 3, 9, 1])
    codes = mapcodec.delta_codes(tok)
    # 5 (+5), 6 (+1), 7 (+1), 3 (-4), 3 (0), 9 (+6), 1 (-8): zigzag + 1
    assert codes.tolist() == [0, 0, 11, 3, 3, 0, 8, 1, 13, 16]
    assert mapcodec.undelta(codes).tolist() == tok.tolist()
    # a view that copies a run of another's vectors: the map costs far less than plain tokens
    seq = np.concatenate([np.arange(1000, 1128), np.arange(128) + 1200])
    plain = lzma.compress(mapcodec.tokens(seq, 1200).astype("<u4").tobytes(),
                          format=lzma.FORMAT_RAW, filters=mapcodec._FILTERS)
    assert len(mapcodec.encode(seq, 1200)) < len(plain)
    np.testing.assert_array_equal(mapcodec.decode(mapcodec.encode(seq, 1200), 256, 1200), seq)
