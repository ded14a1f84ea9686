"""Grafana dashboards of a scenario, generated in code with grafana-foundation-sdk's typed
builders, and their provisioning: Grafana's file layout, or its HTTP API (grafana-client).

Owns the panels (what each shows and its PromQL), the data source definition and the layout
of an export. It reads metric names from `families.ORCHESTRATOR_FAMILIES` and a workload's
declared families (`nodes.metrics.declare`); it never talks to Prometheus.

Example:
    export_dashboards(scenario, Path("grafana"), prometheus_url="http://127.0.0.1:9090")
    # grafana/provisioning/{datasources,dashboards}/leo-testbed.yaml, grafana/dashboards/*.json
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import dashboard as gd
from grafana_foundation_sdk.builders import geomap, stat, statetimeline, timeseries
from grafana_foundation_sdk.builders.common import FrameGeometrySource, MapLayerOptions
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as gm
from grafana_foundation_sdk.models.common import FrameGeometrySourceMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from testbed.observability.errors import ObservabilityError
from testbed.observability.families import family

DATASOURCE_UID = "leo-prometheus"
DATASOURCE_NAME = "LEO testbed Prometheus"
PROVIDER_NAME = "leo-testbed"
FOLDER = "LEO testbed"
RATE = "$__rate_interval"


@dataclass(frozen=True)
class WorkloadFamily:
    """What a dashboard needs of one declared workload family (`nodes.metrics.Family` has the
    same fields)."""

    name: str
    kind: str
    help: str
    labels: tuple[str, ...] = ()
    unit: str = ""


def _ds() -> gm.DataSourceRef:
    return gm.DataSourceRef(type_val="prometheus", uid=DATASOURCE_UID)


def _q(expr: str, legend: str = "", ref: str = "A", *, table: bool = False) -> Dataquery:
    for name in re.findall(r"\bleo_[a-z0-9_]+", expr):  # every metric a panel reads exists
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        try:
            family(name)
        except ObservabilityError:
            family(base)
    q = Dataquery().expr(expr).ref_id(ref).datasource(_ds())
    if legend:
        q = q.legend_format(legend)
    if table:
        q = q.format(PromQueryFormat.TABLE).instant()
    return q


def _unit_of(unit: str) -> str:
    """A Grafana unit id for a base unit."""
    return {"seconds": "s", "bytes": "bytes", "bytes_per_second": "Bps", "ratio": "percentunit",
            "meters": "lengthm", "degrees": "degree", "cores": "short"}.get(unit, "short")


def _ts(title: str, unit: str, *queries: Dataquery, description: str = "") -> Any:
    p = timeseries.Panel().title(title).unit(unit).datasource(_ds()).height(8).span(12)
    if description:
        p = p.description(description)
    for q in queries:
        p = p.with_target(q)
    return p


def _timeline(title: str, *queries: Dataquery, description: str = "") -> Any:
    p = statetimeline.Panel().title(title).datasource(_ds()).height(8).span(12)
    if description:
        p = p.description(description)
    for q in queries:
        p = p.with_target(q)
    return p


def _coords(which: str, run: str) -> str:
    """Satellites and stations in one table: `object`, `kind` and the coordinate."""
    sat = (f'label_replace(label_replace(leo_satellite_{which}_degrees{{{run}}}, "object", '
           f'"$1", "satellite", "(.+)"), "kind", "satellite", "", "")')
    gs = (f'label_replace(label_replace(leo_ground_station_{which}_degrees{{{run}}}, "object", '
          f'"$1", "station", "(.+)"), "kind", "station", "", "")')
    return f"max by (object, kind) ({sat} or {gs})"


def _geomap(run: str) -> Any:
    layer = (MapLayerOptions().type("markers").name("satellites and stations")
             .location(FrameGeometrySource().mode(FrameGeometrySourceMode.COORDS)
                       .latitude("lat").longitude("lon"))
             .config({"showLegend": True, "style": {"size": {"fixed": 6},
                                                    "text": {"field": "object",
                                                             "mode": "field"}}}))
    return (geomap.Panel().title("Satellites and ground stations").datasource(_ds())
            .height(12).span(16)
            .description("Positions from the orbit engine (leo_satellite_*_degrees), sampled "
                         "about once a second; stations from the scenario.")
            .with_target(_q(_coords("latitude", run), ref="A", table=True))
            .with_target(_q(_coords("longitude", run), ref="B", table=True))
            .with_transformation(gm.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(gm.DataTransformerConfig(id_val="organize", options={
                "renameByName": {"Value #A": "lat", "Value #B": "lon"}}))
            .view(geomap.MapViewConfig().id("zero").zoom(1))
            .basemap(MapLayerOptions().type("default").name("basemap"))
            .layers([layer]))


def overview(scenario_name: str, *, workloads: Mapping[str, Sequence[Any]] | None = None,
             uid: str | None = None) -> gd.Dashboard:
    """The overview dashboard of one scenario: constellation, links, fidelity, nodes, faults,
    and one row per workload (`workloads`: title -> its declared families)."""
    run = f'run="{scenario_name}"'
    d = (gd.Dashboard(f"LEO testbed: {scenario_name}")
         .uid(uid or dashboard_uid(scenario_name))
         .tags(["leo-testbed", "generated"])
         .refresh("5s").time("now-15m", "now").editable()
         .with_row(gd.Row("Constellation"))
         .with_panel(_geomap(run))
         .with_panel(stat.Panel().title("Scenario time").unit("s").datasource(_ds())
                     .height(12).span(8)
                     .with_target(_q(f"leo_scenario_time_seconds{{{run}}}", "scenario"))
                     .with_target(_q(f"leo_run_wall_time_seconds{{{run}}}", "wall", "B")))
         .with_panel(_timeline(
             "Ground contact", _q(f"leo_satellite_in_contact{{{run}}}", "{{satellite}}"),
             description="1 while the satellite has a ground link up (status.json's "
                         "in_contact)."))
         .with_panel(_timeline(
             "Serving satellite per station",
             _q(f"leo_ground_station_serving{{{run}}}", "{{station}} <- {{satellite}}")))
         .with_row(gd.Row("Links"))
         .with_panel(_ts(
             "Ground links: programmed vs measured rate", "bps",
             _q(f'sum by (link, direction) (leo_link_programmed_rate_bytes_per_second'
                f'{{{run},kind="ground"}}) * 8', "programmed {{direction}}"),
             _q(f'sum by (link, direction) (rate(leo_link_forwarded_bytes_total'
                f'{{{run},kind="ground"}}[{RATE}])) * 8', "measured {{direction}}", "B")))
         .with_panel(_ts(
             "Ground links: programmed one-way delay", "s",
             _q(f'leo_link_programmed_delay_seconds{{{run},kind="ground"}} '
                f'* on (link) group_left leo_link_up{{{run},kind="ground"}}',
                "{{direction}}")))
         .with_panel(_ts(
             "ISLs: busiest measured vs programmed rate", "bps",
             _q(f'topk(10, rate(leo_link_forwarded_bytes_total{{{run},kind="isl"}}[{RATE}])) '
                "* 8", "measured {{direction}}"),
             _q(f'avg(leo_link_programmed_rate_bytes_per_second{{{run},kind="isl"}} '
                f"* on (link) group_left leo_link_up{{{run},kind=\"isl\"}} > 0) * 8",
                "programmed (mean of up ISLs)", "B")))
         .with_panel(_ts(
             "Shaper drops by cause", "pps",
             _q(f"sum by (cause) (rate(leo_link_dropped_packets_total{{{run}}}[{RATE}]))",
                "{{cause}}")))
         .with_row(gd.Row("Fidelity"))
         .with_panel(_ts(
             "Event apply lateness", "s",
             _q(f"histogram_quantile(0.5, sum by (le) (rate("
                f"leo_event_apply_lateness_seconds_bucket{{{run}}}[{RATE}])))", "p50"),
             _q(f"histogram_quantile(0.99, sum by (le) (rate("
                f"leo_event_apply_lateness_seconds_bucket{{{run}}}[{RATE}])))", "p99", "B"),
             description="Target: p99 <= 2 ms."))
         .with_panel(_ts(
             "Ground links: achieved / programmed rate", "percentunit",
             _q(f'sum by (link, direction) (rate(leo_link_forwarded_bytes_total'
                f'{{{run},kind="ground"}}[{RATE}])) / sum by (link, direction) '
                f'(leo_link_programmed_rate_bytes_per_second{{{run},kind="ground"}} > 0)',
                "{{direction}}"),
             description="Rate error of the shaped ground links (1 = the programmed "
                         "capacity was used; lower without enough offered load)."))
         .with_panel(_ts(
             "Route install time", "s",
             _q(f"histogram_quantile(0.99, sum by (le) (rate("
                f"leo_route_install_seconds_bucket{{{run}}}[{RATE}])))", "p99"),
             _q(f"sum(leo_route_install_seconds_sum{{{run}}}) / "
                f"sum(leo_route_install_seconds_count{{{run}}})", "mean so far", "B")))
         .with_panel(_ts(
             "Route changes", "short",
             _q(f"sum by (outcome) (leo_route_changes_total{{{run}}})", "{{outcome}}")))
         .with_row(gd.Row("Nodes"))
         .with_panel(_ts(
             "Node CPU / budget", "percentunit",
             _q(f"rate(leo_node_cpu_seconds_total{{{run}}}[{RATE}]) / on (node) "
                f"leo_node_cpu_budget_cores{{{run}}}", "{{node}}")))
         .with_panel(_ts(
             "Node memory / budget", "percentunit",
             _q(f"leo_node_memory_bytes{{{run}}} / on (node) "
                f"leo_node_memory_budget_bytes{{{run}}}", "{{node}}")))
         .with_panel(_timeline("Nodes up", _q(f"leo_node_up{{{run}}}", "{{node}}")))
         .with_row(gd.Row("Faults"))
         .with_panel(_ts("Faults", "short",
                         _q(f"sum by (fault) (leo_faults_total{{{run}}})", "{{fault}}")))
         .with_panel(_ts(
             "What faults lost", "short",
             _q(f"sum by (fault, cause) (leo_fault_lost_packets_total{{{run}}})",
                "{{fault}} {{cause}}"),
             _q(f"sum by (fault) (leo_fault_unreachable_seconds_total{{{run}}})",
                "{{fault}} unreachable s", "B"))))
    for title, families in (workloads or {}).items():
        d = d.with_row(gd.Row(f"Workload: {title}"))
        for fam in families:
            d = d.with_panel(workload_panel(fam, scenario_name))
    return d


def workload_panel(fam: Any, scenario_name: str) -> Any:
    """One panel for a declared workload family: counters as rates, gauges as is, one series
    per node and per value of the family's own labels (a MoE layer's experts, a task)."""
    if fam.kind not in ("counter", "gauge"):
        raise ObservabilityError(f"workload family {fam.name}: kind {fam.kind!r}, expected "
                                 "counter or gauge")
    sel = f'{fam.name}{{run="{scenario_name}"}}'
    labels = tuple(getattr(fam, "labels", ()) or ())
    by = ", ".join(("node", *labels))
    legend = " ".join(("{{node}}", *(f"{k}={{{{{k}}}}}" for k in labels)))
    if fam.kind == "counter":
        expr = f"sum by ({by}) (rate({sel}[{RATE}]))"
        unit = _unit_of(fam.unit) if fam.unit != "bytes" else "Bps"
        title = f"{fam.name} (per second)"
    else:
        expr, unit, title = f"max by ({by}) ({sel})", _unit_of(fam.unit), fam.name
    q = Dataquery().expr(expr).ref_id("A").datasource(_ds()).legend_format(legend)
    return (timeseries.Panel().title(title).description(fam.help).unit(unit)
            .datasource(_ds()).height(8).span(8).with_target(q))


def dashboard_uid(scenario_name: str) -> str:
    """Grafana uids hold at most 40 characters."""
    return ("leo-" + re.sub(r"[^a-zA-Z0-9-]", "-", scenario_name))[:40]


def to_json(d: gd.Dashboard) -> dict[str, Any]:
    """The dashboard model as Grafana's JSON (through the SDK's own encoder)."""
    return json.loads(JSONEncoder(sort_keys=True).encode(d.build()))


def panel_queries(dashboard_json: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of every panel (rows' nested panels too)."""
    out: list[tuple[str, str]] = []
    for p in dashboard_json.get("panels", []):
        for inner in [p, *p.get("panels", [])]:
            for t in inner.get("targets") or []:
                if "expr" in t:
                    out.append((inner.get("title", ""), t["expr"]))
    return out


