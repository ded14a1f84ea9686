"""The observers a run gets for observability: what `hold()`'s caller passes as `observers`.

Owns choosing and building them from the scenario, and the per-run Prometheus observer; each
observer owns the resources it starts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from testbed.lifecycle.observers import RunObserver
from testbed.observability.errors import ObservabilityError
from testbed.observability.metrics import OrchestratorExporter
from testbed.observability.prometheus import (
    ORCHESTRATOR_JOB,
    PROMETHEUS_DIR,
    PrometheusServer,
    scrape_config,
)
from testbed.workloads.pool import AGENT_PORT, TOKEN_FILE


class PrometheusObserver(RunObserver):
    """Starts the run's Prometheus once the network is up (scraping the exporter and every
    node's agent) and stops it at the run's end, after the exporter's last sample; with
    `mode="external"` it only writes the targets for the lab's server (file_sd JSON).

    `<run_dir>/prometheus/run.json` records where the run's metrics are (mode, url, the run's
    wall-clock start and end) for the report and the dashboards.
    """

    def __init__(self, run_dir: Path, run: str, exporter: OrchestratorExporter | None, *,
                 mode: str = "run", url: str | None = None, binary: str = "prometheus",
                 scrape_agents: bool = True) -> None:
        if mode not in ("run", "external"):
            raise ObservabilityError(f"prometheus mode {mode!r}, expected run or external")
        self.run_dir = Path(run_dir)
        self.run = run
        self.exporter = exporter
        self.mode = mode
        self.url = url
        self.binary = binary
        self.scrape_agents = scrape_agents
        self.server: PrometheusServer | None = None
        self.folder = self.run_dir / PROMETHEUS_DIR
        self._info: dict[str, Any] = {}
        self._started = False

    def start(self, plan: Any = None, ledger: Any = None, *, timeout_s: float = 20.0) -> None:
        """Write the targets (external) or start the server and wait until it has scraped the
        exporter once (Prometheus 2.42 applies new targets about 5 s after it starts: starting
        here, before the run's clock, keeps the run's first seconds). `plan`: the run's
        AddressPlan (agents' targets); `ledger`: where the server process is recorded."""
        if self._started:
            return
        self._started = True
        orchestrator = None
        if self.exporter is not None:
            self.exporter.start()  # idempotent: its port is known before the config is written
            orchestrator = f"{self.exporter.host}:{self.exporter.port}"
        agents: dict[str, str] = {}
        roles: dict[str, str] = {}
        if plan is not None and self.scrape_agents:
            agents = {n.name: f"{n.mgmt_ip}:{AGENT_PORT}" for n in plan.nodes}
            roles = {n.name: n.role for n in plan.nodes}
        config = scrape_config(self.run, orchestrator, agents, self.run_dir / TOKEN_FILE,
                               roles=roles)
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.mode == "external":
            groups = [{"targets": sc["targets"],
                       "labels": {**sc["labels"], "job": job["job_name"]}}
                      for job in config["scrape_configs"] for sc in job["static_configs"]]
            (self.folder / "targets.json").write_text(json.dumps(groups, indent=1))
        else:
            self.server = PrometheusServer(self.folder, binary=self.binary, ledger=ledger)
            self.server.start(config)
            self.server.wait_ready()
            if orchestrator is not None:
                self.server.wait_scraped(ORCHESTRATOR_JOB, timeout_s=timeout_s)
            self.url = self.server.url
        self._info = {"mode": self.mode, "url": self.url, "run": self.run,
                      "start_unix_s": time.time()}
        self._write_info()

    def on_up(self, net: Any) -> None:
        self.start(getattr(net, "plan", None), getattr(net, "ledger", None))

    def on_end(self, held: Any) -> None:
        self._info["end_unix_s"] = time.time()
        self._write_info()
        if self.server is not None:
            self.server.stop()

    def _write_info(self) -> None:
        (self.folder / "run.json").write_text(json.dumps(self._info, indent=1))


def observability_observers(prep: Any, *, host: str = "127.0.0.1", port: int = 0,
                            prometheus_binary: str = "prometheus", start: bool = True,
                            grafana_url: str | None = None,
                            grafana_token_file: Path | None = None) -> list[RunObserver]:
    """The exporter, the annotations (to Grafana at `grafana_url` with the token in
    `grafana_token_file`, else `<run_dir>/annotations.jsonl`) and, unless
    `backend.prometheus: none`, the Prometheus observer, in the order `hold()` must call them
    (the exporter's last sample before Prometheus stops).

    `start`: start the exporter's endpoint and the run's Prometheus now (targets from the
    run's address plan, the server recorded in the run's ledger), so its first scrape happens
    before the clock starts; otherwise `on_up` starts them.

    Example: `hold(prep, observers=observability_observers(prep))`.
    """
    from testbed.fabric.addressing import DEFAULT_MGMT_SUBNET
    from testbed.ledger import Ledger
    from testbed.lifecycle.network import build_plan, run_prefix
    from testbed.observability.annotations import AnnotationsObserver
    from testbed.observability.dashboards import dashboard_uid, grafana_api

    exporter = OrchestratorExporter.for_run(prep, host=host, port=port)
    grafana = None
    if grafana_url is not None:
        if grafana_token_file is None:
            raise ObservabilityError(f"Grafana at {grafana_url}: no token file given, "
                                     "expected grafana_token_file")
        grafana = grafana_api(grafana_url, grafana_token_file)
    out: list[RunObserver] = [exporter, AnnotationsObserver.for_run(
        prep, grafana=grafana, dashboard_uid=dashboard_uid(prep.scenario.name))]
    spec = prep.scenario.backend
    if spec.prometheus == "none":
        return out
    prom = PrometheusObserver(prep.run_dir.path, prep.scenario.name, exporter,
                              mode=spec.prometheus, url=spec.prometheus_url,
                              binary=prometheus_binary)
    out.append(prom)
    if start:
        plan = build_plan(prep.timeline, run_prefix(prep.scenario.name),
                          mgmt_subnet=prep.mgmt_subnet or DEFAULT_MGMT_SUBNET)
        try:
            with Ledger(prep.run_dir.ledger) as ledger:  # closed before hold() opens it
                prom.start(plan, ledger)
        except BaseException:
            if prom.server is not None:
                prom.server.stop()
            exporter.close()
            raise
    return out
