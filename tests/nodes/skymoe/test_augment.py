"""Context-disentangled augmentation keeps its annotations true: counts, boxes inside the
image, the IoU constraint, zeroed pixels, one tree per edited expression; cached files are
deterministic per seed."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import iou, parse_boxes
from nodes.models.vlm.data import Sample, VocObject, read_voc
from nodes.skymoe.augment import (
    PALETTE,
    augment_to_cache,
    count_cutout,
    move_object,
    recolour_object,
)
from nodes.skymoe.tasks import (
    CELLS,
    cell_of,
    load_skymoe_samples,
    parse_refer,
    task_family,
)


def _image(seed: int = 0, size: int = 120) -> np.ndarray:
    return np.random.default_rng(seed).integers(30, 256, size=(size, size, 3), dtype=np.uint8)


def _grid_objects(n: int, size: int = 120, box: int = 10) -> list[VocObject]:
    per_row = size // (box + 4)
    return [VocObject("Tree", (float(2 + (i % per_row) * (box + 4)),
                               float(2 + (i // per_row) * (box + 4)),
                               float(2 + (i % per_row) * (box + 4) + box),
                               float(2 + (i // per_row) * (box + 4) + box)))
            for i in range(n)]


@pytest.mark.parametrize("n", [1, 4, 7, 20, 40])
def test_count_cutout_ladder_keeps_annotations_consistent(n: int) -> None:
    image, objects = _image(n), _grid_objects(n)
    variants = count_cutout(image, objects, np.random.default_rng(n))
    assert variants and len(variants) <= 4
    counts = [n] + [len(kept) for _, kept in variants]
    step = math.ceil(0.1 * n)
    # four variants, unless the trees ran out (disjoint boxes: nothing else stops it)
    assert len(variants) == 4 or counts[-1] < step or counts[-1] == 0
    if n >= 20:
        assert len(variants) == 4
    for a, b in zip(counts, counts[1:], strict=False):
        assert a - b >= step                               # any two differ by >= ceil(0.1 N_c)
    # first removal: ceil(r N_c), r in [0.15, 0.30] (or the 0.1 N_c floor)
    assert max(math.ceil(0.15 * n), step) <= n - counts[1] <= max(math.ceil(0.30 * n), step)
    for img, kept in variants:
        assert img.shape == image.shape
        gone = [o for o in objects if o not in kept]
        for o in gone:
            x0, y0, x1, y1 = (int(v) for v in o.box)
            assert not img[y0:y1, x0:x1].any()            # removed: zero-filled
        for o in kept:
            x0, y0, x1, y1 = (int(v) for v in o.box)
            assert 0 <= x0 < x1 <= 120 and 0 <= y0 < y1 <= 120
            assert np.array_equal(img[y0:y1, x0:x1], image[y0:y1, x0:x1])  # disjoint here


def test_cutout_never_hides_most_of_a_kept_tree() -> None:
    # overlapping trees: removing one may not zero more than half of a kept one
    objects = [VocObject("Tree", (10.0 + 6 * i, 10.0, 30.0 + 6 * i, 30.0)) for i in range(10)]
    image = _image(3, 100)
    for img, kept in count_cutout(image, objects, np.random.default_rng(0)):
        for o in kept:
            x0, y0, x1, y1 = (int(v) for v in o.box)
            assert (img[y0:y1, x0:x1].any(axis=2)).mean() >= 0.5


def test_move_object_respects_iou_and_cell() -> None:
    image = _image(1)
    objects = [VocObject("Tree", (5.0, 5.0, 25.0, 25.0)),
               VocObject("Tree", (50.0, 50.0, 70.0, 68.0)),
               VocObject("Tree", (90.0, 90.0, 110.0, 110.0))]
    rng = np.random.default_rng(0)
    for cell in ("top right", "bottom left", "left"):
        moved = move_object(image, objects, 0, cell, rng)
        assert moved is not None
        img, objs = moved
        box = objs[0].box
        assert (box[2] - box[0], box[3] - box[1]) == (20.0, 20.0)
        assert 0 <= box[0] and box[2] <= 120 and 0 <= box[1] and box[3] <= 120
        assert cell_of((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 120, 120) == cell
        assert all(iou(box, o.box) < 0.1 for o in objs[1:])
        assert objs[1:] == objects[1:]
        # the interior of the pasted patch is the tree's own pixels (alpha 1 there)
        x0, y0 = int(box[0]), int(box[1])
        assert np.array_equal(img[y0 + 8:y0 + 12, x0 + 8:x0 + 12], image[13:17, 13:17])
    # no free spot: a tree as large as a third of the tile next to crowded cells
    crowded = [VocObject("Tree", (0.0, 0.0, 40.0, 40.0))] + [
        VocObject("Tree", (float(x), float(y), x + 40.0, y + 40.0))
        for x in (0, 40, 80) for y in (0, 40, 80) if (x, y) != (0, 0)]
    assert move_object(image, crowded, 0, "center", rng) is None
    with pytest.raises(DatasetError, match="cell 'middle'"):
        move_object(image, objects, 0, "middle", rng)


def test_recolour_moves_crown_towards_palette() -> None:
    image = np.full((60, 60, 3), (60, 140, 60), dtype=np.uint8)
    out = recolour_object(image, (20.0, 20.0, 40.0, 40.0), "red")
    centre = out[27:33, 27:33].reshape(-1, 3).astype(float).mean(axis=0)
    red = np.array(PALETTE["red"], dtype=float)
    assert np.linalg.norm(centre - red) < np.linalg.norm(image[30, 30].astype(float) - red)
    assert centre[0] > centre[1]                         # red now dominates green
    assert np.array_equal(out[:18], image[:18])           # outside the box untouched
    with pytest.raises(DatasetError, match="colour 'teal'"):
        recolour_object(image, (0.0, 0.0, 5.0, 5.0), "teal")


def _named(expr, objects: list[VocObject]) -> list[VocObject]:
    """Independent reading of an expression: plain cells, status from the name, superlative."""
    pool = objects
    if expr.attr is not None:
        pool = [o for o in pool if {"alive": "living", "dead": "dead"}.get(o.name.lower())
                == expr.attr]
    if expr.cell is not None:
        pool = [o for o in pool
                if cell_of((o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2, 200, 200)
                == expr.cell]
    if expr.size is not None and pool:
        area = lambda o: (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])  # noqa: E731
        pool = [(max if expr.size == "largest" else min)(pool, key=area)]
    return pool


@pytest.fixture(scope="module")
def osbs(shared_data: Path) -> list[Sample]:
    images = shared_data / "images"
    if not (images / "neon-trees" / "OSBS_029.xml").is_file():
        pytest.skip(f"no neon-trees/OSBS_029.xml in {images}")
    samples = load_skymoe_samples(images, tasks=("neon-count", "neon-grounding"),
                                  refs_per_tile=6)
    return [s for s in samples if s.image_path.stem in ("OSBS_029", "SOAP_061")]


def test_augment_to_cache_on_real_tiles(osbs: list[Sample], tmp_path: Path) -> None:
    out = augment_to_cache(osbs, tmp_path / "a", seed=0)
    assert {s.task for s in out} == {"neon-count", "neon-grounding"}
    kinds = {s.qtype for s in out}
    assert any("colour" in k for k in kinds) and "refer-position" in kinds
    moved = 0
    for s in out:
        assert s.crop is None and s.image_path.is_file()
        scene = read_voc(s.image_path.with_suffix(".xml"))   # boxes inside the image (checked)
        assert (scene.width, scene.height) == (200, 200)
        if task_family(s) == "counting":
            assert int(s.answer) == len(scene.objects)
            continue
        (box,) = parse_boxes(s.answer)
        expr = parse_refer(s.prompt)
        target = [o for o in scene.objects
                  if all(abs(a - b * 2) <= 1 for a, b in zip(o.box, box, strict=True))]
        assert len(target) == 1
        others = [o for o in scene.objects if o is not target[0]]
        if expr.attr not in PALETTE:       # colour is not in the XML's names: checked below
            assert _named(expr, list(scene.objects)) == target
        if expr.attr in PALETTE:          # colour edit: one tree carries the colour, the named one
            assert "colour" in s.qtype
            tagged = [(o.findtext("colour"), o.findtext("bndbox/xmin"))
                      for o in ET.parse(s.image_path.with_suffix(".xml")).getroot().iter("object")
                      if o.findtext("colour")]
            assert tagged == [(expr.attr, str(int(target[0].box[0])))]
        elif expr.cell is not None and "-0.png" in s.image_path.name and \
                s.image_path.parent.name == "position":
            moved += 1
            cx, cy = (target[0].box[0] + target[0].box[2]) / 2, \
                (target[0].box[1] + target[0].box[3]) / 2
            assert cell_of(cx, cy, 200, 200) == expr.cell
            assert all(iou(target[0].box, o.box) < 0.1 for o in others)
    assert moved > 0
    # counting variants of one tile: four, counts apart by >= ceil(0.1 N_c)
    tile = next(s for s in osbs if s.task == "neon-count" and int(s.answer) >= 10)
    ladder = augment_to_cache([tile], tmp_path / "b", seed=0)
    counts = [int(tile.answer)] + [int(s.answer) for s in ladder]
    assert len(ladder) == 4
    step = math.ceil(0.1 * counts[0])
    assert all(a - b >= step for a, b in zip(counts, counts[1:], strict=False))


def test_augment_is_deterministic_per_seed(osbs: list[Sample], tmp_path: Path) -> None:
    few = [s for s in osbs if s.task == "neon-grounding"][:4] + \
        [s for s in osbs if s.task == "neon-count"][:2]
    a = augment_to_cache(few, tmp_path / "a", seed=3)
    b = augment_to_cache(few, tmp_path / "b", seed=3)
    c = augment_to_cache(few, tmp_path / "c", seed=4)
    assert [(s.prompt, s.answer, s.image_path.name) for s in a] == \
        [(s.prompt, s.answer, s.image_path.name) for s in b]
    assert all(x.image_path.read_bytes() == y.image_path.read_bytes() for x, y in zip(a, b,
                                                                                        strict=True))
    assert [s.image_path.name for s in a] != [s.image_path.name for s in c]
    with pytest.raises(DatasetError, match="'blur'"):
        augment_to_cache(few, tmp_path / "d", kinds=("cutout", "blur"))


def test_cells_cover_the_grid() -> None:
    assert [cell_of(x, y, 90, 90) for y in (10, 40, 80) for x in (10, 40, 80)] == list(CELLS)
