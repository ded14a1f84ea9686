"""The arithmetic work of a codec's on-board transforms and of DLRC's LSH, for the roofline.

Owns the counting only; `nodes.compute.roofline_s` turns (FLOPs, bytes) into the time an
accelerator would take. What is counted: convolutions, transposed convolutions and GDN layers
that run when a satellite analyses one image (g_a, h_a, h_s; an autoregressive codec's masked
context model and entropy-parameter network run once per latent position; ELIC's channel and
checkerboard contexts once per group and pass), counted with forward
hooks on one real pass; bytes are FP16 weights read once plus FP16 activations written and
read once. What is not: the rANS entropy coder and CompressAI's per-symbol Python loop (a CPU's
job on a board too), so the emulated times cover the transforms, and the entropy coding is
measured, never emulated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FP16_BYTES = 2


@dataclass(frozen=True)
class Work:
    """FLOPs and bytes moved by one piece of on-board work."""

    flops: float
    bytes: float


def lsh_work(positions: int, channels: int, rounds: int) -> Work:
    """Cross-polytope LSH of `positions` vectors of `channels`: one C x C rotation per round,
    an argmax over 2C; rotations and vectors read in FP32 (as nodes.dlrc.lsh computes)."""
    flops = rounds * positions * (2.0 * channels * channels + 2.0 * channels)
    moved = rounds * channels * channels * 4 + positions * channels * 4 + positions * 8
    return Work(float(flops), float(moved))


def codec_analysis_work(model: Any, image_hw: tuple[int, int]) -> Work:
    """Work of the codec's on-board transforms for one image of `image_hw` pixels, counted on
    a real pass of g_a, h_a, h_s (and, for context models, context prediction and entropy
    parameters, as one pass over the whole latent)."""
    import torch
    from compressai.layers import GDN

    counted = {"flops": 0.0, "bytes": 0.0}

    def conv_hook(mod: Any, inputs: Any, out: Any) -> None:
        k = mod.weight.shape[2] * mod.weight.shape[3]
        if isinstance(mod, torch.nn.ConvTranspose2d):
            # every input element feeds (out_channels / groups) x k outputs
            counted["flops"] += 2.0 * inputs[0].numel() * (mod.out_channels // mod.groups) * k
        else:
            cin = mod.in_channels // mod.groups
            counted["flops"] += 2.0 * out.numel() * cin * k
        counted["bytes"] += FP16_BYTES * (mod.weight.numel() + inputs[0].numel() + out.numel())

    def gdn_hook(mod: Any, inputs: Any, out: Any) -> None:
        c = inputs[0].shape[1]
        positions = inputs[0].numel() // c
        counted["flops"] += 2.0 * positions * c * c + 4.0 * inputs[0].numel()
        counted["bytes"] += FP16_BYTES * (c * c + inputs[0].numel() + out.numel())

    hooks = []
    for mod in model.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, GDN):
            hooks.append(mod.register_forward_hook(gdn_hook))
    try:
        with torch.no_grad():
            x = torch.zeros(1, 3, *image_hw)
            y = model.g_a(x)
            if hasattr(model, "latent_codec"):  # ELIC: hyperprior, then every group's passes
                hyper = model.latent_codec["hyper"]
                params = hyper.h_s(hyper.h_a(y))
                model.latent_codec["y"].compress(y, params)
                return Work(counted["flops"], counted["bytes"])
            z = model.h_a(y)
            params = model.h_s(z)
            if hasattr(model, "context_prediction"):
                ctx = model.context_prediction(y)
                model.entropy_parameters(torch.cat((params, ctx), dim=1))
    finally:
        for h in hooks:
            h.remove()
    return Work(counted["flops"], counted["bytes"])
