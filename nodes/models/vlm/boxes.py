"""Boxes as text: the one normalised format grounding and detection answers use, and IoU.

Owns writing a pixel box as text, reading boxes back out of a model's answer, and box overlap.
The format is `<box>(x0,y0),(x1,y1)</box>`: integer corners on a 0-100 scale of the image's
(or tile's) width and height, x0 <= x1 and y0 <= y1, (0,0) the top-left corner. Several boxes are
written one after another with no separator. Reading is lenient about spaces and accepts
decimals, so a model's near-miss spacing still parses.

    >>> format_box((10, 20, 60, 120), 200, 200)
    '<box>(5,10),(30,60)</box>'
    >>> parse_boxes('it is <box>(5, 10), (30, 60)</box>')
    [(5.0, 10.0, 30.0, 60.0)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["BOX_SCALE", "Box", "box_area", "format_box", "format_boxes", "iou", "parse_boxes"]

Box = tuple[float, float, float, float]  # x0, y0, x1, y1
BOX_SCALE = 100
_NUM = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(rf"<box>\s*\({_NUM},{_NUM}\)\s*,\s*\({_NUM},{_NUM}\)\s*</box>")


def format_box(box: Box, width: float, height: float) -> str:
    """A pixel box `(x0, y0, x1, y1)` in an image of `width` x `height` px as box text."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height}: expected positive width and height")
    x0, y0, x1, y1 = box
    if not (x0 <= x1 and y0 <= y1):
        raise ValueError(f"box {box}: expected x0 <= x1 and y0 <= y1")

    def norm(v: float, size: float) -> int:
        return min(BOX_SCALE, max(0, round(v / size * BOX_SCALE)))

    a, b, c, d = norm(x0, width), norm(y0, height), norm(x1, width), norm(y1, height)
    return f"<box>({a},{b}),({c},{d})</box>"


def format_boxes(boxes: Sequence[Box], width: float, height: float) -> str:
    """Several boxes in reading order (top to bottom, then left to right), concatenated."""
    ordered = sorted(boxes, key=lambda b: (b[1], b[0], b[3], b[2]))
    return "".join(format_box(b, width, height) for b in ordered)


def parse_boxes(text: str) -> list[Box]:
    """Every box written in `text` (0-100 scale), corners reordered so x0 <= x1, y0 <= y1."""
    out = []
    for m in _BOX.finditer(text):
        x0, y0, x1, y1 = (float(g) for g in m.groups())
        out.append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
    return out


def box_area(box: Box) -> float:
    """Area of a box (0 for an empty or inverted one)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes in the same frame; 0 when both are empty."""
    inter = box_area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = box_area(a) + box_area(b) - inter
    return inter / union if union > 0 else 0.0
