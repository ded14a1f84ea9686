"""Builds the satellite guest image (kernel + base initramfs) from Debian packages, cached.

Owns the recipe (suite, packages, kernel package, the guest's /init and sshd_config from
vm_images/guest/), its hash (the cache key), and the build: `debootstrap --variant=minbase`
into a work folder, the distribution's cloud kernel (`apt-get download` + `dpkg -x`) with only
the virtio modules the guest loads, the whole root packed as one gzip newc initramfs (no loop
mounts, no disk image), sha256 of kernel and initramfs written beside them for the run
manifest. Does not start guests (testbed.backends.libvirt) nor add per-node files
(testbed.backends.libvirt_guest appends those at boot).

    image = build_image(cache_dir)          # ~1-2 min the first time, then a cache hit
    image.kernel_path, image.initramfs_path, image.kernel_sha256
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from testbed.backends.libvirt_cpio import NewcWriter
from testbed.errors import SystemRequirementError, TestbedError

RECIPE_VERSION = 1
GUEST_DIR = Path(__file__).resolve().parents[2] / "vm_images" / "guest"
IMAGE_FILE = "image.json"
DEFAULT_PACKAGES = ("python3", "iproute2", "kmod", "openssh-server", "iputils-ping")
DEFAULT_MODULES = ("virtio_pci", "virtio_net")
STRIP_DIRS = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
              "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists", "var/cache/debconf")
Progress = Callable[[str], None]


class ImageBuildError(TestbedError):
    """Building the guest image failed (names the step and what to do)."""


@dataclass(frozen=True)
class Recipe:
    """What goes into a guest image; its hash names the cache entry."""

    suite: str = "bookworm"
    mirror: str | None = None  # None: the Debian mirror of this host's apt sources
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    kernel_package: str = "linux-image-cloud-amd64"
    modules: tuple[str, ...] = DEFAULT_MODULES
    gzip_level: int = 6

    def files(self) -> dict[str, bytes]:
        """The recipe's own files (guest /init, sshd_config), by guest path."""
        return {"init": (GUEST_DIR / "init").read_bytes(),
                "etc/ssh/sshd_config": (GUEST_DIR / "sshd_config").read_bytes()}

    def key(self, mirror: str) -> str:
        """sha256 of everything that changes the image (mirror included)."""
        h = hashlib.sha256()
        spec = asdict(self) | {"mirror": mirror, "recipe_version": RECIPE_VERSION}
        h.update(json.dumps(spec, sort_keys=True).encode())
        for name, data in sorted(self.files().items()):
            h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
        return h.hexdigest()


@dataclass(frozen=True)
class GuestImage:
    """A built image: kernel, base initramfs, their sha256 and what the guest must load."""

    key: str
    directory: Path
    kernel_path: Path
    initramfs_path: Path
    kernel_sha256: str
    initramfs_sha256: str
    kernel_version: str
    kernel_package: str
    modules: tuple[str, ...]
    suite: str
    mirror: str
    packages: tuple[str, ...]
    build_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def manifest(self) -> dict[str, object]:
        """What a run manifest records about the image (inputs by hash)."""
        return {"key": self.key, "kernel": self.kernel_path.name,
                "kernel_sha256": self.kernel_sha256, "initramfs": self.initramfs_path.name,
                "initramfs_sha256": self.initramfs_sha256, "kernel_version": self.kernel_version,
                "kernel_package": self.kernel_package, "suite": self.suite,
                "mirror": self.mirror, "packages": list(self.packages)}

    @classmethod
    def load(cls, directory: Path) -> GuestImage:
        """Read `directory/image.json`; ImageBuildError when it is missing or damaged."""
        path = directory / IMAGE_FILE
        try:
            raw = json.loads(path.read_text())
            return cls(key=raw["key"], directory=directory,
                       kernel_path=directory / raw["kernel"],
                       initramfs_path=directory / raw["initramfs"],
                       kernel_sha256=raw["kernel_sha256"],
                       initramfs_sha256=raw["initramfs_sha256"],
                       kernel_version=raw["kernel_version"],
                       kernel_package=raw["kernel_package"], modules=tuple(raw["modules"]),
                       suite=raw["suite"], mirror=raw["mirror"],
                       packages=tuple(raw["packages"]), build_s=float(raw.get("build_s", 0)))
        except (OSError, ValueError, KeyError) as exc:
            raise ImageBuildError(f"guest image {directory}: cannot read {IMAGE_FILE} ({exc}); "
                                  "delete the folder to rebuild") from exc


def _stderr_progress(msg: str) -> None:
    print(f"[vm-image] {msg}", file=sys.stderr, flush=True)


