"""Annotations from a real timeline's handovers, and the external-Prometheus targets file."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.constellation import resolve_constellation
from testbed.lifecycle.clock import AppliedInstant
from testbed.lifecycle.network import build_plan, run_prefix
from testbed.observability.annotations import AnnotationsObserver, read_annotations
from testbed.observability.observers import PrometheusObserver
from testbed.scenario import load_scenario
from testbed.timeline.build import build_timeline
from tests.testbed.lifecycle.conftest import SMALL


def _timeline(tmp_path: Path, duration_s: int):
    path = tmp_path / "s.yaml"
    path.write_text(SMALL.format(
        isl="", agents="on-demand", name="annot", duration=duration_s, speed=1, out=tmp_path))
    scenario = load_scenario(path)
    timeline, _ = build_timeline(scenario, resolve_constellation(scenario))
    return scenario, timeline


class _Held:
    played_ns = 1_800_000_000_000
    interrupted = False


def test_handovers_and_faults_become_annotations(tmp_path: Path) -> None:
    _, timeline = _timeline(tmp_path, 1800)
    handovers = [e for e in timeline.events if e.kind == "handover"]
    assert handovers, "a 30 min pass over Shanghai has handovers"
    obs = AnnotationsObserver(tmp_path, "annot", handovers, period_s=0.05)
    obs.on_up(None)
    for t_ns in sorted({e.t_ns for e in timeline.events}):
        kinds = ",".join(sorted({e.kind for e in timeline.events if e.t_ns == t_ns}))
        obs.on_instant(AppliedInstant(t_ns, 0, 0, 1, kinds))
    obs.on_fault({"fault": "cut-link", "link": "gs--x", "at_scenario_s": 12.5})
    obs.on_end(_Held())
    notes = read_annotations(tmp_path)
    texts = [n["text"] for n in notes]
    assert texts[0] == "run annot starts" and texts[-1] == "run annot ends"
    hand = [n for n in notes if "handover" in n["tags"]]
    assert len(hand) == len(handovers)
    first = handovers[0]
    assert hand[0]["text"] == f"handover at gs: {first.a or 'none'} -> {first.b or 'none'}"
    assert hand[0]["scenario_t_s"] == first.t_ns / 1e9
    assert any(n["text"] == "cut-link gs--x" and n["scenario_t_s"] == 12.5 for n in notes)


def test_external_prometheus_gets_a_targets_file(tmp_path: Path) -> None:
    scenario, timeline = _timeline(tmp_path, 10)
    plan = build_plan(timeline, run_prefix(scenario.name))
    obs = PrometheusObserver(tmp_path, "annot", None, mode="external", url="http://lab:9090")
    obs.start(plan)
    groups = json.loads((tmp_path / "prometheus" / "targets.json").read_text())
    assert len(groups) == len(plan.nodes)
    gs = next(g for g in groups if g["labels"]["node"] == "gs")
    assert gs["labels"] | {"job": "agents", "run": "annot", "role": "ground"} == gs["labels"]
    assert gs["targets"] == [f"{plan.node('gs').mgmt_ip}:9100"]
    info = json.loads((tmp_path / "prometheus" / "run.json").read_text())
    assert info["mode"] == "external" and info["url"] == "http://lab:9090"
    obs.on_end(_Held())
    assert "end_unix_s" in json.loads((tmp_path / "prometheus" / "run.json").read_text())
