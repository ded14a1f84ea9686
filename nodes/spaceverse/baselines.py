"""Decision rules of the baselines SpaceVerse is compared with.

Owns only the rules (offload or keep); running the models and timing them is the pipeline's job.

- satellite-only: always keep the on-board answer.
- ground-only: always send the raw image to the ground model.
- Tabi (Wang et al., EuroSys '23): one confidence from the on-board output's token
  probabilities after full on-board inference (their geometric mean: exp of the mean log
  probability); offload below a threshold.
- AI-RG (after He et al., IEEE TMC 2024, active-inference offloading): an agent keeps beliefs
  about (a) how likely the on-board answer is to agree with the ground's, per bin of on-board
  confidence (Beta posteriors), and (b) the link rate (EWMA of the rates observed); for each
  sample it picks the action with the lower expected free energy
      G(keep)    = w_err * P(disagree | bin) + w_lat * t_keep / t_ref + ambiguity(bin)
      G(offload) = w_lat * t_offload / t_ref
  where ambiguity is the Beta posterior's standard deviation (what it does not yet know), and
  t_keep / t_offload are the expected latencies from compute and link state together. After
  an offload it sees the ground answer and updates the bin's belief (the epistemic value: the
  uncertain bins get explored). Simplifications: two actions instead of a resource
  allocation; no neural generative model (conjugate Beta updates instead of variational
  inference); the preference (w_err, w_lat) is fixed, not learned.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from nodes.spaceverse.errors import SpaceVerseConfigError

__all__ = ["AIRGPolicy", "ground_only", "satellite_only", "tabi_confidence", "tabi_offload"]


def satellite_only() -> bool:
    """Offload? Never."""
    return False


def ground_only() -> bool:
    """Offload? Always (the raw image)."""
    return True


def tabi_confidence(token_probs: Sequence[float]) -> float:
    """Geometric mean of the on-board answer's token probabilities (0 for no tokens)."""
    if not token_probs:
        return 0.0
    if any(not 0 < p <= 1 for p in token_probs):
        raise SpaceVerseConfigError(f"tabi: token_probs={list(token_probs)}, expected (0, 1]")
    return math.exp(sum(math.log(p) for p in token_probs) / len(token_probs))


def tabi_offload(token_probs: Sequence[float], threshold: float) -> bool:
    """Offload when the on-board answer's confidence is below `threshold`."""
    if not 0 <= threshold <= 1:
        raise SpaceVerseConfigError(f"tabi: threshold={threshold}, expected in [0, 1]")
    return tabi_confidence(token_probs) < threshold


@dataclass
class AIRGPolicy:
    """Active-inference offloading over compute and link state (see the module docstring)."""

    bins: int = 5
    w_err: float = 1.0
    w_lat: float = 0.2
    rate_ewma: float = 0.3
    prior_agree: tuple[float, float] = (1.0, 1.0)
    agree: list[list[float]] = field(default_factory=list)
    rate_belief_bps: float | None = None

    def __post_init__(self) -> None:
        if self.bins < 1 or self.w_err < 0 or self.w_lat < 0 or not 0 < self.rate_ewma <= 1:
            raise SpaceVerseConfigError(
                f"AI-RG: bins={self.bins} w_err={self.w_err} w_lat={self.w_lat} "
                f"rate_ewma={self.rate_ewma}, expected bins >= 1, weights >= 0, 0 < ewma <= 1")
        if not self.agree:
            self.agree = [list(self.prior_agree) for _ in range(self.bins)]

    def _bin(self, confidence: float) -> int:
        return min(self.bins - 1, max(0, int(confidence * self.bins)))

    def expected_free_energy(self, confidence: float, t_keep_s: float, onboard_prefix_s: float,
                             send_bytes: int, delay_s: float, t_ground_s: float,
                             t_ref_s: float) -> tuple[float, float]:
        """(G_keep, G_offload) for one sample under the current beliefs."""
        a, b = self.agree[self._bin(confidence)]
        p_agree = a / (a + b)
        ambiguity = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        rate = self.rate_belief_bps or 1.0
        t_off = onboard_prefix_s + 8 * send_bytes / rate + delay_s + t_ground_s
        g_keep = self.w_err * (1 - p_agree) + self.w_lat * t_keep_s / t_ref_s + ambiguity
        g_off = self.w_lat * t_off / t_ref_s
        return g_keep, g_off

    def decide(self, confidence: float, t_keep_s: float, onboard_prefix_s: float,
               send_bytes: int, delay_s: float, t_ground_s: float, t_ref_s: float = 1.0) -> bool:
        """Offload? The action with the lower expected free energy."""
        g_keep, g_off = self.expected_free_energy(confidence, t_keep_s, onboard_prefix_s,
                                                  send_bytes, delay_s, t_ground_s, t_ref_s)
        return g_off < g_keep

    def observe_rate(self, rate_bps: float) -> None:
        """Update the link-rate belief with a measured rate."""
        if rate_bps <= 0:
            raise SpaceVerseConfigError(f"AI-RG: observed rate_bps={rate_bps}, expected > 0")
        if self.rate_belief_bps is None:
            self.rate_belief_bps = rate_bps
        else:
            self.rate_belief_bps += self.rate_ewma * (rate_bps - self.rate_belief_bps)

    def observe_agreement(self, confidence: float, agreed: bool) -> None:
        """After an offload: did the on-board answer agree with the ground's?"""
        cell = self.agree[self._bin(confidence)]
        cell[0 if agreed else 1] += 1.0
