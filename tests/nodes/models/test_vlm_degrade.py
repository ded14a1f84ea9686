"""Region degradation for training W^g: dropped cells black, mid cells blurred, the rest intact."""

from __future__ import annotations

import pytest
import torch

from nodes.models.errors import ModelConfigError
from nodes.models.vlm.degrade import degrade_regions


def _checker(n: int, px: int = 60) -> torch.Tensor:
    """Images with one-pixel detail everywhere (blurring changes every pixel), none black."""
    yy, xx = torch.meshgrid(torch.arange(px), torch.arange(px), indexing="ij")
    board = ((yy + xx) % 2).float() * 0.6 + 0.2
    return board.expand(n, 3, px, px).clone()


def test_share_zero_and_one() -> None:
    x = _checker(8)
    assert torch.equal(degrade_regions(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = degrade_regions(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(x, _checker(8))                       # the input is not modified
    changed = (y != x).flatten(1).any(1)
    assert bool(changed.all())


def test_three_way_cells() -> None:
    """Per 6 x 6 px cell: all black (dropped), blurred (no pixel equal) or untouched (kept)."""
    x = _checker(16)
    y = degrade_regions(x, 1.0, torch.Generator().manual_seed(1), grid=10)
    cells = y.unfold(2, 6, 6).unfold(3, 6, 6)                # [B, 3, 10, 10, 6, 6]
    ref = x.unfold(2, 6, 6).unfold(3, 6, 6)
    dropped = (cells == 0).flatten(-2).all(-1).all(1)         # [B, 10, 10]
    kept = (cells == ref).flatten(-2).all(-1).all(1)
    blurred = ~dropped & ~kept
    assert bool((dropped | kept | blurred).all())
    # the min-max normalised field reaches 0 and 1: every image drops and keeps some cells
    assert bool(dropped.flatten(1).any(1).all()) and bool(kept.flatten(1).any(1).all())
    assert 0.1 < float(dropped.float().mean()) < 0.7
    assert float(blurred.float().mean()) > 0.02
    # a blurred cell lost the checkerboard's contrast
    contrast = (cells.amax((-1, -2)) - cells.amin((-1, -2))).mean(1)
    assert float(contrast[blurred].mean()) < 0.5 * float(contrast[kept].mean())


def test_seeded_and_checked() -> None:
    x = _checker(6)
    a = degrade_regions(x, 0.5, torch.Generator().manual_seed(3))
    b = degrade_regions(x, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ModelConfigError, match="share=1.5"):
        degrade_regions(x, 1.5, torch.Generator())
    with pytest.raises(ModelConfigError, match="alpha=0.6 beta=0.5"):
        degrade_regions(x, 0.5, torch.Generator(), alpha=0.6, beta=0.5)
