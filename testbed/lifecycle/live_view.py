"""The live view of a run: what `testbed run` shows while it plays, and what status.json holds.

Owns the live status beyond the clock's own keys and how it is shown. Three parts:

- `base_status(net, rec)`: cheap keys the run clock writes (serving satellite of each ground
  station, satellites in contact); it runs on the clock's thread, so it only reads the link book.
- `LiveStatus.poll()`: the rest, gathered off the clock's thread: contact seconds so far (from
  the timeline's ground links, precomputed once), event lateness p50/p99 so far (tailing
  events-applied.jsonl into a fixed histogram: O(new lines) per poll), files and bytes delivered
  per satellite (one `/results?events=0` request to the ground station's agent), faults so far.
- Rendering, pure: `render_status(status)` (a rich table) and `status_line(status)` (one line
  for logs when stdout is not a terminal); `testbed status` renders the same table once.

`LiveView` runs the poll about once a second in its own thread and shows it: a rich `Live`
(with the run's progress bars above the table) on a terminal, a compact line every 10 s
otherwise. It never touches the network; it does not own status.json's clock keys.
"""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from nodes import client
from nodes.errors import NodeError
from testbed.lifecycle.run_dir import RunDir
from testbed.timeline.model import Timeline

VIEW_KEYS = ("duration_s", "satellites", "lateness_ms", "faults", "workload_progress",
             "view_updated_utc")
"""Keys of status.json the live view writes; the clock's writer keeps them (`merge_view`)."""

LATENESS_BIN_US = 10
LATENESS_BINS = 100_000
"""Lateness histogram: 10 µs bins up to 1 s (above: counted in the last bin, max kept exact)."""

Tallies = Mapping[str, Mapping[str, Any]]
"""sender -> {"files_received", "bytes_received", ...} (the ground receiver's summary)."""


# --- the clock's side ---------------------------------------------------------------------------

def base_status(records: Mapping[str, Any]) -> dict[str, Any]:
    """Serving satellite per ground station and satellites in contact, from the link book's
    records (`LinkRecord`: kind, up, ground_station, link.a/b.node). Cheap: one pass."""
    serving: dict[str, str | None] = {}
    in_contact: set[str] = set()
    for r in records.values():
        if r.kind != "ground" or r.ground_station is None:
            continue
        serving.setdefault(r.ground_station, None)
        if r.up:
            sat = r.link.b.node if r.link.a.node == r.ground_station else r.link.a.node
            serving[r.ground_station] = sat
            in_contact.add(sat)
    return {"serving": dict(sorted(serving.items())), "in_contact": sorted(in_contact)}


