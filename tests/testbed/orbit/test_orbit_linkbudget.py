"""ISL link budget and delay, checked against the paper's formulas evaluated by hand here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from testbed.errors import InputError
from testbed.orbit import IslLinkBudget, propagation_delay_us


def test_capacity_at_1000_km_by_hand() -> None:
    # FSPL = 32.44 + 20 log10(1000) + 20 log10(20000) = 32.44 + 60 + 86.0206 = 178.4606 dB
    fspl_db = 32.44 + 60.0 + 20.0 * math.log10(20_000.0)
    # N = -174 + 10 log10(290) + 10 log10(1e8) = -174 + 24.624 + 80 = -69.376 dBm
    noise_dbm = -174.0 + 10.0 * math.log10(290.0) + 80.0
    # SNR = 40 + 35 + 35 - 178.46 - 10 + 69.376 = -9.0846 dB
    snr_db = 40.0 + 35.0 + 35.0 - fspl_db - 10.0 - noise_dbm
    rate_bps = 100e6 * math.log2(1.0 + 10.0 ** (snr_db / 10.0)) * 0.8
    budget = IslLinkBudget()
    assert float(budget.fspl_db(1000.0)) == pytest.approx(178.4606, abs=1e-4)
    assert budget.noise_dbm == pytest.approx(-69.3760, abs=1e-4)
    assert float(budget.snr_db(1000.0)) == pytest.approx(-9.0846, abs=1e-4)
    assert float(budget.capacity_bps(1000.0)) == pytest.approx(rate_bps, rel=1e-12)
    assert rate_bps == pytest.approx(13.436e6, rel=1e-4)


def test_capacity_is_vectorised_and_falls_with_distance() -> None:
    distance_km = np.array([[500.0, 1000.0], [2000.0, 3000.0]])
    capacity = IslLinkBudget().capacity_bps(distance_km)
    assert capacity.shape == (2, 2)
    assert (np.diff(capacity.ravel()) < 0).all()
    # Doubling the distance costs 6.02 dB of SNR.
    budget = IslLinkBudget()
    assert float(budget.snr_db(1000.0) - budget.snr_db(2000.0)) == pytest.approx(
        20 * math.log10(2), abs=1e-12)
    assert np.isnan(budget.capacity_bps(np.array([np.nan, 1000.0]))[0])


def test_every_constant_is_a_field() -> None:
    lab = IslLinkBudget(tx_power_dbm=43.0, system_loss_db=7.0, overhead_ratio=0.0)
    # +3 dB power and -3 dB loss: +6 dB SNR.
    assert float(lab.snr_db(1000.0) - IslLinkBudget().snr_db(1000.0)) == pytest.approx(6.0)
    with pytest.raises(InputError, match="overhead_ratio=1.0"):
        IslLinkBudget(overhead_ratio=1.0)
    with pytest.raises(InputError, match="bandwidth_hz=0"):
        IslLinkBudget(bandwidth_hz=0)
    with pytest.raises(InputError, match="distance_km=-5.0, expected > 0"):
        IslLinkBudget().capacity_bps(np.array([1000.0, -5.0]))


def test_propagation_delay() -> None:
    # 1,000 km at c = 299,792.458 km/s: 3,335.64 us.
    assert float(propagation_delay_us(1000.0)) == pytest.approx(3335.640952, abs=1e-6)
    np.testing.assert_allclose(propagation_delay_us(np.array([0.0, 299_792.458])), [0.0, 1e6])
