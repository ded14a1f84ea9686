"""The SpaceVerse paper's own data sets, read from a lab's local copy in their published layouts.

Owns turning NWPU-RESISC45 (scene classification) and DOTA-v1.0 (oriented object detection)
into `Sample`s of the same kinds as `data.py`'s tasks. Neither set is on these machines; the
loaders are tested on hand-made files in these layouts.

- RESISC45 (Cheng et al. 2017): `ROOT/<class>/<class>_NNN.jpg`, 45 classes of 700 images,
  256x256 px. The commonly used train/val/test split files (`resisc45-train.txt`,
  `resisc45-val.txt`, `resisc45-test.txt`, one file name per line) are read when a split is
  asked for. Prompt as the other scene sets (`what is the scene class of this aerial image`),
  answer the class in words (`basketball_court` -> `basketball court`).
- DOTA-v1.0 (Xia et al. 2018), the devkit layout of one split: `ROOT/images/P0000.png` and
  `ROOT/labelTxt/P0000.txt`, where a label file may start with `imagesource:...` and
  `gsd:...` lines and then holds one object per line: `x1 y1 x2 y2 x3 y3 x4 y4 category
  difficult` (a quadrilateral in px, clockwise). Images (800 to 4,000 px) are cut into tiles of
  `tile_px` (edge tiles of at least half that size kept, smaller ones left out); an object
  belongs to the tile holding its polygon's bounding-box centre, its box clipped to the tile.
  One sample per tile and category present: `detect every <category> in this image`, answered
  with the category's boxes as text (`nodes.models.vlm.boxes`, 0-100 of the tile), the same
  format as the `neon-detection` task. Axis-aligned boxes: the orientation is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import format_boxes
from nodes.models.vlm.data import Sample

__all__ = ["DOTA_CLASSES", "DotaLabels", "DotaObject", "RESISC45_SPLIT_FILES", "load_dota",
           "load_resisc45", "read_dota_labels"]

RESISC_PROMPT = "what is the scene class of this aerial image"
RESISC45_SPLIT_FILES = {s: f"resisc45-{s}.txt" for s in ("train", "val", "test")}
DOTA_CLASSES = ("plane", "ship", "storage-tank", "baseball-diamond", "tennis-court",
                "basketball-court", "ground-track-field", "harbor", "bridge", "large-vehicle",
                "small-vehicle", "helicopter", "roundabout", "soccer-ball-field", "swimming-pool")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def load_resisc45(root: Path, split: str | None = None) -> list[Sample]:
    """RESISC45 samples (task `resisc45`, qtype `class`): all images, or one published split."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: missing, expected RESISC45's folder of 45 class folders")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetError(f"{root}: no class folders, expected ROOT/<class>/<class>_NNN.jpg")
    by_name = {}
    for cls in classes:
        for f in sorted(cls.iterdir()):
            if f.suffix.lower() in _IMAGE_SUFFIXES:
                by_name[f.name] = (f, cls.name)
    if split is None:
        names = sorted(by_name)
    else:
        if split not in RESISC45_SPLIT_FILES:
            raise DatasetError(f"RESISC45 split {split!r}: expected one of "
                               f"{', '.join(RESISC45_SPLIT_FILES)} or None")
        split_file = root / RESISC45_SPLIT_FILES[split]
        if not split_file.is_file():
            raise DatasetError(f"{split_file}: missing, expected one image file name per line")
        names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        missing = [n for n in names if n not in by_name]
        if missing:
            raise DatasetError(f"{split_file}: {len(missing)} listed images not found under "
                               f"{root}, e.g. {missing[0]!r}")
    return [Sample("resisc45", by_name[n][0], RESISC_PROMPT,
                   by_name[n][1].replace("_", " ").lower(), "class") for n in names]


@dataclass(frozen=True)
class DotaObject:
    """One labelled object: its quadrilateral (x1, y1, ..., x4, y4 in px), category,
    difficulty flag."""

    polygon: tuple[float, ...]
    category: str
    difficult: bool

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The polygon's axis-aligned bounding box."""
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return min(xs), min(ys), max(xs), max(ys)


