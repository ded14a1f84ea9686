"""Report pieces without a run: a workload's hook adds its sections; rendering is
self-contained and escapes what it shows."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from testbed.observability.report import RunFiles, Section, render, report_hook, workload_sections


@pytest.fixture
def forget_hook():
    from testbed.observability import report

    yield
    report._HOOKS.pop("unit-test-workload", None)


def test_a_workload_hook_contributes_sections(tmp_path: Path, forget_hook: None) -> None:
    seen = {}

    @report_hook("unit-test-workload")
    def sections(run_dir: Path, results: dict) -> list[Section]:
        seen["args"] = (run_dir, dict(results))
        return [Section("Answers per satellite", "<p>42</p>", [b"\x89PNG fake bytes"])]

    files = RunFiles(tmp_path, {"run": "r", "scenario": {"workload": {
        "kind": "unit-test-workload"}}}, {"workload": {"files": 3}}, None, [], [], [], None)
    out = workload_sections(files)
    assert [s.title for s in out] == ["Workload: unit-test-workload", "Answers per satellite"]
    assert seen["args"] == (tmp_path, {"files": 3})
    page = render("Run report: <r>", out)
    assert "<title>Run report: &lt;r&gt;</title>" in page
    assert "data:image/png;base64," + base64.b64encode(b"\x89PNG fake bytes").decode() in page
    assert "<td>files</td><td>3</td>" in page
    assert "src='http" not in page and 'src="http' not in page
