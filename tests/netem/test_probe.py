"""Capability probe: real qdisc creation in a throwaway namespace (root), its cache, its
cleanup, and the error when not root. Checked against an independent authority: iproute2's
`tc` asked to add the same qdiscs in its own throwaway namespace."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from pyroute2 import netns

from netem.errors import UnsupportedError
from netem.probe import QDISC_KINDS, Capabilities, probe_capabilities, probe_uncached
from tests.conftest import require_root


def _tc_can_add(kind: str) -> bool:
    """Does iproute2's tc manage to add `kind` on lo in a fresh namespace?"""
    if shutil.which("tc") is None or shutil.which("unshare") is None:
        pytest.skip("binaries 'tc' and 'unshare' are needed for the independent check")
    where = ["root"] if kind not in ("ingress", "clsact") else []
    args = ["rate", "1mbit", "burst", "10k", "limit", "10k"] if kind == "tbf" else []
    argv = ["unshare", "-n", "tc", "qdisc", "add", "dev", "lo", *where, kind, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    return out.returncode == 0


@pytest.mark.root
def test_probe_matches_iproute2_and_this_machine():
    require_root()
    caps = probe_uncached()
    for kind in QDISC_KINDS:
        assert caps.has(kind) == _tc_can_add(kind), kind
    assert caps.reason("htb") == "" and caps.kernel_release == os.uname().release


@pytest.mark.root
def test_probe_on_a_kernel_without_netem():
    """The development machines (DESIGN.md): no netem, no fq; htb, tbf, pfifo, ifb work."""
    require_root()
    if _tc_can_add("netem"):
        pytest.skip("this kernel has netem (a lab kernel): the no-netem facts do not apply")
    caps = probe_capabilities()
    assert not caps.netem and caps.reason("netem") == (
        "kernel refused qdisc kind 'netem': ENOENT (No such file or directory)")
    assert caps.has("htb") and caps.has("tbf") and caps.has("pfifo") and caps.has("ifb")


@pytest.mark.root
def test_probe_is_cached_and_leaves_no_namespace():
    require_root()
    before = set(netns.listnetns())
    probe_capabilities.cache_clear()
    first = probe_capabilities()
    assert probe_capabilities() is first  # one probe per process
    assert set(netns.listnetns()) == before  # its namespace is gone
    assert not any(name.startswith("netem-probe-") for name in netns.listnetns())


def test_probe_needs_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(UnsupportedError, match=r"needs root \(euid is 1000\)"):
        probe_uncached()


def test_assumed_capabilities():
    caps = Capabilities.assume({"htb", "netem"}, {"ifb"})
    assert caps.netem and caps.has("ifb") and not caps.has("tbf")
    assert caps.reason("tbf") == "assumed absent" and not caps.probed
    assert caps.to_dict()["qdiscs"] == ["htb", "netem"]
