"""Fixtures of the orbit tests: the real TLE sets (loaded once) and a ground station."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.orbit import GroundStation, Satellite, load_tle_file


@pytest.fixture(scope="session")
def starlink_path(shared_data: Path) -> Path:
    return shared_data / "tle" / "starlink-2024-07-16.tle"


@pytest.fixture(scope="session")
def planet_path(shared_data: Path) -> Path:
    return shared_data / "tle" / "planet-2024-07-16.tle"


@pytest.fixture(scope="session")
def starlink(starlink_path: Path) -> list[Satellite]:
    return load_tle_file(starlink_path)


@pytest.fixture(scope="session")
def planet(planet_path: Path) -> list[Satellite]:
    return load_tle_file(planet_path)


@pytest.fixture(scope="session")
def starlink_shell1(starlink: list[Satellite]) -> list[Satellite]:
    """Starlink's first shell (53.0 deg, ~550 km), operational satellites only."""
    return [s for s in starlink if 52.95 < s.inclination_deg < 53.1 and 545 < s.altitude_km < 555]


@pytest.fixture
def shanghai() -> GroundStation:
    return GroundStation("shanghai", 31.23, 121.47, 4.0, 25.0)
