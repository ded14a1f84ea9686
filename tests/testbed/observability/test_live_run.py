"""A real short run (27 satellites, namespaces, OVS, the controller, pings over the serving ground
link and a cut-link fault) observed by the exporter, its Prometheus and the annotations:
afterwards every overview panel's PromQL returns data from the run's TSDB, and the exporter's
numbers agree with the run's own records.

Node agents are not started (`nodes.agents: on-demand`): the agent side is being rewired (the
agents' metrics row is checked for valid PromQL here, for data once agents serve /metrics)."""

from __future__ import annotations

import json
import math
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nodes.metrics import FAMILIES as AGENT_FAMILIES
from testbed.lifecycle.network import run_prefix
from testbed.lifecycle.session import hold, prepare
from testbed.observability import observability_observers
from testbed.observability.annotations import read_annotations
from testbed.observability.dashboards import overview, panel_queries, to_json
from testbed.observability.prometheus import serve_run
from tests.conftest import require_binary, require_root
from tests.testbed.lifecycle.conftest import SMALL, leftovers

pytestmark = [pytest.mark.root, pytest.mark.ovs, pytest.mark.slow]

DURATION_S = 24
RATE_WINDOW = "5s"  # what Grafana's $__rate_interval becomes with a 1 s scrape


def _scenario(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "obs.yaml"
    text = SMALL.format(
        isl="", agents="on-demand", name=f"obs-{prefix}", duration=DURATION_S, speed=1.0,
                        out=tmp_path / "runs")
    path.write_text(text)
    return path


def _cut_serving_link(prep, checks: dict) -> None:
    from testbed.lifecycle.control import request

    try:
        deadline = time.monotonic() + 120
        while not prep.run_dir.status.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(4)
        live = request(prep.run_dir.path / "control.sock", {"op": "status"})
        link = next(n for n, v in live["links"].items() if v["kind"] == "ground" and v["up"])
        a, b = link.split("--")
        state = json.loads(prep.run_dir.state.read_text())
        nodes = {n["name"]: n for n in state["plan"]["nodes"]}
        sat = b if a == "gs" else a
        checks["ping"] = subprocess.run(
            ["ip", "netns", "exec", nodes[sat]["netns"], "ping", "-c", "10", "-i", "0.2",
             "-s", "1000", "-W", "1", nodes["gs"]["data_ip"]],
            capture_output=True, text=True, timeout=30, check=False).returncode
        checks["cut"] = request(prep.run_dir.path / "control.sock",
                                {"op": "cut-link", "a": a, "b": b, "for_s": 3})
    except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
        checks["error"] = exc


@dataclass
class ObservedRun:
    prep: Any
    held: Any
    observers: list[Any]
    checks: dict[str, Any]


@pytest.fixture(scope="module")
def observed_run(tmp_path_factory: pytest.TempPathFactory) -> ObservedRun:
    """One short real run for every test of this module (it is the expensive part)."""
    require_root()
    require_binary("ovs-vsctl", "ip", "ethtool", "ping", "prometheus", "promtool")
    prefix = "t" + uuid.uuid4().hex[:5]
    prep = prepare(_scenario(tmp_path_factory.mktemp("observed"), prefix))
    observers = observability_observers(prep)
    checks: dict = {}
    injector = threading.Thread(target=_cut_serving_link, args=(prep, checks))
    injector.start()
    held = hold(prep, report=lambda m: None, observers=observers)
    injector.join(timeout=60)
    return ObservedRun(prep, held, observers, checks)


def test_every_panel_has_data_from_a_real_run(observed_run: ObservedRun) -> None:
    prep, held, observers, checks = (observed_run.prep, observed_run.held,
                                     observed_run.observers, observed_run.checks)
    assert "error" not in checks, checks.get("error")
    assert checks["ping"] == 0, "no ping over the serving ground link"
    assert held.teardown is not None and held.teardown.ok
    assert leftovers(run_prefix(prep.scenario.name)) == {"netns": [], "links": [],
                                                         "bridges": []}
    exporter, prom = observers[0], observers[2]
    assert exporter.sample_errors == []
    assert prom.server is not None and prom.server.proc.poll() is not None  # stopped

    run = json.loads((prep.run_dir.path / "prometheus" / "run.json").read_text())
    start_s, end_s = run["start_unix_s"], run["end_unix_s"]
    review = serve_run(prep.run_dir.path, port=0)
    try:
        # every overview panel returns data; the agents' row is valid PromQL (no agents ran)
        board = to_json(overview(prep.scenario.name))
        empty = []
        queries = panel_queries(board)
        assert len(queries) >= 20
        for title, expr in queries:
            result = review.query_range(expr.replace("$__rate_interval", RATE_WINDOW),
                                        start_s, end_s, 1.0)
            finite = [v for r in result for _, v in r["values"] if math.isfinite(float(v))]
            if not finite:
                empty.append((title, expr))
        assert empty == [], empty
        agents = to_json(overview(prep.scenario.name, workloads={"agent": AGENT_FAMILIES}))
        for _, expr in panel_queries(agents)[len(queries):]:
            review.query(expr.replace("$__rate_interval", RATE_WINDOW), end_s)  # raises if bad

        # the exporter's numbers are the run's own
        last = end_s - 0.5
        n_inst = review.query("leo_event_apply_lateness_seconds_count", last)
        assert float(n_inst[0]["value"][1]) == len(held.instants)
        down = review.query_range('leo_link_programmed_rate_bytes_per_second{kind="ground",'
                                  'direction=~".*->gs"} * on (link) group_left leo_link_up > 0',
                                  start_s, end_s, 1.0)
        rates = {float(v) for r in down for _, v in r["values"]}
        assert rates and all(r == pytest.approx(50e6 / 8) for r in rates)  # the downlink
        sent = sum(float(r["value"][1]) for r in review.query(
            'leo_link_forwarded_bytes_total{kind="ground"}', last))
        shaper = sum(int(c["forwarded_bytes"]) for k, c in held.counters.items()
                     if k.startswith("gs--") or "--gs/" in k)
        assert 0 < sent <= shaper
        faults = review.query("leo_faults_total", last)
        assert {r["metric"]["fault"]: float(r["value"][1]) for r in faults}.get("cut-link") == 1
        gone = review.query('leo_fault_unreachable_seconds_total{fault="cut-link"}', last)
        assert 3.0 <= float(gone[0]["value"][1]) < 8.0  # cut for 3 s, until routes are back
        budgets = review.query("leo_node_cpu_budget_cores", last)
        assert len(budgets) == 28 and all(float(b["value"][1]) > 0 for b in budgets)
        alt = review.query("leo_satellite_altitude_meters", last)
        assert len(alt) == 27  # a 550 km shell over the WGS84 ellipsoid (oblateness: +22 km)
        assert all(545e3 < float(a["value"][1]) < 575e3 for a in alt)
    finally:
        review.stop()
    notes = read_annotations(prep.run_dir.path)
    texts = [a["text"] for a in notes]
    assert texts[0].endswith("starts") and texts[-1].endswith("ends")
    assert any(t.startswith("cut-link") for t in texts)


def test_report_renders_in_headless_chromium(observed_run: ObservedRun, tmp_path: Path) -> None:
    from matplotlib.image import imread

    from testbed.cli.main import main

    run_dir = observed_run.prep.run_dir.path
    assert main(["report", str(run_dir)]) == 0
    page = run_dir / "report.html"
    text = page.read_text()
    for title in ("Scenario and manifest", "Ground tracks and contacts",
                  "Links: programmed vs achieved", "Event apply lateness", "Route changes",
                  "Faults and what they lost", "Annotations"):
        assert f"<h2>{title}" in text, title
    assert text.count("data:image/png;base64,") >= 5
    assert "cut-link" in text and "http://" not in text and "https://" not in text
    require_binary("chromium")
    shot = tmp_path / "report.png"
    proc = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1200)
    dark = (pixels.mean(axis=2) < 0.5).mean()  # text, axes, bars
    colours = len({tuple(p) for p in (pixels[::7, ::7] * 255).astype(int).reshape(-1, 3)})
    assert dark > 0.005 and colours > 50, (dark, colours)  # not a blank or error page
