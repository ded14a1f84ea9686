"""Train the codecs on the real images and cache them with provenance (`make models-codecs`).

Why our own trainer: nothing can be downloaded, so every codec the testbed uses is trained here,
on random crops of the lossless training split, with the rate-distortion loss of the CompressAI
papers: L = lambda * 255^2 * MSE + bpp, plus the entropy bottleneck's auxiliary (quantile) loss.
`update()` builds the entropy coder's CDFs at the end. A cache entry whose settings and data
digest match is reused (`--force` retrains).

    python -m nodes.models.codecs.train --images DATA/images --cache .cache/models/codecs \
        --arch bmshj2018-hyperprior --lambdas 0.0067 0.013 0.025 0.0483 --steps 250 \
        --warm-steps 80
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from nodes.models.codecs import images as imgs
from nodes.models.codecs import store
from nodes.models.codecs.errors import CachedCodecError, CodecInputError
from nodes.models.codecs.margin import analysis_margin, margin_cells
from nodes.models.codecs.registry import build_codec, codec_names

LAMBDAS = (0.0067, 0.013, 0.025, 0.0483)


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides the weights (recorded in the provenance)."""

    arch: str
    lmbda: float
    steps: int
    n: int = 64
    m: int = 64
    batch: int = 4
    crop_px: int = 256
    lr: float = 5e-4
    aux_lr: float = 1e-3
    seed: int = 0
    holdout_percent: int = 20
    init_from: str | None = None  # weights.pt to warm-start from (e.g. the same arch, another
    # lambda: the usual way to train a rate ladder in less time); its sha256 goes in provenance
    margin_px: int = 0  # g_a sees this much scene around each crop (nodes.models.codecs.margin)


def _check(s: TrainSettings) -> None:
    if s.steps < 1:
        raise CodecInputError(f"steps={s.steps}; expected >= 1")
    if s.crop_px % 64:
        raise CodecInputError(f"crop_px={s.crop_px}; expected a multiple of 64")
    margin_cells(s.margin_px)
    if not s.lmbda > 0:
        raise CodecInputError(f"lambda={s.lmbda}; expected > 0")


def rd_loss(out: dict[str, Any], x: Any, lmbda: float) -> tuple[Any, Any, Any]:
    """(loss, bpp, mse) of one forward pass."""
    import torch

    num_px = x.shape[0] * x.shape[2] * x.shape[3]
    bpp = sum(torch.log(v).sum() for v in out["likelihoods"].values()) / (-math.log(2) * num_px)
    mse = torch.mean((out["x_hat"] - x) ** 2)
    return lmbda * 255.0**2 * mse + bpp, bpp, mse


def train(settings: TrainSettings, images_dir: Path, log: Any = None) -> tuple[Any, dict]:
    """Train one codec; returns (model updated and in eval mode, provenance dict)."""
    import compressai
    import torch

    _check(settings)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    train_paths, held = imgs.split(images_dir, settings.holdout_percent)
    pictures = [imgs.load_rgb(p) for p in train_paths]
    m_px = settings.margin_px
    if m_px:  # the scene past an image's edge is its mirror (as rd.py gives a window's edge)
        pictures = [np.pad(im, ((m_px, m_px), (m_px, m_px), (0, 0)), mode="reflect")
                    for im in pictures]
    model = build_codec(settings.arch, settings.n, settings.m)
    init_sha256 = None
    if settings.init_from is not None:
        init = Path(settings.init_from)
        if not init.is_file():
            raise CodecInputError(f"init_from={init}: file not found; expected a weights.pt")
        init_sha256 = hashlib.sha256(init.read_bytes()).hexdigest()
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    model.train()
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=settings.lr)
    aux_opt = torch.optim.Adam(aux_params, lr=settings.aux_lr)
    t0 = time.monotonic()
    tail: list[tuple[float, float, float]] = []
    for step in range(settings.steps):
        batch = imgs.random_crops(pictures, settings.crop_px + 2 * m_px, settings.batch, rng)
        seen = torch.from_numpy(batch).float().div_(255.0)
        x = seen[:, :, m_px:m_px + settings.crop_px, m_px:m_px + settings.crop_px]
        opt.zero_grad()
        aux_opt.zero_grad()
        with analysis_margin(model, m_px) as with_margin:
            out = with_margin(seen)
        loss, bpp, mse = rd_loss(out, x, settings.lmbda)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = model.aux_loss()
        aux.backward()
        aux_opt.step()
        tail = (tail + [(loss.item(), bpp.item(), mse.item())])[-20:]
        if log is not None and (step % 50 == 0 or step == settings.steps - 1):
            print(f"{settings.arch} lambda={settings.lmbda:g} step {step + 1}/{settings.steps} "
                  f"loss {tail[-1][0]:.4f} bpp {tail[-1][1]:.4f} mse {tail[-1][2]:.6f} "
                  f"({time.monotonic() - t0:.0f} s)", file=log, flush=True)
    model.update(force=True)
    model.eval()
    mean = np.mean(np.array(tail), axis=0)
    prov = {
        "schema": 1,
        "settings": asdict(settings),
        "arch": settings.arch, "n": settings.n, "m": settings.m, "lambda": settings.lmbda,
        "data_sha256": imgs.data_sha256(images_dir, train_paths),
        "init_sha256": init_sha256,
        "train_images": len(train_paths), "held_out_images": len(held),
        "train_sets": list(imgs.TRAIN_SETS),
        "final_loss": float(mean[0]), "final_bpp": float(mean[1]), "final_mse": float(mean[2]),
        "final_over_steps": len(tail),
        "train_s": round(time.monotonic() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "compressai": compressai.__version__},
    }
    return model, prov


