"""The run ledger: durable write-ahead entries, crash-tolerant reading, reverse idempotent undo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from testbed.errors import InputError
from testbed.ledger import (
    UNDO,
    Entry,
    Ledger,
    LedgerError,
    kinds,
    process_entry_details,
    teardown,
)
from testbed.sysrun import Runner, process_alive, process_start_ticks


def test_kinds_are_registered_by_the_modules_that_create_them() -> None:
    """The core kinds come from their owners' modules; the ledger itself owns only three."""
    import testbed.ledger as ledger_module

    every = kinds()
    for kind in ("netns", "link", "qdisc", "ovs-bridge", "ovs-port", "cgroup", "process", "file",
                 "dir"):
        assert kind in every
    owners = {kind: UNDO[kind].__module__ for kind in every}
    assert owners["netns"] == "testbed.fabric.netlink"
    assert owners["ovs-port"] == "testbed.fabric.ovs"
    assert owners["cgroup"] == "testbed.cgroups"
    assert owners["remote-process"] == "testbed.backends.remote_undo"
    assert owners["libvirt-domain"] == "testbed.backends.libvirt"
    assert owners["daemon"] == "testbed.backends.libvirt_daemon"
    assert {k for k, m in owners.items() if m == ledger_module.__name__} == {
        "process", "file", "dir"}