def datasource(prometheus_url: str) -> dict[str, Any]:
    """The Prometheus data source the dashboards name (uid `leo-prometheus`)."""
    return {"name": DATASOURCE_NAME, "type": "prometheus", "uid": DATASOURCE_UID,
            "access": "proxy", "url": prometheus_url, "isDefault": False,
            "jsonData": {"timeInterval": "1s"}}


def export_dashboards(dashboards: Sequence[gd.Dashboard], out_dir: Path, *,
                      prometheus_url: str, grafana_dashboards_path: str | None = None
                      ) -> list[Path]:
    """Grafana's file-provisioning layout under `out_dir`:

    - provisioning/datasources/leo-testbed.yaml (apiVersion 1, datasources: [...])
    - provisioning/dashboards/leo-testbed.yaml (apiVersion 1, providers: [type file,
      options.path = where Grafana will read the JSON: `grafana_dashboards_path`, default
      `out_dir/dashboards` made absolute)
    - dashboards/<uid>.json
    """
    out_dir = Path(out_dir)
    ds_dir = out_dir / "provisioning" / "datasources"
    prov_dir = out_dir / "provisioning" / "dashboards"
    json_dir = out_dir / "dashboards"
    for d in (ds_dir, prov_dir, json_dir):
        d.mkdir(parents=True, exist_ok=True)
    written = []
    ds_file = ds_dir / f"{PROVIDER_NAME}.yaml"
    ds_file.write_text(yaml.safe_dump({"apiVersion": 1,
                                       "datasources": [datasource(prometheus_url)]},
                                      sort_keys=False))
    written.append(ds_file)
    provider = {"apiVersion": 1, "providers": [{
        "name": PROVIDER_NAME, "orgId": 1, "folder": FOLDER, "type": "file",
        "disableDeletion": False, "allowUiUpdates": False, "updateIntervalSeconds": 30,
        "options": {"path": grafana_dashboards_path or str(json_dir.resolve()),
                    "foldersFromFilesStructure": False}}]}
    prov_file = prov_dir / f"{PROVIDER_NAME}.yaml"
    prov_file.write_text(yaml.safe_dump(provider, sort_keys=False))
    written.append(prov_file)
    for d in dashboards:
        model = to_json(d)
        path = json_dir / f"{model['uid']}.json"
        path.write_text(json.dumps(model, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def grafana_api(url: str, token_file: Path, *, timeout_s: float = 10.0) -> Any:
    """A grafana-client API for `url` with the service-account token in `token_file`."""
    from grafana_client import GrafanaApi

    try:
        token = Path(token_file).read_text().strip()
    except OSError as exc:
        raise ObservabilityError(f"Grafana token file {token_file}: {exc}; expected a file "
                                 "holding a service-account token") from exc
    if not token:
        raise ObservabilityError(f"Grafana token file {token_file}: empty, expected a token")
    return GrafanaApi.from_url(url, credential=token, timeout=timeout_s)


def provision(dashboards: Sequence[gd.Dashboard], url: str, token_file: Path, *,
              prometheus_url: str) -> list[str]:
    """Push the data source (created or updated by uid) and the dashboards (overwritten by
    uid) to the Grafana at `url`; returns the dashboards' uids."""
    from grafana_client.client import GrafanaClientError, GrafanaException

    api = grafana_api(url, token_file)
    ds = datasource(prometheus_url)
    try:
        try:
            existing = api.datasource.get_datasource_by_uid(DATASOURCE_UID)
            api.datasource.update_datasource(existing["id"], {**existing, **ds})
        except GrafanaClientError:  # 404: not there yet
            api.datasource.create_datasource(ds)
        uids = []
        for d in dashboards:
            model = to_json(d)
            api.dashboard.update_dashboard({"dashboard": model, "overwrite": True,
                                            "message": "testbed dashboards provision"})
            uids.append(model["uid"])
    except (GrafanaException, OSError) as exc:
        raise ObservabilityError(f"Grafana at {url}: {type(exc).__name__}: {exc}; expected a "
                                 "reachable Grafana and a token with editor rights") from exc
    return uids
