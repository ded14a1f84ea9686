"""`testbed dashboards export|provision`, `testbed prometheus RUN_DIR`, `testbed report RUN_DIR`:
thin commands over testbed.observability."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from testbed.scenario import load_scenario

console = Console()


def _boards(scenario_path: Path) -> list:
    from nodes.metrics import FAMILIES
    from testbed.observability.dashboards import overview

    scenario = load_scenario(scenario_path)
    rows = {"node agent": FAMILIES}
    if scenario.workload.kind == "dlrc":  # the workload's own families, one row
        from nodes.workloads.dlrc_metrics import FAMILIES as DLRC_FAMILIES

        rows["dlrc"] = DLRC_FAMILIES
    return [overview(scenario.name, workloads=rows)]


def register(app: typer.Typer) -> None:
    dash = typer.Typer(help="Grafana dashboards of a scenario, generated in code.",
                       no_args_is_help=True)
    app.add_typer(dash, name="dashboards")

    @dash.command("export")
    def export(
        scenario: Path = typer.Argument(..., help="Scenario file."),
        out_dir: Path = typer.Argument(..., help="Folder for Grafana's provisioning layout."),
        prometheus_url: str = typer.Option("http://127.0.0.1:9090", "--prometheus-url",
                                           help="The data source's URL, as Grafana sees it."),
        dashboards_path: str | None = typer.Option(
            None, "--dashboards-path", help="Where Grafana will read the JSON files "
            "(default: OUT_DIR/dashboards, absolute)."),
    ) -> None:
        """Write provisioning/datasources, provisioning/dashboards and dashboards/*.json."""
        from testbed.observability.dashboards import export_dashboards

        written = export_dashboards(_boards(scenario), out_dir, prometheus_url=prometheus_url,
                                    grafana_dashboards_path=dashboards_path)
        for path in written:
            console.print(str(path), highlight=False, soft_wrap=True)

    @dash.command("provision")
    def provision_cmd(
        scenario: Path = typer.Argument(..., help="Scenario file."),
        url: str = typer.Option(..., "--url", help="Grafana's base URL."),
        token_file: Path = typer.Option(..., "--token-file",
                                        help="File holding a service-account token."),
        prometheus_url: str = typer.Option("http://127.0.0.1:9090", "--prometheus-url",
                                           help="The data source's URL, as Grafana sees it."),
    ) -> None:
        """Push the data source and the dashboards to a running Grafana."""
        from testbed.observability.dashboards import provision

        uids = provision(_boards(scenario), url, token_file, prometheus_url=prometheus_url)
        console.print(f"provisioned {', '.join(uids)} at {url}", highlight=False)

    @app.command("prometheus")
    def prometheus_cmd(
        run_dir: Path = typer.Argument(..., help="A finished run's directory."),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(9090, "--port"),
    ) -> None:
        """Serve a finished run's Prometheus TSDB (for Grafana or queries) until Ctrl-C."""
        from testbed.observability.prometheus import serve_run

        server = serve_run(run_dir, host=host, port=port)
        console.print(f"serving {run_dir}/prometheus/data at {server.url} (Ctrl-C stops)",
                      highlight=False, soft_wrap=True)
        try:
            while server.proc is not None and server.proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            server.stop()

    @app.command("report")
    def report_cmd(
        run_dir: Path = typer.Argument(..., help="A finished run's directory."),
        out: Path | None = typer.Option(None, "--out", help="Where to write the HTML "
                                        "(default RUN_DIR/report.html)."),
    ) -> None:
        """Write the run's self-contained HTML report (plots embedded)."""
        from testbed.observability.report import write_report

        console.print(str(write_report(run_dir, out)), highlight=False, soft_wrap=True)
