"""SkyMoE's experiments with the models trained here: experts 1 vs 4 vs 8, each augmentation,
L_aux on/off, dense vs MoE at equal active parameters (accuracy, per-token latency, memory), and
expert utilisation per task family.

    python experiments/skymoe/run.py [--models .cache/models/skymoe] [--per-task 200]
        [--stage2-steps 300] [--out experiments/skymoe/results]

Trains (or reuses, see nodes/models/skymoe/train.py) the dense stage-I model and every stage-II
variant from it, scores all of them on the `test` split (images never seen in training; at most
`--per-task` samples per task, picked by hash), measures per-token latency on this CPU (one
torch thread) and emulates it on the ground GPU (RTX 3090 roofline, `nodes.compute`), and
writes `<out>/summary.json` and `<out>/tables.md`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from nodes.models.skymoe import samples as sample_source  # noqa: E402
from nodes.models.skymoe.evaluate import cap_per_task, evaluate, format_table  # noqa: E402
from nodes.models.skymoe.latency import token_latency  # noqa: E402
from nodes.models.skymoe.train import DenseSettings, MoESettings, build, moe_name  # noqa: E402
from nodes.models.skymoe.vlm import SkyMoEVLM  # noqa: E402
from nodes.models.vlm.data import select_split  # noqa: E402
from nodes.models.vlm.evaluate import majority_answers  # noqa: E402
from nodes.models.vlm.small import load_sample_image  # noqa: E402
from testbed.paths import data_dir  # noqa: E402


def variants(steps: int) -> list[MoESettings]:
    """The ablation grid: experts 1/4/8; 4 experts without L_aux; 4 experts with each
    augmentation (count-varying cutout; attribute editing = position + colour); the dense model
    widened to the MoE's active width (top-2 of experts as wide as the FFN)."""
    return [MoESettings(num_experts=1, steps=steps), MoESettings(num_experts=4, steps=steps),
            MoESettings(num_experts=8, steps=steps),
            MoESettings(num_experts=4, aux_alpha=0.0, steps=steps),
            MoESettings(num_experts=4, steps=steps, augment=("cutout",)),
            MoESettings(num_experts=4, steps=steps, augment=("position", "colour")),
            MoESettings(num_experts=1, steps=steps, augment=("cutout", "position", "colour")),
            MoESettings(num_experts=4, steps=steps, augment=("cutout", "position", "colour")),
            MoESettings(num_experts=0, widen=2, steps=steps),
            # run-to-run spread: the same settings with another router init and batch order
            MoESettings(num_experts=1, steps=steps, seed=1),
            MoESettings(num_experts=4, steps=steps, seed=1),
            # longer stage II: does extra expert capacity pay off with more training?
            MoESettings(num_experts=1, steps=4 * steps),
            MoESettings(num_experts=4, steps=4 * steps),
            MoESettings(num_experts=0, widen=2, steps=4 * steps)]


def _latency(models: dict[str, SkyMoEVLM], image, prompt: str, tokens: int,
             rounds: int) -> dict[str, dict]:
    """Models measured in turn, `rounds` times (other jobs on this machine load it unevenly
    over time; interleaving gives each model the same conditions); medians over rounds."""
    runs: dict[str, list[dict]] = {n: [] for n in models}
    for _ in range(rounds):
        for n, m in models.items():
            runs[n].append(token_latency(m, image, prompt, tokens, repeats=1))
    out = {}
    for n, rs in runs.items():
        out[n] = dict(rs[0])
        for k in ("measured_prefill_s", "measured_token_s"):
            out[n][k] = statistics.median(r[k] for r in rs)
        out[n]["rounds"] = rounds
    return out


