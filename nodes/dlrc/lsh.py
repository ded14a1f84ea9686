"""Recognizer: cross-polytope LSH of latent vectors into 64-bit signatures.

For one round r with a random rotation R_r (Haar, from QR of a Gaussian matrix),
h_r(y) = 2*argmax_j |(R_r y)_j| + [(R_r y)_j < 0], a value in [0, 2C): the nearest vertex of the
cross-polytope {±e_j} after rotation. Two vectors at a small angle land on the same vertex with high
probability, so equal signatures mark (near-)duplicate vectors; magnitudes do not matter.

k rounds (default 20) are ANDed by mixing them into one 64-bit signature, mod 2^64:
acc_0 = 0, acc_{r+1} = fmix64(acc_r * 0x9E3779B97F4A7C15 + (r << 32 | h_r)), where fmix64 is
MurmurHash3's 64-bit finaliser (xor-shift 33, multiply 0xFF51AFD7ED558CCD, xor-shift 33, multiply
0xC4CEB9FE1A85EC53, xor-shift 33). The result is read as int64 (what satellites exchange).

The ordered rotations come from numpy's default Generator (PCG64) seeded with the shared seed, in
float64, so every satellite (and every process) maps the same vector to the same signature.
"""

from __future__ import annotations

import numpy as np

from nodes.dlrc.errors import DlrcConfigError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_S32 = np.uint64(32)


_BLOCK_ROWS = 2048


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser on a uint64 array (wraps mod 2^64)."""
    h = h ^ (h >> _S33)
    h = h * _C1
    h = h ^ (h >> _S33)
    h = h * _C2
    return h ^ (h >> _S33)


def random_rotations(dim: int, rounds: int, seed: int) -> np.ndarray:
    """(rounds, dim, dim) Haar-random orthogonal matrices; equal (dim, rounds, seed) give equal."""
    rng = np.random.default_rng(seed)
    out = np.empty((rounds, dim, dim), dtype=np.float64)
    for r in range(rounds):
        q, upper = np.linalg.qr(rng.standard_normal((dim, dim)))
        out[r] = q * np.sign(np.diag(upper))  # sign fix makes Q Haar-distributed
    return out


class CrossPolytopeLSH:
    """Signatures of C-dimensional vectors; equal (dim, rounds, seed) give equal signatures."""

    def __init__(self, dim: int, rounds: int = 20, seed: int = 0):
        if dim < 2:
            raise DlrcConfigError(f"LSH dim={dim}; expected >= 2 (latent channels)")
        if not 1 <= rounds <= 256:
            raise DlrcConfigError(f"LSH rounds={rounds}; expected 1..256")
        self.dim = dim
        self.rounds = rounds
        self.seed = seed
        self._stacked = random_rotations(dim, rounds, seed).reshape(rounds * dim, dim)

    def vertices(self, vectors: np.ndarray) -> np.ndarray:
        """(n, rounds) cross-polytope vertex index in [0, 2*dim) of each vector in each round."""
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise DlrcConfigError(f"LSH input shape {v.shape}; expected (n, {self.dim})")
        out = np.empty((len(v), self.rounds), dtype=np.uint64)
        # blocks of rows bound the (rows, rounds, dim) projection: 2048 x 20 x 64 float64 is
        # 21 MB, where a 2048 px image's 16,384 vectors at once took 330 MB and 3x the time
        for a in range(0, len(v), _BLOCK_ROWS):
            proj = (v[a:a + _BLOCK_ROWS] @ self._stacked.T).reshape(-1, self.rounds, self.dim)
            j = np.argmax(np.abs(proj), axis=2)
            neg = np.take_along_axis(proj, j[..., None], axis=2)[..., 0] < 0
            out[a:a + _BLOCK_ROWS] = 2 * j + neg
        return out

    def signatures(self, vectors: np.ndarray) -> np.ndarray:
        """(n,) int64 signatures: the rounds' vertices mixed by fmix64 (module docstring)."""
        verts = self.vertices(vectors)
        acc = np.zeros(len(verts), dtype=np.uint64)
        for r in range(self.rounds):
            acc = fmix64(acc * _GOLDEN + ((np.uint64(r) << _S32) | verts[:, r]))
        return acc.view(np.int64)
