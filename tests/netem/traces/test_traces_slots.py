"""15 s slot arithmetic and detection, against traces whose boundaries are known by construction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from netem.errors import NetemError
from netem.traces import DirectionSeries, find_slots, first_boundary_s, slot_boundaries_s
from netem.traces.slots import circular_offset_s
from netem.traces.summary import SLOT_CONTRAST_MIN

MS = 1_000_000


@pytest.mark.parametrize(("start", "expected"), [
    ("2024-07-16T00:00:00Z", 12.0), ("2024-07-16T00:00:12Z", 0.0),
    ("2024-07-16T00:00:12.5Z", 14.5), ("2024-07-16T00:00:58Z", 14.0),
    ("2024-07-16T00:00:03.3Z", 8.7), ("2024-07-16T01:00:27+01:00", 0.0),
])
def test_first_boundary(start, expected):
    t = datetime.fromisoformat(start.replace("Z", "+00:00"))
    assert first_boundary_s(t) == pytest.approx(expected)


def test_boundaries_follow_the_minute_not_the_start():
    start = datetime(2024, 7, 16, 0, 0, 50, tzinfo=UTC)
    got = slot_boundaries_s(start, 70.0, (12.0, 27.0, 42.0, 57.0)).tolist()
    assert got == [7.0, 22.0, 37.0, 52.0, 67.0]  # 00:57, 01:12, 01:27, 01:42, 01:57
    with pytest.raises(NetemError, match="no time zone"):
        slot_boundaries_s(datetime(2024, 7, 16), 10.0, (12.0,))
    assert slot_boundaries_s(start.astimezone(timezone(timedelta(hours=8))), 70.0,
                             (12.0, 27.0, 42.0, 57.0)).tolist() == got


def test_circular_offset():
    assert circular_offset_s(14.9, 0.1) == pytest.approx(-0.2)
    assert circular_offset_s(5.0, 0.0) == pytest.approx(5.0)


def _stepped(phase_s: float, duration_s: float, seed: int) -> DirectionSeries:
    """Capacity and delay levels that change only at phase + 15 k, plus noise (10 ms grid)."""
    rng = np.random.default_rng(seed)
    n = int(duration_s * 100)
    t = np.arange(n) / 100
    slot = np.floor((t - phase_s) / 15).astype(int) + 1
    levels = rng.uniform(20e6, 80e6, slot.max() + 1)
    base = rng.uniform(8e3, 14e3, slot.max() + 1)
    rate = levels[slot] * rng.lognormal(0, 0.1, n)
    delay = base[slot] + rng.normal(0, 500, n).clip(-2000, 2000)
    return DirectionSeries.uniform(10 * MS, rate_bps=rate, delay_us=delay)


@pytest.mark.parametrize(("phase_s", "seed"), [(0.5, 1), (8.7, 2), (14.2, 3)])
def test_known_level_steps_are_found_to_the_step(phase_s, seed):
    fit = find_slots(_stepped(phase_s, 120.0, seed))
    assert abs(circular_offset_s(fit.phase_s, phase_s)) <= 0.02
    assert fit.contrast > SLOT_CONTRAST_MIN


def test_slot_free_noise_is_not_called_periodic():
    rng = np.random.default_rng(9)
    noise = DirectionSeries.uniform(
        10 * MS, rate_bps=np.exp(np.log(50e6) + np.repeat(rng.normal(0, 0.3, 1200), 10)),
        delay_us=(20_000 + rng.normal(0, 1000, 12_000)).clip(0))
    assert find_slots(noise).contrast < SLOT_CONTRAST_MIN


def test_too_short_to_find_slots():
    with pytest.raises(NetemError, match="needs at least 30 s"):
        find_slots(_stepped(1.0, 20.0, 1))
