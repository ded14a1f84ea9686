"""Accuracy of the trained small VLMs per task and question type, beside the majority baseline.

    python -m nodes.models.vlm.evaluate --data DATA/images --models .cache/models/vlm [--json F]

The majority baseline answers, for each (task, question type), the most frequent answer of the
training split. Only the `test` split (images never seen in training) is scored.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from nodes.models.vlm.data import Sample, load_samples, select_split
from nodes.models.vlm.small import SmallVLM, load_sample_image

__all__ = ["evaluate", "main", "majority_answers"]


def majority_answers(train: Sequence[Sample]) -> dict[tuple[str, str], str]:
    """The most frequent training answer per (task, question type)."""
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for s in train:
        counts[s.task, s.qtype][s.answer] += 1
    return {k: c.most_common(1)[0][0] for k, c in counts.items()}


@torch.no_grad()
def evaluate(models: Sequence[SmallVLM], test: Sequence[Sample],
             majority: dict[tuple[str, str], str]) -> list[dict]:
    """Rows: task, qtype, samples, majority accuracy, then one accuracy per model."""
    hits: dict[tuple[str, str], Counter] = defaultdict(Counter)
    cache: dict[str, torch.Tensor] = {}
    for s in test:
        if s.image_key not in cache:
            cache = {s.image_key: load_sample_image(s)}  # samples come grouped by image
        img = cache[s.image_key]
        key = (s.task, s.qtype)
        hits[key]["n"] += 1
        hits[key]["majority"] += majority.get(key) == s.answer
        for m in models:
            hits[key][m.name] += m.decode(m.generate(img, s.prompt, 8)) == s.answer
    rows = []
    for (task, qtype), h in sorted(hits.items()):
        row = {"task": task, "qtype": qtype, "samples": h["n"],
               "majority": h["majority"] / h["n"]}
        row.update({m.name: h[m.name] / h["n"] for m in models})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the accuracy table (and write it as JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data folder's images/")
    ap.add_argument("--models", type=Path, default=Path(".cache/models/vlm"))
    ap.add_argument("--names", nargs="+", default=["small-onboard", "small-ground"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    models = [SmallVLM.load(args.models / n) for n in args.names]
    prov = json.loads((args.models / args.names[0] / "provenance.json").read_text())
    samples = load_samples(args.data, eurosat_per_class=prov["settings"]["eurosat_per_class"])
    seed = prov["settings"]["split_seed"]
    rows = evaluate(models, select_split(samples, "test", seed),
                    majority_answers(select_split(samples, "train", seed)))
    head = ["task", "qtype", "samples", "majority", *args.names]
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(f"{r[h]:.3f}" if isinstance(r[h], float) else str(r[h]) for h in head))
    if args.json:
        args.json.write_text(json.dumps({"models": args.names, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
