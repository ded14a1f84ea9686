"""dlrc's orchestrator side without a network: the window from o_exp, the seeded patch offsets,
the observers' ISL component, the routes read from a route table, the summary, and options
checked before anything is created."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from testbed.errors import InputError
from testbed.lifecycle.session import prepare
from testbed.timeline.model import LinkEvent, Node, Timeline
from testbed.workloads.dlrc import isl_hops, patch_offsets, route_path, summarize, window_px
from tests.testbed.lifecycle.conftest import SMALL


def test_window_from_o_exp() -> None:
    assert window_px(8, 256, 2.0) == 512
    assert window_px(8, 256, 0.5) == 1024
    assert window_px(3, 128, 2.0) == 144  # 156.8 down to a multiple of 16
    assert window_px(2, 256, 8.0) == 256  # never below the patch


def test_offsets_are_aligned_seeded_and_inside() -> None:
    a = patch_offsets(8, 512, 256, seed=4)
    assert a == patch_offsets(8, 512, 256, seed=4) != patch_offsets(8, 512, 256, seed=5)
    assert all(v % 16 == 0 and 0 <= v <= 256 for row in a for v in row)


def test_route_path_follows_next_switches() -> None:
    routes = [
        {"dpid": 1, "node": "s1", "ipv4_dst": "10.0.0.3", "next_dpid": 2, "hops": 2,
         "delay_us": 9000.0},
        {"dpid": 2, "node": "s2", "ipv4_dst": "10.0.0.3", "next_dpid": 3, "hops": 1,
         "delay_us": 4000.0},
        {"dpid": 3, "node": "s3", "ipv4_dst": "10.0.0.3", "next_dpid": None, "hops": 0,
         "delay_us": 0.0},
    ]
    assert route_path(routes, "s1", "10.0.0.3") == {"hops": 2, "delay_us": 9000.0,
                                                    "path": ["s1", "s2", "s3"]}
    assert route_path(routes, "s1", "10.0.0.9") is None


def test_isl_hops_of_the_links_up_at_start() -> None:
    nodes = [Node(name=n, kind="satellite") for n in ("a", "b", "c", "d")]

    def up(t_ns: int, a: str, b: str) -> LinkEvent:
        return LinkEvent(t_ns=t_ns, kind="up", link=f"{a}--{b}", link_kind="isl", a=a, b=b)

    tl = Timeline(scenario="t", epoch=datetime(2024, 1, 1, tzinfo=UTC), duration_s=10,
                  step_s=1, nodes=nodes, events=[up(0, "a", "b"), up(0, "b", "c"),
                                                 up(5_000_000_000, "c", "d")])
    assert isl_hops(tl, "a") == {"a": 0, "b": 1, "c": 2}  # d joins later: not a neighbour


def test_summary_means_and_isl_only_routes() -> None:
    plan = {"observers": ["s1", "s2"]}

    def sat(total: float, plain: float, rnd: float) -> dict:
        return {"state": "finished", "error": "", "events": [
            {"what": "signatures-received", "one_way_s": rnd / 2}],
            "summary": {"rank": 0, "bpp": {"total": total, "entropy_coded": total - 0.01,
                                           "map_lzma": 0.005, "map_raw": 0.01,
                                           "header": 0.005, "plain": plain},
                        "sync_round_s": rnd,
                        "times": {"measured": {"overhead_ratio": 0.1}}}}

    results = {"s1": sat(0.2, 0.2, 0.1), "s2": sat(0.1, 0.2, 0.3),
               "gs": {"summary": {"per_satellite": {"s1": {"psnr_db": 30.0}}}}}
    routes = {"s1->s2": {"hops": 1, "delay_us": 5.0, "path": ["s1", "s2"]},
              "s2->s1": {"hops": 2, "delay_us": 5.0, "path": ["s2", "gs", "s1"]}}
    out = summarize(plan, results, routes, {"s1": "satellite", "s2": "satellite",
                                            "gs": "ground"})
    assert out["bpp_mean"]["total"] == pytest.approx(0.15)
    assert out["bpp_mean"]["reduction_total"] == pytest.approx(0.25)
    assert out["sync"]["routes_isl_only"] == {"s1->s2": True, "s2->s1": False}
    assert out["sync"]["round_s_max"] == pytest.approx(0.3)
    assert out["per_satellite"]["s1"]["delivered"] and not out["per_satellite"]["s2"]["delivered"]


@pytest.mark.parametrize(("options", "match"), [
    ("{o_exp: 2}", r"needs options.scene"),
    ("{scene: /nonexistent.png}", r"options.scene='/nonexistent.png' is not a file"),
    ("{scene: SCENE, observerz: 3}", r"unknown option\(s\) observerz"),
    ("{scene: SCENE, satellites: [walker-p0-s0, nobody]}", r"unknown: \['nobody'\]"),
    ("{scene: SCENE, ground: moon}", r"options.ground='moon'; choose: gs"),
])
def test_bad_options_fail_before_anything_is_created(tmp_path: Path, shared_data: Path,
                                                     options: str, match: str) -> None:
    from testbed.workloads.registry import workload_for

    scene = shared_data / "images" / "rsvqa-hr" / "1.png"
    path = tmp_path / "s.yaml"
    opts = options.replace("SCENE", str(scene))
    path.write_text(SMALL.format(name="dlrc-opts", duration=10, speed=1, isl="",
                                 agents="on-demand", out=tmp_path / "runs")
                    + f"workload:\n  kind: dlrc\n  options: {opts}\n")
    with pytest.raises(InputError, match=match):
        workload_for(prepare(path))
