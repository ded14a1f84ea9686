"""SkyMoE's tasks on the real images: instruction templates, answers, task families and scores.

Owns turning the labelled folders into SkyMoE's conversational samples (VQA, scene
classification, object counting, visual grounding; captioning comes from `captions`) and
scoring one predicted answer. It reuses `nodes.models.vlm.data` (the `Sample` type, RSVQA and
class-folder readers, Pascal VOC boxes, tiles and the split by image) and knows nothing of the
model.

Templates (one per task, SkyMoE's instruction style):

- `rsvqa-lr`, `rsvqa-hr`: the RSVQA question as given; the answer as given (counts exact,
  areas as `407m2`).
- `eurosat-rgb`, `ucmerced`: `Which scene does this image belong to?`; the class in words.
- `neon-count`: `How many trees are in this image?`; the exact number of trees in the tile.
- `neon-grounding`: `[refer] Where is <p>the largest tree on the left</p>?`;
  `<box>(x0,y0),(x1,y1)</box>`.

Boxes are on a 0-100 scale of the tile (`nodes.models.vlm.boxes`). A referring expression is
made only when exactly one tree of the tile matches it (see `referring_expressions`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import format_box, iou, parse_boxes
from nodes.models.vlm.data import (
    TILE_PX,
    Sample,
    VocObject,
    class_samples,
    neon_xmls,
    read_voc,
    scene_tiles,
    tile_objects,
)

__all__ = ["CAPTION_PROMPT", "CELLS", "CLASSIFY_PROMPT", "COLOURS", "COUNT_PROMPT", "FAMILIES",
           "POSITION_PHRASES", "REFER_TEMPLATE", "SKYMOE_TASKS", "RefExpr", "cell_of",
           "conversation", "is_unambiguous", "load_skymoe_samples", "matches",
           "normalise_answer", "parse_count", "parse_refer", "referring_expressions",
           "sample_objects", "score", "task_family"]

SKYMOE_TASKS = ("rsvqa-lr", "rsvqa-hr", "eurosat-rgb", "ucmerced", "neon-count", "neon-grounding")
FAMILIES = ("vqa", "classification", "counting", "grounding", "captioning")
CLASSIFY_PROMPT = "Which scene does this image belong to?"
COUNT_PROMPT = "How many trees are in this image?"
REFER_TEMPLATE = "[refer] Where is <p>{}</p>?"
CAPTION_PROMPT = "[caption] Describe this image in one sentence."
VQA_TASKS = ("rsvqa-lr", "rsvqa-hr")

# The 3x3 grid of a tile, row by row, and how an expression names each cell.
CELLS = ("top left", "top", "top right", "left", "center", "right",
         "bottom left", "bottom", "bottom right")
POSITION_PHRASES = {
    "top left": "in the top left", "top": "at the top", "top right": "in the top right",
    "left": "on the left", "center": "in the center", "right": "on the right",
    "bottom left": "in the bottom left", "bottom": "at the bottom",
    "bottom right": "in the bottom right",
}
STATUS_WORDS = {"alive": "living", "dead": "dead"}   # NEON's Alive/Dead labels (SOAP_061)
COLOURS = ("red", "blue", "yellow", "purple", "white", "orange")  # attribute editing's palette
SIZE_RATIO = 1.25      # a superlative needs the runner-up this much smaller (or larger)
CELL_MARGIN = 0.05     # centres this close to a cell border (fraction of the tile) are ambiguous

_UCM_WORDS = {
    "baseballdiamond": "baseball diamond", "denseresidential": "dense residential",
    "golfcourse": "golf course", "mediumresidential": "medium residential",
    "mobilehomepark": "mobile home park", "parkinglot": "parking lot",
    "sparseresidential": "sparse residential", "storagetanks": "storage tanks",
    "tenniscourt": "tennis court",
}
_PHRASE_TO_CELL = {v: k for k, v in POSITION_PHRASES.items()}
_REFER = re.compile(
    r"^the (?:(?P<size>largest|smallest) )?(?:(?P<attr>[a-z]+) )?tree"
    r"(?: (?P<pos>" + "|".join(re.escape(p) for p in POSITION_PHRASES.values()) + "))?$")
_P = re.compile(r"<p>(.*?)</p>")
_NUMBER_WORDS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split())}
_INT = re.compile(r"-?\d+")


@dataclass(frozen=True)
class RefExpr:
    """A referring expression's parts: a size superlative, an attribute word (status or colour)
    and a cell of the 3x3 grid; each may be absent."""

    size: str | None = None       # "largest" | "smallest"
    attr: str | None = None       # "dead" | "living" | a colour of COLOURS
    cell: str | None = None       # one of CELLS

    def text(self) -> str:
        words = ["the"] + [w for w in (self.size, self.attr) if w] + ["tree"]
        if self.cell:
            words.append(POSITION_PHRASES[self.cell])
        return " ".join(words)

    def kind(self) -> str:
        """The qtype of a grounding sample: `refer-` + the parts it uses."""
        attr = None if self.attr is None else ("colour" if self.attr in COLOURS else "status")
        parts = [p for p, v in (("size", self.size), (attr, attr), ("position", self.cell)) if v]
        return "refer-" + "-".join(parts)


def parse_refer(prompt: str) -> RefExpr:
    """The expression inside a `[refer] Where is <p>...</p>?` prompt (or a bare expression)."""
    m = _P.search(prompt)
    text = (m.group(1) if m else prompt).strip()
    r = _REFER.match(text)
    if r is None:
        raise DatasetError(f"referring expression {text!r}: expected 'the [largest|smallest] "
                           "[attribute] tree [position phrase]'")
    pos = r.group("pos")
    return RefExpr(r.group("size"), r.group("attr"), _PHRASE_TO_CELL[pos] if pos else None)


def cell_of(x: float, y: float, width: float, height: float) -> str:
    """The cell of the 3x3 grid holding point (x, y) of a `width` x `height` image."""
    col = min(2, max(0, int(3 * x / width)))
    row = min(2, max(0, int(3 * y / height)))
    return CELLS[3 * row + col]


def _in_cell(obj: VocObject, cell: str, size: float, margin: float) -> bool:
    """Whether the object's box centre is inside `cell` grown (margin > 0) or shrunk (< 0)."""
    i = CELLS.index(cell)
    row, col = divmod(i, 3)
    cx, cy = (obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2
    x0, x1 = col * size / 3 - margin, (col + 1) * size / 3 + margin
    y0, y1 = row * size / 3 - margin, (row + 1) * size / 3 + margin
    return x0 <= cx < x1 and y0 <= cy < y1


def _area(obj: VocObject) -> float:
    return (obj.box[2] - obj.box[0]) * (obj.box[3] - obj.box[1])


def _status(obj: VocObject) -> str | None:
    return STATUS_WORDS.get(obj.name.lower())


def _superlative(target: VocObject, group: Sequence[VocObject], size: str) -> bool:
    """Whether `target` is clearly the largest/smallest of `group` (two or more objects)."""
    if len(group) < 2 or target not in group:
        return False
    areas = sorted((_area(o) for o in group), reverse=(size == "largest"))
    first, second = areas[0], areas[1]
    if _area(target) != first:
        return False
    return first >= SIZE_RATIO * second if size == "largest" else second >= SIZE_RATIO * first


def matches(expr: RefExpr, objects: Sequence[VocObject], tile_px: float,
            colours: dict[int, str] | None = None) -> list[int]:
    """Indices of the objects an expression may refer to (a tree near a cell border counts as
    a possible match of both cells). `colours`: object index -> colour word (edited objects)."""
    colours = colours or {}
    margin = CELL_MARGIN * tile_px
    pool = list(range(len(objects)))
    if expr.attr is not None:
        if expr.attr in COLOURS:
            pool = [i for i in pool if colours.get(i) == expr.attr]
        else:
            pool = [i for i in pool if _status(objects[i]) == expr.attr and i not in colours]
    if expr.cell is not None:
        pool = [i for i in pool if _in_cell(objects[i], expr.cell, tile_px, margin)]
    if expr.size is not None:
        group = [objects[i] for i in pool]
        pool = [i for i in pool if _superlative(objects[i], group, expr.size)]
    return pool


def is_unambiguous(expr: RefExpr, objects: Sequence[VocObject], target: int, tile_px: float,
                   colours: dict[int, str] | None = None) -> bool:
    """Exactly the target matches, and it sits clearly inside the named cell (if any)."""
    if matches(expr, objects, tile_px, colours) != [target]:
        return False
    return expr.cell is None or _in_cell(objects[target], expr.cell, tile_px,
                                         -CELL_MARGIN * tile_px)


def referring_expressions(objects: Sequence[VocObject], tile_px: float = TILE_PX
                          ) -> list[tuple[RefExpr, int]]:
    """Every unambiguous expression (position, size rank, alive/dead and their pairs) with the
    index of the one object it names."""
    out = []
    statuses = sorted({s for o in objects if (s := _status(o))})
    for i, obj in enumerate(objects):
        cx, cy = (obj.box[0] + obj.box[2]) / 2, (obj.box[1] + obj.box[3]) / 2
        cell = cell_of(cx, cy, tile_px, tile_px)
        for size in (None, "largest", "smallest"):
            for attr in (None, *statuses):
                for c in (None, cell):
                    expr = RefExpr(size, attr, c)
                    if expr == RefExpr():
                        continue
                    if is_unambiguous(expr, objects, i, tile_px):
                        out.append((expr, i))
    return out


def sample_objects(sample: Sample) -> list[VocObject]:
    """The annotated objects of a NEON sample's image (its tile), in the tile's frame; read from
    the Pascal VOC file beside the image (`.xml` of the same stem)."""
    xml = sample.image_path.with_suffix(".xml")
    if not xml.is_file():
        raise DatasetError(f"{xml}: missing, expected the Pascal VOC boxes of {sample.image_path}")
    return tile_objects(read_voc(xml), sample.crop)


def _rng(seed: int, key: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _neon_count(root: Path) -> list[Sample]:
    out = []
    for xml in neon_xmls(root):
        scene = read_voc(xml)
        for crop in scene_tiles(scene.width, scene.height):
            n = len(tile_objects(scene, crop))
            out.append(Sample("neon-count", xml.with_suffix(".png"), COUNT_PROMPT, str(n),
                              "count", crop))
    return out


def _neon_grounding(root: Path, seed: int, refs_per_tile: int) -> list[Sample]:
    out = []
    for xml in neon_xmls(root):
        scene = read_voc(xml)
        for crop in scene_tiles(scene.width, scene.height):
            objs = tile_objects(scene, crop)
            cands = referring_expressions(objs, TILE_PX)
            if not cands:
                continue
            png = xml.with_suffix(".png")
            rng = _rng(seed, Sample("neon-grounding", png, "", "", "", crop).image_key)
            rng.shuffle(cands)
            # Prefer distinct target trees, then fill up with the remaining expressions.
            first: dict[int, tuple[RefExpr, int]] = {}
            for cand in cands:
                first.setdefault(cand[1], cand)
            rest = [c for c in cands if c not in first.values()]
            for expr, i in (list(first.values()) + rest)[:refs_per_tile]:
                out.append(Sample("neon-grounding", png, REFER_TEMPLATE.format(expr.text()),
                                  format_box(objs[i].box, TILE_PX, TILE_PX), expr.kind(), crop))
    return out


def _class_name(task: str, folder: str) -> str:
    if task == "ucmerced":
        return _UCM_WORDS.get(folder, folder)
    return " ".join(re.split(r"(?<=[a-z])(?=[A-Z])", folder)).lower()


def load_skymoe_samples(images_dir: Path, seed: int = 0, tasks: Iterable[str] = SKYMOE_TASKS,
                        eurosat_per_class: int | None = 150, refs_per_tile: int = 3
                        ) -> list[Sample]:
    """SkyMoE's samples of `tasks` under `images_dir` (the data folder's `images/`).

    `seed` picks which unambiguous expressions a tile keeps (at most `refs_per_tile`);
    `eurosat_per_class` subsamples EuroSAT as `nodes.models.vlm.data` does. Split them by image
    with `select_split` (NEON counting and grounding tiles split together).
    """
    root = Path(images_dir)
    if refs_per_tile < 1:
        raise DatasetError(f"refs_per_tile={refs_per_tile}: expected >= 1")
    out: list[Sample] = []
    for task in tasks:
        if task in VQA_TASKS:
            out.extend(_raw_rsvqa(root, task))
        elif task in ("eurosat-rgb", "ucmerced"):
            per = eurosat_per_class if task == "eurosat-rgb" else None
            out.extend(Sample(task, s.image_path, CLASSIFY_PROMPT,
                              _class_name(task, s.image_path.parent.name), "class")
                       for s in class_samples(root, task, per))
        elif task == "neon-count":
            out.extend(_neon_count(root))
        elif task == "neon-grounding":
            out.extend(_neon_grounding(root, seed, refs_per_tile))
        else:
            raise DatasetError(f"unknown SkyMoE task {task!r}; choose: {', '.join(SKYMOE_TASKS)}")
    return out


def _raw_rsvqa(root: Path, task: str) -> list[Sample]:
    """RSVQA questions with their answers as given (the small VLMs' loader bins counts)."""
    qa_path = root / task / "qa.json"
    if not qa_path.is_file():
        raise DatasetError(f"{qa_path}: missing, expected RSVQA qa.json with images and questions")
    out = []
    for i, q in enumerate(json.loads(qa_path.read_text()).get("questions", [])):
        try:
            out.append(Sample(task, root / task / q["image"], q["question"], str(q["answer"]),
                              q["type"]))
        except KeyError as exc:
            raise DatasetError(f"{qa_path}: question {i} has no field {exc}, expected image, "
                               "question, answer, type") from None
    return out


def conversation(sample: Sample) -> list[dict[str, str]]:
    """The one conversational format of every task: a user turn holding the image placeholder
    and the instruction, an assistant turn holding the answer."""
    return [{"role": "user", "content": "<image>\n" + sample.prompt},
            {"role": "assistant", "content": sample.answer}]


def task_family(sample: Sample) -> str:
    """`vqa`, `classification`, `counting`, `grounding` or `captioning` (RSVQA count questions
    are counting)."""
    if sample.qtype == "count":
        return "counting"
    if sample.qtype.startswith("refer"):
        return "grounding"
    if sample.qtype == "class":
        return "classification"
    if sample.qtype == "caption":
        return "captioning"
    if sample.task in VQA_TASKS:
        return "vqa"
    raise DatasetError(f"sample of task {sample.task!r} qtype {sample.qtype!r}: not a SkyMoE "
                       f"task family (expected one of {', '.join(FAMILIES)})")


def normalise_answer(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: how short answers are compared."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split())


def parse_count(text: str) -> int | None:
    """The first integer (digits, or a number word up to twenty) in `text`; None if none."""
    m = _INT.search(text)
    if m:
        return int(m.group())
    for word in normalise_answer(text).split():
        if word in _NUMBER_WORDS:
            return _NUMBER_WORDS[word]
    return None


def score(sample: Sample, predicted: str, references: Sequence[str] | None = None
          ) -> dict[str, float | bool]:
    """One prediction's score, by family.

    - vqa, classification: `correct` (normalised exact match).
    - counting: `correct`, `abs_error`, `parsed` (no number read: scored as 0).
    - grounding: `iou` of the first predicted box, `correct@0.5`, `correct@0.7`, `parsed`.
    - captioning: sentence-level `bleu4`, `meteor`, `rouge_l` against `references` (default:
      the sample's own answer); corpus figures come from `nodes.skymoe.metrics`.
    """
    family = task_family(sample)
    if family in ("vqa", "classification"):
        return {"correct": normalise_answer(predicted) == normalise_answer(sample.answer)}
    if family == "counting":
        if not re.fullmatch(r"\d+", sample.answer.strip()):
            raise DatasetError(f"counting sample {sample.image_key}: answer {sample.answer!r}, "
                               "expected an exact count (binned answers are the small VLMs')")
        truth = int(sample.answer)
        pred = parse_count(predicted)
        return {"correct": pred == truth, "abs_error": float(abs((pred or 0) - truth)),
                "parsed": pred is not None}
    if family == "grounding":
        truth_boxes = parse_boxes(sample.answer)
        if len(truth_boxes) != 1:
            raise DatasetError(f"grounding sample {sample.image_key}: answer {sample.answer!r}, "
                               "expected one <box>(x0,y0),(x1,y1)</box>")
        pred_boxes = parse_boxes(predicted)
        value = iou(pred_boxes[0], truth_boxes[0]) if pred_boxes else 0.0
        return {"iou": value, "correct@0.5": value >= 0.5, "correct@0.7": value >= 0.7,
                "parsed": bool(pred_boxes)}
    from nodes.skymoe.metrics import bleu, meteor, rouge_l

    refs = list(references) if references is not None else [sample.answer]
    return {"bleu4": bleu([predicted], [refs]), "meteor": meteor(predicted, refs),
            "rouge_l": rouge_l(predicted, refs)}
