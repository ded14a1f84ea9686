"""Dashboards: the SDK's own models read the exported JSON back unchanged, the provisioning
layout is Grafana's, every panel reads declared families, provisioning errors are typed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from nodes.metrics import FAMILIES, declare
from testbed.cli.main import main
from testbed.observability import ObservabilityError
from testbed.observability.dashboards import (
    DATASOURCE_UID,
    dashboard_uid,
    overview,
    panel_queries,
    provision,
    to_json,
)
from testbed.observability.prometheus import free_port
from tests.testbed.lifecycle.conftest import SMALL


def test_export_round_trips_through_the_sdk_models() -> None:
    tiles = declare("leo_dlrc_tiles_sent_total", "counter", "Tiles downlinked.", ("peer",))
    board = to_json(overview("demo", workloads={"node agent": FAMILIES, "dlrc": [tiles]}))
    again = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(board)))
    assert again == board
    assert board["uid"] == "leo-demo" and board["title"] == "LEO testbed: demo"
    types = {p["type"] for p in board["panels"]}
    assert {"geomap", "state-timeline", "timeseries", "stat", "row"} <= types
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Constellation", "Links", "Fidelity", "Nodes", "Faults",
                    "Workload: node agent", "Workload: dlrc"]
    queries = panel_queries(board)
    assert any("leo_dlrc_tiles_sent_total" in q for _, q in queries)
    for p in board["panels"]:
        for t in p.get("targets") or []:
            assert t["datasource"] == {"type": "prometheus", "uid": DATASOURCE_UID}
    for title, expr in queries:
        assert 'run="demo"' in expr, title


def test_unknown_family_in_a_panel_is_an_error() -> None:
    from testbed.observability.dashboards import _q

    with pytest.raises(ObservabilityError, match="unknown metric family 'leo_nope'"):
        _q("rate(leo_nope[5m])")
    with pytest.raises(ObservabilityError, match="kind 'summary'"):
        from testbed.observability.dashboards import workload_panel

        workload_panel(type("F", (), {"name": "x", "kind": "summary", "help": "",
                                      "unit": ""})(), "demo")


def test_cli_export_writes_grafanas_provisioning_layout(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SMALL.format(
        isl="", agents="on-demand", name="layout-demo", duration=10, speed=1, out=tmp_path))
    out = tmp_path / "grafana"
    assert main(["dashboards", "export", str(scenario), str(out),
                 "--prometheus-url", "http://prom:9090"]) == 0
    ds = yaml.safe_load((out / "provisioning/datasources/leo-testbed.yaml").read_text())
    assert ds["apiVersion"] == 1
    assert ds["datasources"][0] | {"url": "http://prom:9090", "type": "prometheus",
                                   "uid": DATASOURCE_UID} == ds["datasources"][0]
    prov = yaml.safe_load((out / "provisioning/dashboards/leo-testbed.yaml").read_text())
    provider = prov["providers"][0]
    assert prov["apiVersion"] == 1 and provider["type"] == "file"
    assert Path(provider["options"]["path"]) == (out / "dashboards").resolve()
    files = sorted((out / "dashboards").glob("*.json"))
    assert [f.name for f in files] == [f"{dashboard_uid('layout-demo')}.json"]
    model = json.loads(files[0].read_text())
    assert Dashboard.from_json(model).uid == "leo-layout-demo"


def test_provision_to_an_unreachable_grafana_raises_naming_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("glsa_x\n")
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ObservabilityError, match=f"Grafana at {url}"):
        provision([overview("demo")], url, token, prometheus_url="http://p:9090")
    token.write_text("")
    with pytest.raises(ObservabilityError, match="empty"):
        provision([overview("demo")], url, token, prometheus_url="http://p:9090")
