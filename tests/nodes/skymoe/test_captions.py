"""UCM-Captions and RSICD loaders on hand-made files in their published layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nodes.models.errors import DatasetError
from nodes.skymoe.captions import (
    caption_references,
    caption_samples,
    load_caption_samples,
    read_caption_set,
)
from nodes.skymoe.metrics import summarise
from nodes.skymoe.tasks import CAPTION_PROMPT, task_family


def _write_set(root: Path, ann: str, img_dir: str, names: list[str]) -> None:
    (root / img_dir).mkdir(parents=True)
    images = []
    for k, name in enumerate(names):
        (root / img_dir / name).write_bytes(b"not decoded by the loader")
        images.append({
            "filename": name, "imgid": k, "split": ("train", "val", "test")[k % 3],
            "sentids": [5 * k + i for i in range(5)],
            "sentences": [{"tokens": f"there are {i} planes at airport {k}".split(),
                           "raw": f"There are {i} planes at  airport {k} .",
                           "imgid": k, "sentid": 5 * k + i} for i in range(5)]})
    (root / ann).write_text(json.dumps({"images": images, "dataset": "handmade"}))


def test_ucm_captions_layout(tmp_path: Path) -> None:
    _write_set(tmp_path, "dataset.json", "imgs", ["1.tif", "2.tif", "3.tif", "4.tif"])
    images = read_caption_set(tmp_path, "ucm-captions")
    assert [im.image_path.name for im in images] == ["1.tif", "2.tif", "3.tif", "4.tif"]
    assert [im.split for im in images] == ["train", "val", "test", "train"]
    assert images[0].captions[2] == "There are 2 planes at airport 0 ."   # spaces collapsed
    train = caption_samples(images, "ucm-captions", "train")
    assert len(train) == 10 and all(s.prompt == CAPTION_PROMPT for s in train)
    assert all(task_family(s) == "captioning" for s in train)
    test = caption_samples(images, "ucm-captions", "test", per_image="first")
    assert len(test) == 1 and test[0].answer == images[2].captions[0]
    refs = caption_references(images, "ucm-captions")
    assert refs[test[0].image_key] == list(images[2].captions)
    table = summarise(test, ["there are 3 planes at airport 2"], refs)
    row = table["ucm-captions/captioning"]
    assert row["bleu4"] == pytest.approx(1.0) and row["rouge_l"] == pytest.approx(1.0)


def test_rsicd_layout_and_tokens_fallback(tmp_path: Path) -> None:
    _write_set(tmp_path, "dataset_rsicd.json", "RSICD_images", ["airport_1.jpg", "beach_2.jpg"])
    data = json.loads((tmp_path / "dataset_rsicd.json").read_text())
    del data["images"][1]["sentences"][0]["raw"]
    (tmp_path / "dataset_rsicd.json").write_text(json.dumps(data))
    samples = load_caption_samples(tmp_path, "rsicd")
    assert len(samples) == 10 and {s.task for s in samples} == {"rsicd"}
    assert samples[5].answer == "there are 0 planes at airport 1"


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d.pop("images"), "field 'images'"),
    (lambda d: d["images"][0].update(split="dev"), "split 'dev'"),
    (lambda d: d["images"][0].update(sentences=[]), "'sentences' missing or empty"),
    (lambda d: d["images"][0].update(filename="9.tif"), "9.tif missing"),
    (lambda d: d["images"][0]["sentences"][0].clear(), "neither 'raw' text nor 'tokens'"),
])
def test_malformed_files_are_named(tmp_path: Path, edit, message: str) -> None:
    _write_set(tmp_path, "dataset.json", "imgs", ["1.tif", "2.tif"])
    data = json.loads((tmp_path / "dataset.json").read_text())
    edit(data)
    (tmp_path / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message) as err:
        read_caption_set(tmp_path, "ucm-captions")
    assert "dataset.json" in str(err.value)


def test_missing_files_and_options(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="dataset_rsicd.json: missing"):
        read_caption_set(tmp_path, "rsicd")
    with pytest.raises(DatasetError, match="unknown caption set 'coco'"):
        read_caption_set(tmp_path, "coco")
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not readable JSON"):
        read_caption_set(tmp_path, "ucm-captions")
    with pytest.raises(DatasetError, match="split 'dev'"):
        caption_samples([], "rsicd", "dev")