def merge_view(status_path: Path, clock_status: dict[str, Any]) -> dict[str, Any]:
    """The clock's keys over the live view's last ones (status.json has both writers): so that
    every write of status.json carries the whole status."""
    try:
        previous = json.loads(status_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return clock_status
    kept = {k: previous[k] for k in VIEW_KEYS if k in previous}
    return {**kept, **clock_status}


# --- pieces of the view's poll ------------------------------------------------------------------

class ContactClock:
    """Contact seconds of each satellite up to any scenario instant, from the timeline's ground
    link up/down events (the same rule as the run's summary: a link open at the end counts up
    to the end). Built once (one pass over the events); each query is vectorised."""

    def __init__(self, timeline: Timeline) -> None:
        stations = {n.name for n in timeline.nodes if n.kind == "ground"}
        self.satellites = [n.name for n in timeline.nodes if n.kind == "satellite"]
        opened: dict[str, tuple[str, int]] = {}
        starts: list[int] = []
        ends: list[int] = []
        owner: list[int] = []
        index = {s: i for i, s in enumerate(self.satellites)}
        for e in timeline.events:
            if e.link_kind != "ground" or e.kind not in ("up", "down"):
                continue
            sat = e.b if e.a in stations else e.a
            if e.kind == "up":
                opened[e.link] = (sat, e.t_ns)
            elif e.link in opened:
                s, t0 = opened.pop(e.link)
                starts.append(t0)
                ends.append(e.t_ns)
                owner.append(index[s])
        for s, t0 in opened.values():
            starts.append(t0)
            ends.append(2**62)
            owner.append(index[s])
        self._start_ns = np.array(starts, np.int64)
        self._end_ns = np.array(ends, np.int64)
        self._owner = np.array(owner, np.int64)

    def contact_s(self, t_ns: int) -> dict[str, float]:
        """Seconds each satellite had its own ground link in scenario time [0, t_ns]."""
        overlap_ns = np.clip(np.minimum(self._end_ns, t_ns) - self._start_ns, 0, None)
        total = np.bincount(self._owner, weights=overlap_ns, minlength=len(self.satellites))
        return {s: float(total[i]) / 1e9 for i, s in enumerate(self.satellites)}


class LatenessTail:
    """Event lateness so far from events-applied.jsonl, read incrementally (only new complete
    lines each time) into a fixed histogram, so a poll costs O(new instants), not O(run)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._counts = np.zeros(LATENESS_BINS, np.int64)
        self.instants = 0
        self.max_ms = float("nan")

    def update(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a line the clock is still writing waits for next time
        if end == 0:
            return
        self._offset += end
        late_us = [json.loads(line)["lateness_ns"] / 1e3 for line in chunk[:end].splitlines()
                   if line.strip()]
        if not late_us:
            return
        values = np.array(late_us)
        bins = np.clip((values // LATENESS_BIN_US).astype(np.int64), 0, LATENESS_BINS - 1)
        self._counts += np.bincount(bins, minlength=LATENESS_BINS)
        self.instants += len(late_us)
        top = float(values.max()) / 1e3
        self.max_ms = top if not self.max_ms >= top else self.max_ms

    def percentile_ms(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (within 10 µs); nan when empty."""
        if not self.instants:
            return float("nan")
        rank = max(1, int(np.ceil(q / 100 * self.instants)))
        cumulative = np.cumsum(self._counts)
        b = int(np.searchsorted(cumulative, rank))
        return min((b + 1) * LATENESS_BIN_US / 1e3, self.max_ms)

    def summary(self) -> dict[str, float | int]:
        return {"p50": self.percentile_ms(50), "p99": self.percentile_ms(99),
                "max": self.max_ms, "instants": self.instants}


def ground_tallies(workload: Any, timeout_s: float = 1.0) -> Callable[[], Tallies | None]:
    """What the ground station's receiver counted so far, per sender, asked of its agent
    (`GET /results?events=0`: a small summary). None while the agent does not answer."""
    def fetch() -> Tallies | None:
        net = getattr(workload, "net", None)
        jobs = getattr(workload, "jobs", {})
        pool = getattr(workload, "pool", None)
        ground = getattr(workload, "station", None)
        if net is None or pool is None or ground is None or ground not in jobs:
            return None
        try:
            res = client.job_results(pool.addr(ground), jobs[ground], events=False,
                                     timeout_s=timeout_s, token=pool.token)
        except (NodeError, OSError):
            return None
        summary = res.get("summary") or {}
        return summary.get("senders") if isinstance(summary, dict) else None

    return fetch


class LiveStatus:
    """Gathers the live view's keys and merges them into status.json (see `merge_view`)."""

    def __init__(self, run_dir: RunDir, timeline: Timeline, *,
                 tallies: Callable[[], Tallies | None] | None = None,
                 faults: Callable[[], Sequence[Mapping[str, Any]]] | None = None) -> None:
        self.run_dir = run_dir
        self.duration_s = timeline.duration_s
        self.contacts = ContactClock(timeline)
        self.lateness = LatenessTail(run_dir.events_applied)
        self.tallies = tallies
        self.faults = faults
        self._last_tallies: Tallies | None = None

    def poll(self, *, write: bool = True) -> dict[str, Any]:
        """The whole status now (the clock's last keys + the view's); written back when
        `write` and the clock has written once (the run is playing)."""
        try:
            status = json.loads(self.run_dir.status.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            status = {}
        t_s = float(status.get("scenario_t_s", 0.0))
        self.lateness.update()
        tallies = self.tallies() if self.tallies is not None else None
        if tallies is None:  # agent busy or gone (the run's end): keep the last counts
            tallies = self._last_tallies
        self._last_tallies = tallies
        in_contact = set(status.get("in_contact", []))
        sats: dict[str, dict[str, Any]] = {}
        for sat, contact_s in self.contacts.contact_s(int(t_s * 1e9)).items():
            tally = (tallies or {}).get(sat, {})
            sats[sat] = {"in_contact": sat in in_contact, "contact_s": round(contact_s, 3),
                         "files": tally.get("files_received", 0) if tallies is not None else None,
                         "bytes": tally.get("bytes_received", 0) if tallies is not None else None}
        view: dict[str, Any] = {
            "duration_s": self.duration_s, "satellites": sats,
            "lateness_ms": self.lateness.summary(),
            "workload_progress": tallies is not None,
            "view_updated_utc": time.time(),
        }
        if self.faults is not None:
            view["faults"] = [dict(f) for f in self.faults()]
        merged = {**status, **view}
        if write and "scenario_t_s" in status:
            self.run_dir.write_json(self.run_dir.status, merged)
        return merged


# --- rendering (pure) ---------------------------------------------------------------------------

def _ms(value: Any) -> str:
    return "-" if value is None or value != value else f"{value:.2f}"


def _main_faults(faults: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Faults injected (not their recovery steps, which name the fault they end)."""
    return [f for f in faults if f.get("fault") in ("cut-link", "kill-node",
                                                      "restart-controller")]


def _fault_count(status: Mapping[str, Any]) -> str:
    return str(len(_main_faults(status["faults"]))) if "faults" in status else "-"


def _fault_text(faults: Sequence[Mapping[str, Any]]) -> str:
    main = _main_faults(faults)
    if not main:
        return "none"
    last = main[-1]
    what = last.get("link") or last.get("node") or ""
    return f"{len(main)} (last: {last['fault']} {what}".rstrip() + \
        f" at {float(last.get('at_scenario_s', 0)):.1f} s)"


def render_status(status: Mapping[str, Any], routes: Mapping[str, Mapping[str, Any]] | None
                  = None) -> RenderableType:
    """The live table of a status dict (status.json's content). `routes`: optional per
    satellite {"hops", "delay_us"} of its current route to the ground station (shown as a
    column; `testbed status` has them from the controller)."""
    t_s, duration_s = float(status.get("scenario_t_s", 0.0)), status.get("duration_s")
    head = Text(f"scenario time {t_s:.1f}" + (f" / {float(duration_s):.0f} s"
                                               if duration_s else " s"), style="bold")
    serving = status.get("serving") or {}
    late = status.get("lateness_ms") or {}
    lines = [
        head,
        Text("serving: " + (", ".join(f"{gs} <- {sat or 'none'}" for gs, sat in serving.items())
                            or "-")),
        Text(f"links up {status.get('links_up', '-')}/{status.get('links_total', '-')}, "
             f"routes generation {status.get('generation', '-')}, event lateness p50 "
             f"{_ms(late.get('p50'))} ms, p99 {_ms(late.get('p99'))} ms over "
             f"{late.get('instants', 0)} instants"),
        Text(f"faults: {_fault_text(status['faults']) if 'faults' in status else '-'}; "
             f"down nodes: "
             f"{', '.join(status.get('down_nodes') or []) or 'none'}"),
    ]
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    cols = ["satellite", "contact", "contact s", "files", "MB delivered"]
    if routes is not None:
        cols += ["hops to ground", "delay ms"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("satellite", "contact") else "right")
    for sat, row in (status.get("satellites") or {}).items():
        cells = [sat, "yes" if row.get("in_contact") else "", f"{row.get('contact_s', 0):.1f}",
                 "-" if row.get("files") is None else str(row["files"]),
                 "-" if row.get("bytes") is None else f"{row['bytes'] / 1e6:.2f}"]
        if routes is not None:
            r = routes.get(sat)
            cells += ["-", "-"] if r is None else [str(r["hops"]), f"{r['delay_us'] / 1e3:.2f}"]
        table.add_row(*cells)
    return Group(*lines, table)


def status_line(status: Mapping[str, Any]) -> str:
    """One compact line for a log (stdout not a terminal)."""
    sats = status.get("satellites") or {}
    files = [r["files"] for r in sats.values() if r.get("files") is not None]
    nbytes = [r["bytes"] for r in sats.values() if r.get("bytes") is not None]
    late = status.get("lateness_ms") or {}
    serving = status.get("serving") or {}
    duration_s = status.get("duration_s")
    parts = [
        f"t={float(status.get('scenario_t_s', 0.0)):.0f}"
        + (f"/{float(duration_s):.0f}s" if duration_s else "s"),
        "serving " + (",".join(f"{gs}<-{sat or 'none'}" for gs, sat in serving.items()) or "-"),
        f"contact {sum(1 for r in sats.values() if r.get('in_contact'))}/{len(sats)}",
        f"links {status.get('links_up', '-')}/{status.get('links_total', '-')}",
        f"files {sum(files)} ({sum(nbytes) / 1e6:.1f} MB)" if files else "files -",
        f"late p50 {_ms(late.get('p50'))} p99 {_ms(late.get('p99'))} ms",
        f"faults {_fault_count(status)}",
        f"down {','.join(status.get('down_nodes') or []) or '-'}",
    ]
    return " | ".join(parts)


def routes_to_ground(live: Mapping[str, Any], ground_ip: str) -> dict[str, dict[str, Any]]:
    """Per node: hops and delay of its installed route to `ground_ip`, from a control-socket
    status reply (`routes.routes`: the controller's RouteEntry dicts)."""
    out: dict[str, dict[str, Any]] = {}
    for r in (live.get("routes") or {}).get("routes", []):
        if r.get("ipv4_dst") == ground_ip:
            out[r["node"]] = {"hops": r["hops"], "delay_us": r["delay_us"]}
    return out


def _laid_out(renderable: RenderableType, width: int) -> Text:
    """`renderable` laid out once as styled text: a table costs ~15 ms to lay out for 27
    satellites here, reprinting the text ~1 ms."""
    capture = Console(file=io.StringIO(), force_terminal=True, width=width,
                      color_system="standard")
    capture.print(renderable)
    return Text.from_ansi(capture.file.getvalue())  # type: ignore[attr-defined]


# --- the thread that shows it -------------------------------------------------------------------

class LiveView:
    """Polls `LiveStatus` about once a second and shows it on `console` until closed.

    On a terminal: one rich `Live` showing `above` (e.g. the run's progress bars, not started
    themselves) and, once the run plays, the table. Otherwise: `status_line` every `line_s`.
    `attach(source)` starts the polling (after `prepare`, when the run directory exists).

    Example:
        with LiveView(console, above=bar) as view:
            prep = prepare(...); view.attach(LiveStatus(prep.run_dir, prep.timeline))
            hold(prep, ...)
    """

    def __init__(self, console: Console, *, above: RenderableType | None = None,
                 poll_s: float = 1.0, line_s: float = 10.0) -> None:
        self.console = console
        self.above = above
        self.poll_s = poll_s
        self.line_s = line_s
        self.tty = console.is_terminal
        self._source: LiveStatus | None = None
        self._status: dict[str, Any] | None = None
        self._renderable: RenderableType | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live: Live | None = None
        self.polls = 0

    def _render(self) -> RenderableType:
        parts = [p for p in (self.above, self._renderable) if p is not None]
        return Group(*parts)

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(console=self.console, get_renderable=self._render,
                              refresh_per_second=2, transient=False)
            self._live.start()
        return self

    def attach(self, source: LiveStatus) -> None:
        self._source = source
        self._thread = threading.Thread(target=self._loop, name="live-view", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last_line = time.monotonic()
        while not self._stop.wait(self.poll_s):
            assert self._source is not None
            status = self._source.poll()
            self.polls += 1
            if "scenario_t_s" not in status:
                continue  # the clock has not started yet: the progress bars say more
            self._status = status
            if self.tty:  # laid out once per poll; the Live's refreshes reprint the text
                self._renderable = _laid_out(render_status(status), self.console.width)
            elif time.monotonic() - last_line >= self.line_s:
                last_line = time.monotonic()
                self.console.print(status_line(status), highlight=False, soft_wrap=True)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._live is not None:
            self._live.stop()

