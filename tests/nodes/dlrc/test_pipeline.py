"""Filter + reconstructor end to end on real image tiles with tiny codecs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.nodes.conftest import REPO_ROOT
from tests.nodes.dlrc.conftest import require_ml, to_tensor

torch = require_ml()

from nodes.dlrc.errors import (  # noqa: E402
    CorruptPayloadError,
    DlrcConfigError,
    UnsupportedCodecError,
)
from nodes.dlrc.latent import LatentCoder  # noqa: E402
from nodes.dlrc.pipeline import DlrcConfig, GroundDecoder, SatelliteEncoder, run  # noqa: E402
from nodes.models.codecs.roundtrip import roundtrip  # noqa: E402

DLRC_CODECS = ["bmshj2018-hyperprior", "mbt2018", "cheng2020-attn", "elic2022-official"]
CONTEXT_CODECS = ["mbt2018", "elic2022-official"]  # raster order; channel groups x checkerboard


def plain_y_hat(model: Any, codec: str, x: Any) -> Any:
    """y_hat as CompressAI's own decompress rebuilds it from its own bitstreams."""
    import torch.nn.functional as F

    with torch.no_grad():
        enc = model.compress(x)
        if codec == "elic2022-official":
            return model.latent_codec.decompress(enc["strings"], enc["shape"])["y_hat"]
        z_hat = model.entropy_bottleneck.decompress(enc["strings"][1], enc["shape"])
        params = model.h_s(z_hat)
        if codec == "bmshj2018-hyperprior":
            idx = model.gaussian_conditional.build_indexes(params)
            return model.gaussian_conditional.decompress(enc["strings"][0], idx, z_hat.dtype)
        hh, ww = z_hat.shape[2] * 4, z_hat.shape[3] * 4
        y_hat = torch.zeros((1, model.M, hh + 4, ww + 4))
        model._decompress_ar(enc["strings"][0][0], y_hat, params, hh, ww, 5, 2)
        return F.pad(y_hat, (-2, -2, -2, -2))


@pytest.mark.parametrize("codec", DLRC_CODECS)
def test_without_duplicates_it_is_the_plain_codec(codec: str, untrained, hr_image) -> None:
    model = untrained(codec)
    x = to_tensor(hr_image[:128, :128])
    config = DlrcConfig(rounds=200)  # untrained latents are low-diversity; 200 rounds split them
    payloads, arb, locs = run(model, codec, {1: x}, [1], config)
    assert len(locs[1].signature_list) == 8 * 8  # precondition: no duplicate at all
    rec = GroundDecoder(model, codec).decode(payloads.values())[1]
    assert torch.equal(rec.y_hat, plain_y_hat(model, codec, x))
    assert torch.equal(rec.x_hat, roundtrip(model, x).x_hat)


def _overlapping(
    hr_image: np.ndarray, offsets: list[tuple[int, int]], size_px: int = 128
) -> dict[int, Any]:
    """Crops of one real tile at offsets on the codec's 16-pixel latent grid."""
    return {i + 1: to_tensor(hr_image[t:t + size_px, s:s + size_px])
            for i, (t, s) in enumerate(offsets)}


@pytest.mark.parametrize("codec", CONTEXT_CODECS)
@pytest.mark.parametrize(("representative", "cross_context"),
                         [("original", "mean"), ("mean", "mean"), ("original", "zero")])
