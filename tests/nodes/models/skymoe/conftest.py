"""Fixtures for SkyMoE's tests: Qwen2's tokenizer (built once) and a tiny dense model."""

from __future__ import annotations

import pytest
import torch

from nodes.models.skymoe.config import SkyMoEConfig
from nodes.models.skymoe.net import SkyMoENet
from nodes.models.skymoe.tokens import TokenMap, build_vocab

TEXTS = ["Which scene does this image belong to?", "annual crop", "forest", "is there a road",
         "yes", "no", "How many trees are in this image?", "12"]


@pytest.fixture(scope="session")
def qwen_tokenizer():
    torch.set_num_threads(1)
    from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

    return build_qwen2_tokenizer()


@pytest.fixture(scope="session")
def tiny_cfg(qwen_tokenizer) -> SkyMoEConfig:
    """Width 32, 4 layers (MoE in 1 and 3 once upcycled), 64 px -> 16 visual tokens."""
    return SkyMoEConfig(name="tiny", input_px=64, enc_widths=(8, 8, 16, 16), dim=32, layers=4,
                        heads=4, ffn_dim=48, vocab=build_vocab(qwen_tokenizer, TEXTS))


@pytest.fixture
def tiny_dense(tiny_cfg, qwen_tokenizer) -> SkyMoENet:
    torch.manual_seed(0)
    net = SkyMoENet(tiny_cfg).eval()
    net.set_prefix(TokenMap(qwen_tokenizer, tiny_cfg.vocab).prefix)
    # random-init heads are nearly flat; a larger output scale makes greedy choices distinct
    with torch.no_grad():
        net.head.weight.mul_(30)
    return net