def is_cached(cache_dir: Path, settings: TrainSettings, data_digest: str) -> bool:
    """True when the cache holds weights made with exactly these settings and data."""
    try:
        prov = store.read_provenance(cache_dir, settings.arch, settings.lmbda)
    except CachedCodecError:
        return False
    weights = store.entry_dir(cache_dir, settings.arch, settings.lmbda) / "weights.pt"
    # a record written before a setting existed holds that setting's default
    defaults = {f.name: f.default for f in fields(TrainSettings) if f.default is not MISSING}
    recorded = {**defaults, **prov.get("settings", {})}
    return (weights.is_file() and recorded == asdict(settings)
            and prov.get("data_sha256") == data_digest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, required=True, help="the real data's images/ folder")
    p.add_argument("--cache", type=Path, default=Path(".cache/models/codecs"))
    p.add_argument("--arch", nargs="+", default=["bmshj2018-hyperprior"], choices=codec_names())
    p.add_argument("--lambdas", nargs="+", type=float, default=list(LAMBDAS))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--m", type=int, default=64)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop-px", type=int, default=256)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init-from", type=Path, default=None,
                   help="warm-start every run from this weights.pt")
    p.add_argument("--warm-steps", type=int, default=None,
                   help="train the first lambda for --steps, then each next lambda for this many "
                        "steps warm-started from the previous one (a rate ladder)")
    p.add_argument("--margin-px", type=int, default=0,
                   help="train with this much scene around each crop seen by g_a (a multiple "
                        "of 16; for DLRC's DlrcConfig.margin_px; use its own --cache)")
    p.add_argument("--force", action="store_true", help="retrain even when cached")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:
        train_paths, _ = imgs.split(args.images)
        digest = imgs.data_sha256(args.images, train_paths)
        for arch in args.arch:
            init = str(args.init_from) if args.init_from else None
            for i, lmbda in enumerate(args.lambdas):
                ladder = args.warm_steps is not None and i > 0
                if ladder:  # warm-start from the previous lambda of the same architecture
                    init = str(store.entry_dir(args.cache, arch, args.lambdas[i - 1])
                               / "weights.pt")
                s = TrainSettings(arch=arch, lmbda=lmbda,
                                  steps=args.warm_steps if ladder else args.steps,
                                  n=args.n, m=args.m, batch=args.batch, crop_px=args.crop_px,
                                  lr=args.lr, seed=args.seed, init_from=init,
                                  margin_px=args.margin_px)
                if not args.force and is_cached(args.cache, s, digest):
                    print(f"{arch} lambda={lmbda:g}: cached", flush=True)
                    continue
                model, prov = train(s, args.images, log=sys.stdout)
                folder = store.save(model, args.cache, arch, lmbda, prov)
                print(f"{arch} lambda={lmbda:g}: final loss {prov['final_loss']:.4f} "
                      f"bpp {prov['final_bpp']:.4f} -> {folder}", flush=True)
    except CodecInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
