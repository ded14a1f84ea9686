"""Where things live: the shared real data (`$TESTBED_DATA`, else `../shared/data` beside the
repo) and the cache of built artefacts (`$TESTBED_CACHE`, else the runs folder's `.cache`)."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The real-data folder (traces, TLEs, images); never copied into the repository."""
    env = os.environ.get("TESTBED_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def cache_dir(default: Path) -> Path:
    """Where built artefacts shared across runs live (VM images, the CPU calibration, wheel
    houses): `$TESTBED_CACHE`, else `default` (the runs folder's `.cache`)."""
    env = os.environ.get("TESTBED_CACHE")
    return Path(env).expanduser().resolve() if env else Path(default)
