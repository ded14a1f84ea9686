"""The MoE layer: router and L_aux against hand-computed values, top-k dispatch, upcycling."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from nodes.models.errors import ModelConfigError
from nodes.models.skymoe.moe import MoELayer, RoutingStats, load_balance_loss, upcycle_ffn
from nodes.models.skymoe.net import SwiGLU

PROBS = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])


def test_load_balance_loss_by_hand() -> None:
    # argmax 0, 1, 0, 2 -> F = (2/4, 1/4, 1/4); G = column means (0.375, 0.35, 0.275)
    # L = 3 * (0.5 * 0.375 + 0.25 * 0.35 + 0.25 * 0.275) = 1.03125
    assert float(load_balance_loss(PROBS)) == pytest.approx(1.03125, abs=1e-6)
    uniform = torch.full((6, 4), 0.25)
    assert float(load_balance_loss(uniform)) == pytest.approx(1.0, abs=1e-6)
    collapsed = torch.tensor([[1.0, 0.0]] * 5)        # every token on one expert: L = E
    assert float(load_balance_loss(collapsed)) == pytest.approx(2.0, abs=1e-6)


def test_router_probabilities_top_k_and_layer_aux_by_hand() -> None:
    experts = [SwiGLU(2, 4) for _ in range(3)]
    layer = MoELayer(experts, dim=2, top_k=2)
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    with torch.no_grad():
        probs, weights, top_i = layer.route(x)
    e2 = math.exp(2.0)
    assert probs[0].tolist() == pytest.approx([e2 / (e2 + 2), 1 / (e2 + 2), 1 / (e2 + 2)])
    e1 = math.e
    assert probs[1].tolist() == pytest.approx([1 / (e1 + 2), e1 / (e1 + 2), 1 / (e1 + 2)])
    assert top_i[0, 0] == 0 and top_i[1, 0] == 1
    assert weights.sum(-1).tolist() == pytest.approx([1.0, 1.0])   # renormalised over top-k
    layer(x)
    f = torch.tensor([0.5, 0.5, 0.0])
    g = probs.mean(0)
    assert float(layer.aux_loss.detach()) == pytest.approx(float(3 * (f * g).sum()), abs=1e-6)


def _dense_reference(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """Every expert on every token, then the top-k combination picked out: the slow truth."""
    _, weights, top_i = layer.route(x)
    all_out = torch.stack([e(x) for e in layer.experts], dim=1)       # [N, E, D]
    picked = all_out.gather(1, top_i.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return (picked * weights.unsqueeze(-1)).sum(1)


def test_dispatch_equals_dense_reference_and_identical_experts_equal_the_ffn() -> None:
    torch.manual_seed(0)
    ffn = SwiGLU(16, 24)
    same = upcycle_ffn(ffn, 16, num_experts=4, top_k=2)
    x = torch.randn(37, 16)
    with torch.no_grad():
        assert torch.allclose(same(x), ffn(x), atol=1e-6)
        assert torch.allclose(same(x), _dense_reference(same, x), atol=1e-6)
        distinct = MoELayer([SwiGLU(16, 24) for _ in range(4)], 16, top_k=2)
        assert torch.allclose(distinct(x), _dense_reference(distinct, x), atol=1e-6)
        literal = upcycle_ffn(ffn, 16, 4, 2, normalize_topk=False)
        p, _, _ = literal.route(x)
        scale = p.topk(2, -1).values.sum(-1, keepdim=True)
        assert torch.allclose(literal(x), scale * ffn(x), atol=1e-6)


def test_unselected_experts_do_no_work() -> None:
    torch.manual_seed(0)
    layer = MoELayer([SwiGLU(8, 8) for _ in range(4)], 8, top_k=2)
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.weight[0, 0] = 10.0      # positive first feature -> experts 0 and 1
        layer.router.weight[1, 0] = 5.0
    rows_seen = [0, 0, 0, 0]
    for i, e in enumerate(layer.experts):
        e.register_forward_hook(lambda m, inp, out, i=i: rows_seen.__setitem__(
            i, rows_seen[i] + inp[0].shape[0]))
    x = torch.randn(20, 8).abs()
    with torch.no_grad():
        layer(x)
    assert rows_seen[2] == rows_seen[3] == 0      # never called
    assert rows_seen[0] == rows_seen[1] == 20     # each token ran exactly k = 2 experts


def test_padding_is_not_routed_and_stats_count_assignments() -> None:
    torch.manual_seed(0)
    layer = MoELayer([SwiGLU(8, 8) for _ in range(4)], 8, top_k=2)
    layer.stats = RoutingStats(4)
    x = torch.randn(2, 5, 8)
    x.requires_grad_(False)
    valid = torch.tensor([[True] * 5, [True, True, False, False, False]])
    with torch.no_grad():
        y = layer(x, valid)
    assert torch.all(y[1, 2:] == 0)
    stats = layer.stats.as_dict()
    assert stats["tokens"] == 7 and sum(stats["tokens_per_expert"]) == 14
    assert 0 < stats["routing_entropy_nats"] <= math.log(4) + 1e-6
    assert 0 <= stats["load_balance"] <= 1


def test_aux_loss_has_gradient_to_the_router_only_through_probabilities() -> None:
    layer = MoELayer([SwiGLU(8, 8) for _ in range(4)], 8, top_k=2)
    layer(torch.randn(10, 8))
    layer.aux_loss.backward()
    assert layer.router.weight.grad is not None and layer.router.weight.grad.abs().sum() > 0


def test_bad_moe_configs_are_named() -> None:
    with pytest.raises(ModelConfigError, match="experts=\\[\\]"):
        MoELayer([], 8)
    with pytest.raises(ModelConfigError, match="top_k=0"):
        MoELayer([nn.Identity()], 8, top_k=0)
    with pytest.raises(ModelConfigError, match="num_experts=0"):
        upcycle_ffn(SwiGLU(8, 8), 8, 0)
    assert MoELayer([copy.deepcopy(SwiGLU(8, 8))], 8, top_k=2).top_k == 1


def test_one_token_path_equals_the_batched_path() -> None:
    torch.manual_seed(1)
    layer = MoELayer([SwiGLU(8, 8) for _ in range(4)], 8, top_k=2)
    x = torch.randn(6, 8)
    with torch.no_grad():
        batched = layer(x)
        one_by_one = torch.cat([layer(x[i:i + 1]) for i in range(6)])
    assert torch.allclose(batched, one_by_one, atol=1e-6)


def test_inference_one_token_path_equals_the_general_path() -> None:
    torch.manual_seed(2)
    layer = MoELayer([SwiGLU(8, 8) for _ in range(4)], 8, top_k=2).eval()
    x = torch.randn(1, 1, 8)
    with torch.no_grad():
        fast = layer(x)
        probs, weights, top_i = layer.route(x.reshape(1, 8))
        general = layer.dispatch(x.reshape(1, 8), weights, top_i).reshape(1, 1, 8)
        dense = _dense_reference(layer, x.reshape(1, 8)).reshape(1, 1, 8)
    assert torch.allclose(fast, general, atol=1e-6) and torch.allclose(fast, dense, atol=1e-6)
