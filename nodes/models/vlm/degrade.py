"""Training-time region degradation: images that look like what a ground model receives.

Owns one augmentation, `degrade_regions`: a grid of cells over each chosen image gets a random,
spatially smooth score in [0, 1]; cells below `alpha` turn black (dropped, as the ground's
rebuild leaves them) and cells between `alpha` and `beta` are downsampled by
(K - alpha) / (beta - alpha) and upsampled back (blurred), the three-way rule of a multi-scale
preprocessing such as SpaceVerse's. It does not score regions against a prompt (the random
field stands in for any scorer) and does not know the wire format: the model learns to answer
from partly dropped, partly blurred images, whatever picked the cells.

Applied at the model's input resolution, so a downsampled cell loses at least as much as it
would at the source resolution (conservative for sources larger than the input).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nodes.models.errors import ModelConfigError

__all__ = ["degrade_regions"]

_LEVELS = (0.125, 0.25, 0.5, 0.75)   # downsampling factors (a cell's scale rounds down to one)


def degrade_regions(images: torch.Tensor, share: float, generator: torch.Generator,
                    grid: int = 10, alpha: float = 0.35, beta: float = 0.55) -> torch.Tensor:
    """Degrade a random `share` of `images` (`[B, 3, H, W]`, not modified) by region.

    Returns a new batch; the other images are unchanged. Scores: a 3 x 3 random field
    upsampled to `grid` x `grid` plus cell noise, min-max normalised per image.
    """
    if not 0.0 <= share <= 1.0:
        raise ModelConfigError(f"degrade_regions: share={share}, expected 0 <= share <= 1")
    if not 0.0 <= alpha < beta <= 1.0:
        raise ModelConfigError(f"degrade_regions: alpha={alpha} beta={beta}, "
                         "expected 0 <= alpha < beta <= 1")
    out = images.clone()
    b, _, h, w = images.shape
    chosen = torch.rand(b, generator=generator) < share
    if not bool(chosen.any()):
        return out
    idx = chosen.nonzero().flatten()
    x = images[idx]
    n = len(idx)
    field = F.interpolate(torch.rand(n, 1, 3, 3, generator=generator), size=(grid, grid),
                          mode="bilinear", align_corners=True)
    field = field + 0.3 * torch.rand(n, 1, grid, grid, generator=generator)
    lo = field.amin(dim=(2, 3), keepdim=True)
    hi = field.amax(dim=(2, 3), keepdim=True)
    scores = (field - lo) / (hi - lo).clamp(min=1e-6)
    scales = ((scores - alpha) / (beta - alpha)).clamp(max=1.0)
    scales = torch.where(scores < alpha, torch.zeros_like(scales), scales)
    px_scales = F.interpolate(scales, size=(h, w), mode="nearest")
    y = torch.where(px_scales > 0, x, torch.zeros_like(x))
    for i, level in enumerate(_LEVELS):
        upper = _LEVELS[i + 1] if i + 1 < len(_LEVELS) else 1.0
        mask = (px_scales > 0) & (px_scales < upper) & (px_scales >= (level if i else 0.0))
        if not bool(mask.any()):
            continue
        small = F.interpolate(x, size=(max(1, round(h * level)), max(1, round(w * level))),
                              mode="area")
        blurred = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
        y = torch.where(mask, blurred, y)
    out[idx] = y
    return out
