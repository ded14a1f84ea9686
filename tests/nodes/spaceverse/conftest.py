"""Tiny untrained models and confidence nets on disk, for the node-side SpaceVerse tests (the
mechanics only, never accuracy)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from nodes.models.vlm.small import SmallVLM, SmallVLMNet, preset
from nodes.spaceverse.confidence import (
    ABLATION_AFTER_ANSWER,
    ABLATION_IMAGE_ONLY,
    SPACEVERSE_STAGES,
    ConfidenceNet,
)
from nodes.spaceverse.store import save_nets

VOCAB = ["is", "there", "a", "red", "roof"]
ANSWERS = ["yes", "no"]


def const_net(stages: tuple, c: float, dim: int = 48) -> ConfidenceNet:
    """A net whose every stage outputs `c` (a known decision)."""
    net = ConfidenceNet(dim, dim, stages)
    with torch.no_grad():
        net.mlp[-1].weight.zero_()
        net.mlp[-1].bias.fill_(math.log(c / (1 - c)))
    return net.eval()


def build_tiny_models(root: Path) -> dict[str, Path]:
    """Untrained W^s and W^g saved as `small` model folders under `root`, and two sets of nets
    (g~, g, g'): `offload` (every confidence 0.1: offload at the first stage) and `keep` (0.9)."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    SmallVLM(SmallVLMNet(preset("onboard", VOCAB, ANSWERS))).save(root / "onboard")
    SmallVLM(SmallVLMNet(preset("ground", VOCAB, ANSWERS))).save(root / "ground")
    for name, c in (("nets-offload", 0.1), ("nets-keep", 0.9)):
        save_nets(root / name, {"g~": const_net(SPACEVERSE_STAGES, c),
                                "g": const_net(ABLATION_IMAGE_ONLY, c),
                                "g'": const_net(ABLATION_AFTER_ANSWER, c)})
    return {"onboard": root / "onboard", "ground": root / "ground",
            "offload": root / "nets-offload", "keep": root / "nets-keep"}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """See build_tiny_models."""
    return build_tiny_models(tmp_path_factory.mktemp("sv-models"))
