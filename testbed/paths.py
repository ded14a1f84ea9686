"""Where the shared real data lives: `$TESTBED_DATA`, else `../shared/data` beside the repo."""

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