@dataclass(frozen=True)
class DotaLabels:
    """One DOTA label file: its header (`imagesource`, `gsd` in m/px or None) and objects."""

    path: Path
    image_source: str | None
    gsd: float | None
    objects: tuple[DotaObject, ...]


def read_dota_labels(path: Path, classes: Sequence[str] = DOTA_CLASSES) -> DotaLabels:
    """A DOTA-v1.0 `labelTxt` file; errors name the file, the line and what was expected."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read DOTA label file ({exc})") from None
    source = gsd = None
    objects = []
    for no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("imagesource:"):
            source = text.split(":", 1)[1].strip() or None
            continue
        if text.startswith("gsd:"):
            value = text.split(":", 1)[1].strip()
            try:
                gsd = None if value.lower() in ("", "null", "none") else float(value)
            except ValueError:
                raise DatasetError(f"{path}:{no}: gsd {value!r}, expected a number or null"
                                   ) from None
            continue
        parts = text.split()
        if len(parts) not in (9, 10):
            raise DatasetError(f"{path}:{no}: {len(parts)} fields, expected 'x1 y1 x2 y2 x3 y3 "
                               "x4 y4 category difficult'")
        try:
            polygon = tuple(float(v) for v in parts[:8])
        except ValueError:
            raise DatasetError(f"{path}:{no}: coordinates {parts[:8]}, expected 8 numbers"
                               ) from None
        category = parts[8]
        if category not in classes:
            raise DatasetError(f"{path}:{no}: category {category!r}, expected one of "
                               f"{', '.join(classes)}")
        difficult = parts[9] if len(parts) == 10 else "0"
        if difficult not in ("0", "1"):
            raise DatasetError(f"{path}:{no}: difficult {difficult!r}, expected 0 or 1")
        objects.append(DotaObject(polygon, category, difficult == "1"))
    return DotaLabels(path, source, gsd, tuple(objects))


def _tiles(width: int, height: int, tile_px: int) -> list[tuple[int, int, int, int]]:
    def starts(size: int) -> list[int]:
        return [s for s in range(0, size, tile_px) if min(tile_px, size - s) >= tile_px // 2]

    return [(x, y, min(x + tile_px, width), min(y + tile_px, height))
            for y in starts(height) for x in starts(width)]


def load_dota(root: Path, tile_px: int = 1024, include_difficult: bool = False) -> list[Sample]:
    """Detection samples (task `dota`, qtype `detect`) of one DOTA split folder `root` (holding
    `images/` and `labelTxt/`); difficult objects are left out unless `include_difficult`."""
    from PIL import Image

    root = Path(root)
    img_dir, lab_dir = root / "images", root / "labelTxt"
    if not img_dir.is_dir() or not lab_dir.is_dir():
        raise DatasetError(f"{root}: expected DOTA's images/ and labelTxt/ folders")
    if tile_px < 32:
        raise DatasetError(f"tile_px={tile_px}: expected >= 32")
    out = []
    for label_path in sorted(lab_dir.glob("*.txt")):
        images = [p for p in (img_dir / (label_path.stem + s) for s in _IMAGE_SUFFIXES)
                  if p.is_file()]
        if not images:
            raise DatasetError(f"{label_path}: no image {label_path.stem}.png (or .jpg/.tif) "
                               f"in {img_dir}")
        with Image.open(images[0]) as im:
            width, height = im.size
        labels = read_dota_labels(label_path)
        objects = [o for o in labels.objects if include_difficult or not o.difficult]
        for crop in _tiles(width, height, tile_px):
            x0, y0, x1, y1 = crop
            by_cat: dict[str, list[tuple[float, float, float, float]]] = {}
            for o in objects:
                bx0, by0, bx1, by1 = o.box
                cx, cy = (bx0 + bx1) / 2, (by0 + by1) / 2
                if x0 <= cx < x1 and y0 <= cy < y1:
                    by_cat.setdefault(o.category, []).append(
                        (max(bx0, x0) - x0, max(by0, y0) - y0,
                         min(bx1, x1) - x0, min(by1, y1) - y0))
            for cat in sorted(by_cat):
                out.append(Sample("dota", images[0],
                                  f"detect every {cat.replace('-', ' ')} in this image",
                                  format_boxes(by_cat[cat], x1 - x0, y1 - y0), "detect", crop))
    return out
