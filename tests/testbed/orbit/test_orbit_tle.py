"""TLE loading: the real CelesTrak files, mixed formats, and every malformed-input error."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sgp4.api import Satrec

from testbed.errors import TleError
from testbed.orbit import Satellite, load_tle_file, tle_age_days

ISS_LINE1 = "1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927"
ISS_LINE2 = "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537"


def test_real_files_load_completely(starlink: list[Satellite], planet: list[Satellite]) -> None:
    assert len(starlink) == 6227
    assert len(planet) == 139
    assert len({s.norad_id for s in starlink}) == 6227
    assert starlink[0].name == "STARLINK-1007" and starlink[0].norad_id == 44713
    assert planet[0].name == "SKYSAT-A" and planet[0].norad_id == 39418
    # Fields as printed in the file (first Starlink entry).
    s = starlink[0]
    assert (s.inclination_deg, s.raan_deg, s.eccentricity) == (53.0541, 2.0722, 0.000121)
    assert (s.arg_perigee_deg, s.mean_anomaly_deg) == (69.0296, 177.1483)
    assert s.mean_motion_rev_per_day == 15.53199148
    # Epoch 24198.58334491 = day 198 of 2024 (16 July) + 0.58334491 d.
    assert abs((s.epoch - datetime(2024, 7, 16, 14, 0, 1, 0, tzinfo=UTC)).total_seconds()) < 1e-3


def test_fields_agree_with_sgp4s_own_parser() -> None:
    s = Satellite.from_tle(ISS_LINE1, ISS_LINE2, name="ISS (ZARYA)")
    reference = Satrec.twoline2rv(ISS_LINE1, ISS_LINE2)
    assert s.name == "ISS (ZARYA)" and s.norad_id == 25544
    assert math.isclose(math.radians(s.inclination_deg), reference.inclo, rel_tol=1e-12)
    assert math.isclose(math.radians(s.raan_deg), reference.nodeo, rel_tol=1e-12)
    assert math.isclose(s.eccentricity, reference.ecco, rel_tol=1e-12)
    jd = reference.jdsatepoch + reference.jdsatepochF
    epoch_jd = s.epoch.timestamp() / 86400.0 + 2440587.5
    assert abs(epoch_jd - jd) * 86400.0 < 1e-5


def test_altitude_matches_propagated_radius(starlink_shell1: list[Satellite]) -> None:
    """Mean altitude from mean motion vs the orbit-averaged sgp4 radius (independent)."""
    s = starlink_shell1[0]
    jd = np.full(600, s.satrec.jdsatepoch)
    fr = s.satrec.jdsatepochF + np.linspace(0.0, s.period_s / 86400.0, 600, endpoint=False)
    _, r, _ = s.satrec.sgp4_array(jd, fr)
    mean_radius_km = np.linalg.norm(r, axis=1).mean()
    # J2 makes the mean radius differ from Kepler's a by ~10 km at 53 deg.
    assert abs((mean_radius_km - 6378.135) - s.altitude_km) < 15.0


def test_two_and_three_line_mixed_with_blanks_and_zero_prefix(tmp_path: Path,
                                                              planet_path: Path) -> None:
    lines = planet_path.read_text().splitlines()
    text = "\n".join([
        "", "0 " + lines[0].strip(), lines[1], lines[2], "",  # 3LE with "0 " prefix
        lines[4], lines[5],  # 2-line entry, no name
        "   ", lines[6], lines[7], lines[8], "",  # 3-line entry
    ]) + "\r\n"
    path = tmp_path / "mixed.tle"
    path.write_text(text)
    sats = load_tle_file(path)
    assert [s.name for s in sats] == ["SKYSAT-A", "NORAD-40072", lines[6].strip()]


def _corrupt(tmp_path: Path, planet_path: Path, edit) -> Path:  # noqa: ANN001
    lines = planet_path.read_text().splitlines()[:9]
    edit(lines)
    path = tmp_path / "corrupt.tle"
    path.write_text("\n".join(lines) + "\n")
    return path


def _with_checksum(body: str) -> str:
    """Append the checksum computed here (digits summed, '-' counts 1), independent of the code."""
    total = sum(int(c) for c in body if c.isdigit()) + body.count("-")
    return body + str(total % 10)


def _flip_digit(line: str, column: int) -> str:
    """Change the digit in 1-based `column` so the checksum no longer matches."""
    i = column - 1
    return line[:i] + str((int(line[i]) + 1) % 10) + line[i + 1 :]


@pytest.mark.parametrize(
    ("edit", "line", "field", "words"),
    [
        (lambda ls: ls.__setitem__(5, ls[5][:68]), 6, "length", "68 characters, expected 69"),
        (lambda ls: ls.__setitem__(4, ls[4] + "0"), 5, "length", "70 characters, expected 69"),
        (lambda ls: ls.__setitem__(8, _flip_digit(ls[8], 20)), 9, "checksum", "computed"),
        (lambda ls: ls.__delitem__(4), 5, "line 1", "line 2 without a preceding line 1"),
        (lambda ls: ls.__setitem__(5, _with_checksum("2 99999" + ls[5][7:68])), 6,
         "catalogue number", "differs from line 1's '40072'"),
        (lambda ls: ls.__delitem__(2), 2, "line 2", "not followed by line 2"),
        (lambda ls: ls.__setitem__(4, "ANOTHER NAME"), 4, "line 1", "not followed by TLE line 1"),
    ],
    ids=["short", "long", "checksum", "line2-alone", "catalogue", "no-line2", "two-names"],
)
def test_corrupted_copies_name_file_and_line(tmp_path: Path, planet_path: Path, edit,  # noqa: ANN001
                                             line: int, field: str, words: str) -> None:
    path = _corrupt(tmp_path, planet_path, edit)
    with pytest.raises(TleError) as caught:
        load_tle_file(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), line, field)
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: {field}: ")


def test_unparsable_field_with_valid_checksum(tmp_path: Path, planet_path: Path) -> None:
    """A letter where inclination digits belong, checksum recomputed so only the field is bad."""

    def edit(lines: list[str]) -> None:
        lines[2] = _with_checksum(lines[2][:8] + " 9x.4846" + lines[2][16:68])

    path = _corrupt(tmp_path, planet_path, edit)
    expected = "inclination: TLE line 2 columns 9-16 are ' 9x.4846'"
    with pytest.raises(TleError, match=expected) as caught:
        load_tle_file(path)
    assert caught.value.line == 3


def test_empty_missing_and_binary_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tle"
    empty.write_text("\n\n")
    with pytest.raises(TleError, match="no TLE in the file") as caught:
        load_tle_file(empty)
    assert caught.value.path == str(empty)
    with pytest.raises(TleError, match="cannot read TLE file"):
        load_tle_file(tmp_path / "absent.tle")
    binary = tmp_path / "binary.tle"
    binary.write_bytes(b"SAT\n\xff\xfe\n")
    with pytest.raises(TleError, match="not ASCII") as caught:
        load_tle_file(binary)
    assert caught.value.line == 2


def test_from_tle_errors_without_file() -> None:
    with pytest.raises(TleError, match=r"^checksum: TLE line 2: last digit is 8, computed 7$"):
        Satellite.from_tle(ISS_LINE1, ISS_LINE2[:68] + "8")


def test_tle_age_days(starlink: list[Satellite]) -> None:
    ages = tle_age_days(starlink[:2], "2024-07-17T00:00:00Z")
    # Epoch days 198.58334491 and 198.73465956 of 2024; 2024-07-17 is day 199.
    np.testing.assert_allclose(ages, [1.0 - 0.58334491, 1.0 - 0.73465956], atol=1e-8)
    assert tle_age_days(starlink[:1], datetime(2024, 7, 16, tzinfo=UTC))[0] < 0
