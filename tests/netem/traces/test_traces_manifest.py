"""The shipped trace manifest: every entry opens with its hash checked; samples regenerate."""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from netem.errors import NetemError, TraceFormatError
from netem.traces import read_trace
from netem.traces.manifest import load_manifest

MANIFEST = Path(__file__).resolve().parents[3] / "traces" / "manifest.yaml"


@pytest.fixture(scope="module")
def entries(shared_data):
    return load_manifest(MANIFEST, shared_data)


def test_every_entry_reads_with_its_hash_checked(entries):
    assert {"leocc-downlink-bw", "leocc-downlink-delay", "lagos"} <= set(entries)
    for name, entry in entries.items():
        trace = entry.read()
        assert trace.meta["name"] == name and trace.meta["sha256"] == entry.sha256
        assert trace.meta["format"] == entry.format


def test_samples_are_what_their_command_generates(entries, tmp_path):
    from testbed.cli.main import main

    samples = {n: e for n, e in entries.items() if "generated_by" in e.info}
    assert len(samples) >= 3
    for name, entry in samples.items():
        argv = shlex.split(entry.info["generated_by"])
        assert argv[:3] == ["testbed", "trace", "synth"], name
        out = tmp_path / Path(argv[3]).name
        assert main([*argv[1:3], str(out), *argv[4:]]) == 0
        assert read_trace(out, entry.format, entry.options).equals(entry.read(), rtol=1e-12), name


def test_a_changed_file_is_refused(entries, tmp_path):
    entry = entries["synth-leocc-60s-delay"]
    copy = tmp_path / "manifest.yaml"
    shutil.copy(entry.path, tmp_path / "d-delay.txt")
    with open(tmp_path / "d-delay.txt", "a") as fh:
        fh.write("10\n")
    copy.write_text(
        "traces:\n  d:\n    path: d-delay.txt\n    format: leoreplayer-delay\n"
        f"    sha256: {entry.sha256}\n")
    with pytest.raises(TraceFormatError, match="manifest expects"):
        load_manifest(copy)["d"].read()


@pytest.mark.parametrize(("body", "fragment"), [
    ("traces:\n  x: {path: a, format: hbt, sha256: 0}\n", "unknown trace format 'hbt'"),
    ("traces:\n  x: {path: a, format: csv}\n", "missing ['sha256']"),
    ("traces:\n  x: {path: a, format: csv, sha256: 0, speed: 2}\n", "unknown keys ['speed']"),
    ("traces:\n  x: {path: a, format: csv, sha256: 0, options: {bin: 1}}\n",
     "unknown options ['bin']"),
    ("traces:\n  x: {path: '${TESTBED_DATA}/a', format: csv, sha256: 0}\n", "pass data_dir"),
])
def test_bad_manifests_name_the_entry(tmp_path, body, fragment):
    path = tmp_path / "m.yaml"
    path.write_text(body)
    with pytest.raises(NetemError) as err:
        load_manifest(path)
    assert fragment in str(err.value)
