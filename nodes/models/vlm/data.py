"""Labelled remote-sensing samples for the small VLMs: tasks, prompts, answers, splits by image.

Owns reading the real labelled folders (RSVQA-LR/HR `qa.json`, EuroSAT-RGB, UC Merced, NEON
trees as Pascal VOC boxes) into
(image, prompt, answer) samples and splitting them by image, so no test image is seen in
training. It takes the data folder as an argument (nodes never imports testbed).

The extra task `neon-detection` (accepted by `load_samples`, not in its default `TASKS`) asks for
every tree of a NEON tile; its answer is the boxes as text (`nodes.models.vlm.boxes`).

Simplifications: RSVQA count and area answers are binned (`count_bin`, `area_bin`) into a
closed vocabulary, as RSVQA's own evaluation does for counts; EuroSAT is subsampled per class;
NEON scenes are cut into 200 px tiles whose tree count (boxes whose centre lies in the tile) is
binned (`tree_bin`); tiles of one scene may fall in different splits (there are only 4 scenes).
"""

from __future__ import annotations

import hashlib
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodes.models.errors import DatasetError

__all__ = ["EXTRA_TASKS", "SPLITS", "TASKS", "TILE_PX", "Sample", "VocObject", "VocScene",
           "area_bin", "class_samples", "count_bin", "load_samples", "neon_xmls", "read_voc",
           "scene_tiles", "select_split", "split_of", "tile_objects", "tile_tree_counts",
           "tokenize_words", "tree_bin"]

TASKS = ("rsvqa-lr", "rsvqa-hr", "eurosat-rgb", "ucmerced", "neon-trees")
# Accepted by load_samples but left out of its default, so the default set stays as it was.
EXTRA_TASKS = ("neon-detection",)
DETECT_PROMPT = "detect every tree in this image"
# Tasks that ask about the same image files split together (a test tile stays a test tile for
# every question asked about it); a task not named here is its own group.
_SPLIT_GROUP = {"neon-detection": "neon-trees", "neon-count": "neon-trees",
                "neon-grounding": "neon-trees"}
TILE_PX = 200
SPLITS = ("train", "calib", "test")
_WORD = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True)
class Sample:
    """One labelled question about one image file."""

    task: str
    image_path: Path
    prompt: str
    answer: str
    qtype: str
    crop: tuple[int, int, int, int] | None = None  # x0, y0, x1, y1 in px (a tile)

    @property
    def image_key(self) -> str:
        """The identity used for splitting: task plus file name (plus the tile)."""
        group = _SPLIT_GROUP.get(self.task, self.task)
        key = f"{group}/{self.image_path.parent.name}/{self.image_path.name}"
        return key if self.crop is None else key + "@{},{},{},{}".format(*self.crop)


def tokenize_words(text: str) -> list[str]:
    """Lower-case alphanumeric words: the small models' tokenizer for prompts and answers."""
    return _WORD.findall(text.lower())


def count_bin(answer: str) -> str:
    """RSVQA count answer -> one of `0`, `1 to 10`, `11 to 100`, `101 to 1000`, `over 1000`."""
    n = int(answer)
    if n == 0:
        return "0"
    for upper, label in ((10, "1 to 10"), (100, "11 to 100"), (1000, "101 to 1000")):
        if n <= upper:
            return label
    return "over 1000"


def area_bin(answer: str) -> str:
    """RSVQA-HR area answer (`"407m2"`) -> `0 m2`, `1 to 10 m2`, ... `over 1000 m2` bins."""
    n = int(answer.removesuffix("m2"))
    if n == 0:
        return "0 m2"
    for upper, label in ((10, "1 to 10 m2"), (100, "11 to 100 m2"), (1000, "101 to 1000 m2")):
        if n <= upper:
            return label
    return "over 1000 m2"


def tree_bin(n: int) -> str:
    """Trees in a tile -> `0`, `1 to 2`, `3 to 5`, `6 to 10`, `over 10`."""
    if n == 0:
        return "0"
    for upper, label in ((2, "1 to 2"), (5, "3 to 5"), (10, "6 to 10")):
        if n <= upper:
            return label
    return "over 10"


