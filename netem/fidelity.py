"""Reference figures for measuring how closely a shaped link follows what it was programmed
to do: expected arrivals of a backlogged queue, capacity per interval, programmed RTT.

Computed with numpy from the trace series / programs alone (mahimahi's rule: a packet leaves
at the first delivery opportunity at or after it is queued, a backlogged queue uses every
opportunity, then it is held for the one-way delay; FIFO order), never from the forwarder's
code, so that a measurement compared against them can fail. Used by `testbed link verify`
and the userspace shaper benchmark.
"""

from __future__ import annotations

import numpy as np

from netem.shapers.userspace_program import OPPORTUNITY_BYTES, StepSeries, TraceProgram

OPPORTUNITY_BITS = OPPORTUNITY_BYTES * 8


def fifo(t_ns: np.ndarray) -> np.ndarray:
    """Arrival instants in FIFO order: nobody overtakes the packet before it."""
    return np.maximum.accumulate(np.asarray(t_ns, dtype=np.int64))


def expected_backlogged_arrivals_ns(opp_ns: np.ndarray, delay_ns: np.ndarray) -> np.ndarray:
    """A backlogged queue: one packet per opportunity `opp_ns`, each held `delay_ns` more."""
    return fifo(np.asarray(opp_ns, dtype=np.int64) + np.asarray(delay_ns, dtype=np.int64))


def step_values(series: StepSeries | None, offsets_ns: np.ndarray,
                default: float = 0.0) -> np.ndarray:
    """Vectorised StepSeries lookup (looping like the program does); `default` without one."""
    offsets = np.asarray(offsets_ns, dtype=np.int64)
    if series is None:
        return np.full(offsets.shape, default, dtype=np.float64)
    t = np.frombuffer(series.t_ns, dtype=np.int64) if len(series.t_ns) else np.zeros(1, np.int64)
    values = np.asarray(series.values, dtype=np.float64)
    o = np.maximum(offsets, 0)
    o = o % series.period_ns if series.loop else np.minimum(o, series.period_ns - 1)
    return values[np.searchsorted(t, o, side="right") - 1]


def program_opportunities_ns(program: TraceProgram | None, until_ns: int) -> np.ndarray | None:
    """The program's opportunity offsets in [0, until_ns), looped; None: unshaped."""
    if program is None or program.opportunities_ns is None:
        return None
    one = np.frombuffer(program.opportunities_ns, dtype=np.int64)
    reps = int(until_ns // program.period_ns) + 1
    looped = (one[None, :] + (np.arange(reps, dtype=np.int64) * program.period_ns)[:, None])
    flat = looped.ravel()
    return flat[flat < until_ns]


def program_delay_ns(program: TraceProgram | None, offsets_ns: np.ndarray,
                     base_delay_us: float = 0.0) -> np.ndarray:
    """One-way delay (ns) the program holds packets sent at `offsets_ns`."""
    series = None if program is None else program.delay_us
    return (step_values(series, offsets_ns, base_delay_us) * 1000).astype(np.int64)


def bits_per_interval(t_ns: np.ndarray, bits: np.ndarray | float,
                      edges_ns: np.ndarray) -> np.ndarray:
    """Sum of `bits` of events at `t_ns` in each [edges[i], edges[i+1])."""
    t = np.asarray(t_ns, dtype=np.int64)
    b = np.broadcast_to(np.asarray(bits, dtype=np.float64), t.shape)
    idx = np.searchsorted(edges_ns, t, side="right") - 1
    ok = (idx >= 0) & (idx < len(edges_ns) - 1)
    return np.bincount(idx[ok], weights=b[ok], minlength=len(edges_ns) - 1)


def capacity_per_interval_bps(program: TraceProgram | None, edges_ns: np.ndarray,
                              shift_ns: int = 0) -> np.ndarray:
    """Programmed capacity (IP bits/s, 1500-byte opportunities) of each interval, seen at the
    receiver: opportunities plus their delay (`shift_ns` moves the window, e.g. to where a
    measurement's intervals begin relative to the trace start). NaN without capacity."""
    edges = np.asarray(edges_ns, dtype=np.int64) + int(shift_ns)
    widths_s = np.diff(edges) / 1e9
    opp = program_opportunities_ns(program, int(edges[-1]) + 1)
    if opp is None:
        return np.full(len(edges) - 1, np.nan)
    arrivals = expected_backlogged_arrivals_ns(opp, program_delay_ns(program, opp))
    return bits_per_interval(arrivals, OPPORTUNITY_BITS, edges) / widths_s


def _next_opportunity(opp: np.ndarray | None, t_ns: np.ndarray) -> np.ndarray:
    if opp is None:
        return t_ns
    i = np.minimum(np.searchsorted(opp, t_ns, side="left"), opp.size - 1)
    return np.maximum(opp[i], t_ns)


def programmed_rtt_ns(send_ns: np.ndarray, up: TraceProgram | None,
                      down: TraceProgram | None, turnaround_ns: np.ndarray | int = 0) -> np.ndarray:
    """RTT of probes sent up at offsets `send_ns` (from the traces' start) on an otherwise idle
    link and echoed back down: wait for an up opportunity + up delay, `turnaround_ns` at the
    far end, wait for a down opportunity + down delay (FIFO in each direction)."""
    send = np.asarray(send_ns, dtype=np.int64)
    horizon = int(send.max(initial=0)) + 60 * 10**9
    up_opp = program_opportunities_ns(up, horizon)
    down_opp = program_opportunities_ns(down, horizon)
    leave_up = _next_opportunity(up_opp, send)
    at_far = fifo(leave_up + program_delay_ns(up, leave_up))
    echoed = at_far + np.asarray(turnaround_ns, dtype=np.int64)
    leave_down = _next_opportunity(down_opp, echoed)
    back = fifo(leave_down + program_delay_ns(down, leave_down))
    return back - send
