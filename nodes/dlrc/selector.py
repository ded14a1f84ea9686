"""Selector: intra-satellite de-duplication of latent vectors that share a signature.

Each signature keeps the vector at its smallest spatial (raster) index: that position is decoded
first in raster order, so every later copy can be filled in from it, also inside an autoregressive
context model. Its value is either the original vector there or the mean of the cluster.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nodes.dlrc.errors import DlrcConfigError

REPRESENTATIVES = ("original", "mean")


@dataclass(frozen=True)
class Selection:
    """The local clusters of one satellite's latent."""

    signatures: np.ndarray  # (m,) int64, unique, in spatial order of first occurrence
    rep_positions: np.ndarray  # (m,) int64 raster index of each cluster's representative
    assignment: np.ndarray  # (n,) int64: raster position -> local cluster index
    rep_vectors: np.ndarray  # (m, C) float32 representative values


def select(
    signatures: np.ndarray, vectors: np.ndarray, representative: str = "original"
) -> Selection:
    """Cluster positions by signature; `vectors` is (n, C) in raster order."""
    if representative not in REPRESENTATIVES:
        raise DlrcConfigError(
            f"representative={representative!r}; expected one of {', '.join(REPRESENTATIVES)}"
        )
    sigs = np.asarray(signatures, dtype=np.int64)
    vecs = np.asarray(vectors, dtype=np.float32)
    if sigs.ndim != 1 or vecs.ndim != 2 or len(sigs) != len(vecs):
        raise DlrcConfigError(
            f"signatures {sigs.shape} and vectors {vecs.shape}; expected (n,) and (n, C)"
        )
    _, first, inverse = np.unique(sigs, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # clusters in spatial order of first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    assignment = rank[inverse.reshape(-1)].astype(np.int64)
    rep_positions = first[order].astype(np.int64)
    if representative == "original":
        rep_vectors = vecs[rep_positions]
    else:
        sums = np.zeros((len(order), vecs.shape[1]), dtype=np.float64)
        np.add.at(sums, assignment, vecs)
        counts = np.bincount(assignment, minlength=len(order))[:, None]
        rep_vectors = (sums / counts).astype(np.float32)
    return Selection(sigs[rep_positions], rep_positions, assignment, rep_vectors)
