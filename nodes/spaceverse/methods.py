"""One method's rule on one sample, the way a node runs it: on board, then (maybe) on the ground.

Owns what the in-process pipeline does for all methods at once, split by where it happens, so
the node workloads run exactly one method and move real bytes between the halves:

- `OnboardRunner(method, ...).run(image, prompt) -> OnboardOutcome`: runs only what the
  method's rule runs on board (nothing for ground-only; prefill + N_t tokens until an early
  exit for SpaceVerse; the whole answer for satellite-only, Tabi, AI-RG, g'), decides, and for
  an offload builds the SVRW bytes (the preprocessed image for spaceverse / g-image / g-answer,
  the raw image as one PNG region for ground-only / Tabi / AI-RG). `device_s` is the emulated
  on-board time (nodes.compute roofline; region scoring counted by torch's FLOP counter).
- `GroundRunner(...).answer(image_wire, prompt) -> GroundOutcome`: rebuilds the image, runs
  W^g, and gives its emulated ground time.

AI-RG's beliefs are updated by the caller from what it measures (`observe_transfer`,
`observe_ground`, `observe_answer`): link rate from real transfers, ground compute from the
ground's reports, agreement from the answers. Before the first offload it assumes the nominal
link rate and a ground time equal to the on-board one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from nodes.compute import accelerator, generation_time_s, roofline_s
from nodes.models.vlm.base import VisionLanguageModel
from nodes.spaceverse.baselines import AIRGPolicy, tabi_confidence, tabi_offload
from nodes.spaceverse.confidence import ConfidenceNet, answer_similarity, run_onboard
from nodes.spaceverse.errors import SpaceVerseConfigError
from nodes.spaceverse.pipeline import (
    METHODS,
    PipelineConfig,
    Timing,
    _scorer_flops,
    _tensor,
    _u8,
)
from nodes.spaceverse.preprocess import RegionScorer, to_wire
from nodes.spaceverse.wire import Region, WireImage, decode, encode, rebuild

__all__ = ["NET_OF_METHOD", "GroundOutcome", "GroundRunner", "OnboardOutcome", "OnboardRunner",
           "raw_wire"]

NET_OF_METHOD = {"spaceverse": "g~", "g-image": "g", "g-answer": "g'"}
_RAW_METHODS = ("ground-only", "tabi", "ai-rg")


@dataclass
class OnboardOutcome:
    """What the board did with one sample. `answer` is W^s's (kept) answer, `payload` the
    SVRW bytes to send (empty when kept); `device_s` the emulated on-board time; `host_s` the
    time this host took; `confidence` the rule's confidence(s)."""

    method: str
    offload: bool
    exit_stage: int
    tokens: int
    answer: str
    payload: bytes
    device_s: float
    host_s: float
    confidences: list[float] = field(default_factory=list)
    timing_label: str = ""


@dataclass
class GroundOutcome:
    """What the ground did with one request: W^g's answer, its tokens, emulated and host time."""

    answer: str
    tokens: int
    device_s: float
    host_s: float
    image_hw: tuple[int, int]
    timing_label: str


def raw_wire(image: torch.Tensor, codec: str = "png") -> bytes:
    """The raw image as SVRW bytes: one region covering it (what ground-only sends)."""
    return encode(WireImage(image.shape[1], image.shape[2], 1, 1, [Region(0, 0, _u8(image))]),
                  codec)


