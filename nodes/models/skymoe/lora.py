"""LoRA adapters on named linear layers (SkyMoE's stage I: W_q and W_v, rank r, base frozen).

Owns wrapping, freezing and merging; it knows nothing of the model around the layers, so the
same functions adapt this project's decoder and a Hugging Face Qwen2/Llama decoder (both name
their projections `q_proj` and `v_proj`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from nodes.models.errors import ModelConfigError

__all__ = ["LoRALinear", "add_lora", "lora_parameters", "merge_lora"]


class LoRALinear(nn.Module):
    """y = base(x) + (alpha / r) * B A x, with A `[r, in]`, B `[out, r]` and B = 0 at start."""

    def __init__(self, base: nn.Linear, r: int, alpha: float):
        super().__init__()
        if not 1 <= r <= min(base.in_features, base.out_features):
            raise ModelConfigError(f"LoRA: r={r}, expected 1 <= r <= "
                                   f"{min(base.in_features, base.out_features)} for a "
                                   f"{base.in_features}x{base.out_features} layer")
        self.base = base
        self.r, self.scale = r, alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=base.weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=base.weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.t() @ self.lora_B.t()) * self.scale

    def merged(self) -> nn.Linear:
        """A plain linear layer with the update folded into its weight."""
        lin = nn.Linear(self.base.in_features, self.base.out_features,
                        bias=self.base.bias is not None, dtype=self.base.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(self.base.weight + self.scale * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                lin.bias.copy_(self.base.bias)
        return lin


def add_lora(model: nn.Module, targets: tuple[str, ...] = ("q_proj", "v_proj"), r: int = 64,
             alpha: float | None = None) -> list[str]:
    """Wrap every `nn.Linear` child named in `targets` with LoRA and freeze everything else.

    Returns the qualified names of the wrapped layers; raises when none matched.
    """
    alpha = 2.0 * r if alpha is None else alpha
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, r, alpha))
                wrapped.append(f"{parent_name}.{child_name}".lstrip("."))
    if not wrapped:
        raise ModelConfigError(f"LoRA: no nn.Linear named {list(targets)} in "
                               f"{type(model).__name__}")
    return wrapped


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The adapters' A and B matrices (the only parameters stage I trains)."""
    return [p for m in model.modules() if isinstance(m, LoRALinear)
            for p in (m.lora_A, m.lora_B)]


def merge_lora(model: nn.Module) -> int:
    """Replace every LoRA layer by its merged linear layer; returns how many were merged."""
    n = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, child_name, child.merged())
                n += 1
    return n
