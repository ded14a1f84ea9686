"""The in-process pipeline's accounting on hand-made samples (tiny untrained models: the
mechanics only, never accuracy)."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.compute import accelerator, generation_time_s
from nodes.models.vlm.small import SmallVLM, SmallVLMNet, preset
from nodes.spaceverse.confidence import (
    ABLATION_AFTER_ANSWER,
    ABLATION_IMAGE_ONLY,
    SPACEVERSE_STAGES,
    ConfidenceNet,
)
from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.pipeline import (
    METHODS,
    Item,
    LinkModel,
    PipelineConfig,
    Timing,
    run_pipeline,
    summarise,
)

VOCAB = ["is", "there", "a", "red", "roof"]
ANSWERS = ["yes", "no"]


def _const(net: ConfidenceNet, c: float) -> ConfidenceNet:
    with torch.no_grad():
        net.mlp[-1].weight.zero_()
        net.mlp[-1].bias.fill_(math.log(c / (1 - c)))
    return net.eval()


@pytest.fixture(scope="module")
def models() -> tuple[SmallVLM, SmallVLM]:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return (SmallVLM(SmallVLMNet(preset("onboard", VOCAB, ANSWERS))),
            SmallVLM(SmallVLMNet(preset("ground", VOCAB, ANSWERS))))


def _items() -> list[Item]:
    img = torch.full((3, 100, 100), 0.5)
    img[:, 20:30, 30:40] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return [Item("a", "toy", "presence", img, "is there a red roof", "yes"),
            Item("b", "toy", "presence", torch.rand(3, 80, 120), "is there a roof", "no")]


def test_latency_split_and_bytes(models: tuple[SmallVLM, SmallVLM]) -> None:
    onboard, ground = models
    nets = {"g~": _const(ConfidenceNet(48, 48, SPACEVERSE_STAGES), 0.45),   # exits at stage 1
            "g": _const(ConfidenceNet(48, 48, ABLATION_IMAGE_ONLY), 0.9),   # keeps
            "g'": _const(ConfidenceNet(48, 48, ABLATION_AFTER_ANSWER), 0.1)}  # offloads
    link = LinkModel(rate_bps=10e6, delay_s=0.02)
    res = run_pipeline(_items(), onboard, ground, nets, link, Timing(), PipelineConfig())
    assert len(res) == 2 * len(METHODS)
    by = {(r.method, r.sample_id): r for r in res}
    for r in res:
        assert r.latency_s == pytest.approx(r.onboard_s + r.transfer_s + r.ground_s)
        assert r.correct == (r.answer == r.reference)
        if r.offload:
            assert r.transfer_s == pytest.approx(8 * r.bytes_sent / 10e6 + 0.02)
            assert r.ground_s > 0
        else:
            assert r.bytes_sent == 0 and r.transfer_s == 0 and r.ground_s == 0
    for sid in ("a", "b"):
        sat, gnd = by["satellite-only", sid], by["ground-only", sid]
        assert not sat.offload and gnd.offload and gnd.onboard_s == 0
        assert by["spaceverse", sid].offload and by["spaceverse", sid].exit_stage == 0
        assert not by["g-image", sid].offload
        assert by["g-answer", sid].offload
        # g' ran the whole answer on board before offloading, g~ only the prefill
        assert by["g-answer", sid].onboard_s > by["spaceverse", sid].onboard_s
    assert by["spaceverse", "a"].bytes_sent > 0
    # satellite-only's time is W^s's prefill plus its tokens on the Xavier
    n_tokens = onboard.generate(_items()[0].image, "is there a red roof", 8).num_tokens
    w = onboard.work(_items()[0].image, "is there a red roof")
    assert by["satellite-only", "a"].onboard_s == pytest.approx(
        generation_time_s(w, n_tokens, accelerator("jetson-agx-xavier"), 0.5))


def test_paper_timing_labels_and_scales(models: tuple[SmallVLM, SmallVLM]) -> None:
    onboard, ground = models
    link = LinkModel(100e6, 0.01)
    res = run_pipeline(_items()[:1], onboard, ground, {}, link, Timing(model_size="paper"),
                       methods=("satellite-only", "ground-only"))
    assert all("qwen2-vl-2b" in r.timing_model and "qwen2-vl-7b" in r.timing_model for r in res)
    small = run_pipeline(_items()[:1], onboard, ground, {}, link, Timing(),
                         methods=("satellite-only",))
    assert res[0].onboard_s > 100 * small[0].onboard_s
    rows = summarise(res)
    assert {r["method"] for r in rows} == {"satellite-only", "ground-only"}
    assert all(0 <= r["accuracy"] <= 1 for r in rows)


def test_bad_inputs_are_named(models: tuple[SmallVLM, SmallVLM]) -> None:
    onboard, ground = models
    with pytest.raises(SpaceVerseConfigError, match="rate_bps=0"):
        LinkModel(0, 0.01)
    with pytest.raises(SpaceVerseConfigError, match="unknown methods"):
        run_pipeline([], onboard, ground, {}, LinkModel(1e6, 0), methods=("oracle",))
    with pytest.raises(SpaceVerseConfigError, match="missing"):
        run_pipeline([], onboard, ground, {}, LinkModel(1e6, 0), methods=("spaceverse",))
