"""The hand-written Prometheus exposition, checked by Prometheus' own `promtool`."""

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


def test_values_labels_and_escaping() -> None:
    text = filled().render()
    assert 'leo_node_bytes_sent_total{node="sat1",peer="10.0.0.1:7000"} 2000\n' in text
    assert 'leo_node_uptime_seconds{node="sat1"} 12.5\n' in text
    assert r'peer="we\"ird\\na\nme"' in text
    assert "# TYPE leo_node_bytes_sent_total counter\n" in text
    # an unlabelled family with no sample still exposes 0; a labelled one only its header
    assert 'leo_node_uptime_seconds{node="x"} 0\n' in Metrics({"node": "x"}).render()


def test_promtool_accepts_the_exposition() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("binary 'promtool' not found on PATH (Debian package prometheus)")
    proc = subprocess.run(["promtool", "check", "metrics"], input=filled().render(),
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
