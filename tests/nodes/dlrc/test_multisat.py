"""Several satellites crop overlapping windows of one real image: DLRC sends fewer bytes than
the plain codec while the reconstruction stays close to the plain codec's."""

from __future__ import annotations

import numpy as np
import pytest

from tests.nodes.dlrc.conftest import require_ml, to_tensor

torch = require_ml()

from nodes.dlrc.pipeline import GroundDecoder, run  # noqa: E402
from nodes.models.codecs.roundtrip import roundtrip  # noqa: E402

CODEC = "bmshj2018-hyperprior"


def psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a - b) ** 2).item()
    return 10.0 * np.log10(1.0 / mse)


def window_crops(im: np.ndarray, n: int, window_px: int, patch_px: int, seed: int) -> list:
    """n patches at random 16-pixel-aligned offsets inside the top-left window_px square."""
    rng = np.random.default_rng(seed)
    steps = (window_px - patch_px) // 16 + 1
    offs = [(16 * int(rng.integers(steps)), 16 * int(rng.integers(steps))) for _ in range(n)]
    return [im[t:t + patch_px, s:s + patch_px] for t, s in offs]


@pytest.mark.parametrize(("n", "window_px"), [(4, 384)])  # o_exp = 4 * 256^2 / 384^2 = 1.78
def test_overlap_saves_bytes_and_keeps_psnr(trained_bmshj, hr_image, n, window_px) -> None:
    crops = window_crops(hr_image, n, window_px, 256, seed=4)
    images = {i + 1: to_tensor(c) for i, c in enumerate(crops)}
    plain = {s: roundtrip(trained_bmshj, x) for s, x in images.items()}
    payloads, arb, _ = run(trained_bmshj, CODEC, images, sorted(images))
    rec = GroundDecoder(trained_bmshj, CODEC).decode(payloads.values())
    plain_bytes = sum(p.nbytes for p in plain.values())
    dlrc_bytes = sum(len(b) for b in payloads.values())  # headers, maps and CRCs included
    plain_psnr = np.mean([psnr_db(plain[s].x_hat, images[s]) for s in images])
    dlrc_psnr = np.mean([psnr_db(rec[s].x_hat, images[s]) for s in images])
    assert arb.total_vectors < 0.8 * n * 256  # the overlap was recognised
    assert dlrc_bytes < plain_bytes
    assert dlrc_psnr > plain_psnr - 1.0
