"""The majority baseline of every SkyMoE task on the real images, and the sample counts.

Owns one command that answers "what does always giving the most frequent training answer
score?", the figure every SkyMoE result is reported beside:

    python -m nodes.skymoe.baseline --images DATA/images [--seed 0] [--split test]
        [--augment-dir DIR] [--json OUT]

It loads SkyMoE's samples, splits them by image, predicts each test sample's majority training
answer of its (task, qtype) and prints `metrics.summarise`'s table. With `--augment-dir` it also
augments the training split's NEON samples there and prints how many samples each edit made.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from nodes.models.vlm.data import select_split
from nodes.skymoe.metrics import majority_baseline, summarise
from nodes.skymoe.tasks import SKYMOE_TASKS, load_skymoe_samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nodes.skymoe.baseline",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="the data folder's images/")
    parser.add_argument("--seed", type=int, default=0, help="split and expression seed")
    parser.add_argument("--split", default="test", choices=("calib", "test"))
    parser.add_argument("--tasks", nargs="+", default=list(SKYMOE_TASKS))
    parser.add_argument("--augment-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="write the table here too")
    args = parser.parse_args(argv)

    samples = load_skymoe_samples(args.images, seed=args.seed, tasks=args.tasks)
    train = select_split(samples, "train", args.seed)
    test = select_split(samples, args.split, args.seed)
    print(f"samples: {len(samples)} (train {len(train)}, {args.split} {len(test)}), "
          f"seed {args.seed}, split by image")
    table = summarise(test, majority_baseline(train, test))
    print(f"majority baseline on the {args.split} split (most frequent training answer per "
          "task and question type):")
    print(f"{'task/family/qtype':44s} {'n':>5s}  metrics")
    for key, row in table.items():
        rest = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "n")
        print(f"{key:44s} {int(row['n']):5d}  {rest}")
    out = {"command": "python -m nodes.skymoe.baseline " + " ".join(argv or sys.argv[1:]),
           "seed": args.seed, "split": args.split, "model": "majority baseline",
           "table": table}
    if args.augment_dir is not None:
        from nodes.skymoe.augment import augment_to_cache

        made = augment_to_cache(train, args.augment_dir, seed=args.seed)
        kinds = Counter(s.image_path.parent.name for s in made)
        print(f"augmented training samples in {args.augment_dir}: {len(made)} "
              + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        out["augmented"] = dict(kinds)
    if args.json is not None:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
