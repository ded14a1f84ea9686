"""SkyMoE's architecture settings, validated and saved as `config.json` beside the weights.

Owns the numbers only (widths, depth, experts, LoRA rank, the reduced vocabulary); `net.py`
builds the modules from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from nodes.models.errors import ModelConfigError, ModelNotFoundError

__all__ = ["SkyMoEConfig", "read_config"]


@dataclass
class SkyMoEConfig:
    """One SkyMoE (or its dense stage-I parent, `num_experts = 0`).

    `vocab`: the Qwen2 token ids of the reduced embedding table, in order (row i + 1 holds
    `vocab[i]`; row 0 is the unknown token). `ffn_dims`: per-layer FFN width (default
    `ffn_dim` everywhere). MoE layers are those with `index % moe_every == moe_every - 1`
    (every second layer: 1, 3, ...).
    """

    name: str = "skymoe"
    input_px: int = 96
    enc_widths: tuple[int, ...] = (24, 48, 96, 128)
    dim: int = 128
    layers: int = 4
    heads: int = 4
    ffn_dim: int = 256
    ffn_dims: tuple[int, ...] = ()
    num_experts: int = 0
    top_k: int = 2
    moe_every: int = 2
    normalize_topk: bool = True
    lora_r: int = 0
    lora_alpha: float = 0.0
    max_prompt_tokens: int = 48
    max_answer_tokens: int = 24
    rope_theta: float = 10000.0
    vocab: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.enc_widths = tuple(self.enc_widths)
        self.ffn_dims = tuple(self.ffn_dims) or (self.ffn_dim,) * self.layers
        checks = [
            (self.input_px % 16 == 0 and self.input_px >= 32, "input_px", self.input_px,
             "a multiple of 16, >= 32"),
            (len(self.enc_widths) == 4, "enc_widths", self.enc_widths, "4 widths"),
            (self.dim % self.heads == 0 and (self.dim // self.heads) % 2 == 0, "dim",
             self.dim, f"divisible by heads={self.heads} into even head widths"),
            (self.layers >= 1, "layers", self.layers, ">= 1"),
            (len(self.ffn_dims) == self.layers, "ffn_dims", self.ffn_dims,
             f"one width per layer ({self.layers})"),
            (self.num_experts >= 0, "num_experts", self.num_experts, ">= 0 (0 = dense)"),
            (self.top_k >= 1, "top_k", self.top_k, ">= 1"),
            (self.moe_every >= 1, "moe_every", self.moe_every, ">= 1"),
            (0 <= self.lora_r <= self.dim, "lora_r", self.lora_r, f"0 <= r <= dim={self.dim}"),
            (len(self.vocab) >= 2, "vocab", f"{len(self.vocab)} ids",
             "at least 2 Qwen2 token ids"),
        ]
        for ok, option, value, expected in checks:
            if not ok:
                raise ModelConfigError(f"SkyMoE {self.name}: {option}={value}, "
                                       f"expected {expected}")

    def is_moe_layer(self, index: int) -> bool:
        """Whether layer `index` holds an MoE layer (never in a dense model)."""
        return self.num_experts > 0 and index % self.moe_every == self.moe_every - 1

    @property
    def grid(self) -> int:
        """Visual tokens per side (the encoder downsamples 16x)."""
        return self.input_px // 16

    def with_(self, **changes) -> SkyMoEConfig:
        """A copy with `changes` applied (validated again)."""
        return replace(self, **changes)

    def to_json(self) -> str:
        d = asdict(self)
        d["enc_widths"], d["ffn_dims"] = list(d["enc_widths"]), list(d["ffn_dims"])
        return json.dumps(d, indent=1)


def read_config(path: Path) -> SkyMoEConfig:
    """`config.json` -> config; names the file and the field when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"SkyMoE config {path}: missing, expected the config.json "
                                 "that `make models-skymoe` writes")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"SkyMoE config {path}: not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ModelConfigError(f"SkyMoE config {path}: {type(raw).__name__}, expected an object")
    known = set(SkyMoEConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ModelConfigError(f"SkyMoE config {path}: unknown field(s) {unknown}; "
                               f"expected some of {sorted(known)}")
    return SkyMoEConfig(**raw)
