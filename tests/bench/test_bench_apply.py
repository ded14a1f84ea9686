"""Benchmark: apply latency of a link change with the kernel shaper (htb and tbf).

Single changes on one link, and batches of 100 links (one apply_many; per change = batch time
/ 100), on 100 real veth interfaces in a throwaway namespace; plus the LinkPlayer's lateness
when it drives 100-link batches. Target (issue 3): p99 <= 2 ms per change.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
from pyroute2 import IPRoute, netns

from netem.linkstate import LinkState
from netem.player import LinkPlayer, MonotonicClock
from netem.probe import probe_capabilities
from netem.shapers import KernelShaper
from tests.conftest import require_root

pytestmark = [pytest.mark.bench, pytest.mark.root]

LINKS = 100
SINGLE_CHANGES = 300
BATCHES = 30
TARGET_P99_MS = 2.0


@pytest.fixture(scope="module")
def hundred_links() -> Iterator[tuple[str, list[str]]]:
    require_root()
    import uuid

    prefix = "b" + uuid.uuid4().hex[:4]
    ns = f"{prefix}-bench"
    netns.create(ns)
    try:
        names = [f"{prefix}{i:03d}a" for i in range(LINKS)]
        with IPRoute(netns=ns, flags=0) as ipr:
            for i, name in enumerate(names):
                ipr.link("add", ifname=name, kind="veth", peer={"ifname": f"{prefix}{i:03d}b"})
        yield ns, names
    finally:
        netns.remove(ns)


def _pct(values_ns: list[float]) -> tuple[float, float]:
    arr = np.asarray(values_ns) / 1e6
    return float(np.percentile(arr, 50)), float(np.percentile(arr, 99))


def _measure(rate_qdisc: str, ns: str, names: list[str]) -> dict[str, tuple[float, float]]:
    rows: dict[str, tuple[float, float]] = {}
    with KernelShaper(probe_capabilities(), rate_qdisc=rate_qdisc) as shaper:
        for name in names:
            shaper.add_direction(name, name, ns, LinkState(20_000_000))
        single: list[float] = []
        for i in range(SINGLE_CHANGES):
            state = LinkState(10_000_000 + (i % 2) * 5_000_000)
            t0 = time.perf_counter_ns()
            shaper.apply(names[0], state)
            single.append(time.perf_counter_ns() - t0)
        rows[f"{rate_qdisc}: single change"] = _pct(single)
        per_change: list[float] = []
        for b in range(BATCHES):
            changes = {n: LinkState(30_000_000 + b * 1_000 + i) for i, n in enumerate(names)}
            t0 = time.perf_counter_ns()
            shaper.apply_many(changes)
            per_change.append((time.perf_counter_ns() - t0) / LINKS)
        rows[f"{rate_qdisc}: batch of {LINKS}, per change"] = _pct(per_change)
        if rate_qdisc == "htb":
            schedule = [((k + 1) * 50_000_000, {n: LinkState(40_000_000 + k * 1_000 + i)
                                                 for i, n in enumerate(names)})
                        for k in range(20)]
            records = LinkPlayer(shaper, schedule, MonotonicClock()).run()
            last = [r for r in records if r.direction == names[-1]]
            wake = [r.started_ns - r.scheduled_ns for r in last]
            rows[f"{rate_qdisc}: player lateness, start of apply"] = _pct(wake)
            rows[f"{rate_qdisc}: player lateness, {LINKS}-link batch"] = _pct(
                [r.lateness_ns for r in last]
            )
    return rows


def test_bench_kernel_apply_latency(hundred_links):
    ns, names = hundred_links
    caps = probe_capabilities()
    rows: dict[str, tuple[float, float]] = {}
    for rate_qdisc in ("htb", "tbf"):
        if caps.has(rate_qdisc):
            rows.update(_measure(rate_qdisc, ns, names))
    print()
    print(f"{'kernel shaper apply latency':44s} {'p50 ms':>8s} {'p99 ms':>8s} {'target p99':>11s}")
    for label, (p50, p99) in rows.items():
        target = "-" if "lateness" in label else f"<= {TARGET_P99_MS:.1f}"
        print(f"{label:44s} {p50:8.3f} {p99:8.3f} {target:>11s}")
    for label, (_, p99) in rows.items():
        if "lateness" not in label:
            assert p99 <= TARGET_P99_MS, f"{label}: p99 {p99:.3f} ms > {TARGET_P99_MS} ms"
