"""spaceverse on the orchestrator side, without a network: options checked before anything is
created, questions spread evenly, the per-method summary, and the dashboard row of its
declared metric families."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.cli.main import main
from testbed.errors import InputError
from testbed.scenario import load_scenario
from testbed.workloads.spaceverse import SpaceVerse, summarise
from tests.nodes.spaceverse.conftest import build_tiny_models
from tests.testbed.lifecycle.conftest import SMALL


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("sv-orch"))


def _prep(tmp_path: Path, options: dict) -> SimpleNamespace:
    text = SMALL.format(isl="", agents="eager", name="svo", duration=10, speed=1, out=tmp_path)
    text += "workload:\n  kind: spaceverse\n  options: " + json.dumps(options) + "\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return SimpleNamespace(scenario=load_scenario(path), path=path)


def _opts(models: dict[str, Path], shared_data: Path, **more) -> dict:
    return {"onboard_model": f"small:{models['onboard']}",
            "ground_model": f"small:{models['ground']}", "confidence": str(models["offload"]),
            "data": str(shared_data / "images"), "tasks": ["rsvqa-lr", "ucmerced"],
            "per_task": 3, **more}


def test_questions_spread_evenly_and_options_reach_the_nodes(tmp_path, models, shared_data):
    w = SpaceVerse(_prep(tmp_path, _opts(models, shared_data, method="tabi", timing="paper")))
    assert len(w.questions) == 6 and len({q["id"] for q in w.questions}) == 6
    share = w.shares(["a", "b", "c", "d"])
    assert [len(v) for v in share.values()] == [2, 2, 1, 1]
    assert sorted(q["id"] for qs in share.values() for q in qs) == \
        sorted(q["id"] for q in w.questions)
    opts = w.node_opts
    assert opts["method"] == "tabi" and opts["timing"] == "paper"
    # accelerators from the device profiles; the AI-RG link prior from the scenario's rate
    assert opts["onboard_accelerator"] == "jetson-agx-xavier"
    assert opts["ground_accelerator"] == "rtx-3090"
    assert opts["link_rate_mbps"] == pytest.approx(50.0)
    for q in w.questions:
        assert Path(q["image"]).is_file() and q["answer"] and q["prompt"]


@pytest.mark.parametrize("bad,match", [
    ({"method": "tabby"}, "method='tabby'"),
    ({"colour": 1}, "unknown option.*colour"),
    ({"per_task": 0}, "per_task=0"),
    ({"ground_model": "small:/nonexistent"}, "ground_model=.*does not exist"),
    ({"confidence": "/nonexistent"}, "confidence nets"),
    ({"tasks": ["dota"]}, "unknown task 'dota'"),
])
def test_bad_options_fail_before_anything_is_created(tmp_path, models, shared_data, bad, match):
    with pytest.raises(InputError, match=match):
        SpaceVerse(_prep(tmp_path, _opts(models, shared_data, **bad)))


def test_summary_counts_unanswered_as_wrong():
    def row(status: str, offload: bool, correct: bool, latency: float | None) -> dict:
        return {"status": status, "offload": offload, "correct": correct, "exit_stage": 0,
                "latency_s": latency, "time_to_answer_s": latency, "onboard_s": 0.1,
                "transfer_s": None, "bytes_offloaded": 100 if offload else 0,
                "bytes_sent": 120 if status == "answered" else 0, "onboard_host_s": 0.01}
    rows = [row("kept", False, True, 0.1), row("answered", True, False, 0.3),
            row("no-contact", True, False, None)]
    s = summarise(rows, 4)
    assert s["accuracy"] == pytest.approx(0.25) and s["accuracy_answered"] == pytest.approx(0.5)
    assert s["mean_latency_s"] == pytest.approx(0.2)
    assert s["offloaded"] == 2 and s["offloads_answered"] == 1 and s["bytes_sent"] == 120
    assert s["unanswered"] == {"queued": 0, "sent": 0, "no-contact": 1}
    assert s["decisions"] == {"keep@1": 1, "offload@1": 2}


def test_dashboard_has_a_spaceverse_row(tmp_path, models, shared_data):
    prep = _prep(tmp_path, _opts(models, shared_data))
    out = tmp_path / "grafana"
    assert main(["dashboards", "export", str(prep.path), str(out)]) == 0
    board = json.loads(next((out / "dashboards").glob("*.json")).read_text())
    text = json.dumps(board)
    assert "Workload: spaceverse" in text
    for name in ("leo_spaceverse_decisions_total", "leo_spaceverse_offloaded_bytes_total",
                 "leo_spaceverse_latency_seconds_total", "leo_spaceverse_accuracy_ratio"):
        assert name in text
