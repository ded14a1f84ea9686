"""Labelled remote-sensing samples for the small VLMs: tasks, prompts, answers, splits by image.

Owns reading the real labelled folders (RSVQA-LR/HR `qa.json`, EuroSAT-RGB, UC Merced, NEON
trees as Pascal VOC boxes) into
(image, prompt, answer) samples and splitting them by image, so no test image is seen in
training. It takes the data folder as an argument (nodes never imports testbed).

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

__all__ = ["SPLITS", "TASKS", "TILE_PX", "Sample", "area_bin", "count_bin", "load_samples",
           "select_split", "split_of", "tile_tree_counts", "tokenize_words", "tree_bin"]

TASKS = ("rsvqa-lr", "rsvqa-hr", "eurosat-rgb", "ucmerced", "neon-trees")
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
        key = f"{self.task}/{self.image_path.parent.name}/{self.image_path.name}"
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


def _neon(root: Path) -> list[Sample]:
    base = root / "neon-trees"
    xmls = sorted(base.glob("*.xml"))
    if not xmls:
        raise DatasetError(f"{base}: no Pascal VOC .xml files, expected one per scene")
    out = []
    for xml in xmls:
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


def _classes(root: Path, task: str, per_class: int | None) -> list[Sample]:
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
    """All samples of `tasks` under `data_images_dir` (the data folder's `images/`)."""
    out: list[Sample] = []
    for task in tasks:
        if task not in TASKS:
            raise DatasetError(f"unknown task {task!r}; choose: {', '.join(TASKS)}")
        if task.startswith("rsvqa"):
            out.extend(_rsvqa(Path(data_images_dir), task))
        elif task == "neon-trees":
            out.extend(_neon(Path(data_images_dir)))
        else:
            per = eurosat_per_class if task == "eurosat-rgb" else None
            out.extend(_classes(Path(data_images_dir), task, per))
    return out


def select_split(samples: Sequence[Sample], split: str, seed: int = 0) -> list[Sample]:
    """The samples whose image falls in `split`."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; choose: {', '.join(SPLITS)}")
    return [s for s in samples if split_of(s.image_key, seed) == split]


def subsample(samples: Sequence[Sample], per_task: int, seed: int = 0) -> list[Sample]:
    """Up to `per_task` samples of each task (seeded), ordered by image then prompt."""
    import random

    rng = random.Random(seed)
    by_task: dict[str, list[Sample]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    out: list[Sample] = []
    for task in sorted(by_task):
        group = by_task[task]
        out.extend(sorted(rng.sample(group, min(per_task, len(group))),
                          key=lambda s: (s.image_key, s.prompt)))
    return out
