"""Build (or find cached) the satellite guest image: `make vm-image` or
`python vm_images/build_image.py [--cache-dir DIR] [--force]`.

Prints the image folder and the sha256 of kernel and initramfs. The recipe lives in
testbed.backends.libvirt_image (packages, kernel, modules) and vm_images/guest/ (/init,
sshd_config); changing either changes the cache key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from testbed.backends.libvirt_image import Recipe, build_image  # noqa: E402
from testbed.errors import TestbedError  # noqa: E402
from testbed.paths import REPO_ROOT  # noqa: E402


def default_cache_dir() -> Path:
    """$TESTBED_CACHE, else runs/.cache in the repository (where runs cache calibration)."""
    env = os.environ.get("TESTBED_CACHE")
    return Path(env) if env else REPO_ROOT / "runs" / ".cache"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    p.add_argument("--mirror", default=None, help="Debian mirror (default: the apt sources')")
    p.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = p.parse_args(argv)
    try:
        image = build_image(args.cache_dir, Recipe(mirror=args.mirror), force=args.force)
    except TestbedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"directory": str(image.directory), **image.manifest()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
