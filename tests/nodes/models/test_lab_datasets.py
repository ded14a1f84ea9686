"""RESISC45 and DOTA-v1.0 loaders on hand-made files in their published layouts; Pascal VOC
files and tiles; boxes as text."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.models.errors import DatasetError
from nodes.models.vlm.boxes import (
    detection_f1,
    format_box,
    format_boxes,
    iou,
    match_boxes,
    parse_boxes,
)
from nodes.models.vlm.data import VocObject, read_voc, scene_tiles, tile_objects
from nodes.models.vlm.lab_datasets import load_dota, load_resisc45, read_dota_labels


def _png(path: Path, width: int, height: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (90, 120, 60)).save(path)


def test_resisc45_folders_and_split_files(tmp_path: Path) -> None:
    for cls in ("airplane", "basketball_court", "sea_ice"):
        for k in (1, 2, 3):
            _png(tmp_path / cls / f"{cls}_{k:03d}.jpg", 8, 8)
    (tmp_path / "resisc45-test.txt").write_text("sea_ice_002.jpg\nairplane_001.jpg\n\n")
    everything = load_resisc45(tmp_path)
    assert len(everything) == 9
    assert {s.answer for s in everything} == {"airplane", "basketball court", "sea ice"}
    assert all(s.task == "resisc45" and s.qtype == "class" for s in everything)
    test = load_resisc45(tmp_path, "test")
    assert [(s.image_path.name, s.answer) for s in test] == [("sea_ice_002.jpg", "sea ice"),
                                                              ("airplane_001.jpg", "airplane")]
    with pytest.raises(DatasetError, match="resisc45-train.txt: missing"):
        load_resisc45(tmp_path, "train")
    (tmp_path / "resisc45-val.txt").write_text("beach_001.jpg\n")
    with pytest.raises(DatasetError, match="'beach_001.jpg'"):
        load_resisc45(tmp_path, "val")
    with pytest.raises(DatasetError, match="split 'dev'"):
        load_resisc45(tmp_path, "dev")
    with pytest.raises(DatasetError, match="missing"):
        load_resisc45(tmp_path / "nope")


DOTA_LABEL = """imagesource:GoogleEarth
gsd:0.146343590398
100.0 100.0 140.0 100.0 140.0 120.0 100.0 120.0 plane 0
300 50 340 60 335 80 295 70 small-vehicle 0
310 40 330 40 330 50 310 50 small-vehicle 1
1100 900 1200 900 1200 1000 1100 1000 storage-tank 0
"""


def test_dota_label_file(tmp_path: Path) -> None:
    path = tmp_path / "P0001.txt"
    path.write_text(DOTA_LABEL)
    labels = read_dota_labels(path)
    assert labels.image_source == "GoogleEarth"
    assert labels.gsd == pytest.approx(0.146343590398)
    assert [o.category for o in labels.objects] == ["plane", "small-vehicle", "small-vehicle",
                                                    "storage-tank"]
    assert labels.objects[1].box == (295.0, 50.0, 340.0, 80.0)
    assert labels.objects[2].difficult and not labels.objects[1].difficult
    path.write_text("gsd:null\n1 2 3 4 5 6 7 8 plane\n")          # no difficulty column
    labels = read_dota_labels(path)
    assert labels.gsd is None and labels.objects[0].difficult is False


@pytest.mark.parametrize(("text", "message"), [
    ("1 2 3 4 5 6 plane 0\n", "8 fields"),
    ("1 2 3 4 5 6 7 x plane 0\n", "expected 8 numbers"),
    ("1 2 3 4 5 6 7 8 car 0\n", "category 'car'"),
    ("1 2 3 4 5 6 7 8 plane 2\n", "difficult '2'"),
    ("gsd:abc\n", "gsd 'abc'"),
])
def test_dota_label_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "P0002.txt"
    path.write_text("imagesource:GoogleEarth\n" + text)
    with pytest.raises(DatasetError, match=message) as err:
        read_dota_labels(path)
    assert "P0002.txt:2" in str(err.value)


def test_dota_tiles_and_detection_samples(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "P0001.png", 1500, 1100)
    (tmp_path / "labelTxt").mkdir()
    (tmp_path / "labelTxt" / "P0001.txt").write_text(DOTA_LABEL)
    samples = load_dota(tmp_path, tile_px=1024)
    # tiles: x 0-1024 and 1024-1500 (476 px < 512: left out); y 0-1024 only (76 px left out)
    assert {s.crop for s in samples} == {(0, 0, 1024, 1024)}
    by_prompt = {s.prompt: s for s in samples}
    assert set(by_prompt) == {"detect every plane in this image",
                              "detect every small vehicle in this image"}
    vehicles = parse_boxes(by_prompt["detect every small vehicle in this image"].answer)
    assert len(vehicles) == 1                                   # the difficult one left out
    assert by_prompt["detect every plane in this image"].answer == \
        format_box((100, 100, 140, 120), 1024, 1024)
    both = load_dota(tmp_path, tile_px=1024, include_difficult=True)
    assert len(parse_boxes(next(s for s in both if "vehicle" in s.prompt).answer)) == 2
    # smaller tiles: the storage tank's tile appears, its box in the tile's frame
    tiles = load_dota(tmp_path, tile_px=600)
    tank = next(s for s in tiles if "storage tank" in s.prompt)
    assert tank.crop == (600, 600, 1200, 1100)
    assert parse_boxes(tank.answer) == [(83.0, 60.0, 100.0, 80.0)]
    assert all(s.task == "dota" and s.qtype == "detect" for s in tiles)
    (tmp_path / "labelTxt" / "P0009.txt").write_text("")
    with pytest.raises(DatasetError, match="no image P0009"):
        load_dota(tmp_path)
    with pytest.raises(DatasetError, match="images/ and labelTxt/"):
        load_dota(tmp_path / "images")


def test_box_text_round_trip_and_matching() -> None:
    assert format_box((10, 20, 60, 120), 200, 200) == "<box>(5,10),(30,60)</box>"
    assert parse_boxes("x <box>( 30 , 60 ),(5,10)</box> y") == [(5.0, 10.0, 30.0, 60.0)]
    text = format_boxes([(100, 100, 120, 120), (0, 0, 20, 20)], 200, 200)
    assert text == "<box>(0,0),(10,10)</box><box>(50,50),(60,60)</box>"
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    with pytest.raises(ValueError, match="x0 <= x1"):
        format_box((10, 0, 5, 5), 20, 20)
    assert match_boxes([(0, 0, 10, 10), (0, 0, 10, 9)], [(0, 0, 10, 10)]) == (1, 1, 0)
    assert detection_f1(text, text) == pytest.approx(1.0)
    assert detection_f1("none", "none") == pytest.approx(1.0)
    assert detection_f1("<box>(0,0),(10,10)</box>", text) == pytest.approx(2 / 3)


VOC = """<annotation><size><width>100</width><height>80</height><depth>3</depth></size>
<object><name>Dead</name><difficult>1</difficult>
<bndbox><xmin>10</xmin><ymin>5</ymin><xmax>30</xmax><ymax>25</ymax></bndbox></object>
<object><name>Tree</name>
<bndbox><xmin>60</xmin><ymin>40</ymin><xmax>{xmax}</xmax><ymax>70</ymax></bndbox></object>
</annotation>"""


def test_read_voc_and_tiles(tmp_path: Path) -> None:
    path = tmp_path / "scene.xml"
    path.write_text(VOC.format(xmax=90))
    scene = read_voc(path)
    assert (scene.width, scene.height) == (100, 80)
    assert scene.objects[0] == VocObject("Dead", (10.0, 5.0, 30.0, 25.0), True)
    assert scene_tiles(100, 80, 40) == [(0, 0, 40, 40), (40, 0, 80, 40), (0, 40, 40, 80),
                                        (40, 40, 80, 80)]
    # the second tree's centre (75, 55) is in tile (40, 40, 80, 80); its box is clipped there
    assert tile_objects(scene, (40, 40, 80, 80)) == [VocObject("Tree", (20.0, 0.0, 40.0, 30.0))]
    assert [o.name for o in tile_objects(scene, None)] == ["Dead", "Tree"]
    path.write_text(VOC.format(xmax=120))
    with pytest.raises(DatasetError, match="object 1 box .* outside the 100x80 image"):
        read_voc(path)
    path.write_text(VOC.format(xmax="wide"))
    with pytest.raises(DatasetError, match="<bndbox/xmax> is 'wide'"):
        read_voc(path)
    path.write_text("<annotation>")
    with pytest.raises(DatasetError, match="cannot read Pascal VOC XML"):
        read_voc(path)
