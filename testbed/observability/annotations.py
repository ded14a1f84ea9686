"""Annotations of a run (start, end, handovers, faults): to Grafana when a URL is configured,
else to `<run_dir>/annotations.jsonl`.

Owns the annotation records and their writer thread; `on_instant` only looks up a dict and
appends to a deque (the clock's thread), the writer sends about once a second.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.lifecycle.clock import AppliedInstant
from testbed.lifecycle.observers import RunObserver
from testbed.observability.errors import ObservabilityError

ANNOTATIONS_FILE = "annotations.jsonl"
TAG = "leo-testbed"


class AnnotationsObserver(RunObserver):
    """Annotation records {time_ms, tags, text, scenario_t_s} of one run.

    `handovers`: the timeline's handover events (`LinkEvent` kind "handover": link
    `<station>:handover`, a = departing, b = arriving satellite), looked up by instant.
    `grafana`: a grafana-client API (`dashboards.grafana_api`) or None for the file.
    """

    def __init__(self, run_dir: Path, run: str, handovers: Sequence[Any] = (), *,
                 grafana: Any = None, dashboard_uid: str | None = None,
                 period_s: float = 1.0) -> None:
        self.path = Path(run_dir) / ANNOTATIONS_FILE
        self.run = run
        self.grafana = grafana
        self.dashboard_uid = dashboard_uid
        self.period_s = period_s
        self._handovers: dict[int, list[Any]] = collections.defaultdict(list)
        for e in handovers:
            self._handovers[e.t_ns].append(e)
        self._pending: collections.deque[dict[str, Any]] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.errors: list[str] = []

    @classmethod
    def for_run(cls, prep: Any, **kwargs: Any) -> AnnotationsObserver:
        handovers = [e for e in prep.timeline.events if e.kind == "handover"]
        return cls(prep.run_dir.path, prep.scenario.name, handovers, **kwargs)

    def _add(self, text: str, tags: Sequence[str], scenario_t_s: float | None = None) -> None:
        self._pending.append({"time_ms": int(time.time() * 1000), "tags": [TAG, *tags],
                              "text": text, "run": self.run, "scenario_t_s": scenario_t_s})

    def on_up(self, net: Any) -> None:
        self._add(f"run {self.run} starts", ["run", "start"], 0.0)
        self._thread = threading.Thread(target=self._loop, name="annotations", daemon=True)
        self._thread.start()

    def on_instant(self, rec: AppliedInstant) -> None:
        if "handover" not in rec.kinds:
            return
        for e in self._handovers.get(rec.scenario_t_ns, ()):
            station = e.link.split(":")[0]
            self._add(f"handover at {station}: {e.a or 'none'} -> {e.b or 'none'}",
                      ["handover", station], rec.scenario_t_ns / 1e9)

    def on_fault(self, record: dict[str, Any]) -> None:
        what = record.get("link") or record.get("node") or ""
        self._add(f"{record.get('fault')} {what}".strip(), ["fault", str(record.get("fault"))],
                  record.get("at_scenario_s"))

    def on_end(self, held: Any) -> None:
        played = getattr(held, "played_ns", 0) / 1e9
        ended = "interrupted" if getattr(held, "interrupted", False) else "ends"
        self._add(f"run {self.run} {ended}", ["run", "end"], played)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.flush()

    def flush(self) -> None:
        """Send (or append) what is pending; an annotation Grafana refuses goes to the file
        with the error, so nothing is lost."""
        batch: list[dict[str, Any]] = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        if self.grafana is None:
            with self.path.open("a") as f:
                f.writelines(json.dumps(a) + "\n" for a in batch)
            self.sent += len(batch)
            return
        from grafana_client.client import GrafanaException

        for a in batch:
            try:
                self.grafana.annotations.add_annotation(
                    dashboard_uid=self.dashboard_uid, time_from=a["time_ms"],
                    tags=a["tags"], text=a["text"])
                self.sent += 1
            except (GrafanaException, OSError) as exc:  # niquests' errors are OSErrors
                self.errors.append(f"{type(exc).__name__}: {exc}")
                with self.path.open("a") as f:
                    f.write(json.dumps({**a, "grafana_error": str(exc)}) + "\n")


def read_annotations(run_dir: Path) -> list[dict[str, Any]]:
    """The annotations a run wrote to its file (the report reads them)."""
    path = Path(run_dir) / ANNOTATIONS_FILE
    if not path.exists():
        return []
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise ObservabilityError(f"{path}: {exc}; expected JSON lines") from exc
