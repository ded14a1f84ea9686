"""DLRC rate-distortion on real overlapping views, in process, with the cached trained codecs.

Two overlap settings, as in the paper's evaluation: N satellites each take a P x P patch
(P = 256) at a random 16-pixel-aligned offset inside one W x W window, so the expected overlap
o_exp = N * P^2 / W^2:

- o_exp 2.0: W = 512, N = 8, the held-out RSVQA high-resolution tiles (512 x 512, never trained on)
- o_exp 0.5: W = 1024, N = 8, the five non-overlapping 1024 x 1024 windows of the two large NEON
  scenes (2 x 2 of the 2299 x 2472 one, 1 of the 1249 x 1035 one; not in training)

For each trained lambda it reports bpp (all bytes on the wire over all patches' pixels) and PSNR
(mean over patches) of the plain codec and of DLRC, and JPEG (Pillow, 4:2:0) at the quality whose
bpp is closest to DLRC's. It also times DLRC's on-board overhead (LSH + selection + arbitration +
map coding) against the codec's own compress at 256 x 256.

    python experiments/dlrc/rd.py --arch bmshj2018-hyperprior --max-windows 6
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nodes.dlrc import mapcodec  # noqa: E402
from nodes.dlrc.arbiter import arbitrate, global_map  # noqa: E402
from nodes.dlrc.lsh import CrossPolytopeLSH  # noqa: E402
from nodes.dlrc.pipeline import DlrcConfig, GroundDecoder, run  # noqa: E402
from nodes.dlrc.selector import select  # noqa: E402
from nodes.models.codecs import images as imgs  # noqa: E402
from nodes.models.codecs import store  # noqa: E402
from nodes.models.codecs.roundtrip import roundtrip  # noqa: E402

PATCH_PX = 256
NEON = ("2019_YELL_2_541000_4977000_image_crop.png", "2019_YELL_2_528000_4978000_image_crop2.png")


def psnr_db(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR of two float arrays in [0, 1]."""
    return float(10.0 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


def windows(images_dir: Path, o_exp: float, max_windows: int) -> list[tuple[str, np.ndarray]]:
    """(name, W x W uint8 window) for one overlap setting."""
    if o_exp == 2.0:
        _, held = imgs.split(images_dir)
        tiles = [p for p in held if p.parent.name == "rsvqa-hr"][:max_windows]
        return [(f"rsvqa-hr/{p.name}", imgs.load_rgb(p)) for p in tiles]
    out = []
    for name in NEON:  # every non-overlapping 1024 px window: 2 x 2 of the first, 1 of the other
        im = imgs.load_rgb(images_dir / "neon-trees" / name)
        for top in range(0, im.shape[0] - 1023, 1024):
            for left in range(0, im.shape[1] - 1023, 1024):
                out.append((f"neon-trees/{name}@{top},{left}",
                            im[top:top + 1024, left:left + 1024]))
    return out[:max_windows]


def patches(window: np.ndarray, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    steps = (window.shape[0] - PATCH_PX) // 16 + 1
    offs = [(16 * int(rng.integers(steps)), 16 * int(rng.integers(steps))) for _ in range(n)]
    return [window[t:t + PATCH_PX, s:s + PATCH_PX] for t, s in offs]


def jpeg_at(patch_list: list[np.ndarray], target_bpp: float) -> tuple[float, float, int]:
    """(bpp, PSNR, quality) of JPEG at the quality whose mean bpp is closest to target_bpp."""
    from PIL import Image

    best = None
    for q in range(1, 96):
        nbytes, ps = 0, []
        for p in patch_list:
            buf = io.BytesIO()
            Image.fromarray(p).save(buf, format="JPEG", quality=q)
            nbytes += buf.tell()
            dec = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
            ps.append(psnr_db(dec / 255.0, p / 255.0))
        bpp = nbytes * 8 / (len(patch_list) * PATCH_PX**2)
        if best is None or abs(bpp - target_bpp) < abs(best[0] - target_bpp):
            best = (bpp, float(np.mean(ps)), q)
        if bpp > 2 * target_bpp:
            break
    return best


def overhead(model, arch: str, x, reps: int = 5) -> dict:
    """Median seconds of the codec's compress and of DLRC's extra on-board work at 256 x 256."""
    import torch

    from nodes.dlrc.latent import latent_coder

    coder = latent_coder(model, arch)
    lsh = CrossPolytopeLSH(model.M, 20, 0)  # rotations are drawn once per satellite
    t_codec, t_dlrc = [], []
    for _ in range(reps):
        with torch.no_grad():
            t0 = time.perf_counter()
            model.compress(x)
            t_codec.append(time.perf_counter() - t0)
        a = coder.analyse(x)
        t0 = time.perf_counter()
        vecs = a.vectors()
        sel = select(lsh.signatures(vecs), vecs)
        arb = arbitrate({1: sel.signatures}, [1])
        mapcodec.encode(global_map(sel.assignment, arb.plans[1]), 0)
        t_dlrc.append(time.perf_counter() - t0)
    return {"codec_compress_s": float(np.median(t_codec)),
            "dlrc_extra_s": float(np.median(t_dlrc)),
            "ratio": float(np.median(t_dlrc) / np.median(t_codec))}


def ideal_kept(offsets: list[tuple[int, int]], window: int) -> float:
    """Share of latent positions that are distinct scene cells (the union of the patches on
    the 16-px grid over all positions): what a perfect de-duplication would keep."""
    cells = np.zeros((window // 16, window // 16), dtype=bool)
    for t, s in offsets:
        cells[t // 16:t // 16 + PATCH_PX // 16, s // 16:s // 16 + PATCH_PX // 16] = True
    return float(cells.sum() / (len(offsets) * (PATCH_PX // 16) ** 2))


def evaluate(model, arch: str, views: list, config, plain_model=None) -> dict:  # noqa: ANN001
    """One setting over all windows: bpp by part, PSNR and MS-SSIM of plain and DLRC, kept
    vectors (actual and ideal). `views`: make_views'. With `config.margin_px`, DLRC's analysis
    sees that much of the window around each patch (mirrored past the window's edge); the plain
    codec and every score use the patch alone. `plain_model`: the plain codec when it is not
    `model` (a margin-trained DLRC codec against the codec trained on bare crops)."""
    plain_model = model if plain_model is None else plain_model
    import torch

    from nodes.dlrc.wire import SatellitePayload
    from nodes.workloads.dlrc_ground import ms_ssim

    ground = GroundDecoder(model, arch, config)
    parts = dict.fromkeys(("plain", "dlrc", "entropy", "z", "map_lzma", "map_raw", "header"), 0)
    ps: dict[str, list[float]] = {"plain_psnr": [], "dlrc_psnr": [], "plain_msssim": [],
                                  "dlrc_msssim": []}
    kept, ideal = [], []
    def tensor(q: np.ndarray):  # noqa: ANN202
        return torch.from_numpy(q.transpose(2, 0, 1).copy()).float().div(255)[None]

    m = config.margin_px
    for _, patch_list, offs, window, pixels in views:
        xs = {i + 1: tensor(q) for i, q in enumerate(patch_list)}
        seen = xs
        if m:  # each satellite's view with m px of the window around it (mirrored outside)
            padded = np.pad(pixels, ((m, m), (m, m), (0, 0)), mode="reflect")
            seen = {i + 1: tensor(padded[t:t + PATCH_PX + 2 * m, s:s + PATCH_PX + 2 * m])
                    for i, (t, s) in enumerate(offs)}
        with torch.no_grad():
            payloads, arb, locs = run(model, arch, seen, sorted(seen), config)
            rec = ground.decode(payloads.values())
        kept.append(arb.total_vectors / (len(xs) * (PATCH_PX // 16) ** 2))
        ideal.append(ideal_kept(offs, window))
        if m:  # the margin codec alone, no de-duplication: its two bitstreams per satellite
            for s, x in xs.items():
                with torch.no_grad():
                    alone, _, _ = run(model, arch, {1: seen[s]}, [1], config)
                    r1 = ground.decode(alone.values())[1]
                a = SatellitePayload.from_bytes(alone[1])
                parts["margin_alone"] = (parts.get("margin_alone", 0) + len(a.z_string)
                                         + len(a.y_string))
                ps.setdefault("margin_alone_psnr", []).append(
                    psnr_db(r1.x_hat.clamp(0, 1).numpy(), x.numpy()))
                ps.setdefault("margin_alone_msssim", []).append(ms_ssim(r1.x_hat.clamp(0, 1), x))
        for s, x in xs.items():
            b = payloads[s]
            p = SatellitePayload.from_bytes(b)
            parts["dlrc"] += len(b)
            parts["entropy"] += len(p.z_string) + len(p.y_string)
            parts["z"] += len(p.z_string)  # sent whole by every satellite, as the plain codec
            parts["map_lzma"] += len(p.map_blob)
            parts["header"] += len(b) - len(p.z_string) - len(p.y_string) - len(p.map_blob)
            seq = global_map(locs[s].selection.assignment, arb.plans[s])
            parts["map_raw"] += mapcodec.raw_bytes(seq, arb.plans[s].base)
            with torch.no_grad():
                pl = roundtrip(plain_model, x)
            parts["plain"] += pl.nbytes
            ps["plain_psnr"].append(psnr_db(pl.x_hat.clamp(0, 1).numpy(), x.numpy()))
            ps["dlrc_psnr"].append(psnr_db(rec[s].x_hat.clamp(0, 1).numpy(), x.numpy()))
            ps["plain_msssim"].append(ms_ssim(pl.x_hat.clamp(0, 1), x))
            ps["dlrc_msssim"].append(ms_ssim(rec[s].x_hat.clamp(0, 1), x))
    px = sum(len(v[1]) for v in views) * PATCH_PX**2
    row = {f"{k}_bpp": v * 8 / px for k, v in parts.items()}
    row.update({k: float(np.mean(v)) for k, v in ps.items()})
    row["saving"] = 1 - parts["dlrc"] / parts["plain"]
    row["saving_entropy_coded"] = 1 - parts["entropy"] / parts["plain"]
    row["kept_vectors"] = float(np.mean(kept))
    row["ideal_kept"] = float(np.mean(ideal))
    return row


def make_views(images: Path, o_exp: float, max_windows: int, sats: int, seed: int) -> list:
    """[(name, patches, offsets, window_px, window pixels)] for one overlap setting, offsets
    seeded."""
    rng = np.random.default_rng(seed)
    out = []
    for name, w in windows(images, o_exp, max_windows):
        steps = (w.shape[0] - PATCH_PX) // 16 + 1
        offs = [(16 * int(rng.integers(steps)), 16 * int(rng.integers(steps)))
                for _ in range(sats)]
        out.append((name, [w[t:t + PATCH_PX, s:s + PATCH_PX] for t, s in offs], offs,
                    w.shape[0], w))
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from testbed.paths import data_dir

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=Path, default=data_dir() / "images")
    p.add_argument("--cache", type=Path, default=REPO / ".cache/models/codecs")
    p.add_argument("--arch", default="bmshj2018-hyperprior")
    p.add_argument("--lambdas", nargs="+", type=float, default=[0.0067, 0.013, 0.025, 0.0483])
    p.add_argument("--sats", type=int, default=8)
    p.add_argument("--max-windows", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=20, help="LSH rounds k")
    p.add_argument("--representative", default="original", choices=("original", "mean"))
    p.add_argument("--margin-px", type=int, default=0,
                   help="scene around each patch that DLRC's analysis sees (multiple of 16)")
    p.add_argument("--plain-cache", type=Path, default=None,
                   help="the plain codec's cache when it differs from DLRC's --cache (e.g. "
                        "DLRC with a margin-trained codec against the codec trained on bare "
                        "crops)")
    p.add_argument("--cross-context", default="mean", choices=("mean", "zero"),
                   help="context models: what a dropped cross-satellite vector is in the walk")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default experiments/dlrc/results/<arch>)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    if args.out is None:
        args.out = REPO / "experiments/dlrc/results" / args.arch
    args.out.mkdir(parents=True, exist_ok=True)
    rows, provenance = [], {}
    config = DlrcConfig(args.rounds, 0, args.representative, args.margin_px, args.cross_context)
    for o_exp in (2.0, 0.5):
        views = make_views(args.images, o_exp, args.max_windows, args.sats, args.seed)
        all_patches = [q for v in views for q in v[1]]
        for lmbda in args.lambdas:
            model, prov = store.load(args.cache, args.arch, lmbda)
            provenance[f"{lmbda:g}"] = {k: prov[k] for k in ("settings", "final_loss",
                                                             "final_bpp", "data_sha256")}
            plain_model = None
            if args.plain_cache is not None:
                plain_model, pprov = store.load(args.plain_cache, args.arch, lmbda)
                provenance[f"plain {lmbda:g}"] = {
                    k: pprov[k] for k in ("settings", "final_loss", "final_bpp", "data_sha256")}
            row = {"o_exp": o_exp, "windows": len(views), "sats": args.sats, "lambda": lmbda,
                   **evaluate(model, args.arch, views, config, plain_model)}
            jb, jp, jq = jpeg_at(all_patches, row["dlrc_bpp"])
            row.update({"jpeg_bpp": jb, "jpeg_psnr_db": jp, "jpeg_quality": jq})
            rows.append(row)
            print(json.dumps(row), flush=True)
    x0 = torch.from_numpy(all_patches[0].transpose(2, 0, 1).copy()).float().div(255)[None]
    model, _ = store.load(args.cache, args.arch, args.lambdas[0])
    timing = overhead(model, args.arch, x0)
    print(json.dumps({"encoder_overhead_256px": timing}), flush=True)
    with open(args.out / "rd.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (args.out / "rd.json").write_text(json.dumps(
        {"arch": args.arch, "command": "python experiments/dlrc/rd.py "
         + " ".join(argv if argv is not None else sys.argv[1:]),
         "rows": rows, "encoder_overhead_256px": timing,
         "dlrc": {"rounds": args.rounds, "representative": args.representative,
                  "margin_px": args.margin_px, "cross_context": args.cross_context},
         "codecs": provenance, "windows": {"2.0": [n for n, *_ in make_views(
                                               args.images, 2.0, args.max_windows, 1, 0)],
                                           "0.5": [n for n, *_ in make_views(
                                               args.images, 0.5, args.max_windows, 1, 0)]}},
        indent=2) + "\n")
    plot(rows, args.out / "rd.png", args.arch)
    return 0


def plot(rows: list[dict], path: Path, arch: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    for ax, o_exp in zip(axes, (2.0, 0.5), strict=True):
        rs = sorted((r for r in rows if r["o_exp"] == o_exp), key=lambda r: r["lambda"])
        for key, label, style in (("plain", arch, "o-"), ("dlrc", f"DLRC + {arch}", "s-"),
                                  ("jpeg", "JPEG (matched bpp)", "^--")):
            psnr = "jpeg_psnr_db" if key == "jpeg" else f"{key}_psnr"
            ax.plot([r[f"{key}_bpp"] for r in rs], [r[psnr] for r in rs], style, label=label)
        ax.set_title(f"o_exp = {o_exp}")
        ax.set_xlabel("bpp (all bytes sent / all patch pixels)")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
