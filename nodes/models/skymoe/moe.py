"""The mixture-of-experts layer of SkyMoE: a linear router, top-k dispatch, the load-balancing loss.

Owns routing and dispatch only; the experts are whatever FFN modules the caller gives (this
project's SwiGLU FFN or a Hugging Face decoder's MLP), so the same layer upcycles both.

- Router: P(x) = softmax(W x), W in R^{D x E} (no bias).
- Dispatch: each token goes to its top-k experts; output = sum over the top-k of w_i * e_i(x).
  With `normalize_topk` (default) w_i = P_i / sum_topk P (as DeepSpeed's top-2 gate, which
  MoE-LLaVA and SkyMoE train with), so experts copied from one FFN reproduce it exactly; without
  it, w_i = P_i (the formula read literally: the copy's output is scaled by sum_topk P).
- Unselected experts do no work: each expert runs only on the rows routed to it (gathered with
  `torch.where`, scattered back with `index_add_`); an expert with no rows is not called.
- L_aux = E * sum_i F_i * G_i, F_i the fraction of tokens whose argmax is expert i, G_i the mean
  of P_i over the tokens (Switch Transformer's balance loss, the paper's Eq.); 1.0 when balanced.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from nodes.models.errors import ModelConfigError

__all__ = ["MoELayer", "RoutingStats", "load_balance_loss", "upcycle_ffn"]


def load_balance_loss(probs: torch.Tensor) -> torch.Tensor:
    """L_aux = E * sum_i F_i G_i for routing probabilities `probs` `[N, E]` (rows sum to 1)."""
    n, e = probs.shape
    if n == 0:
        return probs.new_zeros(())
    f = torch.bincount(probs.argmax(-1), minlength=e).to(probs.dtype) / n
    g = probs.mean(0)
    return e * (f * g).sum()


@dataclass
class RoutingStats:
    """Accumulated routing of one MoE layer: top-k assignments per expert, routing entropy."""

    num_experts: int
    tokens: int = 0
    per_expert: list[int] = field(default_factory=list)
    entropy_sum: float = 0.0

    def __post_init__(self) -> None:
        if not self.per_expert:
            self.per_expert = [0] * self.num_experts

    def add(self, probs: torch.Tensor, top_i: torch.Tensor) -> None:
        """Record one batch: `probs` `[N, E]`, chosen experts `top_i` `[N, k]`."""
        counts = torch.bincount(top_i.flatten(), minlength=self.num_experts).tolist()
        self.per_expert = [a + b for a, b in zip(self.per_expert, counts, strict=True)]
        self.tokens += probs.shape[0]
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        self.entropy_sum += float(ent.sum())

    def as_dict(self) -> dict:
        """tokens, per-expert assignments and shares, mean routing entropy (nats), and the
        entropy of the load itself normalised to [0, 1] (1 = perfectly even)."""
        total = sum(self.per_expert)
        share = [c / total if total else 0.0 for c in self.per_expert]
        load_ent = -sum(s * math.log(s) for s in share if s > 0)
        norm = math.log(self.num_experts) if self.num_experts > 1 else 1.0
        return {"tokens": self.tokens, "tokens_per_expert": list(self.per_expert),
                "share_per_expert": share,
                "routing_entropy_nats": self.entropy_sum / self.tokens if self.tokens else 0.0,
                "load_balance": load_ent / norm if self.num_experts > 1 else 1.0}


class MoELayer(nn.Module):
    """E experts behind a linear router; each token runs its top-k experts only.

    `forward(x, valid=None)`: x `[..., D]`; `valid` (bool, x's leading shape) picks the tokens
    that are routed (padding is neither computed nor counted). After each call `aux_loss` holds
    this layer's L_aux (a tensor with gradient; computed in training mode or with gradients on)
    and, while `stats` is set, routing is recorded.
    """

    def __init__(self, experts: list[nn.Module], dim: int, top_k: int = 2,
                 normalize_topk: bool = True):
        super().__init__()
        if not experts:
            raise ModelConfigError("MoE layer: experts=[], expected at least one expert")
        if not 1 <= top_k:
            raise ModelConfigError(f"MoE layer: top_k={top_k}, expected >= 1")
        self.experts = nn.ModuleList(experts)
        self.num_experts = len(experts)
        self.top_k = min(top_k, self.num_experts)
        self.normalize_topk = normalize_topk
        self.router = nn.Linear(dim, self.num_experts, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.aux_loss: torch.Tensor = torch.zeros(())
        self.stats: RoutingStats | None = None

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tokens `[N, D]` -> (P `[N, E]`, top-k weights `[N, k]`, top-k experts `[N, k]`)."""
        probs = self.router(x).float().softmax(-1)
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        if self.normalize_topk:
            top_p = top_p / top_p.sum(-1, keepdim=True)
        return probs, top_p, top_i

    def _one_token(self, x: torch.Tensor) -> torch.Tensor:
        """Decoding one token at inference: the renormalised top-k weights are the softmax of
        the top-k router logits (the same numbers, fewer operations); its k experts only."""
        top_l, top_i = self.router(x).topk(self.top_k, dim=-1)
        weights = top_l.reshape(-1).softmax(-1).tolist()
        experts = top_i.reshape(-1).tolist()
        out = self.experts[experts[0]](x) * weights[0]
        for e, w in zip(experts[1:], weights[1:], strict=True):
            out.add_(self.experts[e](x), alpha=w)
        return out

    def dispatch(self, x: torch.Tensor, weights: torch.Tensor,
                 top_i: torch.Tensor) -> torch.Tensor:
        """sum_k w_k * e_{i_k}(x) for tokens `[N, D]`; experts run on their own rows only."""
        if x.shape[0] == 1:  # one token (decoding): call its k experts directly
            w = weights[0].to(x.dtype)
            out = None
            for slot, e in enumerate(top_i[0].tolist()):
                y = self.experts[e](x) * w[slot]
                out = y if out is None else out + y
            return out
        out = torch.zeros_like(x)
        for e in top_i.unique().tolist():
            rows, slot = torch.where(top_i == e)
            y = self.experts[e](x[rows])
            out.index_add_(0, rows, y * weights[rows, slot].unsqueeze(-1).to(y.dtype))
        return out

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if (x.numel() == x.shape[-1] and valid is None and self.stats is None
                and self.normalize_topk and not (self.training or torch.is_grad_enabled())):
            return self._one_token(x)
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        keep = None if valid is None else valid.reshape(-1)
        tokens = flat if keep is None else flat[keep]
        probs, weights, top_i = self.route(tokens)
        if self.training or torch.is_grad_enabled():  # inference skips the loss's few ops
            self.aux_loss = load_balance_loss(probs)
        if self.stats is not None:
            with torch.no_grad():
                self.stats.add(probs, top_i)
        y = self.dispatch(tokens, weights, top_i)
        if keep is None:
            return y.reshape(shape)
        out = torch.zeros_like(flat)
        out[keep] = y
        return out.reshape(shape)


def upcycle_ffn(ffn: nn.Module, dim: int, num_experts: int, top_k: int = 2,
                normalize_topk: bool = True) -> MoELayer:
    """An MoE layer whose `num_experts` experts are copies of the trained `ffn` (upcycling)."""
    if num_experts < 1:
        raise ModelConfigError(f"upcycling: num_experts={num_experts}, expected >= 1")
    layer = MoELayer([copy.deepcopy(ffn) for _ in range(num_experts)], dim, top_k,
                     normalize_topk)
    return layer.to(next(ffn.parameters()).dtype)
