"""One method's on-board and ground halves (what a node runs) on hand-made images with tiny
untrained models and nets of known output: decisions, exit stages, what is sent, timing."""

from __future__ import annotations

import pytest
import torch

from nodes.compute import accelerator, generation_time_s, qwen2vl_work
from nodes.models.vlm.loader import load_vlm
from nodes.spaceverse.envelope import (
    decode_answer,
    decode_request,
    encode_answer,
    encode_request,
)
from nodes.spaceverse.errors import SpaceVerseConfigError, WireFormatError
from nodes.spaceverse.methods import GroundRunner, OnboardRunner, raw_wire
from nodes.spaceverse.pipeline import PipelineConfig, Timing, _tensor
from nodes.spaceverse.store import load_nets
from nodes.spaceverse.wire import decode, rebuild

PROMPT = "is there a red roof"


def _image() -> torch.Tensor:
    img = torch.full((3, 64, 64), 0.5)
    img[:, 10:20, 30:40] = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    return img


@pytest.fixture(scope="module")
def models(tiny_models):
    return load_vlm(f"small:{tiny_models['onboard']}"), load_vlm(f"small:{tiny_models['ground']}")


def test_spaceverse_exits_at_stage_one_and_sends_the_preprocessed_image(models, tiny_models):
    onboard, _ = models
    run = OnboardRunner("spaceverse", onboard, load_nets(tiny_models["offload"]))
    out = run.run(_image(), PROMPT)
    assert out.offload and out.exit_stage == 0 and out.tokens == 0
    assert out.confidences == [pytest.approx(0.1, abs=1e-4)]
    img = decode(out.payload)
    assert (img.height_px, img.width_px) == (64, 64) and img.grid_rows == 10  # the 10 x 10 grid
    kept = OnboardRunner("spaceverse", onboard, load_nets(tiny_models["keep"])).run(_image(),
                                                                                   PROMPT)
    assert not kept.offload and kept.payload == b"" and kept.exit_stage == 1
    assert kept.answer == onboard.decode(onboard.generate(_image(), PROMPT, 8))
    # keeping costs more on-board time than the stage-1 exit (tokens generated)
    assert kept.device_s > 0 and kept.tokens > 0


def test_baselines_rules(models, tiny_models):
    onboard, _ = models
    img = _image()
    sat = OnboardRunner("satellite-only", onboard).run(img, PROMPT)
    assert not sat.offload and sat.payload == b""
    gnd = OnboardRunner("ground-only", onboard).run(img, PROMPT)
    assert gnd.offload and gnd.device_s == 0.0 and gnd.tokens == 0
    assert (rebuild(decode(gnd.payload)) == (img.permute(1, 2, 0) * 255).round().byte()
            .numpy()).all()  # the raw image, losslessly
    always = OnboardRunner("tabi", onboard, cfg=PipelineConfig(tabi_threshold=1.0)).run(img,
                                                                                        PROMPT)
    never = OnboardRunner("tabi", onboard, cfg=PipelineConfig(tabi_threshold=0.0)).run(img,
                                                                                       PROMPT)
    assert always.offload and not never.offload
    assert always.payload == gnd.payload and always.tokens == sat.tokens
    g_answer = OnboardRunner("g-answer", onboard, load_nets(tiny_models["offload"], ["g'"]))
    out = g_answer.run(img, PROMPT)
    assert out.offload and out.tokens == sat.tokens  # g' decides after the whole answer
    with pytest.raises(SpaceVerseConfigError, match="confidence net 'g~' missing"):
        OnboardRunner("spaceverse", onboard, {})
    with pytest.raises(SpaceVerseConfigError, match="method 'tabby'"):
        OnboardRunner("tabby", onboard)


def test_ai_rg_learns_from_what_it_measures(models):
    onboard, _ = models
    # a link too slow to ever pay: keep; after measuring a fast link and a fast ground: the
    # expected free energy of offloading drops below keeping's
    run = OnboardRunner("ai-rg", onboard, timing=Timing(model_size="paper"),
                        link_rate_bps=1e3)
    assert not run.run(_image(), PROMPT).offload
    for _ in range(30):
        run.observe_transfer(10_000_000, 0.01)  # 8 Gbit/s measured
    run.observe_ground(0.0)
    assert run.airg.rate_belief_bps > 1e9
    assert run.run(_image(), PROMPT).offload


def test_paper_timing_against_hand_computed_figures(models):
    onboard, ground = models
    out = OnboardRunner("satellite-only", onboard, timing=Timing(model_size="paper")).run(
        _image(), PROMPT)
    # Qwen2-VL-2B on a Xavier at efficiency 0.5, 64 x 64 image, 5-word prompt (26 tokens):
    # prefill is memory-bound: 2 B x 2.175e9 params / (136.5e9 B/s x 0.5) = 63.736 ms;
    # each token: 2 B x 1.5e9 / 68.25e9 = 43.956 ms
    assert out.device_s == pytest.approx(0.0637363 + out.tokens * 0.0439560, rel=1e-5)
    assert out.timing_label == "qwen2-vl-2b@jetson-agx-xavier"
    g = GroundRunner(ground, Timing(model_size="paper")).answer(raw_wire(_image()), PROMPT)
    want = generation_time_s(qwen2vl_work("7b", (64, 64), 26), g.tokens,
                             accelerator("rtx-3090"), 0.5)
    assert g.device_s == pytest.approx(want)
    assert g.timing_label == "qwen2-vl-7b@rtx-3090"


def test_ground_answers_what_it_rebuilt(models):
    _, ground = models
    wire = raw_wire(_image())
    out = GroundRunner(ground).answer(wire, PROMPT)
    img = _tensor(rebuild(decode(wire)))
    assert out.answer == ground.decode(ground.generate(img, PROMPT, 8))
    assert out.image_hw == (64, 64) and out.device_s > 0
    with pytest.raises(WireFormatError):
        GroundRunner(ground).answer(wire[:-3], PROMPT)


def test_envelope_round_trip_and_errors():
    body = encode_request({"sample": "s1", "prompt": PROMPT, "method": "tabi"}, b"SVRWxyz")
    meta, wire = decode_request(body)
    assert meta == {"sample": "s1", "prompt": PROMPT, "method": "tabi"} and wire == b"SVRWxyz"
    with pytest.raises(WireFormatError, match="magic"):
        decode_request(b"XXXX" + body[4:])
    with pytest.raises(WireFormatError, match="truncated"):
        decode_request(body[:12])
    with pytest.raises(WireFormatError, match="meta lacks"):
        encode_request({"sample": "s1"}, b"")
    assert decode_answer(encode_answer({"sample": "s1", "answer": "yes"}))["answer"] == "yes"
    with pytest.raises(WireFormatError, match="expected an object"):
        decode_answer(b"[1, 2]")
