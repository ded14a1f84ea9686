"""The run manifest, written before the first event: every input with its sha256, the versions
of everything that shapes the result, the git commit and dirty flag, the seeds and the host.

Traces and TLEs are identified by hash, not by file name.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from netem.traces import sha256_file
from testbed.paths import REPO_ROOT
from testbed.scenario.model import Scenario

PACKAGES = ("leo-testbed", "numpy", "sgp4", "skyfield", "pydantic", "pyroute2", "os-ken",
            "networkx", "pyarrow")


def describe_input(path: Path) -> dict[str, Any]:
    """A file: its sha256 and size. A folder: a hash over its files' names and hashes."""
    if path.is_file():
        return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if path.is_dir():
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file())
        total = 0
        for p in files:
            digest.update(f"{p.relative_to(path)}\0{sha256_file(p)}\n".encode())
            total += p.stat().st_size
        return {"path": str(path), "sha256": digest.hexdigest(), "files": len(files),
                "bytes": total}
    return {"path": str(path), "missing": True}


def scenario_inputs(scenario: Scenario) -> list[Path]:
    """Every path the scenario refers to (TLE, traces, workload sources)."""
    found: list[Path] = []

    def walk(value: object) -> None:
        if isinstance(value, Path):
            found.append(value)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, str) and value.startswith("/") and Path(value).exists():
            found.append(Path(value))

    walk(scenario)
    return [p for p in dict.fromkeys(found) if p.name]


def _git() -> dict[str, Any]:
    if not (REPO_ROOT / ".git").exists():
        return {"commit": None, "dirty": None}
    def run(*argv: str) -> str:
        return subprocess.run(["git", "-C", str(REPO_ROOT), *argv], capture_output=True,
                              text=True, check=False, timeout=10).stdout.strip()
    return {"commit": run("rev-parse", "HEAD") or None,
            "dirty": bool(run("status", "--porcelain", "--untracked-files=no"))}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    try:
        ovs = subprocess.run(["ovs-vsctl", "--version"], capture_output=True, text=True,
                             check=False, timeout=5).stdout.splitlines()
        out["openvswitch"] = ovs[0].split()[-1] if ovs else None
    except (OSError, subprocess.TimeoutExpired):
        out["openvswitch"] = None
    return out


def build_manifest(scenario: Scenario, scenario_path: Path, *, run_name: str,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    inputs = [describe_input(scenario_path)] + [describe_input(p)
                                                for p in scenario_inputs(scenario)]
    return {
        "run": run_name,
        "created_utc": datetime.now(UTC).isoformat(),
        "scenario": scenario.model_dump(mode="json"),
        "inputs": inputs,
        "seeds": {"scenario": scenario.seed},
        "versions": _versions(),
        "git": _git(),
        "host": {"name": socket.gethostname(), "kernel": platform.release(),
                 "machine": platform.machine(), "cpus": os.cpu_count()},
        **(extra or {}),
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(path)
    return path
