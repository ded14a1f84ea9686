"""The one vision-language model interface every SpaceVerse method uses.

Owns the contract, not a model: step-wise generation (N tokens at a time, each with its
probability), image features V(x) (visual tokens of regions/patches) and text features E(T)
(prompt token embeddings), features of generated tokens (the A_i of the confidence network), and
the model's work (parameters, FLOPs and bytes per forward pass and per generated token) for the
compute-time model. Implementations: `SmallVLM` (trained here), `HFQwen2VL` (Qwen2-VL from a
local directory, also the tiny offline-built one).

Images are float tensors `[3, H, W]` in [0, 1]; any size (each model resizes as it needs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch

from nodes.compute import ModelWork

__all__ = ["Generation", "ModelWork", "VisionLanguageModel"]


@dataclass
class Generation:
    """The state of one step-wise generation; `step` appends to it."""

    prompt: str
    token_ids: list[int] = field(default_factory=list)
    token_probs: list[float] = field(default_factory=list)
    done: bool = False
    state: Any = None  # the implementation's own cache (KV cache, hidden state)

    @property
    def num_tokens(self) -> int:
        """Tokens generated so far (an end-of-sequence token included)."""
        return len(self.token_ids)


class VisionLanguageModel(ABC):
    """A VLM with step-wise generation and access to its visual and text features."""

    name: str

    @abstractmethod
    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        """V(x): visual tokens `[R, D]` of the image (patches or regions)."""

    @abstractmethod
    def region_features(self, regions: torch.Tensor) -> torch.Tensor:
        """Visual tokens of a batch of region crops `[N, 3, h, w]` -> `[N, R, D]`."""

    @abstractmethod
    def text_features(self, prompt: str) -> torch.Tensor:
        """E(T): embeddings `[T, D]` of the prompt's tokens, in the same space as V."""

    @abstractmethod
    def start(self, image: torch.Tensor, prompt: str) -> Generation:
        """Encode image and prompt (the prefill); no token generated yet."""

    @abstractmethod
    def step(self, gen: Generation, n_tokens: int) -> Generation:
        """Generate up to `n_tokens` more tokens greedily (fewer when it ends); returns `gen`."""

    @abstractmethod
    def token_features(self, gen: Generation) -> torch.Tensor:
        """Features `[n, D]` of the tokens generated so far (`[0, D]` before the first)."""

    @abstractmethod
    def decode(self, gen: Generation) -> str:
        """The generated answer text (special tokens removed)."""

    @abstractmethod
    def work(self, image: torch.Tensor, prompt: str) -> ModelWork:
        """FLOPs and bytes of one prefill and of one generated token for this input."""

    def generate(self, image: torch.Tensor, prompt: str, max_new_tokens: int = 16) -> Generation:
        """Whole-answer generation: `start` then `step` until done or `max_new_tokens`."""
        gen = self.start(image, prompt)
        while not gen.done and gen.num_tokens < max_new_tokens:
            self.step(gen, max_new_tokens - gen.num_tokens)
        return gen
