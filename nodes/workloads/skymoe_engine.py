"""The torch side of `skymoe-serve`: one loaded model answering one request at a time, timed.

Owns loading the model directory, generating an answer token by token while timing the prefill
and every decoding step on this host, the emulated times of the same work on the ground
accelerator (`nodes.compute` roofline of the model's counted work), and the routing of the
request's tokens when the model is a mixture of experts (`routing_stats`). It knows nothing of
queues, metrics or results files (the workload owns those). Imported only inside the job's
thread, so the agent loads torch only when a serve job runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nodes.compute import DEFAULT_EFFICIENCY, accelerator, roofline_s
from nodes.models.vlm.base import VisionLanguageModel

__all__ = ["Answer", "ServedModel"]


@dataclass(frozen=True)
class Answer:
    """One generated answer and its timings (seconds). `token_s`: each decoding step measured
    on this host; `emulated_*`: roofline on the accelerator; `routing`: per MoE layer of this
    request's tokens (`routing_stats()` rows), empty for a dense model."""

    text: str
    tokens: int
    prefill_s: float
    token_s: tuple[float, ...]
    emulated_prefill_s: float
    emulated_token_s: float
    routing: tuple[dict[str, Any], ...]

    @property
    def measured_token_s(self) -> float:
        """Mean measured seconds per generated token (0 when none was generated)."""
        return sum(self.token_s) / len(self.token_s) if self.token_s else 0.0


class ServedModel:
    """A VLM behind the interface of `nodes.models.vlm.base`; routing is recorded when it has
    `track_routing`/`routing_stats` (SkyMoE), skipped otherwise."""

    def __init__(self, vlm: VisionLanguageModel, accelerator_name: str = "rtx-3090",
                 efficiency: float = DEFAULT_EFFICIENCY):
        self.vlm = vlm
        self.name = vlm.name
        self.accelerator = accelerator(accelerator_name)
        self.accelerator_name = accelerator_name
        self.efficiency = efficiency
        self.routes = hasattr(vlm, "track_routing") and hasattr(vlm, "routing_stats")

    @classmethod
    def load(cls, model_dir: Path, accelerator_name: str = "rtx-3090",
             efficiency: float = DEFAULT_EFFICIENCY) -> ServedModel:
        """A SkyMoE (or its dense twin) from `model_dir` (`config.json`, `weights.pt`)."""
        from nodes.models.skymoe import SkyMoEVLM

        return cls(SkyMoEVLM.load(Path(model_dir)), accelerator_name, efficiency)

    def params(self) -> dict[str, int]:
        """Total and active parameters (active = those one token uses), where known."""
        net = getattr(self.vlm, "net", None)
        out: dict[str, int] = {}
        if net is not None:
            out["params"] = sum(p.numel() for p in net.parameters())
        if hasattr(self.vlm, "active_params"):
            out["active_params"] = int(self.vlm.active_params())
        return out

    @torch.no_grad()
    def answer(self, image: torch.Tensor, prompt: str, max_new_tokens: int) -> Answer:
        """Greedy answer of up to `max_new_tokens` tokens, one decoding step at a time."""
        # the work is counted first: counting runs a prefill, which must not enter the routing
        work = self.vlm.work(image, prompt)
        if self.routes:
            self.vlm.track_routing(True)  # fresh counters: this request's tokens only
        t0 = time.perf_counter()
        gen = self.vlm.start(image, prompt)
        prefill_s = time.perf_counter() - t0
        steps: list[float] = []
        while not gen.done and gen.num_tokens < max_new_tokens:
            t0 = time.perf_counter()
            before = gen.num_tokens
            self.vlm.step(gen, 1)
            if gen.num_tokens == before:
                break
            steps.append(time.perf_counter() - t0)
        routing: tuple[dict[str, Any], ...] = ()
        if self.routes:
            routing = tuple(self.vlm.routing_stats())
            self.vlm.track_routing(False)
        return Answer(text=self.vlm.decode(gen), tokens=gen.num_tokens, prefill_s=prefill_s,
                      token_s=tuple(steps),
                      emulated_prefill_s=roofline_s(work.prefill_flops, work.prefill_bytes,
                                                    self.accelerator, self.efficiency),
                      emulated_token_s=roofline_s(work.token_flops, work.token_bytes,
                                                  self.accelerator, self.efficiency),
                      routing=routing)

