"""Python on a lab host: the version check, and the offline wheelhouse the agent installs from.

Owns `check_python` (the host's interpreter must be >= MIN_PYTHON; the error names host, path
and version) and `prepare_wheelhouse` (`pip download` on the orchestrator of the agent's
requirements plus pip itself, so boards without internet install with `--no-index`). Does not
deploy anything (testbed.backends.remote does).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.backends.base import NodeBackendError
from testbed.backends.remote_ssh import RemoteError, SshSession
from testbed.sysrun import Runner

MIN_PYTHON = (3, 11)
_VERSION = re.compile(r"Python (\d+)\.(\d+)(?:\.(\d+))?")


class RemotePythonError(RemoteError):
    """The host has no usable Python (missing, or older than MIN_PYTHON)."""


@dataclass(frozen=True)
class Wheelhouse:
    """A folder of wheels that installs `requirements` with `pip --no-index` (pip included)."""

    path: Path
    requirements: tuple[str, ...]

    def pip_wheel(self) -> Path:
        found = sorted(self.path.glob("pip-*.whl"))
        if not found:
            raise NodeBackendError(f"wheelhouse {self.path}: no pip wheel; prepare it with "
                                   "prepare_wheelhouse (which downloads pip too)")
        return found[-1]


def prepare_wheelhouse(requirements: Sequence[str], dest: Path, *, runner: Runner,
                       find_links: Path | None = None, python: str = sys.executable) -> Wheelhouse:
    """`pip download` the requirements and pip itself into `dest`, on the orchestrator, so boards
    without internet install with `--no-index`. `find_links`: a local folder of wheels to use
    instead of the package index (offline preparation)."""
    dest.mkdir(parents=True, exist_ok=True)
    argv = [python, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
            "--dest", str(dest)]
    if find_links is not None:
        argv += ["--no-index", "--find-links", str(find_links)]
    runner.run([*argv, "pip", *requirements], timeout_s=600)
    return Wheelhouse(dest, tuple(requirements))


def check_python(session: SshSession, host: Any) -> str:
    """The absolute path of the host's Python; RemotePythonError when missing or too old."""
    script = 'p=$(command -v "$0") || exit 127; echo "$p"; "$p" --version 2>&1'
    done = session.run(["sh", "-c", script, host.python], check=False, timeout_s=30)
    where = session.target.where
    if done.returncode == 127:
        raise RemotePythonError(f"host {where}: {host.python!r} not found on PATH; the agent "
                                f"needs Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]}")
    lines = done.stdout.strip().splitlines()
    match = _VERSION.search(done.stdout)
    if done.returncode != 0 or not lines or match is None:
        raise RemotePythonError(f"host {where}: cannot tell the version of {host.python!r} "
                                f"(status {done.returncode}): {done.stdout.strip()!r}")
    version = tuple(int(g or 0) for g in match.groups())
    if version[:2] < MIN_PYTHON:
        raise RemotePythonError(
            f"host {where}: {lines[0]} is Python {'.'.join(map(str, version))}, expected >= "
            f"{MIN_PYTHON[0]}.{MIN_PYTHON[1]} (install python3.11 and set `python:` in the "
            "inventory)")
    return lines[0]

