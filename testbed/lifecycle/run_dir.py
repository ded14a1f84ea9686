"""The files of one run, under `<outputs.dir>/<scenario name>/`.

manifest.json (inputs, versions: written first), ledger.jsonl (every created resource, as it is
created), state.json (addresses, ports, pids: for status and fault commands), timeline.jsonl,
events-applied.jsonl (scheduled vs applied), route-changes.jsonl (routes installed,
make-before-break downs), status.json (live, rewritten by the clock),
results/ (workload results), logs/, summary.json.

A new run of the same scenario starts fresh (`start_fresh`): what an earlier run wrote or
appended to is removed, so no file mixes two runs. The ledger is the exception: an earlier run's
ledger must have been torn down and archived by the caller first (`prepare` renames it to
ledger.<unix time>.removed.jsonl), and `start_fresh` refuses to run while it is still there.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import InputError, TestbedError

#: Files a run writes or appends to (besides the ledger, manifest and timeline, which `prepare`
#: rewrites): a new run starts without them.
PER_RUN_FILES = ("events-applied.jsonl", "route-changes.jsonl", "status.json", "summary.json",
                 "state.json", "controller-state.json")
#: Folders whose whole content belongs to one run.
PER_RUN_DIRS = ("results", "logs")


class LeftoverLedgerError(TestbedError):
    """A run directory still holds the ledger of a run nobody tore down."""


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

    def start_fresh(self) -> RunDir:
        """Create the folders without anything an earlier run of this scenario wrote.

        Raises LeftoverLedgerError while ledger.jsonl exists: the resources it lists must be
        torn down (and the file archived) first, never dropped silently.
        """
        if self.ledger.exists():
            raise LeftoverLedgerError(
                f"{self.ledger} lists the resources of an earlier run that was not torn down; "
                f"run 'testbed down {self.path}' first")
        for name in PER_RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for name in PER_RUN_DIRS:
            if (self.path / name).is_dir():
                shutil.rmtree(self.path / name)
        return self.create()

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
