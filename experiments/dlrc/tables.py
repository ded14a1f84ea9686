"""Markdown tables of the committed DLRC results (pasted into experiments/dlrc/README.md).

    python experiments/dlrc/tables.py
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def rd_table(arch: str) -> str:
    doc = json.loads((RESULTS / arch / "rd.json").read_text())
    out = ["| o_exp | lambda | plain bpp | DLRC bpp (entropy / map LZMA / map raw / header) | "
           "saved (total / entropy-coded) | dPSNR dB | dMS-SSIM | kept (ideal) | plain PSNR |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(
            f"| {r['o_exp']:g} | {r['lambda']:g} | {r['plain_bpp']:.3f} | {r['dlrc_bpp']:.3f} "
            f"({r['entropy_bpp']:.3f} / {r['map_lzma_bpp']:.4f} / {r['map_raw_bpp']:.4f} / "
            f"{r['header_bpp']:.4f}) | {100 * r['saving']:.1f} % / "
            f"{100 * r['saving_entropy_coded']:.1f} % | {r['dlrc_psnr'] - r['plain_psnr']:+.4f} "
            f"| {r['dlrc_msssim'] - r['plain_msssim']:+.5f} | {100 * r['kept_vectors']:.1f} % "
            f"({100 * r['ideal_kept']:.1f} %) | {r['plain_psnr']:.2f} |")
    t = doc["encoder_overhead_256px"]
    out.append(f"\nEncoder overhead at 256 px (in rd.py's run): DLRC {1e3 * t['dlrc_extra_s']:.1f} "
               f"ms vs compress {1e3 * t['codec_compress_s']:.1f} ms ({100 * t['ratio']:.1f} %).")
    return "\n".join(out)


def overhead_table() -> str:
    doc = json.loads((RESULTS / "overhead" / "overhead.json").read_text())
    out = ["| codec | patch px | compress ms | DLRC ms | ratio | compress peak MiB (RSS) | "
           "DLRC peak MiB (RSS / numpy) | memory ratio | emulated transforms ms | emulated LSH "
           "ms | emulated ratio | weights |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(f"| {r['arch']} | {r['patch_px']} | {1e3 * r['codec_s']:.1f} | "
                   f"{1e3 * r['dlrc_s']:.2f} | {100 * r['ratio']:.1f} % | "
                   f"{r['codec_rss_peak_mib']:.1f} | {r['dlrc_rss_peak_mib']:.1f} / "
                   f"{r['dlrc_peak_mib']:.1f} | "
                   f"{100 * r['dlrc_rss_peak_mib'] / r['codec_rss_peak_mib']:.0f} % | "
                   f"{1e3 * r['emulated_codec_transforms_s']:.3f} | "
                   f"{1e3 * r['emulated_lsh_s']:.4f} | {100 * r['emulated_ratio']:.1f} % | "
                   f"{r['weights']} |")
    return "\n".join(out)


def ablation_table() -> str:
    doc = json.loads((RESULTS / "ablation" / "ablation.json").read_text())
    out = ["| representative | k | saved | kept | dPSNR dB | dMS-SSIM |",
           "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(f"| {r['representative']} | {r['rounds']} | {100 * r['saving']:.1f} % | "
                   f"{100 * r['kept_vectors']:.1f} % | {r['dpsnr_db']:+.4f} | "
                   f"{r['dmsssim']:+.5f} |")
    return "\n".join(out)


def main() -> int:
    for arch in ("bmshj2018-hyperprior", "mbt2018", "cheng2020-attn", "elic2022-official"):
        if (RESULTS / arch / "rd.json").is_file():
            print(f"### {arch}\n\n{rd_table(arch)}\n")
    for name, fn in (("overhead", overhead_table), ("ablation", ablation_table)):
        try:
            print(f"### {name}\n\n{fn()}\n")
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
