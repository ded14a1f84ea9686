"""The run report: one self-contained HTML file (plots as base64 PNG) written from a finished
run directory.

Owns reading the run's files (manifest, events applied, route changes, faults, annotations,
summary, the Prometheus TSDB when the run kept one) and laying them out; the numbers are the
ones the dashboards show (same TSDB, same families). It never touches a running network.
Workloads contribute sections through `report_hook(kind)`.

Example:
    path = write_report(Path("runs/spaceverse-shanghai"))   # -> runs/.../report.html
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - the backend is chosen first
import numpy as np  # noqa: E402

from testbed.observability.annotations import read_annotations  # noqa: E402
from testbed.observability.errors import ObservabilityError  # noqa: E402
from testbed.observability.prometheus import PROMETHEUS_DIR, serve_run  # noqa: E402

REPORT_FILE = "report.html"
RATE_WINDOW = "5s"


@dataclass
class Section:
    """A part of the report: a title, HTML paragraphs/tables, and PNG images (bytes)."""

    title: str
    html: str = ""
    images: list[bytes] = field(default_factory=list)


ReportHook = Callable[[Path, Mapping[str, Any]], Sequence[Section]]
_HOOKS: dict[str, ReportHook] = {}


def report_hook(kind: str) -> Callable[[ReportHook], ReportHook]:
    """Register the report sections of workload `kind` (kebab-case, as in the scenario):
    `fn(run_dir, workload_results) -> [Section]`."""
    def register(fn: ReportHook) -> ReportHook:
        _HOOKS[kind] = fn
        return fn
    return register


# --- reading the run ----------------------------------------------------------------------------

def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ObservabilityError(f"{path}: {exc}; expected JSON") from exc


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line (killed mid-write)
    return out


@dataclass
class RunFiles:
    """What a finished run directory holds (missing files read as empty)."""

    path: Path
    manifest: dict[str, Any]
    summary: dict[str, Any] | None
    status: dict[str, Any] | None
    instants: list[dict[str, Any]]
    route_changes: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    prometheus: dict[str, Any] | None

    @classmethod
    def read(cls, run_dir: Path) -> RunFiles:
        run_dir = Path(run_dir)
        manifest = _json(run_dir / "manifest.json")
        if manifest is None:
            raise ObservabilityError(f"{run_dir}: no manifest.json; expected a run directory")
        return cls(run_dir, manifest, _json(run_dir / "summary.json"),
                   _json(run_dir / "status.json"), _jsonl(run_dir / "events-applied.jsonl"),
                   _jsonl(run_dir / "route-changes.jsonl"), read_annotations(run_dir),
                   _json(run_dir / PROMETHEUS_DIR / "run.json"))

    @property
    def faults(self) -> list[dict[str, Any]]:
        source = self.summary if self.summary and "faults" in self.summary else self.status
        return list((source or {}).get("faults") or [])


# --- pieces -------------------------------------------------------------------------------------

def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _table(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    rows = list(rows)
    if not rows:
        return "<p class='none'>none</p>"
    cols = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def _percentiles_ms(values_ns: Sequence[int]) -> dict[str, float]:
    if not len(values_ns):
        return {}
    v = np.asarray(values_ns, dtype=np.float64) / 1e6
    return {"p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
            "max_ms": float(v.max()), "instants": float(len(v))}


def scenario_section(files: RunFiles) -> Section:
    m = files.manifest
    rows = [{"field": "run", "value": m.get("run")},
            {"field": "created (UTC)", "value": m.get("created_utc")},
            {"field": "git", "value": m.get("git")}, {"field": "host", "value": m.get("host")},
            {"field": "seeds", "value": m.get("seeds")},
            {"field": "timeline events", "value": m.get("timeline_events")}]
    inputs = [{"path": i.get("path"), "sha256": str(i.get("sha256", ""))[:16] + "...",
               "bytes": i.get("bytes")} for i in m.get("inputs") or []]
    scen = json.dumps(m.get("scenario"), indent=1, default=str)
    return Section("Scenario and manifest", _table(rows) + "<h3>Inputs</h3>" + _table(inputs)
                   + f"<details><summary>scenario</summary><pre>{html.escape(scen)}</pre>"
                   "</details>")


def topology_section(files: RunFiles) -> Section:
    """Ground tracks and the contact Gantt of the scenario (testbed.topo_plot)."""
    from testbed.scenario.model import Scenario
    from testbed.topo import topology_report
    from testbed.topo_plot import plot_topology

    scenario = Scenario.model_validate(files.manifest["scenario"])
    with tempfile.TemporaryDirectory() as tmp:
        paths = plot_topology(topology_report(scenario), Path(tmp) / "topology.png")
        images = [p.read_bytes() for p in paths]
    return Section("Ground tracks and contacts", "", images)


def lateness_section(files: RunFiles) -> Section:
    late_ns = [int(r["lateness_ns"]) for r in files.instants]
    if not late_ns:
        return Section("Event apply lateness", "<p class='none'>no instants applied</p>")
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.2))
    ms = np.asarray(late_ns) / 1e6
    a.hist(ms, bins=min(50, max(5, len(ms) // 2)), color="#3a6ea5")
    a.set_xlabel("lateness (ms)")
    a.set_ylabel("instants")
    a.axvline(2.0, color="#c0392b", ls="--", lw=1, label="2 ms target")
    a.legend()
    b.plot([r["scenario_t_ns"] / 1e9 for r in files.instants], ms, ".", ms=4)
    b.set_xlabel("scenario time (s)")
    b.set_ylabel("lateness (ms)")
    return Section("Event apply lateness", _table([_percentiles_ms(late_ns)]), [_png(fig)])


def routes_section(files: RunFiles) -> Section:
    rows = []
    for c in files.route_changes:
        start = c.get("scheduled_ns") or c.get("submitted_ns")
        install_ms = (c["installed_ns"] - start) / 1e6 if c.get("installed_ns") and start \
            else None
        rows.append({"generation": c.get("generation"), "label": c.get("label"),
                     "install_ms": install_ms, "superseded_by": c.get("superseded_by"),
                     "error": c.get("error")})
    images = []
    done = [r for r in rows if r["install_ms"] is not None]
    if done:
        fig, ax = plt.subplots(figsize=(11, 2.8))
        ax.bar(range(len(done)), [r["install_ms"] for r in done], color="#5d8a3a")
        ax.set_xticks(range(len(done)), [str(r["label"]) for r in done], rotation=30,
                      ha="right", fontsize=7)
        ax.set_ylabel("install time (ms)")
        images.append(_png(fig))
    return Section("Route changes", _table(rows), images)


def faults_section(files: RunFiles) -> Section:
    rows = []
    for f in files.faults:
        lost = f.get("lost") if isinstance(f.get("lost"), dict) else {}
        shaper = lost.get("shaper") if isinstance(lost.get("shaper"), dict) else {}
        rows.append({"fault": f.get("fault"), "what": f.get("link") or f.get("node"),
                     "at_scenario_s": f.get("at_scenario_s"),
                     "unreachable_s": lost.get("unreachable_s"),
                     "frames dropped": shaper.get("dropped_total"),
                     "queued at end": shaper.get("queued_at_end"),
                     "workload lost": lost.get("workload")})
    return Section("Faults and what they lost", _table(rows))


def annotations_section(files: RunFiles) -> Section:
    rows = [{"scenario_t_s": a.get("scenario_t_s"), "text": a.get("text"),
             "tags": ", ".join(a.get("tags", [])[1:])} for a in files.annotations]
    return Section("Annotations (run, handovers, faults)", _table(rows))


def links_section(files: RunFiles, query_range: Callable[..., list[dict[str, Any]]] | None
                  ) -> Section:
    """Per ground-link direction: programmed vs achieved throughput, programmed delay; from
    the run's TSDB (the dashboards' numbers)."""
    title = "Links: programmed vs achieved"
    if query_range is None or files.prometheus is None:
        return Section(title, "<p class='none'>no Prometheus TSDB in this run directory "
                       "(backend.prometheus: none or external)</p>")
    t0, t1 = files.prometheus["start_unix_s"], files.prometheus.get("end_unix_s")
    if t1 is None:
        return Section(title, "<p class='none'>the run did not end cleanly (no end time)</p>")
    run = f'run="{files.manifest.get("run")}"'
    programmed = query_range(f'leo_link_programmed_rate_bytes_per_second{{{run},kind="ground"}}'
                             f' * on (link) group_left leo_link_up{{{run}}} * 8', t0, t1, 1.0)
    achieved = query_range(f'rate(leo_link_forwarded_bytes_total{{{run},kind="ground"}}'
                           f'[{RATE_WINDOW}]) * 8', t0, t1, 1.0)
    delay = query_range(f'leo_link_programmed_delay_seconds{{{run},kind="ground"}} * on (link) '
                        f'group_left leo_link_up{{{run}}} > 0', t0, t1, 1.0)
    fig, (a, b) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    rows = []
    for series, style, label in ((programmed, "-", "programmed"), (achieved, ":", "achieved")):
        for s in series:
            ts = np.array([float(t) - t0 for t, _ in s["values"]])
            vs = np.array([float(v) for _, v in s["values"]])
            if not np.any(vs > 0):
                continue
            direction = s["metric"].get("direction", "?")
            a.plot(ts, vs / 1e6, style, label=f"{label} {direction}")
            rows.append({"direction": direction, "series": label,
                         "mean_mbps (while > 0)": float(vs[vs > 0].mean() / 1e6),
                         "max_mbps": float(vs.max() / 1e6)})
    a.set_ylabel("Mbit/s")
    a.legend(fontsize=6, ncol=2)
    for s in delay:
        ts = np.array([float(t) - t0 for t, _ in s["values"]])
        b.plot(ts, [float(v) * 1e3 for _, v in s["values"]],
               label=s["metric"].get("direction", "?"))
    b.set_ylabel("programmed one-way delay (ms)")
    b.set_xlabel("wall seconds since Prometheus started")
    b.legend(fontsize=6, ncol=2)
    return Section(title, _table(rows), [_png(fig)])


def workload_sections(files: RunFiles) -> list[Section]:
    results = (files.summary or {}).get("workload") or {}
    kind = str(((files.manifest.get("scenario") or {}).get("workload") or {}).get("kind",
                                                                                 "none"))
    out = [Section(f"Workload: {kind}", _table(
        [{"key": k, "value": v} for k, v in results.items()]) if results else
        "<p class='none'>no workload results (no workload, or summary.json missing)</p>")]
    hook = _HOOKS.get(kind)
    if hook is not None:
        out += list(hook(files.path, results))
    return out


# --- assembling ---------------------------------------------------------------------------------

STYLE = """body{font:14px/1.4 sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;border-bottom:1px solid #ccc;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ddd;
padding:3px 6px;text-align:left;vertical-align:top}th{background:#f1f4f8}img{max-width:100%;
display:block;margin:8px 0}.none{color:#888}pre{font-size:11px;background:#f7f7f7;padding:8px}"""


def render(title: str, sections: Sequence[Section]) -> str:
    """The HTML document: inline CSS, images as data: URIs (no external resource)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>{s.html}")
        for img in s.images:
            data = base64.b64encode(img).decode()
            parts.append(f"<img alt='{html.escape(s.title)}' src='data:image/png;base64,"
                         f"{data}'>")
    parts.append("</body></html>")
    return "".join(parts)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write `<run_dir>/report.html` (or `out`); serves the run's TSDB meanwhile when there
    is one. Returns the path written."""
    files = RunFiles.read(Path(run_dir))
    server = None
    if (Path(run_dir) / PROMETHEUS_DIR / "data").is_dir():
        server = serve_run(Path(run_dir), port=0)
    try:
        sections = [scenario_section(files), topology_section(files),
                    links_section(files, server.query_range if server else None),
                    lateness_section(files), routes_section(files), faults_section(files),
                    annotations_section(files), *workload_sections(files)]
    finally:
        if server is not None:
            server.stop()
    path = Path(out) if out is not None else Path(run_dir) / REPORT_FILE
    path.write_text(render(f"Run report: {files.manifest.get('run')}", sections))
    return path
