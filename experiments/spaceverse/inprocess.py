"""SpaceVerse in process: accuracy vs mean latency of the six methods with the trained small VLMs.

    python experiments/spaceverse/inprocess.py [--models .cache/models/vlm] [--per-task 150]
        [--rate-mbps 110.67] [--delay-ms 20] [--timing small|paper] [--out DIR]
        [--clip-weights FILE]

Needs the models of `make models-vlm`. Trains the confidence nets (g~, g, g') on the `calib`
split (images unseen by W^s and W^g), then runs every method on the `test` split and writes
`<out>/<name>-samples.csv` (one row per method and sample) and `<out>/<name>-summary.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodes.models.vlm.data import load_samples, select_split  # noqa: E402
from nodes.models.vlm.small import SmallVLM, load_sample_image  # noqa: E402
from nodes.spaceverse.confidence import (  # noqa: E402
    ABLATION_AFTER_ANSWER,
    ABLATION_IMAGE_ONLY,
    SPACEVERSE_STAGES,
    record_sample,
    train_confidence,
)
from nodes.spaceverse.pipeline import (  # noqa: E402
    Item,
    LinkModel,
    PipelineConfig,
    Timing,
    results_as_dicts,
    run_pipeline,
    summarise,
)
from nodes.spaceverse.preprocess import ClipRegionScorer  # noqa: E402
from testbed.paths import data_dir  # noqa: E402


def _subsample(samples, per_task: int, seed: int):
    rng = random.Random(seed)
    by_task: dict[str, list] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    out = []
    for task in sorted(by_task):
        group = by_task[task]
        out.extend(sorted(rng.sample(group, min(per_task, len(group))),
                          key=lambda s: (s.image_key, s.prompt)))
    return out


def _items(samples):
    last, img = None, None
    for i, s in enumerate(samples):
        if s.image_key != last:
            last, img = s.image_key, load_sample_image(s)
        yield Item(f"{s.image_key}#{i}", s.task, s.qtype, img, s.prompt, s.answer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="default: the testbed data folder")
    ap.add_argument("--models", type=Path, default=REPO / ".cache/models/vlm")
    ap.add_argument("--per-task", type=int, default=150, help="test samples per task")
    ap.add_argument("--calib-per-task", type=int, default=150)
    ap.add_argument("--rate-mbps", type=float, default=110.67)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--timing", choices=["small", "paper"], default="small")
    ap.add_argument("--name", default=None)
    ap.add_argument("--out", type=Path, default=REPO / "experiments/spaceverse/results")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clip-weights", type=Path, default=None,
                    help="open_clip ViT-B-16 checkpoint for the region scores "
                         "(default: the on-board model's own encoders)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = (args.data or data_dir()) / "images"
    onboard = SmallVLM.load(args.models / "small-onboard")
    ground = SmallVLM.load(args.models / "small-ground")
    prov = json.loads((args.models / "small-onboard" / "provenance.json").read_text())
    samples = load_samples(images, eurosat_per_class=prov["settings"]["eurosat_per_class"])
    split_seed = prov["settings"]["split_seed"]
    t0 = time.monotonic()
    calib = _subsample(select_split(samples, "calib", split_seed), args.calib_per_task, args.seed)
    records = [record_sample(onboard, it.image, it.prompt,
                             ground.decode(ground.generate(it.image, it.prompt, 8)))
               for it in _items(calib)]
    nets = {"g~": train_confidence(records, SPACEVERSE_STAGES),
            "g": train_confidence(records, ABLATION_IMAGE_ONLY),
            "g'": train_confidence(records, ABLATION_AFTER_ANSWER)}
    t_calib = time.monotonic() - t0
    test = _subsample(select_split(samples, "test", split_seed), args.per_task, args.seed)
    link = LinkModel(args.rate_mbps * 1e6, args.delay_ms / 1e3)
    timing = Timing(model_size=args.timing)
    scorer = ClipRegionScorer.from_weights_file(args.clip_weights) if args.clip_weights else None
    results = run_pipeline(_items(test), onboard, ground, nets, link, timing, PipelineConfig(),
                           scorer=scorer)
    name = args.name or f"{args.timing}-{args.rate_mbps:g}mbps"
    args.out.mkdir(parents=True, exist_ok=True)
    rows = results_as_dicts(results)
    with open(args.out / f"{name}-samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                 "nodes", "experiments/spaceverse/inprocess.py"],
                                capture_output=True, text=True).stdout.strip())
    argv_used = argv if argv is not None else sys.argv[1:]
    summary = {"command": " ".join(["experiments/spaceverse/inprocess.py", *argv_used]),
               "git_commit": commit, "git_dirty": dirty,
               "link": {"rate_bps": link.rate_bps, "delay_s": link.delay_s},
               "timing": vars(timing) | {"preprocess": "roofline of the on-board scorer's FLOPs"},
               "torch_threads": args.threads,
               "region_scorer": str(args.clip_weights) if args.clip_weights else "small-onboard",
               "models": {m: json.loads((args.models / m / "provenance.json").read_text())
                          for m in ("small-onboard", "small-ground")},
               "calib_samples": len(records), "test_samples": len(test),
               "calib_mean_target": sum(r.target for r in records) / len(records),
               "wall_s": {"calib_and_confidence_training": t_calib,
                          "total": time.monotonic() - t0},
               "by_method": summarise(results),
               "by_method_task": summarise(results, ("method", "task"))}
    (args.out / f"{name}-summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{'method':15s} {'acc':>6s} {'latency_ms':>11s} {'onboard':>8s} {'xfer':>8s} "
          f"{'ground':>8s} {'kB_sent':>8s} {'offload':>7s}")
    for r in summary["by_method"]:
        print(f"{r['method']:15s} {r['accuracy']:6.3f} {1e3 * r['mean_latency_s']:11.2f} "
              f"{1e3 * r['mean_onboard_s']:8.2f} {1e3 * r['mean_transfer_s']:8.2f} "
              f"{1e3 * r['mean_ground_s']:8.2f} {r['mean_bytes_sent'] / 1e3:8.1f} "
              f"{r['offload_rate']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