def test_context_model_copies_decode_as_encoded(codec: str, untrained, hr_image,
                                                representative, cross_context) -> None:
    """Intra copies and cross-satellite copies: the ground's y_hat equals what each encoder
    produced at every position the encoder knows, and cross copies equal the owner's vector.
    For ELIC the views include an anchor copying a non-anchor (decoded one pass later)."""
    model = untrained(codec)
    images = _overlapping(hr_image, [(0, 0), (32, 64), (16, 32)])
    config = DlrcConfig(representative=representative, cross_context=cross_context)
    enc = SatelliteEncoder(model, codec, config)
    from nodes.dlrc.arbiter import arbitrate, global_map

    locs = {s: enc.analyse(s, x) for s, x in images.items()}
    arb = arbitrate({s: loc.signature_list for s, loc in locs.items()}, [1, 2, 3])
    out = {s: enc.encode(locs[s], arb.plans[s]) for s in (1, 2, 3)}
    assert arb.plans[2].n_new < len(locs[2].signature_list)  # real overlap was found
    assert arb.plans[1].n_new < 64  # and intra-satellite duplicates
    if codec == "elic2022-official":
        from nodes.dlrc.latent_grouped import _MapPlan

        plans = [_MapPlan(global_map(locs[s].selection.assignment, arb.plans[s]).reshape(8, 8),
                          arb.plans[s].base) for s in (1, 2, 3)]
        assert any((p.in_pass(p.intra, 0) & p.in_pass(p.source, 1)).any() for p in plans)
    rec = GroundDecoder(model, codec, config).decode([out[s][0] for s in (3, 1, 2)])
    owner_vec: dict[int, Any] = {}
    for s in (1, 2, 3):
        seq = global_map(locs[s].selection.assignment, arb.plans[s]).reshape(8, 8)
        y_enc, y_dec = out[s][1], rec[s].y_hat
        own = torch.from_numpy(seq >= arb.plans[s].base)
        assert torch.equal(y_enc[0][:, own], y_dec[0][:, own])
        for (h, w), g in np.ndenumerate(seq):
            if g in owner_vec:
                assert torch.equal(y_dec[0, :, h, w], owner_vec[g])
            else:
                owner_vec[int(g)] = y_dec[0, :, h, w]


def test_decode_is_deterministic_across_processes(untrained, hr_image, tmp_path: Path) -> None:
    codec = "mbt2018"
    model = untrained(codec)
    payloads, _, _ = run(model, codec, _overlapping(hr_image, [(0, 0), (32, 48)]), [2, 1])
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    for sat, data in payloads.items():
        (tmp_path / f"{sat}.dlrc").write_bytes(data)
    here = GroundDecoder(model, codec).decode(payloads.values())
    script = f"""
import sys, torch
torch.set_num_threads(1)
from nodes.models.codecs import build_codec
from nodes.dlrc.pipeline import GroundDecoder
m = build_codec({codec!r}, 32, 32)
m.load_state_dict(torch.load({str(tmp_path / 'weights.pt')!r}, weights_only=True))
m.update(force=True); m.eval()
rec = GroundDecoder(m, {codec!r}).decode(
    [open({str(tmp_path)!r} + f"/{{s}}.dlrc", "rb").read() for s in (1, 2)])
for s in (1, 2):
    sys.stdout.write(rec[s].x_hat.numpy().tobytes().hex() + "\\n")
"""
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", script], capture_output=True,
                         text=True, cwd=REPO_ROOT, timeout=120, check=True).stdout.split()
    for line, s in zip(out, (1, 2), strict=True):
        assert line == here[s].x_hat.numpy().tobytes().hex()


