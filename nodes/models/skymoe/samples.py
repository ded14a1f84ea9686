"""Where SkyMoE's samples, task families and scores come from.

Owns the choice only: SkyMoE's own tasks (`nodes.skymoe.tasks`: the paper's instruction
templates, exact counts, grounding boxes as text, IoU scoring) when that package is installed,
else the small VLMs' samples (`nodes.models.vlm.data`: binned answers, exact-match scoring) so
the model trains and is tested without it. Results name the source they used.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from nodes.models.errors import DatasetError
from nodes.models.vlm.data import Sample

__all__ = ["FAMILIES", "SOURCES", "default_source", "family", "load", "score"]

SOURCES = ("skymoe-tasks", "vlm-data")
FAMILIES = ("vqa", "classification", "counting", "grounding")


def default_source() -> str:
    """`skymoe-tasks` where `nodes.skymoe.tasks` exists, else `vlm-data`."""
    try:
        found = importlib.util.find_spec("nodes.skymoe.tasks") is not None
    except ModuleNotFoundError:
        found = False
    return "skymoe-tasks" if found else "vlm-data"


def _check(source: str) -> None:
    if source not in SOURCES:
        raise DatasetError(f"unknown sample source {source!r}; choose: {', '.join(SOURCES)}")


def load(images_dir: Path, source: str, seed: int = 0,
         eurosat_per_class: int = 150) -> list[Sample]:
    """Every sample of the source's tasks under `images_dir` (the data folder's images/)."""
    _check(source)
    if source == "skymoe-tasks":
        from nodes.skymoe.tasks import load_skymoe_samples

        return load_skymoe_samples(images_dir, seed=seed, eurosat_per_class=eurosat_per_class)
    from nodes.models.vlm.data import load_samples

    return load_samples(images_dir, eurosat_per_class=eurosat_per_class)


def family(sample: Sample, source: str) -> str:
    """`vqa`, `classification`, `counting` or `grounding`."""
    _check(source)
    if source == "skymoe-tasks":
        from nodes.skymoe.tasks import task_family

        return task_family(sample)
    if sample.qtype == "count":
        return "counting"
    if sample.qtype == "class":
        return "classification"
    return "vqa"


def score(sample: Sample, predicted: str, source: str) -> dict[str, float | bool]:
    """One prediction's score: `correct` for every family (grounding: IoU >= 0.5) plus the
    family's own figures (`abs_error` for counts, `iou`, `correct@0.7` for boxes)."""
    _check(source)
    if source == "skymoe-tasks":
        from nodes.skymoe.tasks import score as task_score

        out = dict(task_score(sample, predicted))
        if "correct@0.5" in out:
            out["correct"] = out["correct@0.5"]
        return out
    return {"correct": predicted.strip() == sample.answer.strip()}

