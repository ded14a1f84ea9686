"""Inter-satellite link capacity from a link budget, and propagation delay, on arrays of distances.

Owns the budget used by DLRC's EdgeSpaceCom, with every constant a field so a scenario (a lab)
can change it:

    FSPL  = 32.44 + 20 log10(d / km) + 20 log10(f / MHz)        dB
    N     = -174 + 10 log10(Tn / K) + 10 log10(B / Hz)           dBm  (as the paper writes it)
    SNR   = Pt + Gt + Gr - FSPL - Lsys - N                       dB
    rate  = B log2(1 + SNR_linear) (1 - overhead)                bit/s

The noise term is the paper's: -174 dBm/Hz is already kT at 290 K, so adding 10 log10(Tn)
counts the temperature twice; kept on purpose so numbers match the paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from testbed.errors import InputError

SPEED_OF_LIGHT_KM_S = 299_792.458


@dataclass(frozen=True)
class IslLinkBudget:
    """Constants of the ISL budget (defaults: DLRC / EdgeSpaceCom).

    >>> round(float(IslLinkBudget().capacity_bps(1000.0)) / 1e6, 3)
    13.436
    """

    tx_power_dbm: float = 40.0
    tx_gain_dbi: float = 35.0
    rx_gain_dbi: float = 35.0
    frequency_mhz: float = 20_000.0
    bandwidth_hz: float = 100e6
    noise_temperature_k: float = 290.0
    system_loss_db: float = 10.0
    overhead_ratio: float = 0.2

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value):
                raise InputError(f"{f.name}={value}, expected a finite number", field=f.name)
        for name in ("frequency_mhz", "bandwidth_hz", "noise_temperature_k"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name}={getattr(self, name)}, expected > 0", field=name)
        if not 0.0 <= self.overhead_ratio < 1.0:
            raise InputError(f"overhead_ratio={self.overhead_ratio}, expected 0 <= x < 1",
                             field="overhead_ratio")

    def fspl_db(self, distance_km: np.ndarray | float) -> np.ndarray:
        """Free-space path loss (dB) over distance_km (> 0; NaN passes through)."""
        d = _positive_distance(distance_km)
        return 32.44 + 20.0 * np.log10(d) + 20.0 * math.log10(self.frequency_mhz)

    @property
    def noise_dbm(self) -> float:
        """Noise power (dBm) as the paper writes it."""
        return -174.0 + 10.0 * math.log10(self.noise_temperature_k) + 10.0 * math.log10(
            self.bandwidth_hz)

    def snr_db(self, distance_km: np.ndarray | float) -> np.ndarray:
        """Signal-to-noise ratio (dB) at distance_km."""
        return (self.tx_power_dbm + self.tx_gain_dbi + self.rx_gain_dbi
                - self.fspl_db(distance_km) - self.system_loss_db - self.noise_dbm)

    def capacity_bps(self, distance_km: np.ndarray | float) -> np.ndarray:
        """Usable rate (bit/s) at distance_km: Shannon rate times (1 - overhead_ratio)."""
        snr_linear = 10.0 ** (self.snr_db(distance_km) / 10.0)
        return self.bandwidth_hz * np.log2(1.0 + snr_linear) * (1.0 - self.overhead_ratio)


def _positive_distance(distance_km: np.ndarray | float) -> np.ndarray:
    d = np.asarray(distance_km, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        bad = ~np.isnan(d) & ~(d > 0)
    if bad.any():
        raise InputError(f"distance_km={d[bad].flat[0]}, expected > 0", field="distance_km")
    return d


def propagation_delay_us(distance_km: np.ndarray | float) -> np.ndarray:
    """One-way propagation delay (microseconds) at the speed of light in vacuum.

    >>> round(float(propagation_delay_us(299.792458)), 6)
    1000.0
    """
    return np.asarray(distance_km, dtype=np.float64) / SPEED_OF_LIGHT_KM_S * 1e6
