"""Caption sets for SkyMoE's captioning task, read from a local copy in their published layout.

Owns reading UCM-Captions (Qu et al. 2016) and RSICD (Lu et al. 2017) as their authors
distribute them: one JSON file in the image-captioning "dataset.json" layout

    {"images": [{"filename": "1.tif", "imgid": 0, "split": "train",
                 "sentences": [{"raw": "...", "tokens": [...], "imgid": 0, "sentid": 0}, ...]},
                ...], "dataset": "..."}

beside the image folder: UCM-Captions as `dataset.json` + `imgs/` (2,100 TIFFs, 5 captions
each), RSICD as `dataset_rsicd.json` + `RSICD_images/` (10,921 JPEGs). No caption set whose
licence allows shipping exists on these machines, so captioning results come from the lab; the
loaders are tested on hand-made files in this layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nodes.models.errors import DatasetError
from nodes.models.vlm.data import Sample
from nodes.skymoe.tasks import CAPTION_PROMPT

__all__ = ["CAPTION_SETS", "CaptionedImage", "caption_references", "caption_samples",
           "load_caption_samples", "read_caption_set"]

# task name -> (annotation file, image folder), both relative to the set's root
CAPTION_SETS = {"ucm-captions": ("dataset.json", "imgs"),
                "rsicd": ("dataset_rsicd.json", "RSICD_images")}
PUBLISHED_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class CaptionedImage:
    """One image of a caption set, its reference captions and its published split."""

    image_path: Path
    captions: tuple[str, ...]
    split: str


def _sentence(s: object, where: str) -> str:
    if not isinstance(s, dict):
        raise DatasetError(f"{where}: sentence {s!r}, expected an object with 'raw' or 'tokens'")
    raw = s.get("raw")
    if isinstance(raw, str) and raw.strip():
        return " ".join(raw.split())
    tokens = s.get("tokens")
    if isinstance(tokens, list) and tokens:
        return " ".join(str(t) for t in tokens)
    raise DatasetError(f"{where}: sentence {s!r} has neither 'raw' text nor 'tokens'")


def read_caption_set(root: Path, name: str, check_images: bool = True) -> list[CaptionedImage]:
    """Every image of caption set `name` (`ucm-captions` or `rsicd`) under `root`."""
    if name not in CAPTION_SETS:
        raise DatasetError(f"unknown caption set {name!r}; choose: {', '.join(CAPTION_SETS)}")
    ann_name, img_dir = CAPTION_SETS[name]
    ann = Path(root) / ann_name
    if not ann.is_file():
        raise DatasetError(f"{ann}: missing, expected {name}'s {ann_name} beside {img_dir}/")
    try:
        data = json.loads(ann.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{ann}: not readable JSON ({exc})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DatasetError(f"{ann}: field 'images' missing or empty, expected a list of images")
    out = []
    for i, im in enumerate(images):
        where = f"{ann} images[{i}]"
        if not isinstance(im, dict) or not isinstance(im.get("filename"), str):
            raise DatasetError(f"{where}: field 'filename' missing, expected the image's name")
        split = im.get("split")
        if split not in PUBLISHED_SPLITS:
            raise DatasetError(f"{where}: split {split!r}, expected one of "
                               f"{', '.join(PUBLISHED_SPLITS)}")
        sentences = im.get("sentences")
        if not isinstance(sentences, list) or not sentences:
            raise DatasetError(f"{where}: field 'sentences' missing or empty, expected captions")
        path = Path(root) / img_dir / im["filename"]
        if check_images and not path.is_file():
            raise DatasetError(f"{where}: image {path} missing")
        out.append(CaptionedImage(path, tuple(_sentence(s, where) for s in sentences), split))
    return out


def caption_samples(images: Iterable[CaptionedImage], task: str, split: str | None = None,
                    per_image: str = "all") -> list[Sample]:
    """Samples of one published `split` (None: all): `per_image="all"` gives one sample per
    caption (training), `"first"` one per image whose answer is its first caption (evaluation:
    score against `caption_references`)."""
    if split is not None and split not in PUBLISHED_SPLITS:
        raise DatasetError(f"split {split!r}: expected one of {', '.join(PUBLISHED_SPLITS)}")
    if per_image not in ("all", "first"):
        raise DatasetError(f"per_image={per_image!r}: expected 'all' or 'first'")
    out = []
    for im in images:
        if split is not None and im.split != split:
            continue
        caps = im.captions if per_image == "all" else im.captions[:1]
        out.extend(Sample(task, im.image_path, CAPTION_PROMPT, c, "caption") for c in caps)
    return out


def caption_references(images: Iterable[CaptionedImage], task: str) -> dict[str, list[str]]:
    """Every image's reference captions by its sample's `image_key` (for `metrics.summarise`)."""
    return {Sample(task, im.image_path, "", "", "caption").image_key: list(im.captions)
            for im in images}


def load_caption_samples(root: Path, name: str, split: str | None = None,
                         per_image: str = "all") -> list[Sample]:
    """`read_caption_set` + `caption_samples` in one call."""
    return caption_samples(read_caption_set(root, name), name, split, per_image)
