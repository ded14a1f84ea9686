"""Each baseline's decision rule."""

from __future__ import annotations

import math

import pytest

from nodes.spaceverse.baselines import (
    AIRGPolicy,
    ground_only,
    satellite_only,
    tabi_confidence,
    tabi_offload,
)
from nodes.spaceverse.errors import SpaceVerseConfigError


def test_fixed_rules() -> None:
    assert satellite_only() is False
    assert ground_only() is True


def test_tabi_geometric_mean_and_threshold() -> None:
    assert tabi_confidence([0.9, 0.4]) == pytest.approx(math.sqrt(0.36))
    assert tabi_offload([0.9, 0.4], threshold=0.7) is True     # 0.6 < 0.7
    assert tabi_offload([0.9, 0.4], threshold=0.5) is False
    assert tabi_offload([], threshold=0.1) is True
    with pytest.raises(SpaceVerseConfigError, match="token_probs"):
        tabi_confidence([1.5])


def test_airg_weighs_link_state() -> None:
    pol = AIRGPolicy(w_err=1.0, w_lat=1.0)
    pol.observe_rate(100e6)
    args = dict(confidence=0.5, t_keep_s=0.1, onboard_prefix_s=0.01, delay_s=0.02,
                t_ground_s=0.01)
    assert pol.decide(send_bytes=10_000, **args) is True           # fast link: offload
    assert pol.decide(send_bytes=1_000_000_000, **args) is False   # 80 s transfer: keep


def test_airg_learns_agreement_per_confidence_bin() -> None:
    pol = AIRGPolicy(w_err=1.0, w_lat=0.5)
    pol.observe_rate(1e6)
    kw = dict(t_keep_s=0.1, onboard_prefix_s=0.0, send_bytes=50_000, delay_s=0.05,
              t_ground_s=0.05)
    before = pol.expected_free_energy(0.95, **kw, t_ref_s=1.0)[0]
    for _ in range(30):
        pol.observe_agreement(0.95, agreed=True)
    after = pol.expected_free_energy(0.95, **kw, t_ref_s=1.0)[0]
    assert after < before
    assert pol.decide(0.95, **kw) is False     # a trusted bin keeps the on-board answer
    assert pol.decide(0.05, **kw) is True      # an unexplored bin is offloaded


def test_airg_bad_options_named() -> None:
    with pytest.raises(SpaceVerseConfigError, match="bins=0"):
        AIRGPolicy(bins=0)
    with pytest.raises(SpaceVerseConfigError, match="rate_bps=0"):
        AIRGPolicy().observe_rate(0)
