"""The trace model: validation, resampling (bits conserved), slicing, looping, states, merge."""

from __future__ import annotations

import doctest
from pathlib import Path

import numpy as np
import pytest

import netem.traces
import netem.traces.model
import netem.traces.slots
import netem.traces.synth
from netem.errors import LinkStateError, NetemError
from netem.linkstate import LinkState
from netem.traces import OPPORTUNITY_BITS, DirectionSeries, Trace

MS = 1_000_000


def _series(rates_mbps, step_ms=100, **kw):
    return DirectionSeries.uniform(step_ms * MS, rate_bps=np.asarray(rates_mbps) * 1e6, **kw)


@pytest.mark.parametrize("module", [netem.traces, netem.traces.model, netem.traces.slots,
                                    netem.traces.synth])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_readme_examples_run():
    readme = Path(netem.traces.__file__).with_name("README.md")
    result = doctest.testfile(str(readme), module_relative=False)
    assert result.attempted >= 5 and result.failed == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"rate_bps": [1e6, -1.0]}, "rate_bps[1]=-1.0"),
        ({"delay_us": [float("nan")]}, "delay_us[0]=nan"),
        ({"loss_ratio": [0.5, 1.5]}, "loss_ratio[1]=1.5, expected a ratio in [0, 1]"),
    ],
)
def test_out_of_range_values_are_refused_by_name(kwargs, fragment):
    with pytest.raises(LinkStateError) as err:
        DirectionSeries.uniform(10 * MS, **kwargs)
    assert fragment in str(err.value)


def test_grid_must_start_at_zero_and_increase():
    with pytest.raises(LinkStateError, match="t_ns\\[0\\]=5"):
        DirectionSeries(t_ns=[5, 10], duration_ns=20, rate_bps=[1.0, 2.0])
    with pytest.raises(LinkStateError, match="strictly increasing"):
        DirectionSeries(t_ns=[0, 10, 10], duration_ns=20, rate_bps=[1.0, 2.0, 3.0])
    with pytest.raises(LinkStateError, match="duration_ns=10"):
        DirectionSeries(t_ns=[0, 10], duration_ns=10, rate_bps=[1.0, 2.0])
    with pytest.raises(LinkStateError, match="2 values, expected 3"):
        DirectionSeries(t_ns=[0, 1, 2], duration_ns=3, rate_bps=[1.0, 2.0])


def test_opportunities_counted_per_interval():
    # 3 packets in [0,10) ms, none in [10,20), 1 in [20,25] (the last line is the period).
    s = DirectionSeries.from_opportunities([0, 3, 3, 25], step_ms=10)
    assert s.duration_ns == 25 * MS
    assert s.t_ns.tolist() == [0, 10 * MS, 20 * MS]
    expected = [3 * OPPORTUNITY_BITS / 0.010, 0.0, 1 * OPPORTUNITY_BITS / 0.005]
    assert np.allclose(s.rate_bps, expected)
    total_bits = s.mean("rate_bps") * 0.025
    assert total_bits == pytest.approx(4 * OPPORTUNITY_BITS)


def test_resample_conserves_bits_and_averages_in_time():
    s = DirectionSeries(t_ns=[0, 30 * MS, 100 * MS], duration_ns=200 * MS,
                        rate_bps=[10e6, 20e6, 40e6], delay_us=[1000, 2000, 3000])
    r = s.resample(100 * MS)
    # by hand: (0.03*10 + 0.07*20)/0.1 = 17 Mbit/s; then 40.
    assert np.allclose(r.rate_bps, [17e6, 40e6])
    assert np.allclose(r.delay_us, [1700, 3000])
    assert r.mean("rate_bps") == pytest.approx(s.mean("rate_bps"))
    fine = s.resample(10 * MS)
    assert fine.t_ns.size == 20 and fine.mean("rate_bps") == pytest.approx(s.mean("rate_bps"))


def test_states_yield_only_changes_and_round_to_linkstate_units():
    s = DirectionSeries.uniform(100 * MS, rate_bps=[1e6, 1e6, 2.4e6, 2.4e6],
                                delay_us=[10.4, 10.4, 10.4, 20.0])
    got = [(t, st.rate_bps, st.delay_us) for t, st in s.states()]
    assert got == [(0, 1_000_000, 10), (200 * MS, 2_400_000, 10), (300 * MS, 2_400_000, 20)]


