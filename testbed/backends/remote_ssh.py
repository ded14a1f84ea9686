"""SSH sessions to lab hosts (paramiko): strict host-key checking, argv-quoted commands, SFTP.

Owns connecting (key file + the inventory's known_hosts, RejectPolicy: unknown or changed host
keys are refused), running an argv on the host (each word quoted with shlex, so no word is ever
read by the remote shell as syntax), copying files both ways, and the typed errors naming
`host (address:port)`. Knows nothing of agents, runs or the ledger (testbed.backends.remote).
"""

from __future__ import annotations

import shlex
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.backends.base import NodeBackendError
from testbed.sysrun import Completed

_OUTPUT_LIMIT_CHARS = 2000


class RemoteError(NodeBackendError):
    """Something on or on the way to a remote host failed (the message names the host)."""


class HostUnreachableError(RemoteError):
    """No SSH connection could be made (timeout, refused, no route)."""


class HostKeyError(RemoteError):
    """The host's key is not in known_hosts, or differs from it (possible impostor)."""


class AuthenticationRefusedError(RemoteError):
    """The host refused our key (or the key file is missing or unreadable)."""


class RemoteCommandError(RemoteError):
    """A remote command failed: names host, command, status, stdout and stderr."""

    def __init__(self, host: str, argv: Sequence[str], status: int | None, stdout: str,
                 stderr: str, *, reason: str | None = None) -> None:
        self.host, self.argv, self.status = host, list(argv), status
        self.stdout, self.stderr = stdout, stderr
        what = reason or f"exited with status {status}"
        super().__init__(f"host {host}: `{_cut(shlex.join(self.argv))}` {what}\n"
                         f"stdout: {_cut(stdout.strip()) or '(empty)'}\n"
                         f"stderr: {_cut(stderr.strip()) or '(empty)'}")


def _cut(text: str) -> str:
    return text if len(text) <= _OUTPUT_LIMIT_CHARS else text[:_OUTPUT_LIMIT_CHARS] + " [...]"


@dataclass(frozen=True)
class SshTarget:
    """Everything needed to reach a host again, also from a ledger entry alone."""

    host: str
    address: str
    port: int
    user: str
    key_path: str
    known_hosts: str
    connect_timeout_s: float = 10.0

    @property
    def where(self) -> str:
        addr = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.host} ({self.user}@{addr}:{self.port})"

    def to_details(self) -> dict[str, Any]:
        """For ledger entries (paths and names only: no secret is ever recorded)."""
        return {f"ssh_{k}": v for k, v in asdict(self).items()}

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> SshTarget:
        return cls(**{k.removeprefix("ssh_"): v for k, v in details.items()
                      if k.startswith("ssh_")})

    @classmethod
    def from_host(cls, host: Any, *, connect_timeout_s: float = 10.0) -> SshTarget:
        """From a testbed.inventory.InventoryHost."""
        return cls(host.name, host.address, host.port, host.user, str(host.key_path),
                   str(host.known_hosts), connect_timeout_s)


def connect(target: SshTarget) -> SshSession:
    """Open an SSH session; typed errors for each way it fails (none leaves a connection)."""
    import paramiko

    key = Path(target.key_path)
    if not key.is_file():
        raise AuthenticationRefusedError(f"host {target.where}: key file {key} not found")
    known = Path(target.known_hosts)
    if not known.is_file():
        raise HostKeyError(f"host {target.where}: known_hosts file {known} not found; host-key "
                           "checking is mandatory (add the host's key with ssh-keyscan and "
                           "compare its fingerprint)")
    client = paramiko.SSHClient()
    try:
        client.load_host_keys(str(known))
    except (OSError, paramiko.SSHException) as exc:
        client.close()
        raise HostKeyError(f"host {target.where}: cannot read known_hosts {known}: {exc}") from exc
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(target.address, port=target.port, username=target.user,
                       key_filename=str(key), look_for_keys=False, allow_agent=False,
                       timeout=target.connect_timeout_s,
                       # below `timeout`: paramiko's negotiation wait ends at `timeout` without
                       # an error, so a silent host must fail on the banner first
                       banner_timeout=0.8 * target.connect_timeout_s,
                       auth_timeout=target.connect_timeout_s)
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise HostKeyError(
            f"host {target.where}: host key CHANGED (got {exc.key.get_name()} "
            f"{exc.key.get_fingerprint().hex()}, known_hosts {known} has "
            f"{exc.expected_key.get_fingerprint().hex()}); refusing to connect") from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise AuthenticationRefusedError(
            f"host {target.where}: key {key} refused ({exc})") from None
    except TimeoutError as exc:
        client.close()
        raise HostUnreachableError(f"host {target.where}: no answer within "
                                   f"{target.connect_timeout_s:g} s ({exc or 'timeout'})") from None
    except paramiko.SSHException as exc:
        client.close()
        if "not found in known_hosts" in str(exc):
            raise HostKeyError(f"host {target.where}: host key unknown (not in {known}); "
                               "add it with ssh-keyscan after checking its fingerprint") from None
        if "banner" in str(exc) or "No existing session" in str(exc):
            raise HostUnreachableError(f"host {target.where}: no SSH answer within "
                                       f"{target.connect_timeout_s:g} s ({exc})") from None
        raise HostUnreachableError(f"host {target.where}: SSH failed: {exc}") from None
    except OSError as exc:  # refused, no route, DNS (NoValidConnectionsError is an OSError)
        client.close()
        raise HostUnreachableError(f"host {target.where}: cannot connect: {exc}") from None
    return SshSession(target, client)


