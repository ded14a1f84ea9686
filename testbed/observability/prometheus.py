"""A Prometheus server per run (Debian's `prometheus` binary), its scrape configuration, and
serving a finished run's TSDB for a reviewer.

Owns the server process (recorded in the run's ledger as a `process` before it can outlive
us), its configuration and TSDB under `<run_dir>/prometheus/`, and reading its HTTP API. It
does not own what it scrapes (the exporter and the node agents).

Example:
    server = PrometheusServer(run_dir / "prometheus")
    server.start(scrape_config("run", "127.0.0.1:9464", {}, None))
    server.wait_ready(); server.query("leo_scenario_time_seconds"); server.stop()
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from testbed.ledger import Ledger, LedgerError, process_entry_details
from testbed.observability.errors import ObservabilityError

PROMETHEUS_DIR = "prometheus"
"""Under the run directory: prometheus.yml, data/ (the TSDB), prometheus.log, prometheus.json
(url, pid), run.json (mode, url, wall-clock start and end), targets.json (external mode)."""
SCRAPE_INTERVAL_S = 1.0
ORCHESTRATOR_JOB = "orchestrator"
AGENTS_JOB = "agents"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def scrape_config(run: str, orchestrator: str | None, agents: Mapping[str, str],
                  token_file: Path | None, *, interval_s: float = SCRAPE_INTERVAL_S,
                  roles: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The scrape configuration of one run.

    `orchestrator`: "host:port" of the exporter (None: not scraped); `agents`: node name ->
    "mgmt_ip:port" of its agent's /metrics, scraped with the bearer token read from
    `token_file` (Prometheus reads the file itself, so the token never enters the config).
    Every series gets `run=<run>`; agents' also `node` and `role`.
    """
    if not interval_s > 0:
        raise ObservabilityError(f"scrape interval_s={interval_s}, expected > 0")
    interval = f"{int(interval_s * 1000)}ms"
    jobs: list[dict[str, Any]] = []
    if orchestrator is not None:
        jobs.append({"job_name": ORCHESTRATOR_JOB,
                     "static_configs": [{"targets": [orchestrator], "labels": {"run": run}}]})
    if agents:
        job: dict[str, Any] = {"job_name": AGENTS_JOB, "static_configs": [
            {"targets": [addr], "labels": {"run": run, "node": node,
                                           "role": (roles or {}).get(node, "")}}
            for node, addr in agents.items()]}
        if token_file is not None:
            job["authorization"] = {"type": "Bearer", "credentials_file": str(token_file)}
        jobs.append(job)
    return {"global": {"scrape_interval": interval, "scrape_timeout": interval,
                       "evaluation_interval": interval},
            "scrape_configs": jobs}


