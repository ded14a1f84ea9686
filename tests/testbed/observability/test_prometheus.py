"""A real Prometheus (Debian's binary) scrapes a real exporter; its API returns the values;
the finished TSDB is served again for review."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from testbed.errors import ScenarioError
from testbed.lifecycle.clock import AppliedInstant
from testbed.observability import OrchestratorExporter
from testbed.observability.prometheus import PrometheusServer, scrape_config, serve_run
from testbed.scenario import load_scenario
from tests.conftest import require_binary


def test_scrape_config_passes_promtool(tmp_path: Path) -> None:
    require_binary("promtool")
    token = tmp_path / "agent.token"
    token.write_text("secret\n")
    config = scrape_config("r1", "127.0.0.1:9464", {"sat-0": "172.30.0.2:9100"}, token,
                           roles={"sat-0": "satellite"})
    agents = config["scrape_configs"][1]
    assert agents["authorization"] == {"type": "Bearer", "credentials_file": str(token)}
    assert agents["static_configs"][0]["labels"] == {"run": "r1", "node": "sat-0",
                                                     "role": "satellite"}
    assert config["global"]["scrape_interval"] == "1000ms"
    server = PrometheusServer(tmp_path / "p")
    server.folder.mkdir()
    server.config_path.write_text(yaml.safe_dump(config))
    import subprocess

    check = subprocess.run(["promtool", "check", "config", str(server.config_path)],
                           capture_output=True, text=True, timeout=30, check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_prometheus_scrapes_the_exporter_and_serves_the_tsdb_after(tmp_path: Path) -> None:
    require_binary("prometheus", "promtool")
    exporter = OrchestratorExporter(scenario_name="prom-test", backend="netns", speed=1.0,
                                    linger_s=0)
    exporter.start()
    run_dir = tmp_path / "run"
    server = PrometheusServer(run_dir / "prometheus")
    try:
        server.start(scrape_config("prom-test", f"127.0.0.1:{exporter.port}", {}, None))
        server.wait_ready()
        for i in range(7):
            exporter.on_instant(AppliedInstant(i * 1_000_000_000, 0, 400_000, 1, "rate"))
        exporter.sample()
        deadline = time.monotonic() + 20
        result: list = []
        while time.monotonic() < deadline and not result:
            time.sleep(0.5)
            result = server.query('leo_instants_applied_total{job="orchestrator"}')
        assert result, "no sample of leo_instants_applied_total within 20 s"
        assert float(result[0]["value"][1]) == pytest.approx(7)
        assert result[0]["metric"]["run"] == "prom-test"
        late = server.query("histogram_quantile(0.5, leo_event_apply_lateness_seconds_bucket)")
        assert 200e-6 < float(late[0]["value"][1]) <= 500e-6
        up = server.targets()
        assert [t["health"] for t in up] == ["up"]
        ended_s = time.time()
    finally:
        server.stop()
        exporter.close()
    assert server.proc is not None and server.proc.returncode == 0  # clean SIGTERM exit
    review = serve_run(run_dir, port=0)
    try:
        again = review.query("leo_instants_applied_total", at_unix_s=ended_s)
        assert [float(r["value"][1]) for r in again] == [pytest.approx(7)]
    finally:
        review.stop()


def test_scenario_prometheus_external_needs_a_url(tmp_path: Path) -> None:
    from tests.testbed.lifecycle.conftest import SMALL

    text = SMALL.format(
        isl="", agents="on-demand", name="p", duration=10, speed=1, out=tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(text + "backend: {prometheus: external}\n")
    with pytest.raises(ScenarioError, match="prometheus_url"):
        load_scenario(path)
    path.write_text(text + "backend: {prometheus: external, "
                    "prometheus_url: 'http://lab:9090'}\n")
    assert load_scenario(path).backend.prometheus_url == "http://lab:9090"
