"""Region scores and three-way preprocessing on hand-made images whose relevant region is known.

The scorer here is a real (hand-built) encoder pair: a region's visual token is its mean colour
minus grey, a prompt's tokens are the colour words it names. With it, the region the prompt asks
about is known by construction.
"""

from __future__ import annotations

import pytest
import torch

from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.preprocess import (
    PreprocessConfig,
    plan_regions,
    region_scales,
    region_scores,
    split_regions,
    to_wire,
)
from nodes.spaceverse.wire import decode, encode, rebuild

COLOURS = {"red": (1.0, -0.5, -0.5), "green": (-0.5, 1.0, -0.5), "blue": (-0.5, -0.5, 1.0)}


class ColourScorer:
    """Visual token: mean colour - 0.5; text tokens: the colour words' directions."""

    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        return (regions.mean(dim=(2, 3)) - 0.5).unsqueeze(1)

    def text_features(self, prompt: str) -> torch.Tensor:
        words = [w for w in prompt.lower().split() if w in COLOURS]
        return torch.tensor([COLOURS[w] for w in words])


def _scene() -> torch.Tensor:
    """100 x 100 grey image: red cell (2, 3), half red / half green cell (5, 5), blue (7, 1).

    Cosines with "red" (1, -.5, -.5): red .943, red+green .408, grey 0, blue -.471; min-max
    normalised: red 1, red+green .622, grey .333, blue 0.
    """
    img = torch.full((3, 100, 100), 0.5)
    img[:, 20:30, 30:40] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    img[:, 50:60, 50:55] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    img[:, 50:60, 55:60] = torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    img[:, 70:80, 10:20] = torch.tensor([0.0, 0.0, 1.0]).view(3, 1, 1)
    return img


def test_split_regions_is_row_major() -> None:
    img = torch.zeros(3, 20, 30)
    img[:, 10:20, 20:30] = 1.0
    cells = split_regions(img, 2, 3)
    assert cells.shape == (6, 3, 10, 10)
    assert cells[5].min() == 1.0 and cells[:5].max() == 0.0


def test_scores_peak_on_the_asked_region() -> None:
    k = region_scores(_scene(), "is there a red roof", ColourScorer(), 10, 10)
    assert k.shape == (10, 10)
    assert float(k[2, 3]) == pytest.approx(1.0)
    assert float(k.min()) == pytest.approx(0.0)
    assert float(k[7, 1]) == pytest.approx(0.0)              # blue is opposite to red here
    assert float(k[5, 5]) == pytest.approx(0.622, abs=0.01)   # half red, half green
    assert float(k[0, 0]) == pytest.approx(0.333, abs=0.01)   # grey


def test_three_way_plan_drop_downsample_keep() -> None:
    plan = plan_regions(_scene(), "red", ColourScorer(), PreprocessConfig(alpha=0.35, beta=0.8))
    s = plan.scales
    assert float(s[2, 3]) == 1.0                             # K = 1 >= beta: kept whole
    assert float(s[7, 1]) == 0.0                             # K = 0 < alpha: dropped
    k55 = float(plan.scores[5, 5])
    assert 0 < float(s[5, 5]) < 1                            # downsampled ...
    assert float(s[5, 5]) == pytest.approx((k55 - 0.35) / (0.8 - 0.35))  # ... by the rule
    assert float(s[0, 0]) == 0.0                             # grey, K = .333 < alpha


def test_region_scales_rule_by_hand() -> None:
    k = torch.tensor([0.0, 0.34, 0.35, 0.45, 0.55, 0.9])
    s = region_scales(k, 0.35, 0.55)
    expected = torch.tensor([0.0, 0.0, 0.0, 0.5, 1.0, 1.0])
    assert torch.allclose(s, expected, atol=1e-6)


def test_flat_image_keeps_everything() -> None:
    plan = plan_regions(torch.full((3, 40, 40), 0.5), "red", ColourScorer())
    assert plan.kept_fraction == 1.0


def test_plan_to_wire_and_back_keeps_the_relevant_region() -> None:
    img = _scene()
    plan = plan_regions(img, "red", ColourScorer(), PreprocessConfig(alpha=0.35, beta=0.8))
    wire = to_wire(img, plan)
    assert len(wire.regions) == int((plan.scales > 0).sum())
    data = encode(wire, "png")
    full = encode(to_wire(img, type(plan)(plan.scores, torch.ones(10, 10))), "png")
    assert len(data) < len(full)
    out = rebuild(decode(data))
    assert out[20:30, 30:40].tolist() == [[[255, 0, 0]] * 10] * 10   # red cell exact
    assert (out[70:80, 10:20] == 0).all()                              # blue cell dropped


def test_bad_config_is_named() -> None:
    with pytest.raises(SpaceVerseConfigError, match="alpha=0.6 beta=0.5"):
        PreprocessConfig(alpha=0.6, beta=0.5)
    with pytest.raises(SpaceVerseConfigError, match="smaller than"):
        split_regions(torch.zeros(3, 5, 5), 10, 10)