def remote_command(argv: Sequence[str], *, cwd: str | None = None,
                   env: Mapping[str, str] | None = None) -> str:
    """The command line sent to the remote shell: every word quoted, nothing interpolated."""
    words = list(argv)
    if env:
        words = ["env", *(f"{k}={v}" for k, v in env.items()), *words]
    line = shlex.join(words)
    return f"cd {shlex.quote(cwd)} && {line}" if cwd else line


class SshSession:
    """One open SSH connection to one host. Close it (or use `with`)."""

    def __init__(self, target: SshTarget, client: Any) -> None:
        self.target = target
        self.client = client
        self._sftp: Any = None

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
            self._sftp = None
        self.client.close()

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, argv: Sequence[str], *, check: bool = True, timeout_s: float | None = 60.0,
            input: str | None = None, cwd: str | None = None,
            env: Mapping[str, str] | None = None) -> Completed:
        """Run `argv` on the host to completion (stdout and stderr read together)."""
        return self.run_line(remote_command(argv, cwd=cwd, env=env), argv=argv, check=check,
                             timeout_s=timeout_s, input=input)

    def run_line(self, line: str, *, argv: Sequence[str], check: bool = True,
                 timeout_s: float | None = 60.0, input: str | None = None) -> Completed:
        """Run an already quoted command line (built by `remote_command` or a constant)."""
        import paramiko

        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise HostUnreachableError(f"host {self.target.where}: connection lost")
        try:
            chan = transport.open_session(timeout=self.target.connect_timeout_s)
            chan.exec_command(line)
            if input is not None:
                chan.sendall(input.encode())
            chan.shutdown_write()
        except (paramiko.SSHException, OSError) as exc:
            raise HostUnreachableError(f"host {self.target.where}: {exc}") from None
        out, err = bytearray(), bytearray()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            while True:
                busy = False
                if chan.recv_ready():
                    out += chan.recv(65536)
                    busy = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    busy = True
                if chan.exit_status_ready() and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise RemoteCommandError(self.target.where, argv, None, out.decode(
                        "utf-8", "replace"), err.decode("utf-8", "replace"),
                        reason=f"did not finish within {timeout_s:.1f} s")
                if not busy:
                    time.sleep(0.002)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        done = Completed(tuple(argv), status, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"))
        if check and status != 0:
            raise RemoteCommandError(self.target.where, argv, status, done.stdout, done.stderr)
        return done

    # --- files -----------------------------------------------------------------------------

    def sftp(self) -> Any:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def put_tree(self, local: Path, remote: str, *, skip: Sequence[str] = ("__pycache__",)) \
            -> int:
        """Copy folder `local` to `remote` (created); returns the number of files copied."""
        sftp = self.sftp()
        count = 0
        self._mkdir(remote)
        for path in sorted(local.rglob("*")):
            rel = path.relative_to(local)
            if any(part in skip for part in rel.parts) or path.suffix == ".pyc":
                continue
            dest = f"{remote}/{rel.as_posix()}"
            if path.is_dir():
                self._mkdir(dest)
            elif path.is_file():
                sftp.put(str(path), dest)
                count += 1
        return count

    def put_file(self, local: Path, remote: str, *, mode: int | None = None) -> None:
        """Copy one file; with `mode`, the file gets it before any byte is written."""
        sftp = self.sftp()
        if mode is None:
            sftp.put(str(local), remote)
            return
        with sftp.open(remote, "wb") as fh:
            fh.chmod(mode)
            fh.write(local.read_bytes())

    def _mkdir(self, remote: str) -> None:
        try:
            self.sftp().mkdir(remote)
        except OSError:
            if not self.is_dir(remote):
                raise

    def is_dir(self, remote: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp().stat(remote).st_mode or 0)
        except FileNotFoundError:
            return False

    def get(self, remote: str, local: Path) -> int:
        """Copy a remote file or folder (recursively) to `local`; returns files copied."""
        sftp = self.sftp()
        try:
            st = sftp.stat(remote)
        except FileNotFoundError:
            raise RemoteError(f"host {self.target.where}: {remote} does not exist") from None
        if not stat.S_ISDIR(st.st_mode or 0):
            local.parent.mkdir(parents=True, exist_ok=True)
            sftp.get(remote, str(local))
            return 1
        local.mkdir(parents=True, exist_ok=True)
        count = 0
        for attr in sftp.listdir_attr(remote):
            count += self.get(f"{remote}/{attr.filename}", local / attr.filename)
        return count
