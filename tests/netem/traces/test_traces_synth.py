"""The synthetic Starlink generator against the shipped real traces.

Thresholds (KS distance, 0 = same distribution). The real LeoCC trace is 120 s: 1,200 per-100 ms
capacity values but only 8 slots, so its own sampling noise is large. Measured when the
parameters were fitted: the distance between a 120 s synthetic trace and a 30-minute one (same
generator, 40 seeds) has median 0.141 (capacity) / 0.066 (delay), p95 0.256 / 0.108; the real
trace against the 30-minute synthetic one: 0.060 / 0.040. Thresholds of 0.15 (capacity) and
0.10 (delay) sit at about that median sampling noise, well above the measured distances, and
reject drift the generator could plausibly suffer: slot capacities scaled by 1.1 give 0.22,
a base delay 1 ms higher gives 0.23 (checked below: the perturbed generators must fail).
Lagos (100 s, 7 slots whose delays range 36-104 ms) is noisier still: 120 s-vs-long medians
0.10 / 0.24 for capacity / delay; thresholds 0.15 / 0.25.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from netem.errors import NetemError
from netem.traces import (
    FormatOptions,
    SynthParams,
    find_slots,
    first_boundary_s,
    generate_starlink,
    read_trace,
    sha256_file,
)
from netem.traces.compare import ks_distances, phase_offset_s
from netem.traces.summary import BOUNDARY_SCORE_MIN
from netem.traces.synth import DEFAULT_PARAMS_PATH

LEOCC_KS_CAPACITY_MAX = 0.15
LEOCC_KS_DELAY_MAX = 0.10
LAGOS_KS_CAPACITY_MAX = 0.15
LAGOS_KS_DELAY_MAX = 0.25
#: The real LeoCC trace's first slot boundary, found in its data (see traces/README.md).
LEOCC_PHASE_S = 8.70
PHASE_TOLERANCE_S = 0.02
#: A start whose first boundary falls where the real trace's does: 12 - 8.70 = 3.30 s.
START_LIKE_LEOCC = datetime(2024, 7, 16, 0, 0, 3, 300_000, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def starlink(shared_data: Path) -> Path:
    folder = shared_data / "traces" / "starlink"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found (real Starlink traces)")
    return folder


@pytest.fixture(scope="module")
def leocc(starlink):
    bw = read_trace(starlink / "leocc-downlink-bw.mahimahi.gz")
    delay = read_trace(starlink / "leocc-downlink-delay-10ms.txt",
                       options=FormatOptions(step_ms=10, duration_s=120))
    return bw.merge(delay).slice(0, delay.duration_ns).down


@pytest.fixture(scope="module")
def params() -> SynthParams:
    return SynthParams.load()


def _perturbed(params: SynthParams, **changes) -> SynthParams:
    raw = copy.deepcopy(params.raw)
    down = raw["profiles"]["leocc"]["directions"]["down"]
    if "capacity_scale" in changes:
        down["capacity"]["slot_mean_mbps_log_mu"] += math.log(changes["capacity_scale"])
    if "delay_shift_ms" in changes:
        down["delay"]["slot_base_ms_mean"] += changes["delay_shift_ms"]
    return SynthParams.from_dict(raw)


def _leocc_fidelity(real, params: SynthParams):
    long = generate_starlink(1800, seed=12345, start_utc=START_LIKE_LEOCC, params=params)
    return ks_distances(real, long.down)


def test_same_seed_same_trace_other_seed_other_trace(params):
    a = generate_starlink(90, seed=7, params=params, profile="lagos")
    b = generate_starlink(90, seed=7, params=params, profile="lagos")
    c = generate_starlink(90, seed=8, params=params, profile="lagos")
    assert a.equals(b, rtol=0)
    assert not np.array_equal(a.down.rate_bps, c.down.rate_bps)
    assert a.meta["seed"] == 7 and a.meta["params_sha256"] == params.sha256


def test_shape_units_and_ranges(params):
    tr = generate_starlink(61.5, seed=1, params=params)
    down = tr.down
    assert tr.directions == ("down",) and tr.duration_s == 61.5
    assert np.all(np.diff(down.t_ns) == 10_000_000)
    assert down.rate_bps.min() >= 0 and down.delay_us.min() >= 7000  # fitted minimum 7 ms
    assert np.all(down.delay_us % 1000 == 0)  # the real file's 1 ms resolution
    both = generate_starlink(30, seed=1, params=params, profile="lagos")
    assert both.directions == ("down", "up")
    with pytest.raises(NetemError, match="unknown synth profile 'nope'; choose: lagos, leocc"):
        generate_starlink(30, seed=1, params=params, profile="nope")
    with pytest.raises(NetemError, match="duration_s=0"):
        generate_starlink(0, seed=1, params=params)


def test_leocc_distributions_match_the_real_trace(leocc, params):
    d = _leocc_fidelity(leocc, params)
    assert d.capacity_100ms <= LEOCC_KS_CAPACITY_MAX, d
    assert d.delay <= LEOCC_KS_DELAY_MAX, d


@pytest.mark.parametrize(("changes", "which"), [
    ({"capacity_scale": 1.1}, "capacity_100ms"),
    ({"capacity_scale": 0.9}, "capacity_100ms"),
    ({"delay_shift_ms": 1.0}, "delay"),
])
def test_the_distribution_check_fails_when_the_generator_drifts(leocc, params, changes, which):
    d = _leocc_fidelity(leocc, _perturbed(params, **changes))
    limit = LEOCC_KS_CAPACITY_MAX if which == "capacity_100ms" else LEOCC_KS_DELAY_MAX
    assert getattr(d, which) > limit, d


def test_lagos_distributions_match_the_real_trace(starlink, params):
    real = read_trace(starlink / "lagos-100ms.csv.gz")
    long = generate_starlink(1800, seed=99, params=params, profile="lagos")
    for direction in ("down", "up"):
        d = ks_distances(real.direction(direction), long.direction(direction))
        assert d.capacity_100ms <= LAGOS_KS_CAPACITY_MAX, (direction, d)
        assert d.delay <= LAGOS_KS_DELAY_MAX, (direction, d)


def test_real_leocc_change_points_are_where_documented(leocc, params):
    fit = find_slots(leocc)
    assert fit.phase_s == pytest.approx(LEOCC_PHASE_S, abs=PHASE_TOLERANCE_S)
    assert params.raw["observed"]["leocc"]["slot_phase_s"] == pytest.approx(LEOCC_PHASE_S)
    assert all(b.score_ratio >= BOUNDARY_SCORE_MIN for b in fit.boundaries)


@pytest.mark.parametrize("start", [START_LIKE_LEOCC, datetime(2024, 7, 16, 5, 0, 50, tzinfo=UTC)])
def test_synthetic_change_points_sit_on_the_utc_schedule(leocc, params, start):
    tr = generate_starlink(120, seed=4, start_utc=start, params=params)
    expected = first_boundary_s(start)
    assert abs(phase_offset_s(tr.down, expected)) <= PHASE_TOLERANCE_S
    fit = find_slots(tr.down)
    assert len(fit.boundaries) == 8
    assert all(b.score_ratio >= BOUNDARY_SCORE_MIN for b in fit.boundaries)
    # as marked as the real trace's: fold contrast within a factor 2 of it
    real = find_slots(leocc).contrast
    assert real / 2 <= fit.contrast <= real * 2
    if start == START_LIKE_LEOCC:  # and on the real trace's grid
        assert abs(phase_offset_s(leocc, fit.phase_s)) <= PHASE_TOLERANCE_S


def test_the_change_point_check_fails_when_slots_are_misaligned(params):
    shifted = params.with_slot_seconds((17.0, 32.0, 47.0, 2.0))  # 5 s late
    tr = generate_starlink(120, seed=4, start_utc=START_LIKE_LEOCC, params=shifted)
    offset = phase_offset_s(tr.down, first_boundary_s(START_LIKE_LEOCC))
    assert abs(offset) > PHASE_TOLERANCE_S
    assert offset == pytest.approx(5.0, abs=PHASE_TOLERANCE_S)


def test_mean_loss_matches_the_documented_rate(params):
    tr = generate_starlink(3600, seed=3, params=params, profile="lagos")
    for direction, expected in (("down", 1e-4), ("up", 0.0035)):
        assert tr.direction(direction).mean("loss_ratio") == pytest.approx(expected, rel=0.15)


#: Refitted floats differ from the committed ones in the last digits on another install (numpy,
#: BLAS, CPU); a real change of the data or of the fit moves them far more than this.
REFIT_REL_TOL = 1e-9


def _json_differences(got, want, rel: float, path: str = "") -> list[str]:
    """Paths where two JSON values differ: numbers beyond ``rel``, anything else exactly."""
    numbers = (int, float)
    if isinstance(got, numbers) and isinstance(want, numbers) \
            and not isinstance(got, bool) and not isinstance(want, bool):
        return [] if math.isclose(got, want, rel_tol=rel, abs_tol=0.0) \
            else [f"{path}: {got!r} != {want!r}"]
    if isinstance(got, dict) and isinstance(want, dict):
        if got.keys() != want.keys():
            return [f"{path}: keys {sorted(got)} != {sorted(want)}"]
        return [d for k in got for d in _json_differences(got[k], want[k], rel, f"{path}.{k}")]
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return [f"{path}: {len(got)} items != {len(want)}"]
        return [d for i, (g, w) in enumerate(zip(got, want, strict=True))
                for d in _json_differences(g, w, rel, f"{path}[{i}]")]
    return [] if got == want else [f"{path}: {got!r} != {want!r}"]


def _refit(data: Path, out: Path) -> dict:
    import runpy

    script = runpy.run_path(str(REPO / "traces" / "fit_starlink_synth.py"))
    assert script["main"](["--data", str(data), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def test_params_come_from_the_shipped_files_by_the_fit_script(starlink, tmp_path):
    """The committed JSON is what the script writes from these exact files (hashes match)."""
    committed = json.loads(DEFAULT_PARAMS_PATH.read_text())
    for record in committed["provenance"]["files"]:
        path = starlink.parent.parent / record["file"]
        assert sha256_file(path) == record["sha256"], f"{record['file']} changed: refit"
    refitted = _refit(starlink.parent.parent, tmp_path / "params.json")
    assert _json_differences(refitted, committed, REFIT_REL_TOL) == []


def test_the_refit_comparison_fails_when_one_input_value_changes(starlink, tmp_path):
    """One delay bin 1 ms higher moves fitted parameters well beyond the tolerance."""
    data = tmp_path / "data"
    (data / "traces").mkdir(parents=True)
    copy_dir = data / "traces" / "starlink"
    shutil.copytree(starlink, copy_dir)
    delay_file = copy_dir / "leocc-downlink-delay-10ms.txt"
    delay_file.chmod(0o644)
    lines = delay_file.read_text().splitlines()
    lines[2] = str(int(lines[2]) + 1)
    delay_file.write_text("\n".join(lines) + "\n")
    committed = json.loads(DEFAULT_PARAMS_PATH.read_text())
    refitted = _refit(data, tmp_path / "params.json")
    differences = _json_differences(refitted, committed, REFIT_REL_TOL)
    assert [d for d in differences if not d.startswith(".provenance")], differences


def test_the_refit_comparison_tolerates_last_digit_noise_only():
    committed = json.loads(DEFAULT_PARAMS_PATH.read_text())
    noisy = copy.deepcopy(committed)
    down = noisy["profiles"]["leocc"]["directions"]["down"]["capacity"]
    down["slot_mean_mbps_log_mu"] *= 1 + 1e-14
    assert _json_differences(noisy, committed, REFIT_REL_TOL) == []
    down["slot_mean_mbps_log_mu"] *= 1 + 1e-6
    assert _json_differences(noisy, committed, REFIT_REL_TOL) != []
