"""The real training images for the codecs: which files, the by-image hold-out split, random crops.

Lossless high-resolution sets only (rsvqa-hr 512x512 PNG, ucmerced 256x256 PNG): JPEG-compressed
sets would teach the codec JPEG's artefacts. The split is by image and by a hash of the file's
relative path, so it is the same on every machine and no crop of a held-out image is trained on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nodes.models.codecs.errors import CodecInputError

TRAIN_SETS = ("rsvqa-hr/*.png", "ucmerced/*/*.png")


def list_images(images_dir: Path, patterns: tuple[str, ...] = TRAIN_SETS) -> list[Path]:
    """Every image of the training sets under `images_dir`, sorted by relative path."""
    images_dir = Path(images_dir)
    paths = sorted({p for pat in patterns for p in images_dir.glob(pat)})
    if not paths:
        raise CodecInputError(
            f"images folder {images_dir}: no file matches {', '.join(patterns)}; "
            "expected the real data's images/ folder"
        )
    return paths


def is_held_out(rel_path: str, holdout_percent: int = 20) -> bool:
    """True when the image is in the evaluation split (stable hash of its relative path)."""
    digest = hashlib.sha256(rel_path.encode()).digest()
    return int.from_bytes(digest[:4], "little") % 100 < holdout_percent


def split(images_dir: Path, holdout_percent: int = 20) -> tuple[list[Path], list[Path]]:
    """(train, held_out) image paths, split by image."""
    train, held = [], []
    for path in list_images(images_dir):
        rel = path.relative_to(images_dir).as_posix()
        (held if is_held_out(rel, holdout_percent) else train).append(path)
    return train, held


def data_sha256(images_dir: Path, paths: list[Path]) -> str:
    """One digest over the relative paths and contents of `paths` (the training data's identity)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.relative_to(images_dir).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def load_rgb(path: Path) -> np.ndarray:
    """An image as uint8 HxWx3."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def random_crops(
    images: list[np.ndarray], size_px: int, batch: int, rng: np.random.Generator
) -> np.ndarray:
    """`batch` random size_px x size_px crops (uint8, Bx3xHxW) from images at least that large."""
    usable = [im for im in images if im.shape[0] >= size_px and im.shape[1] >= size_px]
    if not usable:
        raise CodecInputError(f"crop size {size_px} px: no training image is that large")
    out = np.empty((batch, 3, size_px, size_px), dtype=np.uint8)
    for b in range(batch):
        im = usable[int(rng.integers(len(usable)))]
        top = int(rng.integers(im.shape[0] - size_px + 1))
        left = int(rng.integers(im.shape[1] - size_px + 1))
        out[b] = im[top:top + size_px, left:left + size_px].transpose(2, 0, 1)
    return out
