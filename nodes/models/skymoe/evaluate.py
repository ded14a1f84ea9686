"""SkyMoE's per-task evaluation on the test split, the majority baseline beside every figure.

Owns scoring trained models on images never seen in training (the split is by image), per task
and question type and per task family (VQA, classification, counting, grounding), plus the
routing statistics of each MoE model per family (which experts scene-level and object-level
tasks use). The majority baseline answers, per (task, question type), the most frequent answer
of the training split, and is scored by the same rule as the models.

    python -m nodes.models.skymoe.evaluate --data DATA/images --models .cache/models/skymoe \
        --names dense skymoe-e4 [--per-task 300] [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from nodes.models.skymoe import samples as sample_source
from nodes.models.skymoe.vlm import SkyMoEVLM
from nodes.models.vlm.data import Sample, select_split
from nodes.models.vlm.evaluate import majority_answers
from nodes.models.vlm.small import load_sample_image

__all__ = ["cap_per_task", "evaluate", "format_table", "main"]


def cap_per_task(samples: Sequence[Sample], per_task: int | None) -> list[Sample]:
    """At most `per_task` samples of each task, chosen by a hash (not by order), then grouped
    by image so each image is read once."""
    if per_task is None:
        return sorted(samples, key=lambda s: s.image_key)
    by_task: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_task[s.task].append(s)
    out = []
    for group in by_task.values():
        group.sort(key=lambda s: hashlib.sha256(f"{s.image_key}|{s.prompt}".encode()).digest())
        out.extend(group[:per_task])
    return sorted(out, key=lambda s: s.image_key)


def _add(acc: dict, key, name: str, sc: dict) -> None:
    a = acc[key][name]
    a["n"] += 1
    for k, v in sc.items():
        a[k] += float(v)


@torch.no_grad()
def evaluate(models: dict[str, SkyMoEVLM], test: Sequence[Sample],
             majority: dict[tuple[str, str], str], source: str,
             max_new_tokens: int = 24) -> dict:
    """Scores per (task, qtype) and per family for the majority baseline and each model, and
    each MoE model's routing per family. Figures are means over samples: `correct`
    (exact match; grounding: IoU >= 0.5), and where the family has them `abs_error` (MAE),
    `iou`, `correct@0.7`."""
    fam_of = {id(s): sample_source.family(s, source) for s in test}
    by_task: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    by_family: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(float)))
    routing: dict[str, dict[str, list[dict]]] = defaultdict(dict)
    for family in sample_source.FAMILIES:
        group = [s for s in test if fam_of[id(s)] == family]
        if not group:
            continue
        for m in models.values():
            m.track_routing(True)
        image, image_key = None, None
        for s in group:
            if s.image_key != image_key:
                image, image_key = load_sample_image(s), s.image_key
            maj = majority.get((s.task, s.qtype), "")
            for key, acc in (((s.task, s.qtype), by_task), (family, by_family)):
                _add(acc, key, "majority", sample_source.score(s, maj, source))
            for name, m in models.items():
                pred = m.decode(m.generate(image, s.prompt, max_new_tokens))
                sc = sample_source.score(s, pred, source)
                _add(by_task, (s.task, s.qtype), name, sc)
                _add(by_family, family, name, sc)
        for name, m in models.items():
            stats = m.routing_stats()
            if stats:
                routing[name][family] = stats
            m.track_routing(False)

    def rows(acc: dict, keys: Sequence[str]) -> list[dict]:
        out = []
        for key, per in sorted(acc.items()):
            row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
            row["samples"] = int(per["majority"]["n"])
            for name, a in per.items():
                row[name] = {k: v / a["n"] for k, v in a.items() if k != "n"}
            out.append(row)
        return out

    return {"by_task": rows(by_task, ("task", "qtype")),
            "by_family": rows(by_family, ("family",)), "routing": dict(routing)}


def format_table(rows: Sequence[dict], names: Sequence[str], keys: Sequence[str],
                 metric: str = "correct") -> str:
    """A Markdown table of `metric` per row: keys, samples, majority, then each model."""
    head = [*keys, "samples", "majority", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r[k]) for k in keys] + [str(r["samples"])]
        for n in ("majority", *names):
            v = r.get(n, {}).get(metric)
            cells.append("-" if v is None else f"{v:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the per-family and per-task tables (and write everything as JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data folder's images/")
    ap.add_argument("--models", type=Path, default=Path(".cache/models/skymoe"))
    ap.add_argument("--names", nargs="+", default=["dense", "skymoe-e4"])
    ap.add_argument("--per-task", type=int, default=300, help="test samples per task (cap)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

    tok = build_qwen2_tokenizer()
    models = {n: SkyMoEVLM.load(args.models / n, tok) for n in args.names}
    prov = json.loads((args.models / "dense" / "provenance.json").read_text())
    settings, source = prov["settings"], prov["source"]
    samples = sample_source.load(args.data, source, settings["split_seed"],
                                 settings["eurosat_per_class"])
    test = cap_per_task(select_split(samples, "test", settings["split_seed"]), args.per_task)
    majority = majority_answers(select_split(samples, "train", settings["split_seed"]))
    result = evaluate(models, test, majority, source)
    print(format_table(result["by_family"], args.names, ("family",)))
    print()
    print(format_table(result["by_task"], args.names, ("task", "qtype")))
    if args.json:
        args.json.write_text(json.dumps({"models": args.names, "source": source,
                                         "data_sha256": prov["data_sha256"],
                                         "per_task_cap": args.per_task, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
