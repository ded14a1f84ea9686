"""The `dlrc` job kind in process: three satellites and a ground node on loopback data planes
(real sockets), the real tiny trained codec and a real scene. The ground's reconstruction must
equal the in-process pipeline's, signature lists must have crossed the data plane, and bad
options are named."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nodes.clock import SystemClock
from nodes.context import ContextRef, RunContext
from nodes.dataplane import DataPlane
from nodes.errors import WorkloadOptionsError
from nodes.metrics import Metrics
from nodes.workloads import NodeContext, Role, WorkloadState, create_workload

from .conftest import CHANNELS, TRAINED, to_tensor

SATS = ["sat-a", "sat-b", "sat-c"]
IPS = {"sat-a": "127.0.0.2", "sat-b": "127.0.0.3", "sat-c": "127.0.0.4", "gs": "127.0.0.5"}
OFFSETS = [[0, 0], [16, 48], [128, 128]]  # a and b overlap; c does not touch a


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _options(cache: Path, scene: Path, **more: Any) -> dict[str, Any]:
    """The job's options for the tiny trained codec (`more` overrides, e.g. codec, lmbda)."""
    return {"models": str(cache), "codec": TRAINED[0], "lmbda": TRAINED[1],
            "satellites": SATS, "ground": "gs", "scene": str(scene),
            "window_px": [0, 0, 256], "offsets_px": OFFSETS, "patch_px": 128, **more}


@pytest.fixture(params=[(TRAINED[0], 0), ("elic2022-official", 0), (TRAINED[0], 16)],
                ids=["bmshj", "elic", "bmshj-margin16"])
def job_codec(request: pytest.FixtureRequest, trained_cache: Path,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, float, Any, int]:
    """(cache, codec, lambda, model, margin_px): the tiny trained scale hyperprior (also with a
    16 px analysis margin), or a seeded untrained ELIC saved the same way (its channel groups
    and checkerboard passes through the job; what the test checks does not depend on the
    weights)."""
    from nodes.models.codecs import build_codec, store

    codec, margin = request.param
    if codec == TRAINED[0]:
        model = store.load(trained_cache, *TRAINED)[0]
        return trained_cache, TRAINED[0], TRAINED[1], model, margin
    import torch

    cache = tmp_path_factory.mktemp("elic")
    torch.manual_seed(0)
    model = build_codec(codec, CHANNELS, CHANNELS)
    store.save(model, cache, codec, 0.0067,
               {"arch": codec, "n": CHANNELS, "m": CHANNELS, "lambda": 0.0067,
                "note": "untrained, seeded: tests only"})
    return cache, codec, 0.0067, store.load(cache, codec, 0.0067)[0], margin


@pytest.fixture
def scene(shared_data: Path) -> Path:
    path = shared_data / "images" / "rsvqa-hr" / "3.png"
    if not path.is_file():
        pytest.skip(f"real image {path} not found")
    return path


@pytest.fixture
def contexts(tmp_path: Path):
    """One NodeContext per node with a listening data plane; closed afterwards."""
    port = _free_port()
    now = time.time()
    made: dict[str, NodeContext] = {}
    try:
        for name, ip in IPS.items():
            ref = ContextRef()
            contacts = [] if name == "gs" else [{"peer": "gs", "start_s": 0.0, "end_s": 3600.0}]
            ref.set(RunContext.from_json({"node": name, "peers": IPS, "data_port": port,
                                          "scenario_start_unix_s": now, "speed": 1.0,
                                          "contacts": contacts}))
            dp = DataPlane(name, ip, ref)
            dp.listen(port)
            made[name] = NodeContext(
                name=name, role=Role.GROUND if name == "gs" else Role.SATELLITE, data_ip=ip,
                results_dir=tmp_path, metrics=Metrics({"node": name}), clock=SystemClock(),
                output_dir=tmp_path / name, run=ref, dataplane=dp)
        yield made
    finally:
        for ctx in made.values():
            assert ctx.dataplane is not None
            ctx.dataplane.close()


