"""Ablation of DLRC's LSH rounds k and representative strategy (paper Fig. 12): bytes saved,
vectors kept and PSNR change against the plain codec, on the o_exp 2.0 windows of rd.py.

    python experiments/dlrc/ablation.py --lmbda 0.0483
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.dlrc.rd import evaluate, make_views  # noqa: E402
from nodes.dlrc.pipeline import DlrcConfig  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch

    from nodes.models.codecs import store
    from testbed.paths import data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=data_dir() / "images")
    p.add_argument("--cache", type=Path, default=REPO / ".cache/models/codecs")
    p.add_argument("--arch", default="bmshj2018-hyperprior")
    p.add_argument("--lmbda", type=float, default=0.0483)
    p.add_argument("--rounds", nargs="+", type=int, default=[1, 2, 4, 8, 12, 20, 32])
    p.add_argument("--o-exp", type=float, default=2.0)
    p.add_argument("--max-windows", type=int, default=6)
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/ablation")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    model, prov = store.load(args.cache, args.arch, args.lmbda)
    views = make_views(args.images, args.o_exp, args.max_windows, 8, 0)
    rows = []
    for rep in ("original", "mean"):
        for k in args.rounds:
            r = evaluate(model, args.arch, views, DlrcConfig(k, 0, rep))
            row = {"representative": rep, "rounds": k, "saving": r["saving"],
                   "kept_vectors": r["kept_vectors"], "ideal_kept": r["ideal_kept"],
                   "dpsnr_db": r["dlrc_psnr"] - r["plain_psnr"],
                   "dmsssim": r["dlrc_msssim"] - r["plain_msssim"], "dlrc_bpp": r["dlrc_bpp"],
                   "plain_bpp": r["plain_bpp"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "ablation.json").write_text(json.dumps(
        {"command": "python experiments/dlrc/ablation.py "
         + " ".join(argv if argv is not None else sys.argv[1:]),
         "codec": {"arch": args.arch, "lambda": args.lmbda, "settings": prov["settings"]},
         "windows": f"o_exp {args.o_exp}: rd.py's windows, seed 0", "rows": rows},
        indent=2) + "\n")
    plot(rows, args.out / "ablation.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    for rep, style in (("original", "o-"), ("mean", "s--")):
        rs = [r for r in rows if r["representative"] == rep]
        a.plot([r["rounds"] for r in rs], [100 * r["saving"] for r in rs], style, label=rep)
        b.plot([r["rounds"] for r in rs], [r["dpsnr_db"] for r in rs], style, label=rep)
    a.set_xlabel("LSH rounds k")
    a.set_ylabel("bytes saved (%)")
    b.set_xlabel("LSH rounds k")
    b.set_ylabel("PSNR change (dB)")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(title="representative")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
