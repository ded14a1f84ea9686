"""SkyMoE served on the ground station of a running testbed: `testbed up` a small scenario,
`testbed job RUN gs skymoe-serve ...` with a tiny model built here and a few real samples,
the results fetched, the metrics scraped from the agent, and every panel of the skymoe-serve
dashboard row answered by the run's own Prometheus."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import pytest

from nodes import client
from testbed.cli.main import main
from testbed.observability.dashboards import overview, panel_queries, to_json
from testbed.observability.prometheus import api_get
from testbed.observability.workload_rows import workload_rows
from testbed.scenario import load_scenario
from testbed.workloads.pool import AGENT_PORT, read_token
from tests.nodes.skymoe_tiny import build_tiny_skymoe

from .conftest import leftovers, running_testbed, wait_until

pytestmark = [pytest.mark.root, pytest.mark.ovs]
TASKS = ("eurosat-rgb", "neon-count")



def test_skymoe_serve_job_on_the_ground_station(small_scenario, shared_data: Path,
                                                 tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from prometheus_client.parser import text_string_to_metric_families

    images = shared_data / "images"
    model = build_tiny_skymoe(tmp_path / "tiny-e4")
    path = small_scenario(duration=300, speed=1.0)
    scenario = load_scenario(path)
    with running_testbed(path, tmp_path / "up.log") as run_dir:
        fetched = tmp_path / "fetched"
        assert main(["job", str(run_dir), "gs", "skymoe-serve", "--set", f"model={model}",
                     "--set", f"data={images}", "--set", f"tasks={','.join(TASKS)}",
                     "--set", "per_task=2", "--set", "max_new_tokens=4",
                     "--timeout-s", "180", "--fetch", str(fetched)]) == 0

        doc = json.loads((fetched / "serve.json").read_text())
        summary = doc["summary"]
        assert doc["node"] == "gs" and summary["requests_done"] == 4
        assert set(summary["per_task"]) == set(TASKS)
        assert summary["timing"]["accelerator"] == "rtx-3090"
        with (fetched / "requests.csv").open() as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == 4 and all(float(r["measured_token_s"]) > 0 for r in rows)

        # the agent's own exposition
        token = read_token(run_dir)
        state = json.loads((run_dir / "state.json").read_text())
        mgmt = {n["name"]: n["mgmt_ip"] for n in state["plan"]["nodes"]}
        text = client.metrics(f"{mgmt['gs']}:{AGENT_PORT}", token=token)
        samples = [s for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name.startswith("leo_skymoe_")]
        requests = {s.labels["task"]: s.value for s in samples
                    if s.name == "leo_skymoe_requests_total"}
        assert requests == {task: pytest.approx(2) for task in TASKS}
        experts = sum(s.value for s in samples if s.name == "leo_skymoe_expert_tokens_total"
                      and s.labels["layer"] == "1")
        assert experts == pytest.approx(summary["routing"][0]["tokens"] * 2)

        # the run's Prometheus scraped it: every panel of the row has data
        url = json.loads((run_dir / "prometheus" / "prometheus.json").read_text())["url"]

        def query(expr: str) -> list[dict[str, Any]]:
            return api_get(url, "/api/v1/query", {"query": expr})["result"]

        sel = f'leo_skymoe_requests_total{{run="{scenario.name}",node="gs"}}'
        wait_until(lambda: query(sel), 30, "leo_skymoe_requests_total in Prometheus", poll_s=0.2)
        time.sleep(2.5)  # counters need two scrapes for a rate
        board = to_json(overview(scenario.name, workloads=workload_rows(["skymoe-serve"])))
        queries = [(t, e) for t, e in panel_queries(board) if "leo_skymoe_" in e]
        assert len(queries) == 10
        for title, expr in queries:
            result = query(expr.replace("$__rate_interval", "30s"))
            assert result, f"panel {title}: no data for {expr}"
            assert all(r["metric"].get("node") == "gs" for r in result), (title, result)
    from testbed.lifecycle.network import run_prefix

    assert leftovers(run_prefix(scenario.name)) == {"netns": [], "links": [], "bridges": []}
