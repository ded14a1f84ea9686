"""Progressive confidence network g~ of SpaceVerse, and its ablations g and g'.

Owns the network, the early-exit rule on board and its training; not the models it judges.

    g~_1 = sigmoid(M(L_1(V(x))))                      after the prefill (image only)
    g~_i = sigmoid(M(L_i(Concat(V(x), A_{i-1}))))     after N_t more generated tokens, i > 1

V(x) is the mean of W^s's visual tokens, A the mean of the features of the tokens W^s has
generated so far; M is one MLP shared by all stages, L_i a projection per stage. On board: if
g~_i < tau_i the sample is offloaded at once (generation stops there); past the last stage the
on-board answer is kept. Training: supervised regression, MSE summed over stages, onto the
cosine similarity between the on-board and the ground answers (`answer_similarity`).

A stage is described by how many generated tokens it sees (`stage_tokens`): g~ = (0, N_t),
the ablation g = (0,) (one confidence from the image), g' = (None,) (one confidence after the
whole on-board answer).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nodes.models.vlm.base import Generation, VisionLanguageModel
from nodes.spaceverse.errors import SpaceVerseConfigError

__all__ = ["ConfidenceNet", "ConfidenceRecord", "OnboardDecision", "SPACEVERSE_STAGES",
           "ABLATION_IMAGE_ONLY", "ABLATION_AFTER_ANSWER", "answer_similarity",
           "confidence_loss", "record_sample", "run_onboard", "stage_inputs", "train_confidence"]

SPACEVERSE_STAGES: tuple[int | None, ...] = (0, 1)   # g~: I = 2, N_t = 1
ABLATION_IMAGE_ONLY: tuple[int | None, ...] = (0,)   # g
ABLATION_AFTER_ANSWER: tuple[int | None, ...] = (None,)  # g'


def _trigrams(text: str) -> Counter:
    t = " " + re.sub(r"\s+", " ", text.lower().strip()) + " "
    return Counter(t[i:i + 3] for i in range(max(0, len(t) - 2)))


def answer_similarity(a: str, b: str) -> float:
    """Cosine similarity of two answers' character-trigram count vectors, in [0, 1].

    A model-independent text embedding, so W^s and W^g outputs compare in one space.
    """
    ca, cb = _trigrams(a), _trigrams(b)
    if not ca or not cb:
        return 1.0 if ca == cb else 0.0
    dot = sum(ca[k] * cb[k] for k in ca.keys() & cb.keys())
    return dot / math.sqrt(sum(v * v for v in ca.values()) * sum(v * v for v in cb.values()))


class ConfidenceNet(nn.Module):
    """A shared MLP M behind one input projection L_i per stage; outputs in (0, 1)."""

    def __init__(self, vis_dim: int, tok_dim: int,
                 stage_tokens: Sequence[int | None] = SPACEVERSE_STAGES,
                 proj_dim: int = 64, hidden_dim: int = 64):
        super().__init__()
        if not stage_tokens:
            raise SpaceVerseConfigError("confidence net: stage_tokens=(), expected >= 1 stage")
        self.stage_tokens = tuple(stage_tokens)
        self.vis_dim, self.tok_dim = vis_dim, tok_dim
        self.proj = nn.ModuleList(
            nn.Linear(vis_dim if k == 0 else vis_dim + tok_dim, proj_dim)
            for k in self.stage_tokens)
        self.mlp = nn.Sequential(nn.ReLU(), nn.Linear(proj_dim, hidden_dim), nn.ReLU(),
                                 nn.Linear(hidden_dim, 1))

    @property
    def num_stages(self) -> int:
        """I, the number of stages."""
        return len(self.stage_tokens)

    def forward(self, stage: int, inputs: torch.Tensor) -> torch.Tensor:
        """Confidence `[B]` of stage `stage` (0-based) for inputs `[B, in_dim]`."""
        return torch.sigmoid(self.mlp(self.proj[stage](inputs))).squeeze(-1)


@dataclass
class ConfidenceRecord:
    """What one training sample needs: V(x), per-token features of W^s's answer, the target."""

    visual: torch.Tensor        # [D_v]
    token_feats: torch.Tensor   # [n, D_t], every generated token
    target: float               # cos(on-board answer, ground answer)


