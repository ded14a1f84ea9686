"""The node's Prometheus exposition: prometheus-client's where installed, the standard-library
writer otherwise (boards that run the agent alone); both checked by Prometheus' `promtool`."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from nodes.errors import NodeError
from nodes.metrics import Metrics


def filled() -> Metrics:
    m = Metrics({"node": "sat1"})
    m.set("leo_node_info", 1, role="satellite")
    m.set("leo_node_uptime_seconds", 12.5)
    m.inc("leo_node_bytes_sent_total", 1500, peer="10.0.0.1:7000")
    m.inc("leo_node_bytes_sent_total", 500, peer="10.0.0.1:7000")
    m.inc("leo_node_files_rejected_total", peer='we"ird\\na\nme', reason="hash-mismatch")
    return m


def sample(text: str, series: str) -> float:
    """The value of the sample whose name and labels are `series` (e.g. 'x{a="b"}')."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split(" ")[1])
    raise AssertionError(f"no sample {series} in:\n{text}")


RENDERERS = [pytest.param(Metrics.render, id="prometheus-client"),
             pytest.param(Metrics.render_text, id="standard-library")]


@pytest.mark.parametrize("render", RENDERERS)
def test_values_labels_and_escaping(render) -> None:  # noqa: ANN001
    text = render(filled())
    assert sample(text, 'leo_node_bytes_sent_total{node="sat1",peer="10.0.0.1:7000"}') == 2000
    assert sample(text, 'leo_node_uptime_seconds{node="sat1"}') == 12.5
    assert r'peer="we\"ird\\na\nme"' in text
    assert "# TYPE leo_node_bytes_sent_total counter\n" in text
    # an unlabelled family with no sample still exposes 0; a labelled one only its header
    assert sample(render(Metrics({"node": "x"})), 'leo_node_uptime_seconds{node="x"}') == 0


def test_the_agent_renders_with_prometheus_client_where_installed() -> None:
    pytest.importorskip("prometheus_client", reason="prometheus-client not installed")
    m = filled()
    assert m.render() != m.render_text()  # not the fallback
    assert sample(m.render(), 'leo_node_bytes_sent_total{node="sat1",peer="10.0.0.1:7000"}') \
        == sample(m.render_text(), 'leo_node_bytes_sent_total{node="sat1",peer="10.0.0.1:7000"}')


@pytest.mark.parametrize("render", RENDERERS)
def test_promtool_accepts_the_exposition(render) -> None:  # noqa: ANN001
    if shutil.which("promtool") is None:
        pytest.skip("binary 'promtool' not found on PATH (Debian package prometheus)")
    proc = subprocess.run(["promtool", "check", "metrics"], input=render(filled()),
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "" and proc.stderr.strip() == ""  # not even lint warnings


def test_misuse_is_loud() -> None:
    m = Metrics()
    with pytest.raises(NodeError, match="not declared"):
        m.inc("leo_node_nope_total")
    with pytest.raises(NodeError, match=r"labels \['host'\], expected \['peer'\]"):
        m.inc("leo_node_bytes_sent_total", 1, host="x")
    with pytest.raises(NodeError, match="expected >= 0"):
        m.inc("leo_node_bytes_sent_total", -1, peer="x")


def test_declared_workload_family_renders_and_passes_promtool() -> None:
    from nodes.metrics import FAMILIES, declare

    tiles = declare("leo_dlrc_tiles_sent_total", "counter", "Tiles downlinked.", ("peer",))
    latency = declare("leo_vlm_answer_seconds", "gauge", "Last answer's latency.", (),
                      "seconds")
    m = Metrics({"node": "sat1"}, families=FAMILIES + (tiles,))
    m.add_family(latency)
    m.add_family(latency)  # the same declaration twice is harmless
    m.inc("leo_dlrc_tiles_sent_total", 3, peer="gs")
    m.set("leo_vlm_answer_seconds", 0.25)
    text = m.render()
    assert sample(text, 'leo_dlrc_tiles_sent_total{node="sat1",peer="gs"}') == 3
    assert sample(text, 'leo_vlm_answer_seconds{node="sat1"}') == 0.25
    assert [f.name for f in m.families()][-2:] == ["leo_dlrc_tiles_sent_total",
                                                     "leo_vlm_answer_seconds"]
    if shutil.which("promtool") is not None:
        proc = subprocess.run(["promtool", "check", "metrics"], input=text,
                              capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_declare_rejects_unconventional_families() -> None:
    from nodes.metrics import declare

    with pytest.raises(NodeError, match="ending in _total"):
        declare("leo_x_tiles", "counter", "Tiles.")
    with pytest.raises(NodeError, match="expected the name to end in _seconds"):
        declare("leo_x_latency", "gauge", "Latency.", unit="seconds")
    with pytest.raises(NodeError, match="kind 'summary'"):
        declare("leo_x_y", "summary", "Y.")
    with pytest.raises(NodeError, match="label names"):
        declare("leo_x_y", "gauge", "Y.", ("bad-label",))
    m = Metrics()
    with pytest.raises(NodeError, match="declared twice"):
        m.add_family(declare("leo_node_uptime_seconds", "gauge", "Other help."))