def test_states_take_missing_quantities_from_base():
    delay_only = DirectionSeries.uniform(10 * MS, delay_us=[5000, 7000])
    with pytest.raises(NetemError, match="no rate_bps"):
        list(delay_only.states())
    base = LinkState(rate_bps=50_000_000, loss_ratio=0.01, name="gs1/down")
    states = list(Trace(down=delay_only).states("down", base=base))
    assert [(t, s.rate_bps, s.delay_us, s.loss_ratio, s.name) for t, s in states] == [
        (0, 50_000_000, 5000, 0.01, "gs1/down"), (10 * MS, 50_000_000, 7000, 0.01, "gs1/down")]


def test_slice_rebases_time_and_opportunities():
    s = DirectionSeries.from_opportunities([1, 5, 12, 15, 22, 30], step_ms=10)
    part = s.slice(10 * MS, 30 * MS)
    assert part.duration_ns == 20 * MS
    assert part.t_ns.tolist() == [0, 10 * MS]
    assert part.opportunities_ms.tolist() == [2, 5, 12]
    assert np.allclose(part.rate_bps, s.rate_bps[1:3])
    mid = s.slice(15 * MS, 25 * MS)  # starts inside an interval
    assert mid.t_ns.tolist() == [0, 5 * MS] and mid.duration_ns == 10 * MS
    with pytest.raises(LinkStateError, match="slice"):
        s.slice(30 * MS, 10 * MS)


def test_loop_repeats_and_cuts():
    s = _series([1, 2, 3], step_ms=100)
    looped = s.loop(750 * MS)
    assert looped.duration_ns == 750 * MS
    assert (looped.rate_bps / 1e6).tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert looped.t_ns[-1] == 700 * MS
    opp = DirectionSeries.from_opportunities([2, 4, 10], step_ms=5).loop(25 * MS)
    assert opp.opportunities_ms.tolist() == [2, 4, 10, 12, 14, 20, 22, 24]


def test_merge_combines_grids_exactly_and_refuses_duplicates():
    cap = Trace(down=DirectionSeries.uniform(100 * MS, rate_bps=[10e6, 20e6]))
    delay = Trace(down=DirectionSeries.uniform(30 * MS, delay_us=[1, 2, 3, 4, 5, 6, 7]))
    both = cap.merge(delay)
    d = both.down
    assert d.duration_ns == 210 * MS
    assert d.t_ns.tolist() == [t * MS for t in (0, 30, 60, 90, 100, 120, 150, 180)]
    assert d.value_at("rate_bps", [95 * MS, 100 * MS, 205 * MS]).tolist() == [10e6, 20e6, 20e6]
    assert d.value_at("delay_us", [95 * MS, 100 * MS, 205 * MS]).tolist() == [4, 4, 7]
    with pytest.raises(NetemError, match="both give down rate_bps"):
        cap.merge(cap)


def test_derived_opportunities_carry_fractions_over():
    # 18 Mbit/s = 1.5 packets per ms: over 1 s exactly 1500 opportunities.
    s = DirectionSeries.uniform(100 * MS, rate_bps=np.full(10, 18e6))
    opp = s.delivery_opportunities_ms()
    assert opp.size == 1500
    # each opportunity is rounded up to its ms: 150 of them in every (k*100, (k+1)*100] ms
    assert np.bincount((opp - 1) // 100).tolist() == [150] * 10
    assert opp[-1] == 1000  # the last packet's capacity has accrued at the very end
    with_gap = DirectionSeries.uniform(10 * MS, rate_bps=[12e6, 0.0, 12e6])
    assert with_gap.delivery_opportunities_ms().tolist() == list(range(1, 11)) + list(
        range(21, 31))


def test_trace_directions_and_errors():
    tr = Trace(up=_series([1, 2]))
    assert tr.directions == ("up",)
    with pytest.raises(NetemError, match="no 'down' direction"):
        tr.direction("down")
    with pytest.raises(NetemError, match="unknown direction 'sideways'"):
        tr.direction("sideways")
    with pytest.raises(LinkStateError):
        Trace()
