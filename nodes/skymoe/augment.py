"""SkyMoE's context-disentangled augmentation of the NEON training tiles.

Owns three edits and the cache they are written to; each keeps the annotations equal to what
the image shows:

- `cutout` (count-varying cutout): N_c trees -> four variants with fewer trees. Each variant
  zero-fills the boxes of ceil(r * N) more trees, r ~ U(0.15, 0.30), N the trees left in the
  previous variant, and at least ceil(0.1 * N_c), so any two variants differ by at least
  ceil(0.1 * N_c) trees. The variants are nested (a ladder of counts): four independent draws
  of r in [0.15, 0.30] cannot leave four counts ceil(0.1 * N_c) apart. A tree is only removed if
  every tree kept keeps at least half of its box unzeroed. The answer is the new count.
- `position` (attribute editing, position): the named tree of a grounding sample whose
  expression has a positional phrase is cut out, its place filled with the mean colour of the
  ring around it, and pasted with a feathered (blended) edge into another cell of the 3x3 grid,
  where its box has IoU < 0.1 with every other box and it is the only tree; the phrase is
  replaced by the new cell's and the answer is the new box.
- `colour` (attribute editing, colour): the named tree's crown (the ellipse in its box) gets a
  palette transfer to a colour of `COLOURS` (its luminance kept, feathered edge); the
  expression's status word (or an earlier colour) is swapped for the colour term, which then
  names one tree. NEON's annotations carry no colour term, so this edit introduces one.

`augment_to_cache` writes each edited tile as PNG with a Pascal VOC XML beside it (the colour of
an edited tree as an extra `<colour>` field) and returns the new samples; the same samples and
seed give the same files. Augment the training split only and use the result as training data
(the new files' names do not split like their sources).
"""

from __future__ import annotations

import hashlib
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import format_box, iou
from nodes.models.vlm.data import Sample, VocObject, VocScene, read_voc, tile_objects
from nodes.skymoe.tasks import (
    CELLS,
    COLOURS,
    COUNT_PROMPT,
    REFER_TEMPLATE,
    RefExpr,
    is_unambiguous,
    parse_refer,
    task_family,
)

__all__ = ["AUGMENT_KINDS", "PALETTE", "augment_to_cache", "count_cutout", "move_object",
           "recolour_object", "write_voc"]

AUGMENT_KINDS = ("cutout", "position", "colour")
PALETTE = {"red": (220, 40, 40), "blue": (40, 80, 220), "yellow": (230, 210, 40),
           "purple": (140, 50, 180), "white": (240, 240, 240), "orange": (240, 140, 30)}
CUTOUT_R = (0.15, 0.30)
MAX_IOU_AFTER_MOVE = 0.1
MIN_VISIBLE = 0.5   # a kept tree keeps at least this fraction of its box after a cutout

Image = np.ndarray   # [H, W, 3] uint8


