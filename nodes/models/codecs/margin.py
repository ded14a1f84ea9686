"""Codecs whose analysis sees scene around the image: g_a runs on the image plus a margin and
only the inner image's latent is kept, coded and synthesised.

Why: two overlapping views of one scene give the same latent vector for a ground cell only if
g_a's receptive field sees the same pixels around it; at a crop's border it sees zero padding,
so DLRC's signatures miss those cells (experiments/dlrc/README.md). A codec trained this way
(`TrainSettings.margin_px`) learns to synthesise the inner image from latents that saw past
its border; nodes.dlrc's `DlrcConfig.margin_px` gives such a codec its margin at encode time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from nodes.models.codecs.errors import CodecInputError

LATENT_STRIDE = 16  # g_a's downsampling in every registered architecture


def margin_cells(margin_px: int) -> int:
    """Latent cells in `margin_px`, after checking it is a multiple of the latent stride."""
    if margin_px < 0 or margin_px % LATENT_STRIDE:
        raise CodecInputError(f"margin_px={margin_px}; expected a multiple of "
                              f"{LATENT_STRIDE} >= 0")
    return margin_px // LATENT_STRIDE


def _latent_crop(g_a: Any, cells: int) -> Any:
    """g_a followed by dropping `cells` latent cells on every side, as one module."""
    import torch

    class LatentCrop(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = g_a

        def forward(self, x: Any) -> Any:
            y = self.inner(x)
            return y[:, :, cells:y.shape[2] - cells, cells:y.shape[3] - cells]

    return LatentCrop()


@contextmanager
def analysis_margin(model: Any, margin_px: int) -> Iterator[Any]:
    """Within the block, `model(x)` (CompressAI's forward, so every architecture's own entropy
    model and likelihoods) takes `x` with `margin_px` of scene on every side and returns the
    inner image's reconstruction; the model is restored afterwards."""
    cells = margin_cells(margin_px)
    if not cells:
        yield model
        return
    g_a = model._modules["g_a"]
    model._modules["g_a"] = _latent_crop(g_a, cells)  # same slot: parameter order is kept
    try:
        yield model
    finally:
        model._modules["g_a"] = g_a
