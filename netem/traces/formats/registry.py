"""The registry of trace formats, keyed by kebab-case name (shared by YAML and the CLI).

Owns lookup, name/extension detection and the read/write entry points; each format module
registers itself here. Unknown names raise an error listing the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from netem.errors import NetemError, TraceFormatError
from netem.traces.formats._io import read_text, sha256_file
from netem.traces.model import DIRECTIONS, Trace


class UnknownTraceFormat(NetemError, ValueError):
    """A format name that is not registered, or a file whose format cannot be told."""


@dataclass(frozen=True)
class FormatOptions:
    """What a caller may declare about a file.

    step_ms: interval of formats without timestamps (a delay file's bin, a CSV's row step;
        None means the format's default); for mahimahi, the grid capacity is counted on.
    direction: which direction single-direction formats fill or write ('down' or 'up').
    duration_s: declared duration; a file that does not match it (one step of slack) is an
        error, which catches a wrong declared bin size.
    """

    step_ms: float | None = None
    direction: str = "down"
    duration_s: float | None = None

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise NetemError(
                f"unknown direction '{self.direction}'; choose: {', '.join(DIRECTIONS)}"
            )
        if self.step_ms is not None and not self.step_ms > 0:
            raise NetemError(f"step_ms={self.step_ms}, expected > 0")
        if self.duration_s is not None and not self.duration_s > 0:
            raise NetemError(f"duration_s={self.duration_s}, expected > 0")


Reader = Callable[[Path, FormatOptions], Trace]
Writer = Callable[[Trace, Path, FormatOptions], None]


@dataclass(frozen=True)
class TraceFormat:
    """A registered format: its reader, writer, the file-name endings it is detected by."""

    name: str
    read: Reader
    write: Writer
    suffixes: tuple[str, ...]
    description: str


FORMATS: dict[str, TraceFormat] = {}


def register_format(fmt: TraceFormat) -> TraceFormat:
    """Add a format under its kebab-case name (once)."""
    if fmt.name in FORMATS:
        raise NetemError(f"trace format '{fmt.name}' registered twice")
    if fmt.name != fmt.name.lower() or "_" in fmt.name:
        raise NetemError(f"trace format name '{fmt.name}' must be kebab-case")
    FORMATS[fmt.name] = fmt
    return fmt


def format_names() -> list[str]:
    return sorted(FORMATS)


def get_format(name: str) -> TraceFormat:
    """The format called `name`; UnknownTraceFormat lists the valid names otherwise."""
    try:
        return FORMATS[name]
    except KeyError:
        raise UnknownTraceFormat(
            f"unknown trace format '{name}'; choose: {', '.join(format_names())}"
        ) from None


def _bare_name(path: Path) -> str:
    name = path.name.lower()
    return name[:-3] if name.endswith(".gz") else name


def detect_format(path: str | Path, *, for_writing: bool = False) -> str:
    """Format name from the file name (and, for an existing .csv, its first line).

    .mahimahi/.up/.down -> mahimahi; *delay*.txt -> leoreplayer-delay; .csv -> csv when its
    first line is a header, starlink-csv when it is numbers (new files: csv). A trailing .gz
    is ignored. Anything else: UnknownTraceFormat asking for an explicit format.
    """
    path = Path(path)
    name = _bare_name(path)
    for fmt in FORMATS.values():
        if any(name.endswith(s) for s in fmt.suffixes):
            return fmt.name
    if name.endswith(".txt") and "delay" in name:
        return "leoreplayer-delay"
    if name.endswith(".csv"):
        if for_writing or not path.exists():
            return "csv"
        first = next((ln for ln in read_text(path).splitlines() if ln.strip()), "")
        letters = first.lower().replace("e", "")  # 'e' may be an exponent
        if first.lstrip().startswith("#") or any(c.isalpha() for c in letters):
            return "csv"
        return "starlink-csv"
    raise UnknownTraceFormat(
        f"cannot tell the trace format of '{path}' from its name; give one explicitly: "
        f"{', '.join(format_names())}"
    )


def read_trace(path: str | Path, fmt: str | None = None,
               options: FormatOptions | None = None) -> Trace:
    """Read a trace file (gzip or not); `fmt` None means detect it from the name.

    meta gets source, format and sha256 so runs can identify the trace by hash.
    Raises TraceFormatError (file, line, problem) or UnknownTraceFormat.
    """
    path = Path(path)
    name = fmt if fmt is not None else detect_format(path)
    trace_format = get_format(name)
    if not path.is_file():
        raise TraceFormatError("no such file", path=path)
    trace = trace_format.read(path, options or FormatOptions())
    trace.meta.update({"source": str(path), "format": name, "sha256": sha256_file(path)})
    return trace


def write_trace(trace: Trace, path: str | Path, fmt: str | None = None,
                options: FormatOptions | None = None) -> str:
    """Write `trace` in `fmt` (default: from the name; .gz compresses). Returns the format."""
    path = Path(path)
    name = fmt if fmt is not None else detect_format(path, for_writing=True)
    get_format(name).write(trace, path, options or FormatOptions())
    return name