def stage_inputs(visual: torch.Tensor, token_feats: torch.Tensor,
                 n_tokens: int | None) -> torch.Tensor:
    """Input of a stage seeing `n_tokens` tokens (None = all; 0 = the image only)."""
    if n_tokens == 0:
        return visual
    seen = token_feats if n_tokens is None else token_feats[:n_tokens]
    a = seen.mean(0) if len(seen) else torch.zeros(token_feats.shape[-1])
    return torch.cat([visual, a])


def _stage_batches(records: Sequence[ConfidenceRecord],
                   stage_tokens: Sequence[int | None]) -> tuple[list[torch.Tensor], torch.Tensor]:
    xs = [torch.stack([stage_inputs(r.visual, r.token_feats, k) for r in records])
          for k in stage_tokens]
    return xs, torch.tensor([r.target for r in records], dtype=torch.float32)


def _loss(net: ConfidenceNet, xs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
    return sum((F.mse_loss(net(i, x), target) for i, x in enumerate(xs)), torch.zeros(()))


def confidence_loss(net: ConfidenceNet, records: Sequence[ConfidenceRecord]) -> torch.Tensor:
    """Sum over stages of the mean squared error onto the records' targets."""
    return _loss(net, *_stage_batches(records, net.stage_tokens))


def train_confidence(records: Sequence[ConfidenceRecord], stage_tokens: Sequence[int | None],
                     epochs: int = 200, lr: float = 3e-3, seed: int = 0) -> ConfidenceNet:
    """Fit a `ConfidenceNet` (full batch Adam) on `records`; returns it in eval mode."""
    if not records:
        raise SpaceVerseConfigError("confidence training: 0 records, expected >= 1")
    torch.manual_seed(seed)
    net = ConfidenceNet(records[0].visual.shape[0], records[0].token_feats.shape[-1],
                        stage_tokens)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    xs, target = _stage_batches(records, net.stage_tokens)
    for _ in range(epochs):
        loss = _loss(net, xs, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def record_sample(onboard: VisionLanguageModel, image: torch.Tensor, prompt: str,
                  ground_answer: str, max_new_tokens: int = 16) -> ConfidenceRecord:
    """Run W^s fully on one sample and pair its features with the similarity target."""
    gen = onboard.generate(image, prompt, max_new_tokens)
    return ConfidenceRecord(onboard.image_features(image).mean(0), onboard.token_features(gen),
                            answer_similarity(onboard.decode(gen), ground_answer))


@dataclass
class OnboardDecision:
    """The on-board outcome: offloaded or kept, at which stage, the confidences seen."""

    offload: bool
    exit_stage: int                 # 0-based stage that decided
    confidences: list[float]
    tokens_generated: int           # on-board tokens spent (compute)
    generation: Generation


@torch.no_grad()
def run_onboard(onboard: VisionLanguageModel, net: ConfidenceNet, image: torch.Tensor,
                prompt: str, thresholds: Sequence[float],
                max_new_tokens: int = 16) -> OnboardDecision:
    """Progressive early exit: stop and offload at the first stage below its threshold."""
    if len(thresholds) != net.num_stages:
        raise SpaceVerseConfigError(f"confidence: {len(thresholds)} thresholds for "
                                    f"{net.num_stages} stages, expected one per stage")
    gen = onboard.start(image, prompt)
    visual = onboard.image_features(image).mean(0)
    confs: list[float] = []
    for i, (k, tau) in enumerate(zip(net.stage_tokens, thresholds, strict=True)):
        want = max_new_tokens if k is None else k
        while not gen.done and gen.num_tokens < want:
            onboard.step(gen, want - gen.num_tokens)
        feats = onboard.token_features(gen)
        c = float(net(i, stage_inputs(visual, feats, k)[None])[0])
        confs.append(c)
        if c < tau:
            return OnboardDecision(True, i, confs, gen.num_tokens, gen)
    while not gen.done and gen.num_tokens < max_new_tokens:
        onboard.step(gen, max_new_tokens - gen.num_tokens)
    return OnboardDecision(False, net.num_stages - 1, confs, gen.num_tokens, gen)
