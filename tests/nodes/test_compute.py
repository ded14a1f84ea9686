"""Compute-time model against figures computed by hand."""

from __future__ import annotations

import pytest

from nodes.compute import (
    ACCELERATORS,
    ModelWork,
    accelerator,
    generation_time_s,
    qwen2vl_work,
    roofline_s,
)
from nodes.errors import ConfigError


def test_compute_bound_case_matches_hand_figure() -> None:
    xavier = accelerator("jetson-agx-xavier")
    # 11e12 FLOPs at 11 TFLOPS * 0.5 = 2 s; 1 MB at 136.5 GB/s * 0.5 is far less
    assert roofline_s(11e12, 1e6, xavier, 0.5) == pytest.approx(2.0)


def test_memory_bound_case_matches_hand_figure() -> None:
    rtx = accelerator("rtx-3090")
    # 936e9 bytes at 936 GB/s * 0.25 = 4 s; 1 GFLOP is negligible
    assert roofline_s(1e9, 936e9, rtx, 0.25) == pytest.approx(4.0)


def test_generation_time_adds_prefill_and_tokens() -> None:
    orin = ACCELERATORS["jetson-agx-orin"]
    work = ModelWork("toy", 10, prefill_flops=42.5e12, prefill_bytes=0.0,
                     token_flops=0.0, token_bytes=204.8e9)
    # prefill 42.5e12 / (42.5e12 * 1) = 1 s; each token 204.8e9 / 204.8e9 = 1 s
    assert generation_time_s(work, 3, orin, 1.0) == pytest.approx(4.0)
    assert generation_time_s(work, 3, orin, 1.0, prefill=False) == pytest.approx(3.0)


def test_qwen2vl_7b_work_by_hand() -> None:
    w = qwen2vl_work("7b", (448, 448), prompt_tokens=20)
    # 448 px -> 32 x 32 = 1024 patches of 14 px -> 256 LLM tokens
    assert w.prefill_flops == pytest.approx(2 * 675e6 * 1024 + 2 * 7.6e9 * (256 + 20))
    assert w.token_flops == pytest.approx(2 * 7.6e9)
    assert w.token_bytes == pytest.approx(2 * 7.6e9)
    assert w.label == "qwen2-vl-7b"
    # one 7B token on a Xavier at 0.5 efficiency is memory bound: 15.2 GB / 68.25 GB/s
    assert roofline_s(w.token_flops, w.token_bytes, accelerator("jetson-agx-xavier")) == \
        pytest.approx(15.2e9 / 68.25e9)


def test_bad_inputs_name_value() -> None:
    with pytest.raises(ConfigError, match="jetson-nano"):
        accelerator("jetson-nano")
    with pytest.raises(ConfigError, match="efficiency=0"):
        roofline_s(1.0, 1.0, accelerator("rtx-3090"), 0.0)
    with pytest.raises(ConfigError, match="13b"):
        qwen2vl_work("13b", (448, 448), 10)