def tile_tree_counts(xml_path: Path, tile_px: int = TILE_PX) -> dict[tuple[int, int], int]:
    """Trees per whole tile of a Pascal VOC scene, keyed by the tile's (x0, y0) in px.

    A tree belongs to the tile holding its box centre; partial tiles at the edges are left out.
    """
    root = ET.parse(xml_path).getroot()
    w, h = int(root.findtext("size/width")), int(root.findtext("size/height"))
    counts = {(tx * tile_px, ty * tile_px): 0
              for ty in range(h // tile_px) for tx in range(w // tile_px)}
    for box in root.iter("bndbox"):
        x0, y0, x1, y1 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        key = (int((x0 + x1) / 2) // tile_px * tile_px, int((y0 + y1) / 2) // tile_px * tile_px)
        if key in counts:
            counts[key] += 1
    return counts


@dataclass(frozen=True)
class VocObject:
    """One annotated object: its class name as the XML writes it and its pixel box."""

    name: str
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in px
    difficult: bool = False


@dataclass(frozen=True)
class VocScene:
    """A Pascal VOC annotation file: the image size and its objects."""

    path: Path
    width: int
    height: int
    objects: tuple[VocObject, ...]


def _voc_int(node: ET.Element, field_path: str, xml_path: Path) -> int:
    text = node.findtext(field_path)
    try:
        return int(float(text))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DatasetError(f"{xml_path}: field <{field_path}> is {text!r}, expected a number"
                           ) from None


def read_voc(xml_path: Path) -> VocScene:
    """A Pascal VOC file's size and objects; boxes must lie inside the image, min <= max."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise DatasetError(f"{xml_path}: cannot read Pascal VOC XML ({exc})") from None
    w, h = _voc_int(root, "size/width", xml_path), _voc_int(root, "size/height", xml_path)
    objects = []
    for i, obj in enumerate(root.iter("object")):
        box = tuple(float(_voc_int(obj, f"bndbox/{k}", xml_path))
                    for k in ("xmin", "ymin", "xmax", "ymax"))
        if not (0 <= box[0] <= box[2] <= w and 0 <= box[1] <= box[3] <= h):
            raise DatasetError(f"{xml_path}: object {i} box {box} outside the {w}x{h} image "
                               "or min > max")
        objects.append(VocObject((obj.findtext("name") or "").strip(), box,  # type: ignore[arg-type]
                                 (obj.findtext("difficult") or "0").strip() == "1"))
    return VocScene(xml_path, w, h, tuple(objects))


def scene_tiles(width: int, height: int, tile_px: int = TILE_PX) -> list[tuple[int, int, int, int]]:
    """The whole `tile_px` tiles of an image, row by row; partial tiles at the edges left out."""
    return [(tx * tile_px, ty * tile_px, (tx + 1) * tile_px, (ty + 1) * tile_px)
            for ty in range(height // tile_px) for tx in range(width // tile_px)]


def tile_objects(scene: VocScene, crop: tuple[int, int, int, int] | None) -> list[VocObject]:
    """The objects of one tile, in the tile's frame: those whose box centre (rounded down, as
    `tile_tree_counts`) lies in the tile, each box clipped to the tile. `None`: the whole image."""
    x0, y0, x1, y1 = crop if crop is not None else (0, 0, scene.width, scene.height)
    out = []
    for obj in scene.objects:
        bx0, by0, bx1, by1 = obj.box
        cx, cy = int((bx0 + bx1) / 2), int((by0 + by1) / 2)
        if x0 <= cx < x1 and y0 <= cy < y1:
            box = (max(bx0, x0) - x0, max(by0, y0) - y0, min(bx1, x1) - x0, min(by1, y1) - y0)
            out.append(VocObject(obj.name, box, obj.difficult))
    return out


def neon_xmls(root: Path) -> list[Path]:
    """The NEON scenes' Pascal VOC files under `root/neon-trees` (the image: same stem, .png)."""
    base = root / "neon-trees"
    xmls = sorted(base.glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{base}: no Pascal VOC .xml files, expected one per scene")
    return xmls


def _neon_detection(root: Path) -> list[Sample]:
    from nodes.models.vlm.boxes import format_boxes

    out = []
    for xml in neon_xmls(root):
        scene = read_voc(xml)
        for crop in scene_tiles(scene.width, scene.height):
            objs = tile_objects(scene, crop)
            answer = format_boxes([o.box for o in objs], TILE_PX, TILE_PX) if objs else "none"
            out.append(Sample("neon-detection", xml.with_suffix(".png"), DETECT_PROMPT, answer,
                              "detect", crop))
    return out


def _neon(root: Path) -> list[Sample]:
    out = []
    for xml in neon_xmls(root):
        png = xml.with_suffix(".png")
        for (x0, y0), n in sorted(tile_tree_counts(xml).items(), key=lambda kv: kv[0][::-1]):
            out.append(Sample("neon-trees", png, "how many trees are in this image",
                              tree_bin(n), "count", (x0, y0, x0 + TILE_PX, y0 + TILE_PX)))
    return out


def split_of(image_key: str, seed: int = 0, calib_fraction: float = 0.1,
             test_fraction: float = 0.2) -> str:
    """Deterministic split of one image by a hash of its key: `train`, `calib` or `test`."""
    digest = hashlib.sha256(f"{seed}:{image_key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + calib_fraction:
        return "calib"
    return "train"


def _rsvqa(root: Path, task: str) -> list[Sample]:
    qa_path = root / task / "qa.json"
    if not qa_path.is_file():
        raise DatasetError(f"{qa_path}: missing, expected RSVQA qa.json with images and questions")
    qa = json.loads(qa_path.read_text())
    out = []
    for q in qa["questions"]:
        answer = q["answer"]
        if q["type"] == "count":
            answer = count_bin(answer)
        elif q["type"] == "area":
            answer = area_bin(answer)
        out.append(Sample(task, root / task / q["image"], q["question"], answer, q["type"]))
    return out


_CLASS_PROMPT = {
    "eurosat-rgb": "what is the land use class of this sentinel image",
    "ucmerced": "what is the scene class of this aerial image",
}
_SPLIT_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def _class_words(folder_name: str) -> str:
    """`AnnualCrop` -> `annual crop`; `denseresidential` stays one word."""
    return " ".join(_SPLIT_CAMEL.split(folder_name)).lower()


def class_samples(root: Path, task: str, per_class: int | None) -> list[Sample]:
    """One sample per image file of `root/task/<class>/`, at most `per_class` per class (a
    fixed, name-hashed subset)."""
    base = root / task
    if not base.is_dir():
        raise DatasetError(f"{base}: missing, expected one folder per class")
    out = []
    for cls in sorted(p for p in base.iterdir() if p.is_dir()):
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpg", ".png"))
        files.sort(key=lambda f: hashlib.sha256(f.name.encode()).hexdigest())
        for f in files[:per_class]:
            out.append(Sample(task, f, _CLASS_PROMPT[task], _class_words(cls.name), "class"))
    return out


def load_samples(data_images_dir: Path, tasks: Iterable[str] = TASKS,
                 eurosat_per_class: int | None = 150) -> list[Sample]:
    """All samples of `tasks` under `data_images_dir` (the data folder's `images/`); `TASKS` by
    default, `EXTRA_TASKS` (`neon-detection`) on request."""
    out: list[Sample] = []
    for task in tasks:
        if task not in TASKS + EXTRA_TASKS:
            raise DatasetError(f"unknown task {task!r}; choose: {', '.join(TASKS + EXTRA_TASKS)}")
        if task == "neon-detection":
            out.extend(_neon_detection(Path(data_images_dir)))
        elif task.startswith("rsvqa"):
            out.extend(_rsvqa(Path(data_images_dir), task))
        elif task == "neon-trees":
            out.extend(_neon(Path(data_images_dir)))
        else:
            per = eurosat_per_class if task == "eurosat-rgb" else None
            out.extend(class_samples(Path(data_images_dir), task, per))
    return out


def select_split(samples: Sequence[Sample], split: str, seed: int = 0) -> list[Sample]:
    """The samples whose image falls in `split`."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose: {', '.join(SPLITS)}")
    return [s for s in samples if split_of(s.image_key, seed) == split]