def _px(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A box's pixel slice bounds (inclusive start, exclusive end), at least one pixel."""
    x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
    return x0, y0, max(x0 + 1, int(math.ceil(box[2]))), max(y0 + 1, int(math.ceil(box[3])))


def _visible_fraction(mask: np.ndarray, obj: VocObject) -> float:
    x0, y0, x1, y1 = _px(obj.box)
    region = mask[y0:y1, x0:x1]
    return 1.0 - float(region.mean()) if region.size else 0.0


def count_cutout(image: Image, objects: Sequence[VocObject], rng: np.random.Generator,
                 variants: int = 4) -> list[tuple[Image, list[VocObject]]]:
    """Up to `variants` nested cutouts (see the module docstring): (image, trees kept) each."""
    n_c = len(objects)
    if n_c == 0:
        return []
    min_step = math.ceil(0.1 * n_c)
    img = image.copy()
    zeroed = np.zeros(image.shape[:2], dtype=bool)
    kept = list(range(n_c))
    out = []
    for _ in range(variants):
        k = max(math.ceil(rng.uniform(*CUTOUT_R) * len(kept)), min_step)
        if k > len(kept):
            break
        removed: list[int] = []
        for i in rng.permutation(kept).tolist():
            if len(removed) == k:
                break
            trial = zeroed.copy()
            x0, y0, x1, y1 = _px(objects[i].box)
            trial[y0:y1, x0:x1] = True
            others = [j for j in kept if j != i and j not in removed]
            if all(_visible_fraction(trial, objects[j]) >= MIN_VISIBLE for j in others):
                removed.append(i)
                zeroed = trial
        if len(removed) < k:
            break
        kept = [j for j in kept if j not in removed]
        img[zeroed] = 0
        out.append((img.copy(), [objects[j] for j in kept]))
    return out


def _feather(h: int, w: int, width: float, ellipse: bool = False) -> np.ndarray:
    """Alpha `[h, w]`: 1 inside, ramping to 0 over `width` px towards the edge (of the box, or of
    its inscribed ellipse)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(float)
    if ellipse:
        ry, rx = h / 2, w / 2
        r = np.sqrt(((xs + 0.5 - rx) / rx) ** 2 + ((ys + 0.5 - ry) / ry) ** 2)
        dist = (1 - r) * min(rx, ry)
    else:
        dist = np.minimum.reduce([xs + 0.5, ys + 0.5, w - xs - 0.5, h - ys - 0.5])
    return np.clip(dist / max(width, 1e-6), 0.0, 1.0)


def _ring_mean(image: Image, box: tuple[int, int, int, int], pad: int = 3) -> np.ndarray:
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    ox0, oy0 = max(0, x0 - pad), max(0, y0 - pad)
    outer = image[oy0:min(h, y1 + pad), ox0:min(w, x1 + pad)]
    mask = np.ones(outer.shape[:2], dtype=bool)
    mask[y0 - oy0:y1 - oy0, x0 - ox0:x1 - ox0] = False
    ring = outer[mask]
    return ring.mean(axis=0) if ring.size else image.reshape(-1, 3).mean(axis=0)


def move_object(image: Image, objects: Sequence[VocObject], target: int, cell: str,
                rng: np.random.Generator, tries: int = 12
                ) -> tuple[Image, list[VocObject]] | None:
    """The target tree moved into `cell` (one of `CELLS`) with a feathered paste, its old place
    filled with its ring's mean colour; None when no spot in the cell keeps IoU < 0.1 with every
    other box and the box inside the image."""
    if cell not in CELLS:
        raise DatasetError(f"cell {cell!r}: expected one of {', '.join(CELLS)}")
    h, w = image.shape[:2]
    x0, y0, x1, y1 = _px(objects[target].box)
    bw, bh = x1 - x0, y1 - y0
    row, col = divmod(CELLS.index(cell), 3)
    others = [o for j, o in enumerate(objects) if j != target]
    for attempt in range(tries):
        jitter = rng.uniform(-0.25, 0.25, size=2) * (w / 3, h / 3) if attempt else (0.0, 0.0)
        cx, cy = (col + 0.5) * w / 3 + jitter[0], (row + 0.5) * h / 3 + jitter[1]
        nx0 = int(round(min(max(cx - bw / 2, 0), w - bw)))
        ny0 = int(round(min(max(cy - bh / 2, 0), h - bh)))
        new_box = (float(nx0), float(ny0), float(nx0 + bw), float(ny0 + bh))
        if all(iou(new_box, o.box) < MAX_IOU_AFTER_MOVE for o in others):
            break
    else:
        return None
    out = image.astype(float)
    patch = image[y0:y1, x0:x1].astype(float)
    feather = max(1.0, 0.15 * min(bw, bh))
    alpha = _feather(bh, bw, feather)[..., None]
    fill = _ring_mean(image, (x0, y0, x1, y1))
    out[y0:y1, x0:x1] = alpha * fill + (1 - alpha) * out[y0:y1, x0:x1]
    dest = out[ny0:ny0 + bh, nx0:nx0 + bw]
    out[ny0:ny0 + bh, nx0:nx0 + bw] = alpha * patch + (1 - alpha) * dest
    moved = list(objects)
    moved[target] = replace(objects[target], box=new_box)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8), moved


def recolour_object(image: Image, box: tuple[float, float, float, float], colour: str) -> Image:
    """Palette transfer of the crown (the ellipse inscribed in `box`) to `colour`, keeping its
    luminance: pixel = (0.35 + 0.65 * L / max L) * palette colour, feathered into the image."""
    if colour not in PALETTE:
        raise DatasetError(f"colour {colour!r}: expected one of {', '.join(PALETTE)}")
    x0, y0, x1, y1 = _px(box)
    out = image.astype(float)
    patch = out[y0:y1, x0:x1]
    lum = patch @ np.array([0.299, 0.587, 0.114])
    shade = 0.35 + 0.65 * lum / max(float(lum.max()), 1.0)
    target = shade[..., None] * np.array(PALETTE[colour], dtype=float)
    alpha = _feather(y1 - y0, x1 - x0, max(1.0, 0.2 * min(x1 - x0, y1 - y0)), ellipse=True)
    out[y0:y1, x0:x1] = alpha[..., None] * target + (1 - alpha[..., None]) * patch
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def write_voc(xml_path: Path, image_name: str, width: int, height: int,
              objects: Sequence[VocObject], colours: dict[int, str] | None = None) -> None:
    """A Pascal VOC file for an edited tile (readable by `nodes.models.vlm.data.read_voc`)."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image_name
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    for i, obj in enumerate(objects):
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "difficult").text = "1" if obj.difficult else "0"
        if colours and i in colours:
            ET.SubElement(node, "colour").text = colours[i]
        bnd = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), obj.box, strict=True):
            ET.SubElement(bnd, tag).text = str(int(round(value)))
    ET.indent(root)
    ET.ElementTree(root).write(xml_path, encoding="unicode")


