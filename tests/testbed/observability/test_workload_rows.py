"""Dashboard rows of job kinds: skymoe-serve's row is built from its declared families, one
series per node and per label value (layer, expert, task, timing), and `dashboards export
--row` writes it; an unknown kind is a typed error listing the valid ones. (Its panels are
queried against a real run's Prometheus in tests/testbed/lifecycle/test_skymoe_serve_job.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from nodes.metrics import FAMILIES
from nodes.workloads.skymoe_metrics import FAMILIES as SKYMOE_FAMILIES
from testbed.cli.main import main
from testbed.observability import ObservabilityError
from testbed.observability.dashboards import overview, panel_queries, to_json
from testbed.observability.workload_rows import row_kinds, workload_rows
from tests.testbed.lifecycle.conftest import SMALL


def _row_panels(board: dict, title: str) -> list[dict]:
    """The panels after the row titled `title`, up to the next row."""
    out, inside = [], False
    for p in board["panels"]:
        if p["type"] == "row":
            inside = p["title"] == title
        elif inside:
            out.append(p)
    return out


def test_skymoe_row_has_a_panel_per_family_split_by_its_labels() -> None:
    board = to_json(overview("demo", workloads={"node agent": FAMILIES,
                                                **workload_rows(["skymoe-serve"])}))
    again = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(board)))
    assert again == board
    panels = _row_panels(board, "Workload: skymoe-serve")
    assert len(panels) == len(SKYMOE_FAMILIES)
    by_name = {}
    for p in panels:
        (target,) = p["targets"]
        name = next(f.name for f in SKYMOE_FAMILIES if f.name in target["expr"])
        by_name[name] = (p, target)
    assert set(by_name) == {f.name for f in SKYMOE_FAMILIES}
    _, experts = by_name["leo_skymoe_expert_tokens_total"]
    assert experts["expr"] == ('sum by (node, model, layer, expert) (rate('
                               'leo_skymoe_expert_tokens_total{run="demo"}[$__rate_interval]))')
    assert experts["legendFormat"] == "{{node}} model={{model}} layer={{layer}} expert={{expert}}"
    panel, latency = by_name["leo_skymoe_token_latency_seconds"]
    assert latency["expr"].startswith("max by (node, model, timing, device) (")
    assert panel["fieldConfig"]["defaults"]["unit"] == "s"
    panel, accuracy = by_name["leo_skymoe_accuracy_ratio"]
    assert "task" in accuracy["legendFormat"]
    assert panel["fieldConfig"]["defaults"]["unit"] == "percentunit"
    for _, expr in panel_queries(board):
        assert 'run="demo"' in expr


def test_unknown_row_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ObservabilityError, match="no dashboard row for workload kind 'skymoe'; "
                                                 "choose: dlrc, skymoe-serve, spaceverse"):
        workload_rows(["skymoe"])
    assert "skymoe-serve" in row_kinds()


def test_cli_export_adds_the_row(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SMALL.format(isl="", agents="on-demand", name="row-demo", duration=10,
                                     speed=1, out=tmp_path))
    out = tmp_path / "grafana"
    assert main(["dashboards", "export", str(scenario), str(out), "--row",
                 "skymoe-serve"]) == 0
    board = json.loads((out / "dashboards" / "leo-row-demo.json").read_text())
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows[-2:] == ["Workload: node agent", "Workload: skymoe-serve"]
    assert main(["dashboards", "export", str(scenario), str(out), "--row", "nope"]) == 2
    assert "choose: dlrc, skymoe-serve, spaceverse" in capsys.readouterr().err