def image_dir(cache_dir: Path, recipe: Recipe, mirror: str) -> Path:
    return Path(cache_dir) / "vm-images" / recipe.key(mirror)[:16]


def build_image(cache_dir: str | Path, recipe: Recipe | None = None, *,
                progress: Progress = _stderr_progress, force: bool = False) -> GuestImage:
    """The guest image of `recipe`, built unless cached under `cache_dir/vm-images/<key>`.

    Needs root, debootstrap, apt-get, dpkg and depmod, and a Debian mirror that answers.
    A lock file serialises concurrent builds of the same recipe. Raises ImageBuildError or
    SystemRequirementError naming the step.
    """
    recipe = recipe or Recipe()
    if os.geteuid() != 0:
        raise SystemRequirementError("building the guest image needs root (debootstrap)")
    for binary, hint in (("debootstrap", "apt-get install debootstrap"),
                         ("apt-get", "a Debian or Ubuntu host"), ("dpkg", "a Debian host"),
                         ("depmod", "apt-get install kmod")):
        if shutil.which(binary) is None:
            raise SystemRequirementError(f"building the guest image: binary '{binary}' not "
                                         f"found on PATH; {hint}")
    mirror = recipe.mirror or apt_mirror()
    out = image_dir(Path(cache_dir), recipe, mirror)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f"{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / IMAGE_FILE).exists() and not force:
            progress(f"cached image {out}")
            return GuestImage.load(out)
        check_mirror(mirror, recipe.suite)
        t0 = time.monotonic()
        work = out.parent / f"{out.name}.work"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(mode=0o755)
        try:
            image = _build(recipe, mirror, work, out, progress)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        image = GuestImage(**{**image.__dict__, "build_s": time.monotonic() - t0})
        _write_image_json(image)
        progress(f"built {out} in {image.build_s:.0f} s")
        return image


def apt_mirror(sources: Sequence[Path] | None = None) -> str:
    """The first Debian archive URI in this host's apt sources (deb822 or one-line)."""
    if sources is None:
        paths = [Path("/etc/apt/sources.list"),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    else:
        paths = list(sources)
    for path in paths:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)
        uris += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+\S+", text, re.MULTILINE)
        for uri in uris:
            if re.search(r"/debian/?$", uri):
                return uri.rstrip("/") + "/"
    raise ImageBuildError("no Debian mirror (a URI ending in /debian) in the apt sources "
                          f"{', '.join(str(p) for p in paths)}; pass Recipe(mirror=...)")


def check_mirror(mirror: str, suite: str, *, timeout_s: float = 15.0) -> None:
    """ImageBuildError unless `mirror` serves `dists/<suite>/Release`."""
    url = f"{mirror.rstrip('/')}/dists/{suite}/Release"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                    timeout=timeout_s) as resp:
            if resp.status != 200:
                raise ImageBuildError(f"mirror {mirror}: {url} answered {resp.status}, "
                                      "expected 200")
    except (urllib.error.URLError, OSError) as exc:
        raise ImageBuildError(f"mirror {mirror} unreachable ({url}: {exc}); the guest root "
                              "is built from Debian packages: give a reachable mirror") from exc


def _run(argv: Sequence[str], step: str, *, cwd: Path | None = None,
         log: Path | None = None, timeout_s: float = 900) -> str:
    try:
        if log is not None:
            with open(log, "wb") as fh:
                proc = subprocess.run(list(argv), cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                      timeout=timeout_s, check=False)
            output = log.read_text(errors="replace")
        else:
            proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
            output = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{step}: `{' '.join(argv)}` ran past {timeout_s:.0f} s") from exc
    if proc.returncode != 0:
        raise ImageBuildError(f"{step}: `{' '.join(argv)}` exited with {proc.returncode}:\n"
                              + output[-3000:])
    return output


