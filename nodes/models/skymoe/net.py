"""SkyMoE's network: image encoder -> MLP adaptor -> decoder-only LLM, MoE in every second layer.

Owns the modules and the forward passes (teacher-forced training and KV-cached decoding).

- Encoder: a 4-stage strided CNN (16x downsampling; 96 px -> 6x6 = 36 visual tokens). It stands
  for the paper's CLIP-ViT-L/14, whose weights cannot be downloaded here: the project
  pre-trains it on scene classification (EuroSAT + UC Merced training images) and then freezes
  it (`train.py`, stage "encoder").
- Adaptor: Linear -> GELU -> Linear, encoder width -> LLM width (LLaVA's MLP projector).
- LLM: a Qwen2-style decoder (pre-norm RMSNorm, rotary positions, q/k/v projections with bias,
  o without, SwiGLU FFN, untied output head over the reduced Qwen2 vocabulary of `tokens.py`).
  Layers `i % moe_every == moe_every - 1` hold an `MoELayer` instead of the FFN when
  `num_experts > 0`.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from nodes.models.errors import ModelConfigError
from nodes.models.skymoe.config import SkyMoEConfig
from nodes.models.skymoe.moe import MoELayer, upcycle_ffn

__all__ = ["Encoder", "SkyMoENet", "SwiGLU", "upcycle_net", "widen_net"]

_MEAN, _STD = 0.45, 0.25


class Encoder(nn.Module):
    """Strided CNN: `[B, 3, H, W]` in [0, 1] -> visual tokens `[B, (px/16)^2, C]`."""

    def __init__(self, widths: tuple[int, ...], input_px: int):
        super().__init__()
        self.input_px = input_px
        layers, cin = [], 3
        for w in widths:
            layers += [nn.Conv2d(cin, w, 3, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        self.cnn = nn.Sequential(*layers)
        self.width = cin

    def forward(self, images: torch.Tensor, px: int | None = None) -> torch.Tensor:
        px = px or self.input_px
        if images.shape[-2:] != (px, px):
            images = F.interpolate(images, size=(px, px), mode="bilinear", antialias=True,
                                   align_corners=False)
        return self.cnn((images - _MEAN) / _STD).flatten(2).transpose(1, 2)


class SwiGLU(nn.Module):
    """Qwen2's FFN: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with rotary positions and an optional KV cache."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.o_proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        b, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q = _rotate(split(self.q_proj(x)), cos, sin)
        k = _rotate(split(self.k_proj(x)), cos, sin)
        v = split(self.v_proj(x))
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # a prefill (no past) is causal; one new token attends to everything before it
        out = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and t > 1)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d)), (k, v)


class Block(nn.Module):
    """Pre-norm decoder layer: x + attn(norm(x)), then x + ffn(norm(x)) (FFN or MoE)."""

    def __init__(self, cfg: SkyMoEConfig, index: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg.dim, cfg.heads)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        ffn = SwiGLU(cfg.dim, cfg.ffn_dims[index])
        self.ffn: nn.Module = (MoELayer([ffn] + [SwiGLU(cfg.dim, cfg.ffn_dims[index])
                                                 for _ in range(cfg.num_experts - 1)],
                                        cfg.dim, cfg.top_k, cfg.normalize_topk)
                               if cfg.is_moe_layer(index) else ffn)

    def forward(self, x, cos, sin, past, valid):
        a, kv = self.attn(self.attn_norm(x), cos, sin, past)
        x = x + a
        h = self.ffn_norm(x)
        y = self.ffn(h, valid) if isinstance(self.ffn, MoELayer) else self.ffn(h)
        return x + y, kv