def test_unknown_kind_is_refused_naming_the_valid_ones(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.jsonl") as led, pytest.raises(LedgerError, match="choose: .*netns"):
        led.record("nestns", "x")


def test_record_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ledger.jsonl"
    with Ledger(path) as led:
        a = led.record("dir", "d1", path=str(tmp_path / "d1"))
        b, c = led.record_many([("file", "f1", {"path": "x"}), ("netns", "n1", {})])
    assert [e.seq for e in (a, b, c)] == [1, 2, 3]
    again = Ledger(path)
    assert again.entries() == [a, b, c]
    d = again.record("file", "f2")  # a reopened ledger continues the numbering
    assert d.seq == 4
    again.close()


def test_torn_last_line_is_ignored_damage_elsewhere_is_named(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    with Ledger(path) as led:
        led.record("file", "f1")
    with open(path, "ab") as fh:
        fh.write(b'{"seq":2,"kind":"fi')  # the writer was killed mid-line
    assert [e.name for e in Ledger(path).entries()] == ["f1"]
    path.write_bytes(b'{"seq":1}\n{"seq":2,"kind":"file","name":"x"}\n')
    with pytest.raises(InputError, match=r"l.jsonl:1: unreadable ledger entry"):
        Ledger(path).entries()


def test_records_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    """fsync'ed entries are there after the writing process is SIGKILLed."""
    path = tmp_path / "l.jsonl"
    code = textwrap.dedent("""
        import os, signal, sys
        from testbed.ledger import Ledger
        led = Ledger(sys.argv[1])
        for i in range(50):
            led.record("file", f"f{i}", path=f"/nonexistent/{i}")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code, str(path)], env=env, timeout=30)
    assert done.returncode == -9
    assert [e.seq for e in Ledger(path).entries()] == list(range(1, 51))


def test_teardown_reverse_order_idempotent_and_reports_failures(tmp_path: Path) -> None:
    outer, inner, full = tmp_path / "outer", tmp_path / "outer" / "inner", tmp_path / "full"
    with Ledger(tmp_path / "l.jsonl") as led:
        led.record("dir", "outer", path=str(outer))
        outer.mkdir()
        led.record("dir", "inner", path=str(inner))
        inner.mkdir()
        led.record("dir", "full", path=str(full))  # not recursive, and will hold a file
        full.mkdir()
        (full / "keep").write_text("x")
        led.record("file", "gone", path=str(tmp_path / "never-created"))
        report = teardown(led, Runner())
    # inner before outer (reverse order), so both go; the non-empty dir fails but does not stop
    assert [e.name for e in report.removed] == ["inner", "outer"]
    assert [e.name for e in report.absent] == ["gone"]
    assert [(e.name, "Directory not empty" in err) for e, err in report.failed] == [("full", True)]
    assert not report.ok and "FAILED dir full" in report.summary()
    assert not outer.exists() and full.exists()
    again = teardown(Ledger(tmp_path / "l.jsonl"), Runner())
    assert [e.name for e in again.absent] == ["gone", "inner", "outer"]
    assert len(again.failed) == 1


def test_process_undo_checks_start_time(tmp_path: Path) -> None:
    """A recycled pid (same pid, other start time) is never signalled; the real one is stopped."""
    victim = subprocess.Popen(["sleep", "300"])
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        real = process_entry_details(victim.pid)
        recycled = {**process_entry_details(bystander.pid)}
        recycled["start_ticks"] = recycled["start_ticks"] - 1  # "an earlier process" had it
        entries = [Entry(1, "process", "victim", real), Entry(2, "process", "old", recycled)]
        report = teardown(entries, Runner())
        assert [e.name for e in report.removed] == ["victim"]
        assert [e.name for e in report.absent] == ["old"]
        assert victim.wait(timeout=5) < 0
        assert bystander.poll() is None
        assert process_alive(bystander.pid, process_start_ticks(bystander.pid))
    finally:
        for p in (victim, bystander):
            if p.poll() is None:
                p.kill()
            p.wait()


def test_process_ignoring_sigterm_gets_sigkill(tmp_path: Path) -> None:
    stubborn = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('x', "
         "flush=True); time.sleep(300)"], stdout=subprocess.PIPE)
    try:
        assert stubborn.stdout.readline() == b"x\n"  # the handler is installed
        entry = Entry(1, "process", "stubborn", process_entry_details(stubborn.pid, group=False))
        from testbed.ledger import Undoer
        report = teardown([entry], Runner(), undoer=Undoer(Runner(), process_term_timeout_s=0.3))
        assert [e.name for e in report.removed] == ["stubborn"]
        assert stubborn.wait(timeout=5) == -9
    finally:
        if stubborn.poll() is None:
            stubborn.kill()
        stubborn.wait()
        stubborn.stdout.close()


@pytest.mark.root
def test_links_netns_and_qdisc_undo(tmp_path: Path, unique_prefix: str) -> None:
    """Real kernel objects: veth pairs (group delete), a qdisc, a namespace; second pass absent."""
    if os.geteuid() != 0:
        pytest.skip("needs root: creates links, qdiscs and a namespace")
    from pyroute2 import IPRoute

    from testbed.fabric.netlink import create_netns, list_netns

    ns = f"{unique_prefix}-ns"
    names = [f"{unique_prefix}v{i}" for i in range(5)]
    with Ledger(tmp_path / "l.jsonl") as led, IPRoute() as ipr:
        try:
            led.record("netns", ns)
            create_netns(ns)
            for n in names:
                led.record("link", n, peer=n + "p")
                ipr.link("add", ifname=n, kind="veth", peer=n + "p")
            led.record("qdisc", f"{names[0]}:root", ifname=names[0], parent="root")
            ipr.tc("add", kind="htb", index=ipr.link_lookup(ifname=names[0])[0],
                   handle=0x10000, default=0x10)
            led.record("link", f"{unique_prefix}x", note="never created")
        finally:
            report = teardown(led, Runner())
        assert report.ok, report.summary()
        assert sorted(e.name for e in report.removed) == sorted([ns, *names,
                                                                  f"{names[0]}:root"])
        assert [e.name for e in report.absent] == [f"{unique_prefix}x"]
        assert not [link for link in ipr.get_links()
                    if link.get_attr("IFLA_IFNAME").startswith(unique_prefix)]
        assert ns not in list_netns()
        again = teardown(led, Runner())
        assert again.ok and not again.removed


def test_runner_errors_print_command_status_and_output() -> None:
    """The runner the undo functions use: a failure shows everything needed to debug it."""
    from testbed.errors import SystemRequirementError
    from testbed.sysrun import CommandError, CommandTimeoutError

    with pytest.raises(CommandError) as info:
        Runner().run(["sh", "-c", "echo to-out; echo to-err >&2; exit 3"])
    text = str(info.value)
    assert "sh -c 'echo to-out; echo to-err >&2; exit 3'" in text
    assert "exited with status 3" in text and "to-out" in text and "to-err" in text
    assert info.value.returncode == 3
    with pytest.raises(CommandTimeoutError, match="did not finish within 0.2 s"):
        Runner().run(["sleep", "5"], timeout_s=0.2)
    with pytest.raises(SystemRequirementError, match="no-such-binary-xyz"):
        Runner().run(["no-such-binary-xyz"])
    assert Runner().run(["sh", "-c", "exit 4"], check=False).returncode == 4
