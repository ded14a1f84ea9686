"""experiments/spaceverse/inprocess.py end to end on briefly trained models (mechanics only:
5 training steps give no meaningful accuracy)."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from nodes.models.vlm.data import load_samples
from nodes.models.vlm.train import TrainSettings, data_sha256, train_model
from nodes.spaceverse.pipeline import METHODS

SCRIPT = Path(__file__).resolve().parents[3] / "experiments/spaceverse/inprocess.py"


@pytest.fixture(scope="module")
def models_dir(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vlm")
    samples = load_samples(shared_data / "images", tasks=("rsvqa-lr",))
    for kind in ("onboard", "ground"):
        settings = TrainSettings(kind=kind, steps=5)
        prov = train_model(samples, settings, out / f"small-{kind}", log=lambda _: None)
        prov["data_sha256"] = data_sha256(samples)
        (out / f"small-{kind}" / "provenance.json").write_text(json.dumps(prov))
    return out


def test_main_writes_rows_and_summary(models_dir: Path, shared_data: Path,
                                      tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("sv_inprocess", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--data", str(shared_data), "--models", str(models_dir), "--per-task", "2",
                   "--calib-per-task", "3", "--out", str(tmp_path), "--name", "t",
                   "--timing", "paper", "--rate-mbps", "20"])
    assert rc == 0
    with open(tmp_path / "t-samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    summary = json.loads((tmp_path / "t-summary.json").read_text())
    assert summary["test_samples"] == 2 * 5                      # 2 per task, 5 tasks
    assert len(rows) == len(METHODS) * summary["test_samples"]
    assert {r["method"] for r in summary["by_method"]} == set(METHODS)
    assert summary["link"]["rate_bps"] == pytest.approx(20e6)
    assert all("qwen2-vl-7b" in r["timing_model"] for r in rows)
    assert summary["models"]["small-onboard"]["settings"]["steps"] == 5