class _Scenes:
    """Decoded scene images and their annotations, read once per `augment_to_cache` call (the
    large NEON scenes hold dozens of tiles)."""

    def __init__(self) -> None:
        self._images: dict[Path, Image] = {}
        self._boxes: dict[Path, VocScene] = {}

    def tile(self, sample: Sample) -> tuple[Image, list[VocObject]]:
        from PIL import Image as PILImage

        if sample.image_path not in self._images:
            with PILImage.open(sample.image_path) as im:
                self._images[sample.image_path] = np.asarray(im.convert("RGB"), dtype=np.uint8)
        img = self._images[sample.image_path]
        if sample.crop is not None:
            x0, y0, x1, y1 = sample.crop
            img = img[y0:y1, x0:x1]
        xml = sample.image_path.with_suffix(".xml")
        if xml not in self._boxes:
            self._boxes[xml] = read_voc(xml)
        return img.copy(), tile_objects(self._boxes[xml], sample.crop)


def _save(image: Image, objects: Sequence[VocObject], path: Path,
          colours: dict[int, str] | None = None) -> None:
    from PIL import Image as PILImage

    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(image).save(path, format="PNG")
    write_voc(path.with_suffix(".xml"), path.name, image.shape[1], image.shape[0], objects,
              colours)


def _target(sample: Sample, objects: Sequence[VocObject], size: float) -> int:
    """The index of the tree a grounding answer names (the box that formats to it)."""
    hits = [i for i, o in enumerate(objects) if format_box(o.box, size, size) == sample.answer]
    if len(hits) != 1:
        raise DatasetError(f"grounding sample {sample.image_key} {sample.prompt!r}: answer "
                           f"{sample.answer!r} matches {len(hits)} annotated boxes, expected 1")
    return hits[0]


def _name(out_dir: Path, kind: str, seed: int, sample: Sample, variant: int) -> Path:
    digest = hashlib.sha256(f"{seed}|{kind}|{sample.image_key}|{sample.prompt}".encode())
    return out_dir / kind / f"{sample.image_path.stem}-{digest.hexdigest()[:12]}-{variant}.png"


