"""SkyMoE's samples on the real images: templates, families, unambiguous referring expressions
(checked by an independent reading of each expression), exact counts, splits, scores."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import format_box, parse_boxes
from nodes.models.vlm.data import (
    TILE_PX,
    VocObject,
    load_samples,
    select_split,
    split_of,
    tile_tree_counts,
)
from nodes.skymoe.tasks import (
    CELLS,
    CLASSIFY_PROMPT,
    COUNT_PROMPT,
    POSITION_PHRASES,
    RefExpr,
    cell_of,
    conversation,
    load_skymoe_samples,
    parse_refer,
    referring_expressions,
    sample_objects,
    score,
    task_family,
)


@pytest.fixture(scope="module")
def images(shared_data: Path) -> Path:
    path = shared_data / "images"
    if not (path / "neon-trees").is_dir():
        pytest.skip(f"no neon-trees folder in {path}")
    return path


@pytest.fixture(scope="module")
def neon(images: Path) -> list:
    return load_skymoe_samples(images, tasks=("neon-count", "neon-grounding"))


def test_families_and_templates(images: Path) -> None:
    samples = load_skymoe_samples(images, tasks=("rsvqa-lr", "ucmerced", "neon-count",
                                                 "neon-grounding"))
    fams = Counter(task_family(s) for s in samples)
    assert set(fams) == {"vqa", "classification", "counting", "grounding"}
    lr = [s for s in samples if s.task == "rsvqa-lr"]
    assert len(lr) == 5005
    # RSVQA count questions are counting with their exact answers; the rest VQA as given.
    counts = [s for s in lr if task_family(s) == "counting"]
    assert counts and all(s.qtype == "count" and s.answer.isdigit() for s in counts)
    assert any(int(s.answer) > 1000 for s in counts)      # not binned
    ucm = [s for s in samples if s.task == "ucmerced"]
    assert len(ucm) == 420 and all(s.prompt == CLASSIFY_PROMPT for s in ucm)
    assert {"dense residential", "tennis court", "forest"} <= {s.answer for s in ucm}
    turn = conversation(ucm[0])
    assert [t["role"] for t in turn] == ["user", "assistant"]
    assert turn[0]["content"] == "<image>\n" + CLASSIFY_PROMPT
    assert turn[1]["content"] == ucm[0].answer


def test_eurosat_class_words(images: Path) -> None:
    samples = load_skymoe_samples(images, tasks=("eurosat-rgb",), eurosat_per_class=2)
    assert len(samples) == 20
    assert {"annual crop", "herbaceous vegetation", "sea lake"} <= {s.answer for s in samples}


def test_counting_answers_are_exact_tile_counts(images: Path, neon: list) -> None:
    count = [s for s in neon if s.task == "neon-count"]
    assert len(count) == 170 and all(s.prompt == COUNT_PROMPT for s in count)
    for s in count[:40]:
        per_tile = tile_tree_counts(s.image_path.with_suffix(".xml"))
        assert int(s.answer) == per_tile[s.crop[:2]] == len(sample_objects(s))
    assert sum(int(s.answer) for s in count) > 500


def _centre(o: VocObject) -> tuple[float, float]:
    return (o.box[0] + o.box[2]) / 2, (o.box[1] + o.box[3]) / 2


def _area(o: VocObject) -> float:
    return (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])


def test_every_grounding_sample_names_exactly_one_tree(neon: list) -> None:
    """Independent reading: the trees satisfying the expression's words (plain 3x3 cells, status
    from the XML name, largest/smallest among them) are exactly the answer's tree."""
    ground = [s for s in neon if s.task == "neon-grounding"]
    assert len(ground) > 150
    kinds = Counter(s.qtype for s in ground)
    assert {"refer-position", "refer-size", "refer-size-position"} <= set(kinds)
    assert any("status" in k for k in kinds)           # SOAP_061 has Alive/Dead labels
    for s in ground:
        expr = parse_refer(s.prompt)
        assert s.prompt == f"[refer] Where is <p>{expr.text()}</p>?"
        objs = sample_objects(s)
        pool = objs
        if expr.attr is not None:
            pool = [o for o in pool if {"alive": "living", "dead": "dead"}.get(o.name.lower())
                    == expr.attr]
        if expr.cell is not None:
            pool = [o for o in pool if cell_of(*_centre(o), TILE_PX, TILE_PX) == expr.cell]
        if expr.size is not None:
            pick = max if expr.size == "largest" else min
            pool = [pick(pool, key=_area)]
        assert len(pool) == 1, (s.prompt, s.crop)
        (box,) = parse_boxes(s.answer)
        assert s.answer == format_box(pool[0].box, TILE_PX, TILE_PX)
        assert 0 <= box[0] <= box[2] <= 100 and 0 <= box[1] <= box[3] <= 100
        assert task_family(s) == "grounding"


def test_counting_and_grounding_of_a_tile_share_its_split(neon: list) -> None:
    by_tile: dict = {}
    for s in neon:
        by_tile.setdefault((s.image_path, s.crop), set()).add(split_of(s.image_key))
    assert all(len(v) == 1 for v in by_tile.values())
    test = select_split(neon, "test")
    assert 0 < len(test) < len(neon)


