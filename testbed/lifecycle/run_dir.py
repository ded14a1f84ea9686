"""The files of one run, under `<outputs.dir>/<scenario name>/`.

manifest.json (inputs, versions: written first), ledger.jsonl (every created resource, as it is
created), state.json (addresses, ports, pids: for status and fault commands), timeline.jsonl,
events-applied.jsonl (scheduled vs applied), route-changes.jsonl (routes installed,
make-before-break downs), status.json (live, rewritten by the clock),
results/ (workload results), logs/, summary.json.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import InputError


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.jsonl"

    @property
    def state(self) -> Path:
        return self.path / "state.json"

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def timeline(self) -> Path:
        return self.path / "timeline.jsonl"

    @property
    def events_applied(self) -> Path:
        return self.path / "events-applied.jsonl"

    @property
    def route_changes(self) -> Path:
        return self.path / "route-changes.jsonl"

    @property
    def summary(self) -> Path:
        return self.path / "summary.json"

    @property
    def results(self) -> Path:
        return self.path / "results"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def create(self) -> RunDir:
        for d in (self.path, self.results, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def write_json(self, path: Path, data: Any) -> None:
        """Atomic write (readers such as `testbed status` never see half a file)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str))
        tmp.replace(path)

    def read_json(self, path: Path) -> Any:
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path.name} not found: is {self.path} a run directory?",
                             path=path) from None
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON: {exc.msg}", path=path, line=exc.lineno) from None
