"""Trace manifests: named traces with their file, format, read options and sha256.

Owns reading a manifest (YAML) and opening its entries with the hash checked, so a run can
refer to `leocc-downlink-bw` and be sure which bytes it replayed. Paths are relative to the
manifest's folder, or start with `${TESTBED_DATA}`, which the caller resolves (netem does not
know where the testbed keeps its data).

    traces:
      leocc-downlink-bw:
        path: ${TESTBED_DATA}/traces/starlink/leocc-downlink-bw.mahimahi.gz
        format: mahimahi
        sha256: 9bb9dbcb...
        options: {step_ms: 10, direction: down}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from netem.errors import NetemError, TraceFormatError
from netem.traces.formats import FormatOptions, get_format, read_trace
from netem.traces.formats._io import sha256_file
from netem.traces.model import Trace

DATA_VAR = "${TESTBED_DATA}"
_OPTION_KEYS = {"step_ms", "direction", "duration_s"}
_ENTRY_KEYS = {"path", "format", "sha256", "options", "source", "license", "description",
               "generated_by", "notes"}


@dataclass(frozen=True)
class ManifestEntry:
    """One named trace: where it is, how to read it, which bytes it must be."""

    name: str
    path: Path
    format: str
    sha256: str
    options: FormatOptions
    info: dict[str, Any] = field(default_factory=dict)

    def read(self) -> Trace:
        """Read the trace after checking its sha256 (a changed file is an error)."""
        if not self.path.is_file():
            raise TraceFormatError(f"trace '{self.name}' not found", path=self.path)
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise TraceFormatError(
                f"trace '{self.name}' has sha256 {actual}, manifest expects {self.sha256}",
                path=self.path,
            )
        trace = read_trace(self.path, self.format, self.options)
        trace.meta["name"] = self.name
        return trace


def load_manifest(path: str | Path, data_dir: str | Path | None = None,
                  ) -> dict[str, ManifestEntry]:
    """Entries of a manifest file; `data_dir` replaces ${TESTBED_DATA} in paths.

    Raises TraceFormatError naming the manifest and the entry for unknown keys, formats,
    options or a ${TESTBED_DATA} path without data_dir.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TraceFormatError(f"cannot read manifest: {exc}", path=path) from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("traces"), dict):
        raise TraceFormatError("expected a mapping with a 'traces' mapping", path=path)
    entries: dict[str, ManifestEntry] = {}
    for name, item in raw["traces"].items():
        if not isinstance(item, dict):
            raise TraceFormatError(f"trace '{name}': expected a mapping", path=path)
        unknown = set(item) - _ENTRY_KEYS
        missing = {"path", "format", "sha256"} - set(item)
        if unknown or missing:
            raise TraceFormatError(
                f"trace '{name}': unknown keys {sorted(unknown)}, missing {sorted(missing)}; "
                f"known: {', '.join(sorted(_ENTRY_KEYS))}", path=path,
            )
        get_format(item["format"])
        options = item.get("options") or {}
        if set(options) - _OPTION_KEYS:
            raise TraceFormatError(
                f"trace '{name}': unknown options {sorted(set(options) - _OPTION_KEYS)}; "
                f"known: {', '.join(sorted(_OPTION_KEYS))}", path=path,
            )
        file_text = str(item["path"])
        if file_text.startswith(DATA_VAR):
            if data_dir is None:
                raise NetemError(f"manifest {path}: trace '{name}' lives under {DATA_VAR}; "
                                 "pass data_dir")
            file_path = Path(data_dir) / file_text[len(DATA_VAR):].lstrip("/")
        else:
            file_path = path.parent / file_text
        info = {k: v for k, v in item.items() if k not in {"path", "format", "sha256", "options"}}
        entries[name] = ManifestEntry(name=name, path=file_path, format=item["format"],
                                      sha256=str(item["sha256"]),
                                      options=FormatOptions(**options), info=info)
    return entries
