"""Runs host commands (argv lists, never a shell) and raises CommandError with everything needed.

Owns process spawning for the testbed's system code; code that touches the host receives a
`Runner` in its constructor (STYLE §5) so tests can hand in a fake. Also knows how to identify a
process across pid reuse (`process_start_ticks`).
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from testbed.errors import SystemRequirementError, TestbedError

_OUTPUT_LIMIT_CHARS = 4000


class CommandError(TestbedError):
    """A command failed: prints the command line, exit status, stdout and stderr."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        *,
        reason: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = reason if reason is not None else f"exited with status {returncode}"
        super().__init__(
            f"command `{_short(shlex.join(self.argv))}` {status}\n"
            f"stdout: {_short(stdout.strip()) or '(empty)'}\n"
            f"stderr: {_short(stderr.strip()) or '(empty)'}"
        )


class CommandTimeoutError(CommandError):
    """A command ran past its time limit and was killed."""


def _short(text: str) -> str:
    if len(text) <= _OUTPUT_LIMIT_CHARS:
        return text
    half = _OUTPUT_LIMIT_CHARS // 2
    return f"{text[:half]} ... [{len(text) - _OUTPUT_LIMIT_CHARS} chars cut] ... {text[-half:]}"


@dataclass(frozen=True)
class Completed:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner:
    """Runs commands on this host. Replace with a fake in unit tests."""

    def __init__(self, *, default_timeout_s: float = 300.0) -> None:
        self.default_timeout_s = default_timeout_s

    def which(self, name: str) -> str | None:
        """Full path of a binary on PATH, or None."""
        return shutil.which(name)

    def require(self, name: str, *, hint: str) -> str:
        """Full path of a binary; SystemRequirementError naming it and `hint` when missing."""
        path = self.which(name)
        if path is None:
            raise SystemRequirementError(f"binary '{name}' not found on PATH; {hint}")
        return path

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout_s: float | None = None,
        env: Mapping[str, str] | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> Completed:
        """Run `argv` to completion; CommandError when it fails and `check` is set."""
        argv = [str(a) for a in argv]
        limit_s = self.default_timeout_s if timeout_s is None else timeout_s
        try:
            proc = subprocess.run(
                argv,
                input=input,
                capture_output=True,
                text=True,
                timeout=limit_s,
                env=None if env is None else dict(env),
                check=False,
                preexec_fn=preexec_fn,  # noqa: PLW1509 - joins a cgroup before exec
            )
        except FileNotFoundError as exc:
            raise SystemRequirementError(f"binary '{argv[0]}' not found: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeoutError(
                argv, None, _text(exc.stdout), _text(exc.stderr),
                reason=f"did not finish within {limit_s:.1f} s (killed)",
            ) from exc
        done = Completed(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise CommandError(argv, proc.returncode, proc.stdout, proc.stderr)
        return done

    def spawn(
        self,
        argv: Sequence[str],
        *,
        preexec_fn: Callable[[], None] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.DEVNULL,
        stderr: int | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        new_session: bool = True,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in the background (own session by default, so its group can be killed)."""
        argv = [str(a) for a in argv]
        try:
            return subprocess.Popen(  # noqa: S603 - argv list, no shell
                argv,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                env=None if env is None else dict(env),
                preexec_fn=preexec_fn,  # noqa: PLW1509 - joins a cgroup before exec
                start_new_session=new_session,
            )
        except FileNotFoundError as exc:
            raise SystemRequirementError(f"binary '{argv[0]}' not found: {exc}") from exc


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def process_start_ticks(pid: int) -> int | None:
    """The process's start time (clock ticks since boot, /proc/PID/stat field 22), None if gone.

    A pid plus its start time names one process for good: a recycled pid has another start time.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return int(rest[19])


def process_state(pid: int) -> str | None:
    """The one-letter state of a process (R, S, Z, ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    return raw[raw.rindex(")") + 2 :].split()[0]


def process_alive(pid: int, start_ticks: int) -> bool:
    """True while the process `pid` that started at `start_ticks` exists and is not a zombie."""
    if process_start_ticks(pid) != start_ticks:
        return False
    return process_state(pid) not in (None, "Z", "X")
