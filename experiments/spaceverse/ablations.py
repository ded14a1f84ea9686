"""SpaceVerse ablations in process (the paper's Fig. 10, 11 and 12) with the trained small VLMs.

    python experiments/spaceverse/ablations.py [--models .cache/models/vlm] [--per-task 40]
        [--out DIR] [--name ablations]

- Fig. 10, accuracy vs number of offloaded samples: each rule's threshold swept (g~ with
  (tau, 0.8 tau), g, g', Tabi, and offloading a random share), the offloaded samples answered by
  W^g (from the preprocessed image for g~ / g / g', the raw image for Tabi and random).
- Fig. 11, g vs g' vs g~ at the default thresholds: accuracy, offloads, on-board tokens and the
  emulated on-board time (Qwen2-VL-2B on a Jetson AGX Xavier, the `paper` timing).
- Fig. 12, W^g's accuracy vs compression ratio (bytes sent / the raw image's PNG bytes) of four
  preprocessings: random masking (a random share of the 10 x 10 cells kept whole), attention
  only (cells with K >= alpha kept whole, the rest dropped), multi-scale only (every cell
  downsampled by one factor, no attention), both (SpaceVerse: drop below alpha, scale between
  alpha and beta = alpha + 0.2).

Every model runs once per sample and setting; the confidence nets are those of `make
models-vlm` (`<models>/confidence`). No network, no testbed: this is the algorithm alone.
Writes `<out>/<name>.json` and `<out>/<name>.md`.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodes.compute import accelerator, generation_time_s  # noqa: E402
from nodes.models.vlm.data import load_samples, select_split, subsample  # noqa: E402
from nodes.models.vlm.small import SmallVLM, load_sample_image  # noqa: E402
from nodes.spaceverse.baselines import tabi_confidence  # noqa: E402
from nodes.spaceverse.confidence import run_onboard  # noqa: E402
from nodes.spaceverse.methods import raw_wire  # noqa: E402
from nodes.spaceverse.pipeline import Timing, _norm, _tensor  # noqa: E402
from nodes.spaceverse.preprocess import RegionPlan, region_scales, region_scores  # noqa: E402
from nodes.spaceverse.preprocess import to_wire as plan_to_wire  # noqa: E402
from nodes.spaceverse.store import load_nets  # noqa: E402
from nodes.spaceverse.wire import decode, encode, rebuild  # noqa: E402
from testbed.paths import data_dir  # noqa: E402

SETTINGS = {
    "random masking": [0.1, 0.25, 0.5, 0.75, 1.0],     # share of cells kept
    "attention only": [0.8, 0.6, 0.4, 0.2, 0.0],       # alpha
    "multi-scale only": [0.1, 0.25, 0.5, 0.75, 1.0],   # one scale for every cell
    "both": [0.6, 0.45, 0.35, 0.2, 0.0],               # alpha (beta = alpha + 0.2)
}


def _scales(variant: str, knob: float, scores: torch.Tensor, rng: random.Random) -> torch.Tensor:
    if variant == "random masking":
        n = scores.numel()
        keep = set(rng.sample(range(n), max(1, round(knob * n))))
        return torch.tensor([1.0 if i in keep else 0.0 for i in range(n)]).view_as(scores)
    if variant == "attention only":
        return (scores >= knob).float()
    if variant == "multi-scale only":
        return torch.full_like(scores, knob)
    return region_scales(scores, knob, min(1.0, knob + 0.2))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--models", type=Path, default=REPO / ".cache/models/vlm")
    ap.add_argument("--per-task", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="ablations")
    ap.add_argument("--out", type=Path, default=REPO / "experiments/spaceverse/results")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.monotonic()
    onboard = SmallVLM.load(args.models / "small-onboard")
    ground = SmallVLM.load(args.models / "small-ground")
    nets = load_nets(args.models / "confidence")
    prov = json.loads((args.models / "small-onboard" / "provenance.json").read_text())
    samples = load_samples((args.data or data_dir()) / "images",
                           eurosat_per_class=prov["settings"]["eurosat_per_class"])
    test = subsample(select_split(samples, "test", prov["settings"]["split_seed"]),
                     args.per_task, args.seed)
    timing = Timing(model_size="paper")
    xavier = accelerator(timing.onboard_accelerator)
    rng = random.Random(args.seed)
    per: list[dict] = []
    fig12: dict[str, list[dict]] = {v: [{"knob": k, "correct": 0, "ratio": 0.0}
                                        for k in ks] for v, ks in SETTINGS.items()}
    with torch.no_grad():
        for s in test:
            img = load_sample_image(s)

            def ok(answer: str, ref: str = s.answer) -> bool:
                return _norm(answer) == _norm(ref)

            def ground_ok(wire: bytes, prompt: str = s.prompt) -> bool:
                rebuilt = _tensor(rebuild(decode(wire)))
                return ok(ground.decode(ground.generate(rebuilt, prompt, 8)))

            full = onboard.generate(img, s.prompt, 8)
            raw = raw_wire(img)
            scores = region_scores(img, s.prompt, onboard)
            pre = encode(plan_to_wire(img, RegionPlan(scores, region_scales(scores, 0.35,
                                                                              0.55))), "png")
            confs = {name: run_onboard(onboard, nets[name], img, s.prompt,
                                       [0.0] * nets[name].num_stages, 8)
                     for name in ("g~", "g", "g'")}
            work = timing.work(onboard, img, s.prompt, "onboard")
            per.append({"task": s.task, "sat_ok": ok(onboard.decode(full)),
                        "ground_raw_ok": ground_ok(raw), "ground_pre_ok": ground_ok(pre),
                        "tabi": tabi_confidence(full.token_probs),
                        "g~": confs["g~"].confidences, "g": confs["g"].confidences,
                        "g'": confs["g'"].confidences, "full_tokens": full.num_tokens,
                        "t_prefill_s": generation_time_s(work, 0, xavier),
                        "t_token_s": generation_time_s(work, 1, xavier, prefill=False),
                        "raw_bytes": len(raw), "pre_bytes": len(pre)})
            for variant, ks in SETTINGS.items():
                for cell, k in zip(fig12[variant], ks, strict=True):
                    wire = encode(plan_to_wire(img, RegionPlan(scores, _scales(variant, k, scores,
                                                                               rng))), "png")
                    cell["correct"] += ground_ok(wire)
                    cell["ratio"] += len(wire) / len(raw)
    n = len(per)
    for cells in fig12.values():
        for cell in cells:
            cell["accuracy"] = cell.pop("correct") / n
            cell["ratio"] /= n

    def curve(rule: str) -> list[dict]:
        pts = []
        for tau in [i / 20 for i in range(21)]:
            off = []
            draw = random.Random(args.seed)  # the random rule: offload each sample w.p. tau
            for p in per:
                if rule == "g~":
                    c1, c2 = p["g~"]
                    off.append(c1 < tau or c2 < 0.8 * tau)
                elif rule in ("g", "g'"):
                    off.append(p[rule][0] < tau)
                elif rule == "tabi":
                    off.append(p["tabi"] < tau)
                else:
                    off.append(draw.random() < tau)
            key = "ground_pre_ok" if rule in ("g~", "g", "g'") else "ground_raw_ok"
            correct = sum(p[key] if o else p["sat_ok"] for p, o in zip(per, off, strict=True))
            pts.append({"tau": tau, "offloaded": sum(off), "accuracy": correct / n})
        return pts

    fig10 = {rule: curve(rule) for rule in ("g~", "g", "g'", "tabi", "random")}

    def default(rule: str, taus: tuple[float, ...]) -> dict:
        correct = off_n = tokens = 0
        t_on = 0.0
        for p in per:
            confs = p[rule]
            stage = next((i for i, (c, t) in enumerate(zip(confs, taus, strict=True)) if c < t),
                         None)
            stage_tokens = nets[rule].stage_tokens
            if stage is None:
                used = p["full_tokens"]
                correct += p["sat_ok"]
            else:
                k = stage_tokens[stage]
                used = p["full_tokens"] if k is None else min(k, p["full_tokens"])
                off_n += 1
                correct += p["ground_pre_ok"]
            tokens += used
            t_on += p["t_prefill_s"] + used * p["t_token_s"]
        return {"accuracy": correct / n, "offloaded": off_n, "mean_onboard_tokens": tokens / n,
                "mean_onboard_s_paper_timing": t_on / n, "thresholds": list(taus)}

    fig11 = {"g~": default("g~", (0.5, 0.4)), "g": default("g", (0.5,)),
             "g'": default("g'", (0.5,))}
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    argv_used = argv if argv is not None else sys.argv[1:]
    doc = {"command": " ".join(["experiments/spaceverse/ablations.py", *argv_used]),
           "git_commit": commit, "samples": n, "per_task": args.per_task,
           "models": {m: {k: json.loads((args.models / m / "provenance.json").read_text())
                          .get(k) for k in ("settings", "data_sha256")}
                      for m in ("small-onboard", "small-ground")},
           "confidence_nets": json.loads((args.models / "confidence" / "provenance.json")
                                         .read_text()).get("samples"),
           "region_scorer": "small-onboard",
           "reference": {"satellite_only": sum(p["sat_ok"] for p in per) / n,
                         "ground_raw": sum(p["ground_raw_ok"] for p in per) / n,
                         "ground_preprocessed": sum(p["ground_pre_ok"] for p in per) / n,
                         "preprocessed_bytes_ratio": sum(p["pre_bytes"] / p["raw_bytes"]
                                                         for p in per) / n},
           "fig10": fig10, "fig11": fig11, "fig12": fig12,
           "wall_s": time.monotonic() - t_start}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(doc, indent=1))
    md = [f"`{doc['command']}` (commit {commit}); {n} test samples; small models; in process",
          "", "Reference: " + ", ".join(f"{k} {v:.3f}" for k, v in doc["reference"].items()),
          "", "Fig. 11 (default thresholds):", "",
          "| net | accuracy | offloaded | mean on-board tokens | mean on-board ms (2B@Xavier) |",
          "|---|---:|---:|---:|---:|"]
    md += [f"| {k} | {v['accuracy']:.3f} | {v['offloaded']} | {v['mean_onboard_tokens']:.2f} | "
           f"{1e3 * v['mean_onboard_s_paper_timing']:.1f} |" for k, v in fig11.items()]
    md += ["", "Fig. 10 (accuracy at offloaded count, tau = 0, 0.25, 0.5, 0.75, 1):", "",
           "| rule | " + " | ".join(f"tau {t}" for t in (0, 0.25, 0.5, 0.75, 1)) + " |",
           "|---|" + "---:|" * 5]
    for rule, pts in fig10.items():
        sel = [pts[i] for i in (0, 5, 10, 15, 20)]
        md.append(f"| {rule} | " + " | ".join(f"{p['accuracy']:.3f} @ {p['offloaded']}"
                                              for p in sel) + " |")
    md += ["", "Fig. 12 (W^g accuracy @ compression ratio per knob):", "",
           "| preprocessing | knobs | accuracy @ ratio |", "|---|---|---|"]
    for v, cells in fig12.items():
        md.append(f"| {v} | {', '.join(str(c['knob']) for c in cells)} | "
                  + ", ".join(f"{c['accuracy']:.3f} @ {c['ratio']:.2f}" for c in cells) + " |")
    (args.out / f"{args.name}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
