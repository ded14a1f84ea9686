"""The small trainable VLMs: save/load, step-wise generation, features; splits by image."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.vlm.data import SPLITS, area_bin, count_bin, load_samples, select_split, split_of
from nodes.models.vlm.small import SmallVLM, SmallVLMNet, preset


@pytest.fixture(scope="module")
def model() -> SmallVLM:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    return SmallVLM(SmallVLMNet(preset("onboard", ["is", "there", "a", "road"],
                                       ["yes", "no", "annual", "crop"])))


def test_save_load_round_trip(model: SmallVLM, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    back = SmallVLM.load(tmp_path / "m")
    img = torch.rand(3, 70, 90)
    a, b = model.generate(img, "is there a road"), back.generate(img, "is there a road")
    assert a.token_ids == b.token_ids
    assert a.token_probs == pytest.approx(b.token_probs)


def test_stepwise_equals_one_shot(model: SmallVLM) -> None:
    img = torch.rand(3, 64, 64)
    gen = model.start(img, "is there a road")
    model.step(gen, 1)
    model.step(gen, 10)
    whole = model.generate(img, "is there a road", 10)
    assert gen.token_ids == whole.token_ids
    assert gen.done and 1 <= gen.num_tokens <= model.cfg.max_answer_tokens
    assert all(0 < p <= 1 for p in gen.token_probs)
    assert model.token_features(gen).shape == (gen.num_tokens, 48)


def test_features_and_work(model: SmallVLM) -> None:
    img = torch.rand(3, 64, 64)
    assert model.image_features(img).shape == (16, 48)        # 64 px / 16 -> 4 x 4 tokens
    assert model.text_features("is there a road").shape == (4, 48)
    assert model.region_features(torch.rand(7, 3, 20, 20)).shape == (7, 1, 48)
    w = model.work(img, "is there a road")
    assert w.params == sum(p.numel() for p in model.net.parameters())
    assert w.prefill_flops > 10 * w.token_flops > 0
    assert w.prefill_bytes == pytest.approx(2 * w.params + 2 * img.numel())


def test_missing_model_and_bad_config_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="make models-vlm"):
        SmallVLM.load(tmp_path)
    with pytest.raises(ModelConfigError, match="input_px=50"):
        preset("onboard", [], []).__class__("x", 50, (1, 2, 3, 4), 8)
    with pytest.raises(ModelConfigError, match="'huge'"):
        preset("huge", [], [])
    with pytest.raises(ModelConfigError, match="blocks=\\(0, 1\\)"):
        preset("onboard", [], []).__class__("x", 64, (1, 2, 3, 4), 8, blocks=(0, 1))


def test_ground_preset_is_the_larger_model(tmp_path: Path) -> None:
    """W^g: twice W^s's input, residual blocks, many times its parameters; blocks round-trip."""
    torch.manual_seed(0)
    words, answers = ["is", "there", "a", "road"], ["yes", "no"]
    onboard = SmallVLMNet(preset("onboard", words, answers))
    ground = SmallVLM(SmallVLMNet(preset("ground", words, answers)))
    assert ground.cfg.input_px == 2 * onboard.cfg.input_px
    assert sum(ground.cfg.blocks) >= 1 and sum(onboard.cfg.blocks) == 0
    n_onboard = sum(p.numel() for p in onboard.parameters())
    assert ground.work(torch.rand(3, 64, 64), "is there a road").params > 10 * n_onboard
    side = ground.cfg.input_px // 16
    assert ground.image_features(torch.rand(3, 200, 200)).shape == (side * side, ground.cfg.dim)
    ground.save(tmp_path / "g")
    back = SmallVLM.load(tmp_path / "g")
    assert back.cfg.blocks == ground.cfg.blocks
    img = torch.rand(3, 150, 150)
    assert back.generate(img, "is there a road").token_probs == \
        pytest.approx(ground.generate(img, "is there a road").token_probs)


def test_answer_bins() -> None:
    assert [count_bin(x) for x in ("0", "7", "10", "11", "5000")] == \
        ["0", "1 to 10", "1 to 10", "11 to 100", "over 1000"]
    assert area_bin("0m2") == "0 m2" and area_bin("407m2") == "101 to 1000 m2"


def test_splits_are_by_image(shared_data: Path) -> None:
    samples = load_samples(shared_data / "images", tasks=("rsvqa-lr", "ucmerced"))
    keys = {sp: {s.image_key for s in select_split(samples, sp)} for sp in SPLITS}
    assert not keys["train"] & keys["test"] and not keys["calib"] & keys["test"]
    assert not keys["train"] & keys["calib"]
    assert sum(len(k) for k in keys.values()) == len({s.image_key for s in samples})
    assert split_of("rsvqa-lr/rsvqa-lr/0.png") == split_of("rsvqa-lr/rsvqa-lr/0.png")
    assert len(keys["test"]) > 0.1 * len({s.image_key for s in samples})


def test_neon_tiles_count_every_tree_once(shared_data: Path) -> None:
    from nodes.models.vlm.data import tile_tree_counts, tree_bin

    counts = tile_tree_counts(shared_data / "images/neon-trees/OSBS_029.xml", 200)
    assert sorted(counts) == [(0, 0), (0, 200), (200, 0), (200, 200)]
    assert sum(counts.values()) == 61                   # the scene's 61 boxes, 400 x 400 px
    assert [tree_bin(n) for n in (0, 2, 3, 10, 11)] == \
        ["0", "1 to 2", "3 to 5", "6 to 10", "over 10"]
    tiles = load_samples(shared_data / "images", tasks=("neon-trees",))
    assert len(tiles) == 4 + 4 + (1249 // 200) * (1035 // 200) + (2299 // 200) * (2472 // 200)
    assert all(t.crop[2] - t.crop[0] == 200 for t in tiles)
