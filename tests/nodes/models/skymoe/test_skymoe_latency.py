"""Latency measurement: positive measured times, emulated times from the counted work."""

from __future__ import annotations

import pytest
import torch

from nodes.compute import accelerator, roofline_s
from nodes.models.skymoe.latency import token_latency
from nodes.models.skymoe.net import upcycle_net
from nodes.models.skymoe.vlm import SkyMoEVLM


def test_token_latency_reports_measured_and_emulated(tiny_dense, qwen_tokenizer) -> None:
    vlm = SkyMoEVLM(upcycle_net(tiny_dense, 4), qwen_tokenizer)
    lat = token_latency(vlm, torch.rand(3, 64, 64), "is there a road", tokens=4, repeats=2)
    assert lat["measured_token_s"] > 0 and lat["measured_prefill_s"] > 0
    acc = accelerator("rtx-3090")
    assert lat["emulated_token_s"] == pytest.approx(
        roofline_s(lat["token_flops"], lat["token_bytes"], acc))
    assert lat["active_params"] < lat["params"]
