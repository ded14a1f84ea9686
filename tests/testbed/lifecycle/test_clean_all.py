"""`testbed clean-all` and `make clean`: every leftover run is torn down from its ledger
before run directories are deleted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from testbed.cli.main import main
from testbed.ledger import Ledger
from tests.conftest import require_binary, require_root

REPO = Path(__file__).resolve().parents[3]


def _leftover_run(root: Path, name: str) -> Path:
    """A run directory whose ledger lists one file the 'killed run' created."""
    root.mkdir(parents=True, exist_ok=True)
    made = root.parent / f"made-by-{name}"
    made.write_text("x")
    with Ledger(root / name / "ledger.jsonl") as ledger:
        ledger.record("file", str(made))
    return made


def test_clean_all_tears_down_every_leftover_run(tmp_path, capsys):
    require_root()
    root = tmp_path / "runs"
    made = [_leftover_run(root, "a"), _leftover_run(root / "nested", "b")]
    assert main(["clean-all", str(root)]) == 0
    assert not any(p.exists() for p in made)
    out = capsys.readouterr().out
    assert f"{root / 'a'}: removed 1" in out and f"{root / 'nested' / 'b'}: removed 1" in out
    assert main(["clean-all", str(root)]) == 0  # idempotent
    assert "already gone 1" in capsys.readouterr().out


def test_clean_all_without_runs_says_so(tmp_path, capsys):
    assert main(["clean-all", str(tmp_path / "absent")]) == 0
    assert "no run directories with a ledger" in capsys.readouterr().out


def test_make_clean_tears_down_then_removes_runs(tmp_path):
    require_root()
    require_binary("make")
    work = tmp_path / "checkout"
    made = _leftover_run(work / "runs", "a")
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    # the real CLI of this checkout, where the Makefile expects the venv's entry point
    (venv_bin / "testbed").write_text(
        f"#!/bin/sh\nexec {sys.executable} -m testbed.cli.main \"$@\"\n")
    (venv_bin / "testbed").chmod(0o755)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(["make", "-f", str(REPO / "Makefile"), "clean",
                           f"VENV={tmp_path / 'venv'}"], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not made.exists() and not (work / "runs").exists()
    assert "removed 1" in done.stdout