def test_ground_checks_order_codec_and_corruption(untrained, hr_image) -> None:
    codec = "bmshj2018-hyperprior"
    model = untrained(codec)
    payloads, _, _ = run(model, codec, _overlapping(hr_image, [(0, 0), (64, 64)]), [1, 2])
    ground = GroundDecoder(model, codec)
    with pytest.raises(CorruptPayloadError, match="expected rank 0"):
        ground.decode([payloads[2]])  # the higher-priority satellite's payload is missing
    with pytest.raises(CorruptPayloadError, match="this ground decodes 'mbt2018'"):
        GroundDecoder(untrained("mbt2018"), "mbt2018").decode([payloads[1]])
    bad = bytearray(payloads[1])
    bad[len(bad) // 2] ^= 1
    with pytest.raises(CorruptPayloadError, match="CRC32"):
        ground.decode([bytes(bad), payloads[2]])


def test_cross_context_mean_is_what_the_model_predicts(untrained, hr_image) -> None:
    """Where a satellite drops a vector for a higher-priority one, its own walk holds the mean
    its context model predicts there (the encoder-side y_hat shows it), not zero; with
    cross_context="zero" it holds zero; the ground decodes either (the copies' values are
    checked by test_context_model_copies_decode_as_encoded)."""
    codec = "mbt2018"
    model = untrained(codec)
    images = _overlapping(hr_image, [(0, 0), (32, 64)])
    from nodes.dlrc.arbiter import arbitrate, global_map

    got = {}
    for cross in ("mean", "zero"):
        config = DlrcConfig(cross_context=cross)
        enc = SatelliteEncoder(model, codec, config)
        locs = {s: enc.analyse(s, x) for s, x in images.items()}
        arb = arbitrate({s: loc.signature_list for s, loc in locs.items()}, [1, 2])
        seq = global_map(locs[2].selection.assignment, arb.plans[2]).reshape(8, 8)
        payload, y_enc = enc.encode(locs[2], arb.plans[2])
        cross_pos = torch.from_numpy(seq < arb.plans[2].base)
        assert cross_pos.any()
        got[cross] = y_enc[0][:, cross_pos]
        rec = GroundDecoder(model, codec, config).decode(
            [enc.encode(locs[1], arb.plans[1])[0], payload])
        assert rec[2].x_hat.shape == images[2].shape
    assert not torch.all(got["mean"] == 0) and torch.all(got["zero"] == 0)
    with pytest.raises(DlrcConfigError, match="cross_context='ones'"):
        SatelliteEncoder(model, codec, DlrcConfig(cross_context="ones"))


def test_unsupported_codec_and_bad_image(untrained) -> None:
    with pytest.raises(UnsupportedCodecError, match="use latent_coder"):
        LatentCoder(object(), "elic2022-official")
    coder = LatentCoder(untrained("bmshj2018-hyperprior"), "bmshj2018-hyperprior")
    with pytest.raises(DlrcConfigError, match="200x256 px; expected multiples of 64"):
        coder.analyse(torch.zeros((1, 3, 256, 200)))


@pytest.mark.parametrize("codec", ["bmshj2018-hyperprior", "mbt2018", "elic2022-official"])
def test_a_satellite_with_nothing_new_sends_an_empty_stream(codec: str, untrained,
                                                            hr_image) -> None:
    model = untrained(codec)
    images = _overlapping(hr_image, [(0, 0), (0, 0)])  # two satellites see the same patch
    payloads, arb, _ = run(model, codec, images, [1, 2])
    assert arb.plans[2].n_new == 0
    rec = GroundDecoder(model, codec).decode(payloads.values())
    assert torch.equal(rec[2].y_hat, rec[1].y_hat) and torch.equal(rec[2].x_hat, rec[1].x_hat)


def test_a_margin_makes_border_vectors_of_overlapping_views_match(trained_bmshj,
                                                                  hr_image) -> None:
    """Two views 64 px apart: with 32 px of scene around each, the vectors along the shared
    cells' borders no longer depend on where each view ends, so more of them merge; the
    payloads and reconstructions stay the inner image's size."""
    codec = "bmshj2018-hyperprior"
    offsets = [(64, 64), (128, 128)]
    plain = _overlapping(hr_image, offsets, 256)
    m = 32
    seen = {i + 1: to_tensor(hr_image[t - m:t + 256 + m, s - m:s + 256 + m])
            for i, (t, s) in enumerate(offsets)}
    _, arb0, _ = run(trained_bmshj, codec, plain, [1, 2])
    payloads, arb, _ = run(trained_bmshj, codec, seen, [1, 2], DlrcConfig(margin_px=m))
    assert arb.plans[2].n_new < arb0.plans[2].n_new
    rec = GroundDecoder(trained_bmshj, codec).decode(payloads.values())
    assert tuple(rec[2].x_hat.shape[-2:]) == (256, 256)
    with pytest.raises(DlrcConfigError, match="margin_px=8; expected a multiple of 16"):
        LatentCoder(trained_bmshj, codec).analyse(seen[1], margin_px=8)
