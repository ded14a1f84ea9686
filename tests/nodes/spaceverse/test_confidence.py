"""Progressive confidence network: staging, early exit, ablations, training loss."""

from __future__ import annotations

import math

import pytest
import torch

from nodes.models.vlm.small import SmallVLM, SmallVLMNet, preset
from nodes.spaceverse.confidence import (
    ABLATION_AFTER_ANSWER,
    ABLATION_IMAGE_ONLY,
    SPACEVERSE_STAGES,
    ConfidenceNet,
    ConfidenceRecord,
    answer_similarity,
    confidence_loss,
    run_onboard,
    stage_inputs,
    train_confidence,
)
from nodes.spaceverse.errors import SpaceVerseConfigError


@pytest.fixture(scope="module")
def onboard() -> SmallVLM:
    """A small on-board VLM with random weights: enough to exercise the staging."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return SmallVLM(SmallVLMNet(preset("onboard", ["is", "there", "a", "road"],
                                       ["yes", "no", "maybe", "road"])))


def _constant(net: ConfidenceNet, c: float) -> ConfidenceNet:
    """Make every stage output exactly `c` (the shared MLP's last layer ignores its input)."""
    last = net.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(math.log(c / (1 - c)))
    return net.eval()


def test_answer_similarity() -> None:
    assert answer_similarity("yes", "yes") == pytest.approx(1.0)
    assert answer_similarity("yes", "no") == pytest.approx(0.0)
    assert 0.3 < answer_similarity("annual crop", "permanent crop") < 0.8


def test_stage_inputs_shapes() -> None:
    v, t = torch.ones(4), torch.arange(6.0).view(3, 2)
    assert stage_inputs(v, t, 0).tolist() == [1, 1, 1, 1]
    assert stage_inputs(v, t, 1).tolist() == [1, 1, 1, 1, 0, 1]
    assert stage_inputs(v, t, None).tolist() == [1, 1, 1, 1, 2, 3]
    assert stage_inputs(v, torch.zeros(0, 2), 1).tolist() == [1, 1, 1, 1, 0, 0]


def test_early_exit_at_stage_one_spends_no_tokens(onboard: SmallVLM) -> None:
    net = _constant(ConfidenceNet(48, 48, SPACEVERSE_STAGES), 0.45)
    d = run_onboard(onboard, net, torch.rand(3, 64, 64), "is there a road", (0.5, 0.4))
    assert d.offload and d.exit_stage == 0 and d.tokens_generated == 0
    assert d.confidences == [pytest.approx(0.45)]


def test_exit_at_stage_two_after_n_t_tokens(onboard: SmallVLM) -> None:
    net = _constant(ConfidenceNet(48, 48, SPACEVERSE_STAGES), 0.45)
    d = run_onboard(onboard, net, torch.rand(3, 64, 64), "is there a road", (0.4, 0.5))
    assert d.offload and d.exit_stage == 1 and d.tokens_generated == 1
    assert len(d.confidences) == 2


def test_kept_answer_is_generated_to_the_end(onboard: SmallVLM) -> None:
    net = _constant(ConfidenceNet(48, 48, SPACEVERSE_STAGES), 0.45)
    d = run_onboard(onboard, net, torch.rand(3, 64, 64), "is there a road", (0.4, 0.4))
    assert not d.offload
    assert d.generation.done
    assert d.tokens_generated == d.generation.num_tokens >= 1


def test_ablations_see_image_only_or_whole_answer(onboard: SmallVLM) -> None:
    g = _constant(ConfidenceNet(48, 48, ABLATION_IMAGE_ONLY), 0.3)
    d = run_onboard(onboard, g, torch.rand(3, 64, 64), "is there a road", (0.5,))
    assert d.offload and d.tokens_generated == 0
    g2 = _constant(ConfidenceNet(48, 48, ABLATION_AFTER_ANSWER), 0.3)
    d2 = run_onboard(onboard, g2, torch.rand(3, 64, 64), "is there a road", (0.5,))
    assert d2.offload and d2.generation.done          # judged after the whole answer
    with pytest.raises(SpaceVerseConfigError, match="2 thresholds for 1 stages"):
        run_onboard(onboard, g2, torch.rand(3, 64, 64), "road", (0.5, 0.4))


def test_loss_is_mse_summed_over_stages() -> None:
    net = _constant(ConfidenceNet(3, 2, SPACEVERSE_STAGES), 0.25)
    recs = [ConfidenceRecord(torch.zeros(3), torch.zeros(1, 2), y) for y in (0.0, 1.0)]
    # each stage: mean((0.25 - 0)^2, (0.25 - 1)^2) = 0.3125; two stages
    assert float(confidence_loss(net, recs).detach()) == pytest.approx(2 * 0.3125, rel=1e-5)


def test_training_fits_a_learnable_target() -> None:
    torch.manual_seed(1)
    recs = []
    for _ in range(64):
        v = torch.randn(4)
        t = torch.randn(2, 3)
        # the target depends on the image at stage 1 and on the first token at stage 2
        recs.append(ConfidenceRecord(v, t, float(v[0] > 0)))
    untrained = ConfidenceNet(4, 3, SPACEVERSE_STAGES)
    before = float(confidence_loss(untrained, recs).detach())
    net = train_confidence(recs, SPACEVERSE_STAGES, epochs=300)
    after = float(confidence_loss(net, recs).detach())
    assert after < 0.25 * before
    assert after < 0.1
