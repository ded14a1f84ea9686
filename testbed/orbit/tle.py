"""Satellites from two-line element sets: the `Satellite` record, TLE parsing and TLE files.

Owns TLE text (2-line and 3-line files, checksums, field syntax) and the `Satellite` value that
every other orbit module consumes. It does not select satellites (the scenario does) and does not
propagate (propagate.py does). Errors are `TleError`s naming the file and the 1-based line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sgp4.api import WGS72, Satrec
from sgp4.earth_gravity import wgs72

from testbed.errors import TleError
from testbed.orbit.times import NS_PER_DAY, TimeLike, as_datetime64

TLE_LINE_LENGTH = 69
SECONDS_PER_DAY = 86_400.0

# Implied-decimal fields of line 1 (nddot, bstar): optional sign, 5 digits, signed exponent.
_IMPLIED_DECIMAL = re.compile(r"^[ +-]?[ 0-9]{5}[+-][0-9]$")
_SGP4_ERRORS = {
    1: "mean eccentricity not within 0 <= e < 1",
    2: "mean motion less than 0",
    3: "perturbed eccentricity not within 0 <= e < 1",
    4: "semi-latus rectum below 0",
    5: "epoch elements are sub-orbital",
    6: "satellite has decayed",
}


@dataclass(frozen=True)
class Satellite:
    """One satellite: its mean elements at `epoch` (UTC) and the sgp4 model built from them.

    `plane` and `slot` are known for generated (Walker) constellations and None for real TLEs
    (isl.recover_planes finds them). Angles in degrees, mean motion in revolutions per day.
    """

    name: str
    norad_id: int
    epoch: datetime
    inclination_deg: float
    raan_deg: float
    eccentricity: float
    arg_perigee_deg: float
    mean_anomaly_deg: float
    mean_motion_rev_per_day: float
    satrec: Satrec = field(compare=False, hash=False, repr=False)
    plane: int | None = None
    slot: int | None = None

    @property
    def altitude_km(self) -> float:
        """Mean altitude above the equatorial radius, from the mean motion (Kepler's third law)."""
        return semi_major_axis_km(self.mean_motion_rev_per_day) - self.satrec.radiusearthkm

    @property
    def period_s(self) -> float:
        """Orbital period in seconds from the mean motion."""
        return SECONDS_PER_DAY / self.mean_motion_rev_per_day

    @classmethod
    def from_tle(cls, line1: str, line2: str, name: str | None = None) -> Satellite:
        """Parse one TLE pair; raises TleError naming the line (1 or 2) and the field.

        >>> Satellite.from_tle(
        ...     "1 44713U 19074A   24198.58334491  .01390166  00000+0  19503-1 0  9995",
        ...     "2 44713  53.0541   2.0722 0001210  69.0296 177.1483 15.53199148258369",
        ...     name="STARLINK-1007").norad_id
        44713
        """
        return _parse_pair(line1, line2, name, path=None, line1_no=1, line2_no=2)

    @classmethod
    def from_satrec(cls, satrec: Satrec, name: str, *, plane: int | None = None,
                    slot: int | None = None) -> Satellite:
        """Wrap an initialised sgp4 `Satrec` (elements are read back from it)."""
        epoch_ns = round((satrec.jdsatepoch - 2440587.5) * NS_PER_DAY) + round(
            satrec.jdsatepochF * NS_PER_DAY
        )
        epoch = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(
            microseconds=round(epoch_ns / 1000)
        )
        return cls(
            name=name,
            norad_id=int(satrec.satnum),
            epoch=epoch,
            inclination_deg=math.degrees(satrec.inclo),
            raan_deg=math.degrees(satrec.nodeo),
            eccentricity=float(satrec.ecco),
            arg_perigee_deg=math.degrees(satrec.argpo),
            mean_anomaly_deg=math.degrees(satrec.mo),
            mean_motion_rev_per_day=satrec.no_kozai * 1440.0 / (2.0 * math.pi),
            satrec=satrec,
            plane=plane,
            slot=slot,
        )


_MU_KM3_S2 = wgs72.mu  # sgp4 propagates TLEs with WGS72 constants
_RADIUS_KM = wgs72.radiusearthkm


def semi_major_axis_km(mean_motion_rev_per_day: float) -> float:
    """Semi-major axis (km) of a mean motion, with sgp4's WGS72 gravitational parameter."""
    n_rad_s = mean_motion_rev_per_day * 2.0 * math.pi / SECONDS_PER_DAY
    return (_MU_KM3_S2 / n_rad_s**2) ** (1.0 / 3.0)


def mean_motion_rev_per_day(altitude_km: float) -> float:
    """Mean motion of a circular orbit `altitude_km` above sgp4's WGS72 equatorial radius."""
    a_km = _RADIUS_KM + altitude_km
    return math.sqrt(_MU_KM3_S2 / a_km**3) * SECONDS_PER_DAY / (2.0 * math.pi)


def checksum(line: str) -> int:
    """TLE checksum of the first 68 characters: digits summed, each '-' counts 1, modulo 10."""
    body = line[: TLE_LINE_LENGTH - 1]
    return (sum(int(c) for c in body if c.isdigit()) + body.count("-")) % 10


def _check_line(text: str, number: str, path: str | None, line_no: int) -> str:
    """Length, line number and checksum of one TLE line; returns it without trailing blanks."""
    line = text.rstrip()
    if len(line) != TLE_LINE_LENGTH:
        raise TleError(
            f"TLE line {number} has {len(line)} characters, expected {TLE_LINE_LENGTH}",
            path=path, line=line_no, field="length",
        )
    if line[0] != number or line[1] != " ":
        raise TleError(
            f"expected TLE line {number} (starting '{number} '), got {line[:2]!r}",
            path=path, line=line_no, field="line number",
        )
    last = line[-1]
    if not last.isdigit():
        raise TleError(f"TLE line {number}: checksum character {last!r} is not a digit",
                       path=path, line=line_no, field="checksum")
    computed = checksum(line)
    if int(last) != computed:
        raise TleError(f"TLE line {number}: last digit is {last}, computed {computed}",
                       path=path, line=line_no, field="checksum")
    return line


def _float_field(line: str, start: int, end: int, name: str, path: str | None,
                 line_no: int, implied_point: bool = False) -> float:
    """Columns start..end (1-based, inclusive) as a float; TleError naming the field if not."""
    raw = line[start - 1 : end]
    text = "0." + raw.strip() if implied_point else raw.strip()
    try:
        if not raw.strip() or (implied_point and not raw.strip().isdigit()):
            raise ValueError
        return float(text)
    except ValueError:
        raise TleError(f"TLE line {line[0]} columns {start}-{end} are {raw!r}, expected a number",
                       path=path, line=line_no, field=name) from None


def _catalogue_number(line: str, path: str | None, line_no: int) -> str:
    raw = line[2:7]
    if not re.fullmatch(r"[0-9A-Z][0-9 ]{4}", raw) or raw.strip() == "":
        raise TleError(f"TLE line {line[0]} columns 3-7 are {raw!r}, expected a catalogue number",
                       path=path, line=line_no, field="catalogue number")
    return raw


def _parse_pair(text1: str, text2: str, name: str | None, *, path: str | None,
                line1_no: int, line2_no: int) -> Satellite:
    line1 = _check_line(text1, "1", path, line1_no)
    line2 = _check_line(text2, "2", path, line2_no)
    num1 = _catalogue_number(line1, path, line1_no)
    num2 = _catalogue_number(line2, path, line2_no)
    if num1 != num2:
        raise TleError(
            f"TLE line 2 catalogue number {num2.strip()!r} differs from line 1's {num1.strip()!r}",
            path=path, line=line2_no, field="catalogue number",
        )
    year = _float_field(line1, 19, 20, "epoch year", path, line1_no)
    day = _float_field(line1, 21, 32, "epoch day", path, line1_no)
    if not 1.0 <= day < 367.0:
        raise TleError(f"TLE line 1 epoch day {day}, expected 1 <= day < 367",
                       path=path, line=line1_no, field="epoch day")
    _float_field(line1, 34, 43, "mean motion derivative", path, line1_no)
    for start, end, what in ((45, 52, "mean motion second derivative"), (54, 61, "bstar")):
        raw = line1[start - 1 : end]
        if not _IMPLIED_DECIMAL.match(raw):
            raise TleError(
                f"TLE line 1 columns {start}-{end} are {raw!r}, expected e.g. ' 12345-4'",
                path=path, line=line1_no, field=what)
    inclination = _float_field(line2, 9, 16, "inclination", path, line2_no)
    raan = _float_field(line2, 18, 25, "right ascension of ascending node", path, line2_no)
    eccentricity = _float_field(line2, 27, 33, "eccentricity", path, line2_no, implied_point=True)
    arg_perigee = _float_field(line2, 35, 42, "argument of perigee", path, line2_no)
    mean_anomaly = _float_field(line2, 44, 51, "mean anomaly", path, line2_no)
    mean_motion = _float_field(line2, 53, 63, "mean motion", path, line2_no)
    for value, what, lo, hi in (
        (inclination, "inclination", 0.0, 180.0),
        (raan, "right ascension of ascending node", 0.0, 360.0),
        (arg_perigee, "argument of perigee", 0.0, 360.0),
        (mean_anomaly, "mean anomaly", 0.0, 360.0),
    ):
        if not lo <= value <= hi:
            raise TleError(f"TLE line 2 {what} {value} degrees, expected {lo} to {hi}",
                           path=path, line=line2_no, field=what)
    if not mean_motion > 0:
        raise TleError(f"TLE line 2 mean motion {mean_motion} rev/day, expected > 0",
                       path=path, line=line2_no, field="mean motion")

    satrec = Satrec.twoline2rv(line1, line2, WGS72)
    if satrec.error:
        reason = _SGP4_ERRORS.get(satrec.error, f"sgp4 error {satrec.error}")
        raise TleError(f"sgp4 rejects these elements: {reason}",
                       path=path, line=line2_no, field="elements")
    full_year = int(year) + (2000 if year < 57 else 1900)
    epoch = datetime(full_year, 1, 1, tzinfo=UTC) + timedelta(days=day - 1.0)
    return Satellite(
        name=(name or f"NORAD-{int(satrec.satnum)}").strip(),
        norad_id=int(satrec.satnum),
        epoch=epoch,
        inclination_deg=inclination,
        raan_deg=raan,
        eccentricity=eccentricity,
        arg_perigee_deg=arg_perigee,
        mean_anomaly_deg=mean_anomaly,
        mean_motion_rev_per_day=mean_motion,
        satrec=satrec,
    )


def _is_line(text: str, number: str) -> bool:
    return text.startswith(number + " ") and len(text.rstrip()) >= 60


def parse_tle_lines(lines: Iterable[str], path: str | None = None) -> list[Satellite]:
    """Satellites from TLE text lines (2-line and 3-line entries, mixed; blank lines skipped).

    A name line may carry the `0 ` prefix of CelesTrak's 3LE format. Raises TleError naming the
    1-based line for a line 2 without line 1, a line 1 without line 2, a name without elements,
    or any malformed line, and for text without any TLE.
    """
    sats: list[Satellite] = []
    name: str | None = None
    name_no = 0
    pending: tuple[str, int] | None = None  # line 1 and its number
    line_no = 0
    for line_no, raw in enumerate(lines, start=1):
        text = raw.rstrip("\r\n")
        if not text.strip():
            continue
        if pending is not None:
            if not text.startswith("2"):
                raise TleError(f"line 1 is not followed by line 2 (got {text[:24]!r})",
                               path=path, line=pending[1], field="line 2")
            sats.append(_parse_pair(pending[0], text, name, path=path,
                                    line1_no=pending[1], line2_no=line_no))
            pending, name = None, None
        elif _is_line(text, "1"):
            pending = (text, line_no)
        elif _is_line(text, "2"):
            raise TleError("line 2 without a preceding line 1", path=path, line=line_no,
                           field="line 1")
        else:
            if name is not None:
                raise TleError(f"name line {name!r} is not followed by TLE line 1",
                               path=path, line=name_no, field="line 1")
            name = text[2:].strip() if text.startswith("0 ") else text.strip()
            name_no = line_no
    if pending is not None:
        raise TleError("line 1 at end of file without line 2", path=path, line=pending[1],
                       field="line 2")
    if name is not None:
        raise TleError(f"name line {name!r} at end of file without TLE lines", path=path,
                       line=name_no, field="line 1")
    if not sats:
        raise TleError("no TLE in the file, expected 2-line or 3-line element sets",
                       path=path, line=line_no if line_no else None)
    return sats


def load_tle_file(path: str | Path) -> list[Satellite]:
    """All satellites of a 2-line or 3-line TLE file (ASCII), in file order.

    Raises TleError naming the file and the 1-based line for any problem (see parse_tle_lines),
    and for a missing, unreadable or non-ASCII file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TleError(f"cannot read TLE file: {exc.strerror}", path=path) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        line_no = data[: exc.start].count(b"\n") + 1
        raise TleError(f"byte 0x{data[exc.start]:02x} is not ASCII", path=path,
                       line=line_no) from None
    return parse_tle_lines(text.splitlines(), path=str(path))


def tle_age_days(satellites: Sequence[Satellite], epoch: TimeLike) -> np.ndarray:
    """Days from each satellite's TLE epoch to `epoch` (positive: the TLE is older), shape (N,)."""
    at = as_datetime64(epoch)
    epochs = np.array([as_datetime64(s.epoch) for s in satellites], dtype="datetime64[ns]")
    return (at - epochs).astype(np.int64) / NS_PER_DAY
