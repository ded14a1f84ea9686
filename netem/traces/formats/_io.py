"""Shared file plumbing for trace formats: transparent gzip, numbered lines, strict numbers.

Every problem becomes a TraceFormatError naming the file and 1-based line; nothing is skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import math
from pathlib import Path

from netem.errors import TraceFormatError

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(path: Path) -> bool:
    """True when the file starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as fh:
        return fh.read(2) == _GZIP_MAGIC


def read_text(path: Path) -> str:
    """The whole file as text, gunzipped when it is gzip; errors name the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TraceFormatError(f"cannot read: {exc.strerror or exc}", path=path) from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TraceFormatError(f"corrupt gzip data: {exc}", path=path) from exc
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(
            f"not a text file (byte {exc.start} is not UTF-8)", path=path
        ) from exc


def read_lines(path: Path, what: str) -> list[str]:
    """Lines of a text trace; trailing blank lines at the very end are not data.

    Raises TraceFormatError for an empty file, naming what the format expects (`what`).
    """
    lines = read_text(path).splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise TraceFormatError(f"empty file, expected {what}", path=path)
    return lines


def write_text(path: Path, text: str) -> None:
    """Write text, gzip-compressed when the name ends in .gz (reproducible: mtime 0)."""
    data = text.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise TraceFormatError(f"cannot write: {exc.strerror or exc}", path=path) from exc


def sha256_file(path: Path) -> str:
    """Hex sha256 of the file's bytes as stored (traces are identified by hash)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_number(token: str, *, path: Path, line: int, what: str) -> float:
    """A finite, non-negative number, or a TraceFormatError saying what was wrong."""
    text = token.strip()
    if not text:
        raise TraceFormatError(f"{what} is empty, expected a number", path=path, line=line)
    try:
        value = float(text)
    except ValueError:
        raise TraceFormatError(
            f"{what} '{text}' is not a number", path=path, line=line
        ) from None
    if not math.isfinite(value):
        raise TraceFormatError(f"{what} '{text}' is not finite", path=path, line=line)
    if value < 0:
        raise TraceFormatError(f"{what} {text} is negative, expected >= 0", path=path, line=line)
    return value


def format_number(value: float) -> str:
    """Shortest text that reads back to exactly the same float (integers without '.0')."""
    v = float(value)
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def split_fields(line: str) -> list[str]:
    """Fields of a CSV or whitespace-separated line."""
    return line.split(",") if "," in line else line.split()
