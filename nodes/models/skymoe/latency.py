"""Measured per-token latency of a SkyMoE (or its dense twin) on this CPU, and the emulated time
on an accelerator from the model's counted work (`nodes.compute`), labelled as such.

Owns the measurement protocol: one image and prompt, a prefill, then `tokens` single-token
decoding steps through the KV cache (each step feeds a fixed token so every model does the same
number of steps), repeated `repeats` times; the median per-token time is reported.
"""

from __future__ import annotations

import statistics
import time

import torch

from nodes.compute import accelerator, generation_time_s
from nodes.models.skymoe.vlm import SkyMoEVLM

__all__ = ["token_latency"]


@torch.no_grad()
def token_latency(vlm: SkyMoEVLM, image: torch.Tensor, prompt: str, tokens: int = 32,
                  repeats: int = 5, ground_gpu: str = "rtx-3090") -> dict:
    """Median measured seconds per prefill and per generated token (`measured_*`, this CPU,
    the current torch thread count), and the roofline time on `ground_gpu` (`emulated_*`)."""
    net = vlm.net
    prefill_s, token_s = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        gen = vlm.start(image, prompt)
        t1 = time.perf_counter()
        prefill_s.append(t1 - t0)
        pos, cache = gen.state["pos"], gen.state["cache"]
        for i in range(tokens):
            t0 = time.perf_counter()
            net.head(net.decode_one(1 + i % (len(vlm.cfg.vocab) - 1), pos + i, cache))
            token_s.append(time.perf_counter() - t0)
    work = vlm.work(image, prompt)
    acc = accelerator(ground_gpu)
    return {"measured_prefill_s": statistics.median(prefill_s),
            "measured_token_s": statistics.median(token_s),
            "torch_threads": torch.get_num_threads(),
            "emulated_accelerator": ground_gpu,
            "emulated_prefill_s": generation_time_s(work, 0, acc),
            "emulated_token_s": generation_time_s(work, 1, acc, prefill=False),
            "token_flops": work.token_flops, "token_bytes": work.token_bytes,
            "params": work.params, "active_params": vlm.active_params()}
