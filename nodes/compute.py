"""Compute-time model: how long an accelerator would take for a model's measured work.

Owns accelerator figures and the roofline rule; standard library only, so an agent on a board
imports it without torch. A model's work (`ModelWork`: FLOPs and bytes moved per prefill and per
generated token) comes from the model adapter (counted from parameters and shapes) or, for the
paper's Qwen2-VL 2B/7B, from `qwen2vl_work` (2 FLOPs per parameter per token).

Roofline: time = max(FLOPs / (peak_flops * efficiency), bytes / (bandwidth * efficiency)).
`efficiency` (default 0.5) is the fraction of the datasheet peak a real kernel reaches; it is a
stated assumption, not a measurement of these boards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nodes.errors import ConfigError

__all__ = ["ACCELERATORS", "DEFAULT_EFFICIENCY", "QWEN2VL_SIZES", "Accelerator", "ModelWork",
           "accelerator", "generation_time_s", "qwen2vl_work", "roofline_s"]

DEFAULT_EFFICIENCY = 0.5


@dataclass(frozen=True)
class Accelerator:
    """Datasheet figures of one accelerator (FP16 peak, memory bandwidth and size)."""

    name: str
    peak_fp16_flops: float
    mem_bandwidth_bps: float  # bytes per second
    mem_bytes: float
    source: str


ACCELERATORS: dict[str, Accelerator] = {
    # NVIDIA Jetson AGX Xavier Series datasheet (DA-09715): Volta GPU, 512 CUDA + 64 tensor
    # cores, "11 TFLOPS (FP16)"; 32 GB 256-bit LPDDR4x, 136.5 GB/s.
    "jetson-agx-xavier": Accelerator("Jetson AGX Xavier", 11e12, 136.5e9, 32 * 2**30,
                                     "NVIDIA Jetson AGX Xavier Series datasheet"),
    # NVIDIA Jetson AGX Orin Series datasheet (DS-10662): 64 GB module, Ampere GPU with 64
    # tensor cores, GPU 170 INT8 TOPS sparse -> 85 dense INT8 -> 42.5 TFLOPS dense FP16 (tensor
    # cores; our derivation from the sparse INT8 figure); 64 GB LPDDR5, 204.8 GB/s.
    "jetson-agx-orin": Accelerator("Jetson AGX Orin 64GB", 42.5e12, 204.8e9, 64 * 2**30,
                                   "NVIDIA Jetson AGX Orin Series datasheet"),
    # NVIDIA Ampere GA102 GPU Architecture whitepaper, Table: GeForce RTX 3090 peak FP16 tensor
    # TFLOPS with FP32 accumulate 71 (dense); 24 GB GDDR6X, 936 GB/s.
    "rtx-3090": Accelerator("GeForce RTX 3090", 71e12, 936e9, 24 * 2**30,
                            "NVIDIA Ampere GA102 GPU Architecture whitepaper"),
}


def accelerator(name: str) -> Accelerator:
    """The accelerator registered as `name`; unknown names list the valid ones."""
    try:
        return ACCELERATORS[name]
    except KeyError:
        raise ConfigError(f"unknown accelerator {name!r}; choose: "
                          f"{', '.join(sorted(ACCELERATORS))}") from None


@dataclass(frozen=True)
class ModelWork:
    """A model's work for one input: a prefill (image + prompt) and each generated token.

    `label` says which model the figures stand for (e.g. `small-onboard`, `qwen2-vl-7b`).
    """

    label: str
    params: int
    prefill_flops: float
    prefill_bytes: float
    token_flops: float
    token_bytes: float


def roofline_s(flops: float, bytes_moved: float, acc: Accelerator,
               efficiency: float = DEFAULT_EFFICIENCY) -> float:
    """Seconds for `flops` and `bytes_moved` on `acc`: the slower of compute and memory."""
    if not 0 < efficiency <= 1:
        raise ConfigError(f"compute model: efficiency={efficiency}, expected 0 < e <= 1")
    if flops < 0 or bytes_moved < 0 or math.isnan(flops) or math.isnan(bytes_moved):
        raise ConfigError(f"compute model: flops={flops} bytes={bytes_moved}, expected >= 0")
    return max(flops / (acc.peak_fp16_flops * efficiency),
               bytes_moved / (acc.mem_bandwidth_bps * efficiency))


def generation_time_s(work: ModelWork, n_tokens: int, acc: Accelerator,
                      efficiency: float = DEFAULT_EFFICIENCY, prefill: bool = True) -> float:
    """Seconds for an (optional) prefill plus `n_tokens` generated tokens."""
    if n_tokens < 0:
        raise ConfigError(f"compute model: n_tokens={n_tokens}, expected >= 0")
    t = roofline_s(work.prefill_flops, work.prefill_bytes, acc, efficiency) if prefill else 0.0
    return t + n_tokens * roofline_s(work.token_flops, work.token_bytes, acc, efficiency)


# Qwen2-VL (Wang et al., 2024, arXiv:2409.12191, Table 1): a 675M-parameter ViT with 14 px
# patches, 2x2 patches merged into one LLM token; LLMs Qwen2-1.5B and Qwen2-7B.
QWEN2VL_SIZES: dict[str, tuple[float, float]] = {"2b": (675e6, 1.5e9), "7b": (675e6, 7.6e9)}


def qwen2vl_work(size: str, image_hw_px: tuple[int, int], prompt_tokens: int) -> ModelWork:
    """The work of Qwen2-VL-`size` for one image and prompt: 2 FLOPs per parameter per token.

    FP16 weights are read once per pass (prefill: ViT + LLM; token: LLM); the KV cache and
    activations are left out (small beside the weights at these lengths).
    """
    if size not in QWEN2VL_SIZES:
        raise ConfigError(f"unknown Qwen2-VL size {size!r}; choose: {', '.join(QWEN2VL_SIZES)}")
    vit, llm = QWEN2VL_SIZES[size]
    h, w = image_hw_px
    patches = math.ceil(h / 28) * 2 * math.ceil(w / 28) * 2
    image_tokens = patches // 4
    prefill_flops = 2 * vit * patches + 2 * llm * (image_tokens + prompt_tokens)
    return ModelWork(f"qwen2-vl-{size}", int(vit + llm), prefill_flops, 2 * (vit + llm),
                     2 * llm, 2 * llm)
