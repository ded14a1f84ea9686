"""Timeline data: export/import round trips and state reconstruction."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.errors import InputError
from testbed.timeline.model import LinkEvent, Node, Timeline, link_id


def sample() -> Timeline:
    tl = Timeline(
        scenario="unit", epoch=datetime(2024, 7, 16, tzinfo=UTC), duration_s=60, step_s=1,
        nodes=[Node("sat-0", "satellite", 1, 0, 0), Node("sat-1", "satellite", 2, 0, 1),
               Node("gs", "ground", lat_deg=31.2, lon_deg=121.5)],
    )
    isl = link_id("sat-1", "sat-0")
    gl = link_id("gs", "sat-0")
    tl.events = [
        LinkEvent(0, "up", isl, "isl", "sat-0", "sat-1", 5000, 1_000_000_000, 1500.0, "initial"),
        LinkEvent(0, "up", gl, "ground", "gs", "sat-0", 3000, None, 900.0, "initial"),
        LinkEvent(1_000_000_000, "update", isl, "isl", "sat-0", "sat-1", delay_us=5200),
        LinkEvent(2_000_000_000, "down", gl, "ground", "gs", "sat-0", cause="set"),
    ]
    tl.sort()
    return tl


def test_link_id_is_order_independent() -> None:
    assert link_id("b", "a") == link_id("a", "b") == "a--b"


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    tl = sample()
    path = tmp_path / f"t.{fmt}"
    getattr(tl, f"to_{fmt}")(path)
    back = getattr(Timeline, f"from_{fmt}")(path)
    assert back.nodes == tl.nodes
    assert back.events == tl.events
    assert back.epoch == tl.epoch and back.duration_s == tl.duration_s


def test_links_at_merges_updates_and_drops_down_links() -> None:
    tl = sample()
    at0 = tl.links_at(0)
    assert set(at0) == {"sat-0--sat-1", "gs--sat-0"}
    at1 = tl.links_at(1_500_000_000)
    assert at1["sat-0--sat-1"].delay_us == 5200 and at1["sat-0--sat-1"].rate_bps == 1_000_000_000
    assert set(tl.links_at(2_000_000_000)) == {"sat-0--sat-1"}


def test_bad_jsonl_names_line(tmp_path: Path) -> None:
    path = sample().to_jsonl(tmp_path / "t.jsonl")
    with path.open("a") as f:
        f.write("{not json\n")
    with pytest.raises(InputError, match=r"t\.jsonl:6: invalid JSON"):
        Timeline.from_jsonl(path)