def test_three_satellites_and_a_ground_match_the_in_process_pipeline(
        contexts: dict[str, NodeContext], job_codec: tuple[Path, str, float, Any, int],
        scene: Path) -> None:
    cache, codec, lmbda, model, margin = job_codec
    opts = _options(cache, scene, codec=codec, lmbda=lmbda, accelerator="jetson-agx-orin",
                    margin_px=margin)
    jobs = {name: create_workload("dlrc", ctx, opts) for name, ctx in contexts.items()}
    for job in jobs.values():
        job.start()
    for name, job in jobs.items():
        assert job.wait(120), f"{name} did not finish"
    res = {name: job.results() for name, job in jobs.items()}
    for name, r in res.items():
        assert r["state"] == WorkloadState.FINISHED.value, (name, r["error"])

    # the same patches through the in-process pipeline
    from nodes.dlrc.pipeline import DlrcConfig, GroundDecoder, run
    from nodes.models.codecs.images import load_rgb

    im = load_rgb(scene)
    xs = {i + 1: to_tensor(im[t:t + 128, lf:lf + 128]) for i, (t, lf) in enumerate(OFFSETS)}
    window = np.pad(im[:256, :256], ((margin, margin), (margin, margin), (0, 0)), mode="reflect")
    seen = {i + 1: to_tensor(window[t:t + 128 + 2 * margin, lf:lf + 128 + 2 * margin])
            for i, (t, lf) in enumerate(OFFSETS)}  # the mirrored window, as the job's views
    config = DlrcConfig(margin_px=margin)
    payloads, arb, _ = run(model, codec, seen, [1, 2, 3], config)
    rec = GroundDecoder(model, codec).decode(payloads.values())
    import hashlib

    ground = res["gs"]["summary"]
    assert ground["decoded"] == 3
    for i, name in enumerate(SATS, start=1):
        sat = res[name]["summary"]
        assert sat["payload_sha256"] == hashlib.sha256(payloads[i]).hexdigest()
        assert ground["per_satellite"][name]["payload_sha256"] == sat["payload_sha256"]
        x_hat = rec[i].x_hat.clamp(0, 1).numpy()
        want = 10 * np.log10(1 / np.mean((x_hat.astype(np.float64) - xs[i].numpy()) ** 2))
        assert ground["per_satellite"][name]["psnr_db"] == pytest.approx(want, abs=1e-6)
        assert sat["priority_order"] == SATS and sat["rank"] == i - 1
        assert sat["kept_vectors"] == arb.plans[i].n_new
        # the other two lists crossed the data plane, and this one went to both peers
        got = [e for e in res[name]["events"] if e["what"] == "signatures-received"]
        sent = [e for e in res[name]["events"] if e["what"] == "signatures-sent"]
        assert sorted(e["peer"] for e in got) == sorted(set(SATS) - {name})
        assert sorted(e["peer"] for e in sent) == sorted(set(SATS) - {name})
        assert sat["sync_round_s"] > 0
        b = sat["bytes"]
        assert b["total"] == b["entropy_coded"] + b["map_lzma"] + b["header"]
        assert b["map_raw"] > 0 and b["plain"] > 0
        if margin:  # the plain baseline is the same margin analysis without DLRC
            from nodes.dlrc.wire import SatellitePayload

            alone = SatellitePayload.from_bytes(run(model, codec, {1: seen[i]}, [1], config)[0][1])
            assert b["plain"] == len(alone.z_string) + len(alone.y_string)
        measured = sat["times"]["measured"]
        assert measured["codec_s"] > 0 and measured["dlrc_s"] > 0
        emulated = sat["times"]["emulated"]
        assert emulated["accelerator"] == "Jetson AGX Orin 64GB"
        assert 0 < emulated["dlrc_s"] < emulated["codec_s"]
    # satellite b overlaps a: it keeps fewer vectors than it has positions
    assert res["sat-b"]["summary"]["kept_vectors"] < res["sat-b"]["summary"]["positions"]
    metrics = contexts["gs"].metrics
    assert metrics.value("leo_dlrc_psnr_decibels", satellite="sat-b") == pytest.approx(
        ground["per_satellite"]["sat-b"]["psnr_db"])
    assert (contexts["gs"].output_dir / "recon-sat-c.png").is_file()  # type: ignore[operator]


@pytest.mark.parametrize(("change", "match"), [
    ({"offsets_px": [[0, 0], [8, 0], [0, 0]]}, r"offsets_px=\[8, 0\], expected multiples of 16"),
    ({"offsets_px": [[0, 0]]}, r"offsets_px=.*one \[top, left\] per satellite \(3\)"),
    ({"priority": "fastest"}, r"priority='fastest', expected one of energy, link-quality"),
    ({"patch_px": 100}, r"patch_px=100, expected a multiple of 64"),
    ({"margin_px": 8}, r"margin_px=8, expected a multiple of 16"),
    ({"downlink": "later"}, r"downlink='later', expected one of contact, route"),
    ({"accelerator": "tpu"}, r"accelerator='tpu', expected one of"),
    ({"satellites": ["sat-b", "sat-c", "sat-d"], "offsets_px": OFFSETS},
     r"node sat-a is not one of the observers"),
])
def test_bad_options_are_named(contexts: dict[str, NodeContext], tmp_path: Path,
                               change: dict[str, Any], match: str) -> None:
    opts = {**_options(tmp_path, tmp_path / "scene.png"), **change}
    with pytest.raises(WorkloadOptionsError, match=match):
        create_workload("dlrc", contexts["sat-a"], opts)
