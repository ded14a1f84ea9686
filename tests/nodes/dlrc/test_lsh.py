"""Recognizer: cross-polytope LSH signatures."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nodes.dlrc.errors import DlrcConfigError
from nodes.dlrc.lsh import CrossPolytopeLSH, fmix64, random_rotations
from tests.nodes.conftest import REPO_ROOT


def test_rotations_are_orthogonal_and_seeded() -> None:
    rot = random_rotations(16, 3, seed=7)
    for r in rot:
        np.testing.assert_allclose(r @ r.T, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(rot, random_rotations(16, 3, seed=7))
    assert not np.array_equal(rot, random_rotations(16, 3, seed=8))


def test_identical_and_rescaled_vectors_collide() -> None:
    rng = np.random.default_rng(1)
    v = rng.standard_normal((50, 32))
    lsh = CrossPolytopeLSH(32, rounds=20, seed=3)
    np.testing.assert_array_equal(lsh.signatures(v), lsh.signatures(v.copy()))
    np.testing.assert_array_equal(lsh.signatures(v), lsh.signatures(2.5 * v))


def test_dissimilar_vectors_rarely_collide_near_ones_often() -> None:
    rng = np.random.default_rng(2)
    lsh = CrossPolytopeLSH(32, rounds=20, seed=0)
    far = lsh.signatures(rng.standard_normal((2000, 32)))
    assert len(np.unique(far)) == 2000  # 20 rounds ANDed: random pairs essentially never match
    base = rng.standard_normal((500, 32))
    near = base + 1e-4 * rng.standard_normal((500, 32))
    same = np.mean(lsh.signatures(base) == lsh.signatures(near))
    assert same > 0.95
    one_round = CrossPolytopeLSH(32, rounds=1, seed=0)
    noisy = base + 0.5 * rng.standard_normal((500, 32))
    p1 = np.mean(one_round.signatures(base) == one_round.signatures(noisy))
    p20 = np.mean(lsh.signatures(base) == lsh.signatures(noisy))
    assert p20 < p1  # more rounds, fewer collisions of merely similar vectors


def test_signatures_are_int64_and_mixing_is_nonlinear() -> None:
    lsh = CrossPolytopeLSH(8, rounds=4, seed=0)
    sig = lsh.signatures(np.eye(8))
    assert sig.dtype == np.int64 and sig.shape == (8,)
    x = np.array([1, 2, 3], dtype=np.uint64)
    assert fmix64(x).tolist() != (fmix64(np.array([1], dtype=np.uint64)) * x).tolist()
    assert fmix64(np.array([0], dtype=np.uint64)).tolist() == [0]


def test_same_seed_same_signatures_in_another_process() -> None:
    code = ("import numpy as np, sys; from nodes.dlrc.lsh import CrossPolytopeLSH; "
            "v = np.random.default_rng(5).standard_normal((64, 24)); "
            "sys.stdout.write(CrossPolytopeLSH(24, 20, 11).signatures(v).tobytes().hex())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=60, check=True).stdout
    v = np.random.default_rng(5).standard_normal((64, 24))
    assert out == CrossPolytopeLSH(24, 20, 11).signatures(v).tobytes().hex()


@pytest.mark.parametrize(("dim", "rounds"), [(1, 20), (8, 0), (8, 257)])
def test_bad_settings_are_named(dim: int, rounds: int) -> None:
    with pytest.raises(DlrcConfigError, match="LSH"):
        CrossPolytopeLSH(dim, rounds)


def test_wrong_vector_width_is_named() -> None:
    with pytest.raises(DlrcConfigError, match=r"expected \(n, 8\)"):
        CrossPolytopeLSH(8).signatures(np.zeros((3, 9)))
