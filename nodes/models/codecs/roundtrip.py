"""The plain codec's round trip (CompressAI compress/decompress): the baseline for DLRC."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PlainResult:
    """Bytes on the wire and the reconstruction of one image by the plain codec."""

    nbytes: int
    x_hat: Any  # torch.Tensor (1, 3, H, W) in [0, 1]
    encode_s: float
    decode_s: float


def roundtrip(model: Any, x: Any) -> PlainResult:
    """compress + decompress one (1, 3, H, W) image; nbytes counts every bitstream."""
    import time

    import torch

    with torch.no_grad():
        t0 = time.perf_counter()
        enc = model.compress(x)
        t1 = time.perf_counter()
        x_hat = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        t2 = time.perf_counter()
    nbytes = sum(len(s) for group in enc["strings"] for s in group)
    return PlainResult(nbytes, x_hat, t1 - t0, t2 - t1)
