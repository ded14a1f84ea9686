"""CLIP ViT-B/16 region scorer: needs open_clip weights as a local file (none can be
downloaded here), given by SPACEVERSE_CLIP_WEIGHTS."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.preprocess import ClipRegionScorer, region_scores

pytest.importorskip("open_clip", reason="open_clip_torch (the ml extra) is not installed")


def test_missing_weights_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(SpaceVerseConfigError, match="not a file"):
        ClipRegionScorer.from_weights_file(tmp_path / "vit-b-16.bin")


def test_clip_scores_regions_with_real_weights() -> None:
    weights = os.environ.get("SPACEVERSE_CLIP_WEIGHTS")
    if not weights:
        pytest.skip("SPACEVERSE_CLIP_WEIGHTS not set: no CLIP ViT-B/16 weights on this machine "
                    "and none can be downloaded")
    scorer = ClipRegionScorer.from_weights_file(Path(weights))
    img = torch.full((3, 64, 64), 0.5)
    img[:, :32, :32] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    k = region_scores(img, "a red square", scorer, 2, 2)
    assert int(k.flatten().argmax()) == 0