def _git() -> tuple[str, bool]:
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--",
                                 "nodes", "experiments/skymoe/run.py"],
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="the data folder's images/")
    ap.add_argument("--models", type=Path, default=REPO / ".cache/models/skymoe")
    ap.add_argument("--out", type=Path, default=REPO / "experiments/skymoe/results")
    ap.add_argument("--per-task", type=int, default=200)
    ap.add_argument("--stage2-steps", type=int, default=MoESettings.steps)
    ap.add_argument("--latency-tokens", type=int, default=32)
    ap.add_argument("--latency-rounds", type=int, default=9)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = args.data or data_dir() / "images"
    t0 = time.monotonic()
    dense_settings = DenseSettings(source=sample_source.default_source())
    grid = variants(args.stage2_steps)
    built = build(data, args.models, dense_settings, grid,
                  log=lambda m: print(m, file=sys.stderr))
    t_train = time.monotonic() - t0

    from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

    tok = build_qwen2_tokenizer()
    names = ["dense", *(moe_name(v) for v in grid)]
    models = {n: SkyMoEVLM.load(built[n], tok) for n in names}
    source = dense_settings.source
    samples = sample_source.load(data, source, dense_settings.split_seed,
                                 dense_settings.eurosat_per_class)
    test = cap_per_task(select_split(samples, "test", dense_settings.split_seed), args.per_task)
    majority = majority_answers(select_split(samples, "train", dense_settings.split_seed))
    t1 = time.monotonic()
    result = evaluate(models, test, majority, source)
    t_eval = time.monotonic() - t1

    probe = test[0]
    image = load_sample_image(probe)
    latency = _latency({n: models[n] for n in ("dense", "dense-wide2", "skymoe-e4",
                                               "skymoe-e8")}, image, probe.prompt,
                       args.latency_tokens, args.latency_rounds)
    memory = {n: {"params": sum(p.numel() for p in m.net.parameters()),
                  "active_params": m.active_params(),
                  "fp32_weight_bytes": 4 * sum(p.numel() for p in m.net.parameters())}
              for n, m in models.items()}
    commit, dirty = _git()
    argv_used = argv if argv is not None else sys.argv[1:]
    # the data folder is named as $TESTBED_DATA, not by this machine's path
    command = " ".join(["experiments/skymoe/run.py", *argv_used]).replace(
        str(data_dir()), "$TESTBED_DATA")
    summary = {
        "command": command,
        "git_commit": commit, "git_dirty": dirty, "source": source,
        "models": {n: json.loads((built[n] / "provenance.json").read_text()) for n in names},
        "test_samples": len(test), "per_task_cap": args.per_task,
        "timing": {"measured": "this CPU, one torch thread, median over steps",
                   "emulated": "roofline of the counted work on an RTX 3090, efficiency 0.5"},
        "latency": latency, "memory": memory, **result,
        "wall_s": {"train_or_reuse": t_train, "evaluate": t_eval,
                   "total": time.monotonic() - t0}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    (args.out / "tables.md").write_text(tables(summary, names))
    print(tables(summary, names))
    return 0


def tables(summary: dict, names: list[str]) -> str:
    """The Markdown tables of the results README."""
    out = [f"Command: `{summary['command']}` (git {summary['git_commit']}"
           f"{', dirty' if summary['git_dirty'] else ''}); samples: {summary['source']}; "
           f"{summary['test_samples']} test samples.", "",
           "### Accuracy per task family (test split; majority = most frequent training answer)",
           "", format_table(summary["by_family"], names, ("family",)), "",
           "Grounding: IoU >= 0.7 ->", "",
           format_table([r for r in summary["by_family"] if r["family"] == "grounding"], names,
                        ("family",), "correct@0.7"), "",
           "Counting: mean absolute error ->", "",
           format_table([r for r in summary["by_family"] if r["family"] == "counting"], names,
                        ("family",), "abs_error"), "",
           "Counting: mean absolute error per task ->", "",
           format_table([r for r in summary["by_task"] if r["qtype"] == "count"], names,
                        ("task", "qtype"), "abs_error"), "",
           "### Accuracy per task and question type", "",
           format_table(summary["by_task"], names, ("task", "qtype")), "",
           "### Per-token latency and memory", "",
           "| model | params | active params | measured prefill ms | measured ms/token | "
           "emulated RTX 3090 us/token | token MFLOP |", "|---|---|---|---|---|---|---|"]
    for n, lat in summary["latency"].items():
        out.append(f"| {n} | {lat['params']} | {lat['active_params']} | "
                   f"{1e3 * lat['measured_prefill_s']:.2f} | {1e3 * lat['measured_token_s']:.3f} "
                   f"| {1e6 * lat['emulated_token_s']:.2f} | {lat['token_flops'] / 1e6:.2f} |")
    out += ["", "### Expert utilisation (share of top-k assignments per expert, test split)", "",
            "| model | family | layer | tokens | share per expert | routing entropy (nats) | "
            "load balance |", "|---|---|---|---|---|---|---|"]
    for n, fams in summary["routing"].items():
        for fam, layers in fams.items():
            for ly in layers:
                share = " ".join(f"{s:.2f}" for s in ly["share_per_expert"])
                out.append(f"| {n} | {fam} | {ly['layer']} | {ly['tokens']} | {share} | "
                           f"{ly['routing_entropy_nats']:.3f} | {ly['load_balance']:.3f} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.exit(main())
