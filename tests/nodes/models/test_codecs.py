"""Codec registry, training split, trainer and weights cache (tiny settings, real images)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.models.codecs import (
    CachedCodecError,
    CodecInputError,
    UnknownCodecError,
    codec_names,
    codec_spec,
)
from nodes.models.codecs.images import is_held_out, split

torch = pytest.importorskip("torch", reason="the codecs need the ml extra (torch)")
pytest.importorskip("compressai", reason="the codecs need the ml extra (compressai==1.2.8)")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_registry_names_and_errors() -> None:
    assert codec_names() == ["bmshj2018-hyperprior", "cheng2020-attn", "elic2022-official",
                             "mbt2018"]
    assert codec_spec("mbt2018").autoregressive and codec_spec("mbt2018").dlrc
    assert not codec_spec("bmshj2018-hyperprior").autoregressive
    assert codec_spec("elic2022-official").context == "checkerboard-groups"
    with pytest.raises(UnknownCodecError, match="unknown codec 'jpeg'; choose: bmshj2018"):
        codec_spec("jpeg")


@pytest.mark.parametrize(("name", "n", "m"), [("bmshj2018-hyperprior", 16, 24), ("mbt2018", 16, 16),
                                              ("cheng2020-attn", 16, 16),
                                              ("elic2022-official", 16, 160),
                                              ("elic2022-official", 16, 32)])
def test_untrained_codecs_round_trip(name: str, n: int, m: int) -> None:
    from nodes.models.codecs import build_codec
    from nodes.models.codecs.roundtrip import roundtrip

    torch.manual_seed(0)
    model = build_codec(name, n, m)
    model.update(force=True)
    model.eval()
    x = torch.rand((1, 3, 64, 64))
    out = roundtrip(model, x)
    assert out.x_hat.shape == x.shape and out.nbytes > 0
    assert float(out.x_hat.min()) >= 0.0 and float(out.x_hat.max()) <= 1.0


def test_bad_channels() -> None:
    from nodes.models.codecs import build_codec

    with pytest.raises(CodecInputError, match="expected N == M"):
        build_codec("cheng2020-attn", 16, 32)
    with pytest.raises(CodecInputError, match="expected >= 8"):
        build_codec("mbt2018", 4, 4)
    with pytest.raises(CodecInputError, match="M >= 160 or a multiple of 8"):
        build_codec("elic2022-official", 16, 60)


def test_elic_groups_follow_the_paper_and_scale_down() -> None:
    from nodes.models.codecs import build_codec
    from nodes.models.codecs.registry import elic_groups

    assert elic_groups(320) == [16, 16, 32, 64, 192]
    assert elic_groups(64) == [8, 8, 16, 32]
    assert build_codec("elic2022-official", 16, 32).groups == [4, 4, 8, 16]


def test_split_is_by_image_and_stable(shared_data: Path) -> None:
    images = shared_data / "images"
    train, held = split(images)
    assert train and held and not set(train) & set(held)
    assert all(p.suffix == ".png" for p in train + held)
    assert 0.1 < len(held) / (len(train) + len(held)) < 0.3
    assert is_held_out(held[0].relative_to(images).as_posix())
    assert split(images) == (train, held)


def test_train_save_load_and_cache(shared_data: Path, tmp_path: Path) -> None:
    from nodes.models.codecs import store
    from nodes.models.codecs.train import TrainSettings, is_cached, main, train

    s = TrainSettings(arch="bmshj2018-hyperprior", lmbda=0.013, steps=2, n=16, m=16, batch=1,
                      crop_px=64)
    model, prov = train(s, shared_data / "images")
    assert prov["settings"]["steps"] == 2
    assert len(prov["data_sha256"]) == 64 and prov["final_loss"] > 0
    folder = store.save(model, tmp_path, s.arch, s.lmbda, prov)
    assert folder.name == "bmshj2018-hyperprior-0.013"
    assert json.loads((folder / "provenance.json").read_text())["lambda"] == pytest.approx(0.013)
    assert is_cached(tmp_path, s, prov["data_sha256"])
    assert not is_cached(tmp_path, s, "0" * 64)
    loaded, _ = store.load(tmp_path, s.arch, s.lmbda)
    x = torch.rand((1, 3, 64, 64))
    with torch.no_grad():
        a, b = model.compress(x), loaded.compress(x)
    assert a["strings"] == b["strings"]
    with pytest.raises(CachedCodecError, match="make models-codecs"):
        store.load(tmp_path, s.arch, 0.0483)
    assert main(["--images", str(shared_data / "images"), "--cache", str(tmp_path),
                 "--crop-px", "100"]) == 2


@pytest.mark.parametrize("name", ["bmshj2018-hyperprior", "elic2022-official"])
def test_analysis_margin_codes_the_inner_image_only(name: str) -> None:
    from nodes.models.codecs import build_codec
    from nodes.models.codecs.margin import analysis_margin

    torch.manual_seed(0)
    model = build_codec(name, 16, 32).eval()
    keys = list(model.state_dict())
    seen = torch.rand((1, 3, 128, 128))
    with torch.no_grad():
        plain = model(seen)
        with analysis_margin(model, 0) as same:
            assert torch.equal(same(seen)["x_hat"], plain["x_hat"])
        with analysis_margin(model, 32) as with_margin:
            out = with_margin(seen)
        # the inner latent is g_a's output on the whole view, cropped by 2 cells per side
        y_inner = model.g_a(seen)[:, :, 2:-2, 2:-2]
    assert out["x_hat"].shape == (1, 3, 64, 64)
    assert out["likelihoods"]["y"].shape[-2:] == y_inner.shape[-2:] == (4, 4)
    if name == "bmshj2018-hyperprior":  # no context model: y_hat is round(y) in eval mode
        with torch.no_grad():
            assert torch.allclose(out["x_hat"], model.g_s(torch.round(y_inner)))
    assert list(model.state_dict()) == keys and type(model.g_a).__name__ == "Sequential"
    with pytest.raises(CodecInputError, match="margin_px=8; expected a multiple of 16"):
        with analysis_margin(model, 8):
            pass


def test_training_with_a_margin_records_it(shared_data: Path) -> None:
    from nodes.models.codecs.train import TrainSettings, train

    s = TrainSettings(arch="bmshj2018-hyperprior", lmbda=0.013, steps=2, n=16, m=16, batch=1,
                      crop_px=64, margin_px=16)
    model, prov = train(s, shared_data / "images")
    assert prov["settings"]["margin_px"] == 16 and prov["final_loss"] > 0
    with pytest.raises(CodecInputError, match="margin_px=20"):
        train(TrainSettings(arch="bmshj2018-hyperprior", lmbda=0.013, steps=1, margin_px=20),
              shared_data / "images")