class PrometheusServer:
    """One `prometheus` process with its config and TSDB in `folder`.

    `ledger`: where the process is recorded before it can outlive this object (a run's
    ledger; `testbed down` stops it after a crash). `port=0` picks a free port.
    """

    def __init__(self, folder: Path, *, binary: str = "prometheus", host: str = "127.0.0.1",
                 port: int = 0, ledger: Ledger | None = None,
                 retention: str = "100y", name: str = "prometheus") -> None:
        self.folder = Path(folder)
        self.name = name
        self.binary = binary
        self.host = host
        self.port = port
        self.ledger = ledger
        self.retention = retention
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.folder / f"{self.name}.yml"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log_path(self) -> Path:
        return self.folder / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, config: Mapping[str, Any]) -> None:
        """Write `config`, start the server (returns at once; `wait_ready` waits)."""
        exe = shutil.which(self.binary)
        if exe is None:
            raise ObservabilityError(f"binary {self.binary!r} not found on PATH; expected "
                                     "Debian's prometheus package (apt-get install prometheus)")
        if self.proc is not None:
            raise ObservabilityError(f"prometheus in {self.folder}: already started "
                                     f"(pid {self.proc.pid})")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
        # syntax only: the agents' token file appears once the agents start (Prometheus reads
        # it at each scrape)
        promtool = shutil.which("promtool")
        check = subprocess.run([promtool, "check", "config", "--syntax-only",
                                str(self.config_path)], capture_output=True, text=True,
                               timeout=30, check=False) if promtool else None
        if check is not None and check.returncode != 0:
            raise ObservabilityError(f"{self.config_path}: promtool rejects it: "
                                     f"{(check.stdout + check.stderr).strip()}")
        if self.port == 0:
            self.port = free_port(self.host)
        argv = [exe, f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir}",
                f"--storage.tsdb.retention.time={self.retention}",
                f"--web.listen-address={self.host}:{self.port}", "--log.level=warn"]
        log = self.log_path.open("ab")
        try:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            log.close()
        if self.ledger is not None:
            try:
                self.ledger.record("process", f"prometheus-{self.port}",
                                   **process_entry_details(self.proc.pid))
            except (LedgerError, OSError):
                self.stop()
                raise
        (self.folder / f"{self.name}.json").write_text(json.dumps(
            {"url": self.url, "pid": self.proc.pid, "started_unix_s": time.time()}))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until /-/ready answers 200; raises with the log's tail when it exits or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ObservabilityError(f"prometheus in {self.folder} exited with status "
                                         f"{self.proc.returncode}: {self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1.0) as reply:
                    if reply.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise ObservabilityError(f"prometheus at {self.url}: not ready within {timeout_s} s, "
                                 f"expected /-/ready: {self._log_tail()}")

    def wait_scraped(self, job: str, timeout_s: float = 20.0) -> None:
        """Until every target of `job` has been scraped once (health up or down, not unknown)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = [t for t in self.targets() if t["labels"].get("job") == job]
            if seen and all(t["health"] != "unknown" for t in seen):
                return
            time.sleep(0.2)
        raise ObservabilityError(f"prometheus at {self.url}: job {job!r} not scraped within "
                                 f"{timeout_s} s, expected its targets to be scraped")

    def _log_tail(self, lines: int = 5) -> str:
        try:
            return " | ".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (Prometheus flushes its head block's WAL), SIGKILL after `timeout_s`."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5.0)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the HTTP API ---------------------------------------------------------------------

    def query(self, promql: str, at_unix_s: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result vector (`data.result`)."""
        params = {"query": promql}
        if at_unix_s is not None:
            params["time"] = f"{at_unix_s:.3f}"
        return api_get(self.url, "/api/v1/query", params)["result"]

    def query_range(self, promql: str, start_unix_s: float, end_unix_s: float,
                    step_s: float = 1.0) -> list[dict[str, Any]]:
        """A range query's result matrix (`data.result`)."""
        return api_get(self.url, "/api/v1/query_range", {
            "query": promql, "start": f"{start_unix_s:.3f}", "end": f"{end_unix_s:.3f}",
            "step": f"{step_s}"})["result"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets and their health."""
        return api_get(self.url, "/api/v1/targets", {})["activeTargets"]


def api_get(base_url: str, path: str, params: Mapping[str, str],
            timeout_s: float = 10.0) -> Any:
    """GET a Prometheus API path; returns `data`, raises naming the query on an error."""
    url = base_url.rstrip("/") + path + ("?" + urllib.parse.urlencode(params) if params else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            body = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise ObservabilityError(f"prometheus {path} {dict(params)}: HTTP {exc.code}: "
                                 f"{detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise ObservabilityError(f"prometheus at {base_url}: {exc}; expected a running "
                                 "server") from exc
    if body.get("status") != "success":
        raise ObservabilityError(f"prometheus {path} {dict(params)}: {body.get('error')}")
    return body["data"]


def serve_run(run_dir: Path, *, host: str = "127.0.0.1", port: int = 9090,
              binary: str = "prometheus") -> PrometheusServer:
    """A server over a finished run's TSDB (`<run_dir>/prometheus/data`) that scrapes nothing
    (its config is `review.yml`; the run's own `prometheus.yml` stays as the run wrote it):
    for a reviewer's Grafana or queries. Started and ready; the caller stops it."""
    folder = Path(run_dir) / PROMETHEUS_DIR
    if not (folder / "data").is_dir():
        raise ObservabilityError(f"{run_dir}: no TSDB at {folder / 'data'}; expected a run "
                                 "made with backend.prometheus: run")
    server = PrometheusServer(folder, binary=binary, host=host, port=port, name="review")
    server.start(scrape_config(Path(run_dir).name, None, {}, None))
    try:
        server.wait_ready()
    except ObservabilityError:
        server.stop()
        raise
    return server