class OnboardRunner:
    """One method's on-board half (see the module docstring).

    Args:
        method: one of METHODS.
        onboard: W^s. nets: the confidence nets by name ('g~', 'g', "g'"); only the method's
        is needed. timing: which accelerators and model sizes the emulated time stands for.
        link_rate_bps, link_delay_s: AI-RG's prior on the link. scorer: the region scorer
        (default W^s's own encoders).
    """

    def __init__(self, method: str, onboard: VisionLanguageModel,
                 nets: dict[str, ConfidenceNet] | None = None, timing: Timing | None = None,
                 cfg: PipelineConfig | None = None, *, link_rate_bps: float = 110.67e6,
                 link_delay_s: float = 0.02, scorer: RegionScorer | None = None,
                 airg: AIRGPolicy | None = None):
        if method not in METHODS:
            raise SpaceVerseConfigError(f"method {method!r}: expected one of {', '.join(METHODS)}")
        net_name = NET_OF_METHOD.get(method)
        if net_name is not None and (nets is None or net_name not in nets):
            raise SpaceVerseConfigError(f"method {method}: confidence net {net_name!r} missing")
        if link_rate_bps <= 0 or link_delay_s < 0:
            raise SpaceVerseConfigError(f"method {method}: link_rate_bps={link_rate_bps} "
                                        f"link_delay_s={link_delay_s}, expected > 0 and >= 0")
        timing, cfg = timing or Timing(), cfg or PipelineConfig()
        self.method, self.onboard, self.timing, self.cfg = method, onboard, timing, cfg
        self.net = nets[net_name] if net_name is not None and nets is not None else None
        self.scorer = scorer or onboard
        self.acc = accelerator(timing.onboard_accelerator)
        self.airg = airg or AIRGPolicy()
        self.airg.observe_rate(link_rate_bps)
        self.link_delay_s = link_delay_s
        self.ground_s_belief: float | None = None

    # AI-RG's observations ------------------------------------------------------------------
    def observe_transfer(self, n_bytes: int, seconds: float) -> None:
        """A measured transfer (bytes, seconds from send to the peer's arrival stamp)."""
        if seconds > 0 and n_bytes > 0:
            self.airg.observe_rate(8 * n_bytes / seconds)

    def observe_ground(self, ground_s: float) -> None:
        """A ground compute time the ground reported (EWMA, same factor as the rate)."""
        if self.ground_s_belief is None:
            self.ground_s_belief = ground_s
        else:
            self.ground_s_belief += self.airg.rate_ewma * (ground_s - self.ground_s_belief)

    def observe_answer(self, confidence: float, onboard_answer: str, ground_answer: str) -> None:
        """After an offload: did W^s's answer agree with W^g's?"""
        self.airg.observe_agreement(confidence,
                                    answer_similarity(onboard_answer, ground_answer) > 0.99)

    # the rule --------------------------------------------------------------------------------
    def _t(self, image: torch.Tensor, prompt: str, tokens: int) -> tuple[float, str]:
        work = self.timing.work(self.onboard, image, prompt, "onboard")
        label = f"{work.label}@{self.timing.onboard_accelerator}"
        return generation_time_s(work, tokens, self.acc, self.timing.efficiency), label

    @torch.no_grad()
    def run(self, image: torch.Tensor, prompt: str) -> OnboardOutcome:
        """Apply the method to one sample (`image` `[3, H, W]` in [0, 1])."""
        t0 = time.perf_counter()
        m, cfg = self.method, self.cfg
        if m == "ground-only":
            payload = raw_wire(image, cfg.codec)
            label = f"none@{self.timing.onboard_accelerator}"
            return OnboardOutcome(m, True, -1, 0, "", payload, 0.0,
                                  time.perf_counter() - t0, [], label)
        if self.net is not None:
            taus = cfg.thresholds if m == "spaceverse" else (cfg.ablation_threshold,)
            d = run_onboard(self.onboard, self.net, image, prompt, taus, cfg.max_new_tokens)
            device_s, label = self._t(image, prompt, d.tokens_generated)
            if not d.offload:
                return OnboardOutcome(m, False, d.exit_stage, d.tokens_generated,
                                      self.onboard.decode(d.generation), b"", device_s,
                                      time.perf_counter() - t0, d.confidences, label)
            plan, flops = _scorer_flops(image, prompt, self.scorer, cfg.preprocess)
            payload = encode(to_wire(image, plan), cfg.codec)
            device_s += roofline_s(flops, 0.0, self.acc, self.timing.efficiency)
            return OnboardOutcome(m, True, d.exit_stage, d.tokens_generated, "", payload,
                                  device_s, time.perf_counter() - t0, d.confidences, label)
        gen = self.onboard.generate(image, prompt, cfg.max_new_tokens)
        answer = self.onboard.decode(gen)
        device_s, label = self._t(image, prompt, gen.num_tokens)
        conf = tabi_confidence(gen.token_probs)
        if m == "satellite-only":
            offload = False
        elif m == "tabi":
            offload = tabi_offload(gen.token_probs, cfg.tabi_threshold)
        else:  # ai-rg
            raw_bytes = len(raw_wire(image, cfg.codec))
            t_ground = self.ground_s_belief if self.ground_s_belief is not None else device_s
            offload = self.airg.decide(conf, device_s, device_s, raw_bytes, self.link_delay_s,
                                       t_ground, t_ref_s=max(device_s, 1e-6))
        payload = raw_wire(image, cfg.codec) if offload else b""
        return OnboardOutcome(m, offload, -1, gen.num_tokens, answer, payload, device_s,
                              time.perf_counter() - t0, [conf], label)


class GroundRunner:
    """W^g's half: rebuild the image from SVRW bytes, answer, time it on the ground's device."""

    def __init__(self, ground: VisionLanguageModel, timing: Timing | None = None,
                 cfg: PipelineConfig | None = None):
        self.ground, self.timing = ground, timing or Timing()
        self.cfg = cfg or PipelineConfig()
        timing = self.timing
        self.acc = accelerator(timing.ground_accelerator)

    @torch.no_grad()
    def answer(self, image_wire: bytes, prompt: str) -> GroundOutcome:
        """WireFormatError when the bytes are not a valid SVRW image."""
        t0 = time.perf_counter()
        image = _tensor(rebuild(decode(image_wire)))
        gen = self.ground.generate(image, prompt, self.cfg.max_new_tokens)
        work = self.timing.work(self.ground, image, prompt, "ground")
        device_s = generation_time_s(work, gen.num_tokens, self.acc, self.timing.efficiency)
        return GroundOutcome(self.ground.decode(gen), gen.num_tokens, device_s,
                             time.perf_counter() - t0, (image.shape[1], image.shape[2]),
                             f"{work.label}@{self.timing.ground_accelerator}")