def test_seed_picks_expressions_deterministically(images: Path) -> None:
    a = load_skymoe_samples(images, seed=0, tasks=("neon-grounding",))
    b = load_skymoe_samples(images, seed=0, tasks=("neon-grounding",))
    c = load_skymoe_samples(images, seed=1, tasks=("neon-grounding",), refs_per_tile=1)
    assert a == b
    assert len(c) < len(a)
    with pytest.raises(DatasetError, match="refs_per_tile=0"):
        load_skymoe_samples(images, tasks=("neon-grounding",), refs_per_tile=0)
    with pytest.raises(DatasetError, match="unknown SkyMoE task 'neon-trees'"):
        load_skymoe_samples(images, tasks=("neon-trees",))


def _o(x0: float, y0: float, x1: float, y1: float, name: str = "Tree") -> VocObject:
    return VocObject(name, (x0, y0, x1, y1))


def test_referring_expressions_on_hand_made_tiles() -> None:
    # 90 px tile, 30 px cells: a big tree top left, a small one in the centre, two similar
    # ones in the bottom right (so neither is "the tree in the bottom right").
    objs = [_o(2, 2, 22, 22), _o(42, 42, 48, 48), _o(62, 62, 72, 72), _o(75, 75, 85, 86)]
    got = {(e.text(), i) for e, i in referring_expressions(objs, 90)}
    assert ("the tree in the top left", 0) in got
    assert ("the tree in the center", 1) in got
    assert ("the largest tree", 0) in got and ("the smallest tree", 1) in got
    assert not any(i in (2, 3) and "bottom right" in t and "largest" not in t
                   and "smallest" not in t for t, i in got)
    # 10x10 vs 10x11 differ by 10 % < 25 %: no superlative inside that cell either
    assert not any("bottom right" in t for t, _ in got)
    # a centre within 5 % of a cell border is ambiguous: no position phrase for it
    border = [_o(25, 5, 35, 15), _o(60, 60, 80, 80)]
    assert all(i != 0 or e.cell is None for e, i in referring_expressions(border, 90))
    # alive/dead labels give status expressions
    status = [_o(0, 0, 10, 10, "Dead"), _o(50, 50, 60, 60, "Alive"), _o(70, 0, 80, 10, "Alive")]
    got = {(e.text(), i) for e, i in referring_expressions(status, 90)}
    assert ("the dead tree", 0) in got and not any(t == "the living tree" for t, _ in got)


def test_parse_refer_round_trip_and_errors() -> None:
    for cell in CELLS:
        for expr in (RefExpr(cell=cell), RefExpr("largest", "dead", cell),
                     RefExpr("smallest", "red", cell)):
            assert parse_refer(f"[refer] Where is <p>{expr.text()}</p>?") == expr
    assert RefExpr("largest", "red", "top").kind() == "refer-size-colour-position"
    assert len(set(POSITION_PHRASES.values())) == 9
    with pytest.raises(DatasetError, match="the big house"):
        parse_refer("[refer] Where is <p>the big house</p>?")


def test_scores() -> None:
    vqa = load_like("rsvqa-hr", "Yes", "presence")
    assert score(vqa, " yes.")["correct"] is True
    assert score(vqa, "no")["correct"] is False
    cnt = load_like("neon-count", "12", "count")
    assert score(cnt, "There are 12 trees.") == {"correct": True, "abs_error": 0.0, "parsed": True}
    assert score(cnt, "nine") == {"correct": False, "abs_error": 3.0, "parsed": True}
    assert score(cnt, "many") == {"correct": False, "abs_error": 12.0, "parsed": False}
    with pytest.raises(DatasetError, match="exact count"):
        score(load_like("neon-trees", "1 to 2", "count"), "1")
    ref = load_like("neon-grounding", "<box>(0,0),(40,40)</box>", "refer-position")
    got = score(ref, "<box>(0, 0), (40, 40)</box>")
    assert got["iou"] == pytest.approx(1.0) and got["correct@0.7"] is True
    got = score(ref, "it is at <box>(20,0),(60,40)</box>")    # overlap 20x40 of 2400 total
    assert got["iou"] == pytest.approx(800 / 2400)
    assert got["correct@0.5"] is False and got["parsed"] is True
    assert score(ref, "top left")["parsed"] is False
    cap = load_like("ucm-captions", "a river near the farmland", "caption")
    got = score(cap, "a river near the farmland")
    assert got["bleu4"] == pytest.approx(1.0) and got["rouge_l"] == pytest.approx(1.0)
    with pytest.raises(DatasetError, match="not a SkyMoE task family"):
        task_family(load_like("neon-detection", "none", "detect"))


def load_like(task: str, answer: str, qtype: str):
    from nodes.models.vlm.data import Sample

    return Sample(task, Path("/data") / task / "x.png", "q", answer, qtype)


def test_neon_detection_task_in_load_samples(images: Path) -> None:
    default = load_samples(images, tasks=("neon-trees",))
    det = load_samples(images, tasks=("neon-detection",))
    assert [s.crop for s in det] == [s.crop for s in default]
    for s in det[:60]:
        n = tile_tree_counts(s.image_path.with_suffix(".xml"))[s.crop[:2]]
        assert len(parse_boxes(s.answer)) == n
        assert (s.answer == "none") == (n == 0)
        assert s.qtype == "detect" and split_of(s.image_key) == split_of(
            default[det.index(s)].image_key)
    with pytest.raises(DatasetError, match="neon-detection"):
        load_samples(images, tasks=("dota",))