def _rng(seed: int, kind: str, sample: Sample) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{kind}|{sample.image_key}|{sample.prompt}".encode())
    return np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))


def augment_to_cache(samples: Iterable[Sample], out_dir: Path, seed: int = 0,
                     kinds: Sequence[str] = AUGMENT_KINDS) -> list[Sample]:
    """Edited copies of the NEON counting (`cutout`) and grounding (`position`, `colour`)
    samples, written under `out_dir/<kind>/`; other samples are passed over."""
    bad = [k for k in kinds if k not in AUGMENT_KINDS]
    if bad:
        raise DatasetError(f"augmentation kinds {bad}: expected some of {', '.join(AUGMENT_KINDS)}")
    out_dir = Path(out_dir)
    scenes = _Scenes()
    out: list[Sample] = []
    for s in samples:
        fam = task_family(s)
        if fam == "counting" and "cutout" in kinds and s.task.startswith("neon"):
            out.extend(_cutout_samples(s, scenes, out_dir, seed))
        elif fam == "grounding":
            for kind in ("position", "colour"):
                if kind in kinds and (new := _edit_sample(s, kind, scenes, out_dir, seed)):
                    out.append(new)
    return out


def _cutout_samples(s: Sample, scenes: _Scenes, out_dir: Path, seed: int) -> list[Sample]:
    image, objects = scenes.tile(s)
    out = []
    for v, (img, kept) in enumerate(count_cutout(image, objects, _rng(seed, "cutout", s))):
        path = _name(out_dir, "cutout", seed, s, v)
        _save(img, kept, path)
        out.append(Sample(s.task, path, COUNT_PROMPT, str(len(kept)), s.qtype))
    return out


def _move_named(image: Image, objects: Sequence[VocObject], target: int, expr: RefExpr,
                size: float, rng: np.random.Generator
                ) -> tuple[Image, list[VocObject], RefExpr] | None:
    """The target moved to another cell and an expression naming it there (the positional
    phrase replaced; a superlative dropped when it no longer singles the tree out)."""
    if expr.cell is None:
        return None
    for cell in rng.permutation([c for c in CELLS if c != expr.cell]).tolist():
        moved = move_object(image, objects, target, cell, rng)
        if moved is None:
            continue
        for new_expr in (RefExpr(expr.size, expr.attr, cell), RefExpr(None, expr.attr, cell)):
            if is_unambiguous(new_expr, moved[1], target, size):
                return moved[0], moved[1], new_expr
    return None


def _edit_sample(s: Sample, kind: str, scenes: _Scenes, out_dir: Path, seed: int
                 ) -> Sample | None:
    image, objects = scenes.tile(s)
    size = float(image.shape[0])
    if image.shape[0] != image.shape[1]:
        raise DatasetError(f"{s.image_key}: tile {image.shape[1]}x{image.shape[0]}, expected "
                           "a square tile")
    expr, target = parse_refer(s.prompt), _target(s, objects, size)
    rng = _rng(seed, kind, s)
    colours: dict[int, str] = {}
    if kind == "position":
        moved = _move_named(image, objects, target, expr, size, rng)
        if moved is None:
            return None
        new_img, new_objs, new_expr = moved
    else:
        choices = [c for c in COLOURS if c != expr.attr]
        colour = choices[int(rng.integers(len(choices)))]
        colours = {target: colour}
        new_expr = RefExpr(None, colour, expr.cell)
        new_img, new_objs = recolour_object(image, objects[target].box, colour), list(objects)
        if not is_unambiguous(new_expr, new_objs, target, size, colours):
            return None
    path = _name(out_dir, kind, seed, s, 0)
    _save(new_img, new_objs, path, colours)
    answer = format_box(new_objs[target].box, size, size)
    return Sample(s.task, path, REFER_TEMPLATE.format(new_expr.text()), answer, new_expr.kind())
