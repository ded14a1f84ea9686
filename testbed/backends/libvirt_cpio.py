"""Writes Linux initramfs archives (cpio "newc" format) without the `cpio` binary.

Owns the archive format only: a base guest root packed once (gzip) and the small per-node
archive appended to it at boot. Linux unpacks concatenated archives in order, later entries
replacing earlier ones, which is what lets one cached base serve every node. Does not decide
what goes into an archive (testbed.backends.libvirt_image and libvirt_guest do).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from testbed.errors import TestbedError

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class ArchiveError(TestbedError):
    """An initramfs entry cannot be written (names the entry and what was wrong)."""


@dataclass(frozen=True)
class Member:
    """One archive entry: `name` relative to the guest root ("etc/testbed/node.env").

    `data` for regular files, `target` for symlinks, neither for directories."""

    name: str
    mode: int
    data: bytes | None = None
    target: str | None = None
    mtime_s: int = 0

    def __post_init__(self) -> None:
        if not self.name or self.name.startswith("/") or ".." in Path(self.name).parts:
            raise ArchiveError(f"archive member {self.name!r}: expected a relative path "
                               "without '..'")


class NewcWriter:
    """Streams members into a newc archive (`write_tree` for a whole directory)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._written = 0

    def _emit(self, name: str, mode: int, body: bytes, *, mtime_s: int = 0, nlink: int = 1,
              uid: int = 0, gid: int = 0) -> None:
        encoded = name.encode() + b"\0"
        fields = [self._ino, mode, uid, gid, nlink, mtime_s, len(body), 0, 0, 0, 0,
                  len(encoded), 0]
        self._ino += 1
        header = _MAGIC + b"".join(f"{v:08x}".encode() for v in fields)
        self._write(header + encoded)
        self._pad()
        self._write(body)
        self._pad()

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _pad(self) -> None:
        rem = self._written % 4
        if rem:
            self._write(b"\0" * (4 - rem))

    def add(self, member: Member) -> None:
        """Add one member (its parent directories must come earlier in the archive)."""
        if member.target is not None:
            self._emit(member.name, stat.S_IFLNK | 0o777, member.target.encode(),
                       mtime_s=member.mtime_s)
        elif member.data is not None:
            self._emit(member.name, stat.S_IFREG | (member.mode & 0o7777), member.data,
                       mtime_s=member.mtime_s)
        else:
            self._emit(member.name, stat.S_IFDIR | (member.mode & 0o7777), b"",
                       mtime_s=member.mtime_s, nlink=2)

    def add_many(self, members: Iterable[Member]) -> None:
        for m in members:
            self.add(m)

    def write_tree(self, root: Path) -> int:
        """Add every directory, file and symlink under `root` (owners kept, device nodes
        skipped: the guest mounts devtmpfs). Returns the number of entries."""
        count = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            base = Path(dirpath)
            rel_dir = base.relative_to(root)
            if str(rel_dir) != ".":
                self._entry(base, str(rel_dir))
                count += 1
            for name in sorted(filenames) + [d for d in dirnames if (base / d).is_symlink()]:
                path = base / name
                if self._entry(path, str(rel_dir / name) if str(rel_dir) != "." else name):
                    count += 1
        return count

    def _entry(self, path: Path, name: str) -> bool:
        st = path.lstat()
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            body = os.readlink(path).encode()
        elif stat.S_ISREG(mode):
            body = path.read_bytes()
        elif stat.S_ISDIR(mode):
            body = b""
        else:  # sockets, fifos, device nodes: the guest's devtmpfs provides /dev
            return False
        self._emit(name, mode, body, mtime_s=int(st.st_mtime), uid=st.st_uid, gid=st.st_gid,
                   nlink=2 if stat.S_ISDIR(mode) else 1)
        return True

    def close(self) -> None:
        """Write the trailer (and pad to 512 bytes, as cpio does)."""
        self._emit(_TRAILER, 0, b"")
        rem = self._written % 512
        if rem:
            self._write(b"\0" * (512 - rem))


def members_with_parents(members: Iterable[Member], *, dir_mode: int = 0o755) -> list[Member]:
    """`members` preceded by a directory entry for each parent they need, each parent once."""
    out: list[Member] = []
    seen: set[str] = set()
    for m in members:
        parts = Path(m.name).parts
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in seen:
                seen.add(parent)
                out.append(Member(parent, dir_mode))
        if m.data is None and m.target is None:
            seen.add(m.name)
        out.append(m)
    return out


def read_names(data: bytes) -> list[str]:
    """The member names of an uncompressed newc archive (for tests and inspection)."""
    names: list[str] = []
    pos = 0
    while pos + 110 <= len(data):
        if data[pos:pos + 6] != _MAGIC:
            raise ArchiveError(f"newc archive: bad magic at byte {pos}, expected {_MAGIC!r}")
        fields = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        filesize, namesize = fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        pos = name_start + namesize
        pos += (-pos) % 4
        pos += filesize
        pos += (-pos) % 4
        if name == _TRAILER:
            break
        names.append(name)
    return names