def _build(recipe: Recipe, mirror: str, work: Path, out: Path,
           progress: Progress) -> GuestImage:
    kdeb = _download_kernel(recipe, work, progress)
    root = work / "root"
    progress(f"debootstrap {recipe.suite} ({', '.join(recipe.packages)}) from {mirror} "
             "(about 1 min)")
    t0 = time.monotonic()
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(recipe.packages)}",
          recipe.suite, str(root), mirror], "debootstrap", log=work / "debootstrap.log",
         timeout_s=1800)
    progress(f"debootstrap done in {time.monotonic() - t0:.0f} s")
    kroot = work / "kernel"
    _run(["dpkg", "-x", str(kdeb), str(kroot)], "unpacking the kernel package")
    version, vmlinuz = _kernel_version(kroot)
    _install_modules(kroot, root, version, recipe.modules)
    _customise(root, recipe)
    out_tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(out_tmp, ignore_errors=True)
    out_tmp.mkdir()
    kernel_path = out_tmp / f"vmlinuz-{version}"
    shutil.copyfile(vmlinuz, kernel_path)
    progress(f"packing the root ({_du_mb(root)} MB) as a gzip initramfs")
    t0 = time.monotonic()
    initramfs = out_tmp / "initramfs-base.img"
    with open(initramfs, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=recipe.gzip_level,
                          mtime=0) as gz:
        writer = NewcWriter(gz)  # type: ignore[arg-type]
        n = writer.write_tree(root)
        writer.close()
    progress(f"packed {n} entries, {initramfs.stat().st_size >> 20} MB, in "
             f"{time.monotonic() - t0:.0f} s")
    shutil.rmtree(out, ignore_errors=True)
    out_tmp.rename(out)
    return GuestImage(
        key=recipe.key(mirror), directory=out, kernel_path=out / kernel_path.name,
        initramfs_path=out / initramfs.name,
        kernel_sha256=sha256_file(out / kernel_path.name),
        initramfs_sha256=sha256_file(out / initramfs.name), kernel_version=version,
        kernel_package=kdeb.name, modules=recipe.modules, suite=recipe.suite, mirror=mirror,
        packages=recipe.packages)


def _download_kernel(recipe: Recipe, work: Path, progress: Progress) -> Path:
    """`apt-get download` the concrete kernel package the meta package depends on."""
    deps = _run(["apt-cache", "depends", recipe.kernel_package], "resolving the kernel package")
    found = re.findall(r"Depends:\s*(linux-image-\S+)", deps)
    name = found[0] if found else recipe.kernel_package
    progress(f"downloading {name}")
    _run(["apt-get", "download", name], f"downloading {name} (apt-get update first?)",
         cwd=work)
    debs = sorted(work.glob(f"{name}_*.deb"))
    if not debs:
        raise ImageBuildError(f"apt-get download {name}: no .deb in {work}")
    return debs[-1]


def _kernel_version(kroot: Path) -> tuple[str, Path]:
    kernels = sorted((kroot / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise ImageBuildError(f"kernel package unpacked to {kroot} has no boot/vmlinuz-*")
    return kernels[-1].name.removeprefix("vmlinuz-"), kernels[-1]


def _install_modules(kroot: Path, root: Path, version: str, wanted: Sequence[str]) -> None:
    """Copy `wanted` modules and their dependencies into the guest root, then depmod."""
    src = kroot / "lib" / "modules" / version
    by_name = {p.name.split(".ko")[0].replace("-", "_"): p for p in src.rglob("*.ko*")}
    todo = [w.replace("-", "_") for w in wanted]
    chosen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in chosen:
            continue
        if name not in by_name:
            builtin = (src / "modules.builtin").read_text() if (src / "modules.builtin"
                                                               ).exists() else ""
            if re.search(rf"/{name.replace('_', '[_-]')}\.ko", builtin):
                continue  # built into this kernel
            raise ImageBuildError(f"kernel {version}: module {name!r} not found, expected it "
                                  "as a module or built in")
        chosen[name] = by_name[name]
        info = _run(["modinfo", "-F", "depends", str(by_name[name])], f"modinfo {name}")
        todo += [d.strip().replace("-", "_") for d in info.strip().split(",") if d.strip()]
    dst = root / "lib" / "modules" / version
    for path in chosen.values():
        target = dst / path.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    for meta in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (src / meta).exists():
            shutil.copyfile(src / meta, dst / meta)
    _run(["depmod", "-b", str(root), version], "depmod")


def _customise(root: Path, recipe: Recipe) -> None:
    """The recipe's files, no host keys (per node), root login by key only, docs stripped."""
    for name, data in recipe.files().items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "init").chmod(0o755)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    shadow = root / "etc" / "shadow"
    lines = shadow.read_text().splitlines()
    shadow.write_text("\n".join(
        re.sub(r"^root:[^:]*:", "root:*:", line) for line in lines) + "\n")
    for d in STRIP_DIRS:
        target = root / d
        if target.is_dir():
            shutil.rmtree(target)
            target.mkdir()
    for d in ("opt/testbed", "root/.ssh", "etc/testbed", "var/log/testbed"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "root" / ".ssh").chmod(0o700)


def _write_image_json(image: GuestImage) -> None:
    data = image.manifest() | {"modules": list(image.modules), "build_s": image.build_s}
    tmp = image.directory / f"{IMAGE_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(image.directory / IMAGE_FILE)
    for path, digest in ((image.kernel_path, image.kernel_sha256),
                         (image.initramfs_path, image.initramfs_sha256)):
        (path.parent / f"{path.name}.sha256").write_text(f"{digest}  {path.name}\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _du_mb(root: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if not p.is_symlink():
                total += p.stat().st_size
    return total >> 20
