"""Text-image-attention multi-scale preprocessing (SpaceVerse, Zhang et al., ACM MM '25).

Owns scoring the regions of an image against the prompt and choosing each region's scale; the
bytes on the wire are `nodes.spaceverse.wire`'s job.

    image -> N_r = rows x cols regions x^r
    K(x^r) = sum_i sum_j cos(V_i(x^r), E_j(T))        (region visual tokens vs prompt tokens)
    K normalised to [0, 1] over the image (min-max)
    K < alpha: dropped;  alpha <= K < beta: downsampled by (beta - alpha) / (K - alpha);
    K >= beta: kept whole.            defaults: 10 x 10 regions, alpha 0.35, beta 0.55

The encoders come from a `RegionScorer`: CLIP ViT-B/16 (`ClipRegionScorer`, weights from a
local file) or the on-board VLM itself (every `VisionLanguageModel` is one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.wire import Region, WireImage, cell_bounds

__all__ = ["ClipRegionScorer", "PreprocessConfig", "RegionPlan", "RegionScorer", "plan_regions",
           "region_scales", "region_scores", "split_regions", "to_wire"]


class RegionScorer(Protocol):
    """Encoders for the region scores: visual tokens of crops and the prompt's tokens."""

    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        """`[N, 3, h, w]` crops in [0, 1] -> `[N, R, D]` visual tokens."""
        ...

    def text_features(self, prompt: str) -> torch.Tensor:
        """The prompt -> `[T, D]` token embeddings in the same space."""
        ...


@dataclass(frozen=True)
class PreprocessConfig:
    """Grid and thresholds; the paper's defaults."""

    grid_rows: int = 10
    grid_cols: int = 10
    alpha: float = 0.35
    beta: float = 0.55

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < self.beta <= 1:
            raise SpaceVerseConfigError(f"preprocess: alpha={self.alpha} beta={self.beta}, "
                                        "expected 0 <= alpha < beta <= 1")
        if not (0 < self.grid_rows < 256 and 0 < self.grid_cols < 256):
            raise SpaceVerseConfigError(f"preprocess: grid {self.grid_rows}x{self.grid_cols}, "
                                        "expected 1..255 cells per side")


@dataclass
class RegionPlan:
    """Scores `[rows, cols]` in [0, 1] and scales `[rows, cols]` (0 dropped, 1 kept whole)."""

    scores: torch.Tensor
    scales: torch.Tensor

    @property
    def kept_fraction(self) -> float:
        """Share of the image's cells sent at any scale."""
        return float((self.scales > 0).float().mean())


def split_regions(image: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """`[3, H, W]` -> `[rows * cols, 3, h, w]` cells (row-major), resized to the smallest cell."""
    _, h, w = image.shape
    if h < rows or w < cols:
        raise SpaceVerseConfigError(f"preprocess: image {h}x{w} px smaller than the "
                                    f"{rows}x{cols} grid")
    ch, cw = h // rows, w // cols
    crops = []
    for r in range(rows):
        y0, y1 = cell_bounds(h, rows, r)
        for c in range(cols):
            x0, x1 = cell_bounds(w, cols, c)
            crop = image[:, y0:y1, x0:x1]
            if crop.shape[1:] != (ch, cw):
                crop = F.interpolate(crop[None], size=(ch, cw), mode="bilinear",
                                     align_corners=False)[0]
            crops.append(crop)
    return torch.stack(crops)


@torch.no_grad()
def region_scores(image: torch.Tensor, prompt: str, scorer: RegionScorer,
                  rows: int = 10, cols: int = 10) -> torch.Tensor:
    """K(x^r) for every cell, min-max normalised to [0, 1] over the image; `[rows, cols]`.

    A flat image (all cells scoring the same) gets 1 everywhere: nothing stands out, so
    nothing is dropped.
    """
    vis = F.normalize(scorer.region_features(split_regions(image, rows, cols)).float(), dim=-1)
    txt = F.normalize(scorer.text_features(prompt).float(), dim=-1)
    raw = torch.einsum("nrd,td->n", vis, txt)
    span = raw.max() - raw.min()
    if span <= 1e-6 * max(1.0, float(raw.abs().max())):
        return torch.ones(rows, cols)
    return ((raw - raw.min()) / span).view(rows, cols)


def region_scales(scores: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """Scale per cell: 0 below alpha, (K - alpha) / (beta - alpha) in between, 1 from beta."""
    scales = ((scores - alpha) / (beta - alpha)).clamp(max=1.0)
    return torch.where(scores < alpha, torch.zeros_like(scores), scales)


def plan_regions(image: torch.Tensor, prompt: str, scorer: RegionScorer,
                 cfg: PreprocessConfig = PreprocessConfig()) -> RegionPlan:
    """Score the cells of `image` against `prompt` and choose their scales."""
    scores = region_scores(image, prompt, scorer, cfg.grid_rows, cfg.grid_cols)
    return RegionPlan(scores, region_scales(scores, cfg.alpha, cfg.beta))


def to_wire(image: torch.Tensor, plan: RegionPlan) -> WireImage:
    """Cut the kept cells out of `image` (`[3, H, W]` in [0, 1]) at their scales."""
    from PIL import Image

    rows, cols = plan.scales.shape
    _, h, w = image.shape
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    regions = []
    for r in range(rows):
        y0, y1 = cell_bounds(h, rows, r)
        for c in range(cols):
            s = float(plan.scales[r, c])
            if s <= 0:
                continue
            x0, x1 = cell_bounds(w, cols, c)
            px = arr[y0:y1, x0:x1]
            if s < 1:
                size = (max(1, round((x1 - x0) * s)), max(1, round((y1 - y0) * s)))
                px = np.asarray(Image.fromarray(px, "RGB").resize(size, Image.Resampling.BOX))
            regions.append(Region(r, c, np.ascontiguousarray(px)))
    return WireImage(h, w, rows, cols, regions)


class ClipRegionScorer:
    """CLIP ViT-B/16 (open_clip) as the region scorer, weights from a local file.

    One visual token per region (the image embedding of the crop at 224 px) and one text token
    (the prompt's embedding): CLIP's joint space is where their cosine means something.
    """

    def __init__(self, model, tokenizer, preprocess_mean_std: tuple) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.mean = torch.tensor(preprocess_mean_std[0]).view(1, 3, 1, 1)
        self.std = torch.tensor(preprocess_mean_std[1]).view(1, 3, 1, 1)

    @classmethod
    def from_weights_file(cls, weights: Path) -> ClipRegionScorer:
        """Build ViT-B-16 and load `weights` (an open_clip checkpoint); nothing is downloaded."""
        import open_clip

        weights = Path(weights)
        if not weights.is_file():
            raise SpaceVerseConfigError(f"CLIP weights {weights}: not a file, expected an "
                                        "open_clip ViT-B-16 checkpoint")
        model, _, pre = open_clip.create_model_and_transforms("ViT-B-16", pretrained=str(weights))
        norm = next(t for t in pre.transforms if type(t).__name__ == "Normalize")
        return cls(model, open_clip.get_tokenizer("ViT-B-16"), (norm.mean, norm.std))

    @torch.no_grad()
    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(regions, size=(224, 224), mode="bicubic", align_corners=False)
        return self.model.encode_image((x - self.mean) / self.std).unsqueeze(1)

    @torch.no_grad()
    def text_features(self, prompt: str) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer([prompt]))
