"""Do scene-level and object-level tasks use different experts? Reads `results/summary.json`.

    python experiments/skymoe/utilisation.py [--summary experiments/skymoe/results/summary.json]

For each MoE model and MoE layer: the total-variation distance between the expert shares
(top-k assignments on the test split) of two task families, 0 = identical use, 1 = disjoint.
Scene level: classification; object level: grounding and counting; VQA in between.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def tv(a: list[float], b: list[float]) -> float:
    """Total-variation distance of two distributions over the same experts."""
    return 0.5 * sum(abs(x - y) for x, y in zip(a, b, strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path,
                    default=REPO / "experiments/skymoe/results/summary.json")
    args = ap.parse_args(argv)
    routing = json.loads(args.summary.read_text())["routing"]
    fams = ("classification", "vqa", "counting", "grounding")
    pairs = list(itertools.combinations(fams, 2))
    print("| model | layer | " + " | ".join(f"{a} vs {b}" for a, b in pairs) + " |")
    print("|---|---|" + "---|" * len(pairs))
    for model, by_fam in routing.items():
        layers = [ly["layer"] for ly in by_fam[fams[0]]]
        for i, layer in enumerate(layers):
            share = {f: by_fam[f][i]["share_per_expert"] for f in fams}
            cells = [f"{tv(share[a], share[b]):.3f}" for a, b in pairs]
            print(f"| {model} | {layer} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
