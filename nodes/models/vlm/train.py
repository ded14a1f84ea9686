"""Train the small on-board (W^s) and ground (W^g) VLMs on the real labelled images, cached.

Owns training and the cache: `<out>/<name>/{config.json, weights.pt, provenance.json}`, where
provenance records the data's sha256 (every file used), the split rule and seed, the training
settings, the final loss and the wall time. A model whose provenance matches is not retrained.

    python -m nodes.models.vlm.train --data DATA/images --out .cache/models/vlm [--steps N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from nodes.models.vlm.data import Sample, load_samples, select_split, tokenize_words
from nodes.models.vlm.degrade import degrade_regions
from nodes.models.vlm.small import SmallVLMNet, load_sample_image, preset, save_net

__all__ = ["DEFAULT_DEGRADE_SHARE", "TrainSettings", "data_sha256", "main", "train_model"]


@dataclass(frozen=True)
class TrainSettings:
    """Everything that changes the trained weights (recorded in provenance.json)."""

    kind: str
    steps: int
    batch: int = 32
    lr: float = 2e-3
    seed: int = 0
    split_seed: int = 0
    eurosat_per_class: int = 150
    degrade_share: float = 0.0   # share of training images degraded by region (degrade.py)


# W^g answers what the ground receives: SpaceVerse's offloads are multi-scale preprocessed
DEFAULT_DEGRADE_SHARE = {"onboard": 0.0, "ground": 0.3}


def data_sha256(samples: Sequence[Sample]) -> str:
    """sha256 over the (relative name, sha256) of every image and qa.json the samples use."""
    files = sorted({s.image_path for s in samples}
                   | {s.image_path.parent / "qa.json" for s in samples
                      if s.task.startswith("rsvqa")}
                   | {s.image_path.with_suffix(".xml") for s in samples
                      if s.task == "neon-trees"})
    outer = hashlib.sha256()
    for f in files:
        outer.update(f"{f.parent.name}/{f.name}:".encode())
        outer.update(hashlib.sha256(f.read_bytes()).digest())
    return outer.hexdigest()


def _vocab(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    prompt = sorted({w for s in samples for w in tokenize_words(s.prompt)})
    answer = sorted({w for s in samples for w in tokenize_words(s.answer)})
    return prompt, answer


def _preload(samples: Sequence[Sample], px: int) -> dict[str, torch.Tensor]:
    out = {}
    for s in samples:
        if s.image_key not in out:
            img = load_sample_image(s).unsqueeze(0)
            out[s.image_key] = F.interpolate(img, size=(px, px), mode="bilinear",
                                             antialias=True, align_corners=False)[0]
    return out


def train_model(samples: Sequence[Sample], settings: TrainSettings, out_dir: Path,
                log: Callable[[str], None] = print, threads: int = 1) -> dict:
    """Train one preset on the `train` split of `samples`; write the cache; return provenance."""
    torch.manual_seed(settings.seed)
    rng = random.Random(settings.seed)
    torch.set_num_threads(threads)  # one thread: faster than two on a shared 2-core machine
    train = select_split(samples, "train", settings.split_seed)
    prompt_vocab, answer_vocab = _vocab(samples)  # closed vocabularies over all labels
    cfg = preset(settings.kind, prompt_vocab, answer_vocab)
    net = SmallVLMNet(cfg)
    images = _preload(train, cfg.input_px)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    degrade_gen = torch.Generator().manual_seed(settings.seed)
    t0 = time.monotonic()
    net.train()
    losses: list[float] = []
    for step in range(settings.steps):
        lr = settings.lr * 0.5 * (1 + math.cos(math.pi * step / settings.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = [train[rng.randrange(len(train))] for _ in range(settings.batch)]
        x = torch.stack([images[s.image_key] for s in batch])
        flip = torch.rand(len(batch)) < 0.5
        x[flip] = x[flip].flip(-1)
        if settings.degrade_share > 0:
            x = degrade_regions(x, settings.degrade_share, degrade_gen)
        inp, tgt = net.answer_ids([s.answer for s in batch])
        logits = net(x, [s.prompt for s in batch], inp)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                               ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % 100 == 0 or step == settings.steps - 1:
            log(f"{cfg.name} step {step}/{settings.steps} loss {loss:.3f} "
                f"({time.monotonic() - t0:.0f} s)")
    net.eval()
    save_net(net, out_dir)
    tail = losses[-50:]
    return {"model": cfg.name, "settings": asdict(settings),
            "split": {"rule": "sha256(seed:task/folder/file) -> test 20 %, calib 10 %, train",
                      "seed": settings.split_seed, "train_samples": len(train),
                      "train_images": len(images)},
            "final_loss": sum(tail) / len(tail), "train_wall_s": time.monotonic() - t0,
            "threads": threads,
            "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) both presets; prints one line per model."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data folder's images/")
    ap.add_argument("--out", type=Path, default=Path(".cache/models/vlm"))
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--kinds", nargs="+", default=["onboard", "ground"])
    ap.add_argument("--force", action="store_true", help="retrain even if the cache matches")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--degrade-share", type=float, default=None,
                    help="share of training images degraded by region (default: onboard 0, "
                         "ground 0.3)")
    args = ap.parse_args(argv)
    for kind in args.kinds:
        share = (DEFAULT_DEGRADE_SHARE.get(kind, 0.0) if args.degrade_share is None
                 else args.degrade_share)
        settings = TrainSettings(kind=kind, steps=args.steps, degrade_share=share)
        samples = load_samples(args.data, eurosat_per_class=settings.eurosat_per_class)
        sha = data_sha256(samples)
        name = f"small-{kind}"
        prov_path = args.out / name / "provenance.json"
        if prov_path.is_file() and not args.force:
            old = json.loads(prov_path.read_text())
            if old.get("data_sha256") == sha and old.get("settings") == asdict(settings):
                print(f"{name}: cached ({prov_path})")
                continue
        prov = train_model(samples, settings, args.out / name,
                           log=lambda m: print(m, file=sys.stderr), threads=args.threads)
        prov["data_sha256"] = sha
        prov_path.write_text(json.dumps(prov, indent=1))
        print(f"{name}: trained in {prov['train_wall_s']:.0f} s, loss {prov['final_loss']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