class SkyMoENet(nn.Module):
    """The whole model; `SkyMoEVLM` wraps it into the VLM interface."""

    def __init__(self, cfg: SkyMoEConfig, max_len: int = 256):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg.enc_widths, cfg.input_px)
        c, d = self.encoder.width, cfg.dim
        self.adaptor = nn.Sequential(nn.Linear(c, d), nn.GELU(), nn.Linear(d, d))
        self.embed = nn.Embedding(len(cfg.vocab) + 1, d)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.layers))
        self.norm = nn.RMSNorm(d, eps=1e-6)
        self.head = nn.Linear(d, len(cfg.vocab) + 1, bias=False)
        hd = d // cfg.heads
        inv = 1.0 / cfg.rope_theta ** (torch.arange(0, hd, 2).float() / hd)
        ang = torch.arange(max_len).float()[:, None] * inv[None]
        self.register_buffer("rope_cos", ang.cos(), persistent=False)
        self.register_buffer("rope_sin", ang.sin(), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
        self._prefix: torch.Tensor | None = None

    def moe_layers(self) -> list[MoELayer]:
        """The MoE layers in depth order (empty for a dense model)."""
        return [b.ffn for b in self.blocks if isinstance(b.ffn, MoELayer)]

    def aux_loss(self) -> torch.Tensor:
        """Sum over MoE layers of the last forward pass's L_aux (0 for a dense model)."""
        layers = self.moe_layers()
        return torch.stack([m.aux_loss for m in layers]).sum() if layers else torch.zeros(())

    def visual(self, images: torch.Tensor, px: int | None = None) -> torch.Tensor:
        """Encoder tokens `[B, R, C]` (before the adaptor)."""
        return self.encoder(images, px)

    def _run(self, x: torch.Tensor, pos0: int, cache: list | None,
             valid: torch.Tensor | None) -> torch.Tensor:
        t = x.shape[1]
        if pos0 + t > self.rope_cos.shape[0]:
            raise ModelConfigError(f"SkyMoE {self.cfg.name}: sequence of {pos0 + t} tokens, "
                                   f"expected <= {self.rope_cos.shape[0]}")
        cos, sin = self.rope_cos[pos0:pos0 + t], self.rope_sin[pos0:pos0 + t]
        for i, block in enumerate(self.blocks):
            past = cache[i] if cache is not None and i < len(cache) else None
            x, kv = block(x, cos, sin, past, valid)
            if cache is not None:
                if i < len(cache):
                    cache[i] = kv
                else:
                    cache.append(kv)
        return self.norm(x)

    def sequence(self, vis_tokens: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Input embeddings `[B, P + R + T, D]`: template prefix, visual tokens, text rows."""
        if self._prefix is None:
            raise ModelConfigError(f"SkyMoE {self.cfg.name}: template prefix not set; call "
                                   "set_prefix(TokenMap.prefix) first")
        prefix = self.embed(self._prefix.expand(rows.shape[0], -1))
        return torch.cat([prefix, self.adaptor(vis_tokens), self.embed(rows)], dim=1)

    def set_prefix(self, prefix_rows: list[int]) -> None:
        """The template's fixed rows before the visual tokens (from `TokenMap.prefix`)."""
        self._prefix = torch.tensor([prefix_rows])

    def forward(self, vis_tokens: torch.Tensor, rows: torch.Tensor,
                valid: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits `[B, T, V]` at the text positions (after the visual tokens)."""
        x = self.sequence(vis_tokens, rows)
        head = torch.ones(rows.shape[0], x.shape[1] - rows.shape[1], dtype=torch.bool)
        h = self._run(x, 0, None, torch.cat([head, valid], dim=1))
        return self.head(h[:, -rows.shape[1]:])

    def prefill(self, vis_tokens: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, list]:
        """One sequence's prefill: (last hidden state `[1, D]`, KV cache)."""
        cache: list = []
        h = self._run(self.sequence(vis_tokens, rows), 0, cache, None)
        return h[:, -1], cache

    def decode_one(self, row: int, pos: int, cache: list) -> torch.Tensor:
        """Feed one token at position `pos`; returns its hidden state `[1, D]`."""
        x = self.embed(torch.tensor([[row]]))
        return self._run(x, pos, cache, None)[:, -1]


def upcycle_net(dense: SkyMoENet, num_experts: int, top_k: int = 2,
                normalize_topk: bool = True, seed: int = 0) -> SkyMoENet:
    """Stage II's starting point: a copy of the dense model whose every second FFN becomes an
    MoE layer of `num_experts` copies of it (routers random, seeded)."""
    if dense.cfg.num_experts:
        raise ModelConfigError(f"upcycling {dense.cfg.name}: num_experts="
                               f"{dense.cfg.num_experts}, expected a dense model (0)")
    torch.manual_seed(seed)
    net = copy.deepcopy(dense)
    net.cfg = dense.cfg.with_(num_experts=num_experts, top_k=top_k,
                              normalize_topk=normalize_topk)
    for i, block in enumerate(net.blocks):
        if net.cfg.is_moe_layer(i):
            block.ffn = upcycle_ffn(block.ffn, net.cfg.dim, num_experts, top_k, normalize_topk)
    return net


def widen_net(dense: SkyMoENet, factor: int, moe_every: int = 2) -> SkyMoENet:
    """The dense model at an MoE's active width: each FFN of the layers an MoE would replace
    becomes `factor` side-by-side copies with the down projection divided by `factor`, which
    computes exactly the same function (so it starts where the upcycled MoE starts)."""
    if dense.cfg.num_experts or factor < 1:
        raise ModelConfigError(f"widening {dense.cfg.name}: num_experts="
                               f"{dense.cfg.num_experts} factor={factor}, expected a dense "
                               "model and factor >= 1")
    net = copy.deepcopy(dense)
    dims = list(dense.cfg.ffn_dims)
    for i, block in enumerate(net.blocks):
        if i % moe_every != moe_every - 1:
            continue
        old: SwiGLU = block.ffn
        new = SwiGLU(dense.cfg.dim, dims[i] * factor)
        with torch.no_grad():
            new.gate_proj.weight.copy_(old.gate_proj.weight.repeat(factor, 1))
            new.up_proj.weight.copy_(old.up_proj.weight.repeat(factor, 1))
            new.down_proj.weight.copy_(old.down_proj.weight.repeat(1, factor) / factor)
        block.ffn = new
        dims[i] *= factor
    net.cfg = dense.cfg.with_(ffn_dims=tuple(dims))
    return net
