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
           "z bpp (share of plain) | saved (total / entropy-coded / y only) | dPSNR dB | "
           "dMS-SSIM | kept (ideal) | plain PSNR |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        z = (f"{r['z_bpp']:.3f} ({100 * r['z_bpp'] / r['plain_bpp']:.0f} %)" if "z_bpp" in r
             else "-")
        y_only = ""
        if "z_bpp" in r:  # the part DLRC can prune: y (every satellite sends its z whole)
            kept_y = (r["entropy_bpp"] - r["z_bpp"]) / (r["plain_bpp"] - r["z_bpp"])
            y_only = f" / {100 * (1 - kept_y):.1f} %"
        out.append(
            f"| {r['o_exp']:g} | {r['lambda']:g} | {r['plain_bpp']:.3f} | {r['dlrc_bpp']:.3f} "
            f"({r['entropy_bpp']:.3f} / {r['map_lzma_bpp']:.4f} / {r['map_raw_bpp']:.4f} / "
            f"{r['header_bpp']:.4f}) | {z} | {100 * r['saving']:.1f} % / "
            f"{100 * r['saving_entropy_coded']:.1f} %{y_only} | "
            f"{r['dlrc_psnr'] - r['plain_psnr']:+.4f} "
            f"| {r['dlrc_msssim'] - r['plain_msssim']:+.5f} | {100 * r['kept_vectors']:.1f} % "
            f"({100 * r['ideal_kept']:.1f} %) | {r['plain_psnr']:.2f} |")
    t = doc["encoder_overhead_256px"]
    out.append(f"\nEncoder overhead at 256 px (in rd.py's run): DLRC {1e3 * t['dlrc_extra_s']:.1f} "
               f"ms vs compress {1e3 * t['codec_compress_s']:.1f} ms ({100 * t['ratio']:.1f} %).")
    return "\n".join(out)


def margin_table(name: str) -> str:
    """A run with an analysis margin: the plain codec on the bare patch, the margin codec
    alone (no de-duplication) and DLRC on it."""
    doc = json.loads((RESULTS / name / "rd.json").read_text())
    out = ["| o_exp | lambda | plain bpp | alone bpp | DLRC bpp | kept (ideal) | saved vs alone | "
           "dPSNR vs alone | dMS-SSIM vs alone | saved vs plain | dPSNR alone vs plain |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        out.append(
            f"| {r['o_exp']:g} | {r['lambda']:g} | {r['plain_bpp']:.3f} | "
            f"{r['margin_alone_bpp']:.3f} | {r['dlrc_bpp']:.3f} | "
            f"{100 * r['kept_vectors']:.1f} % ({100 * r['ideal_kept']:.1f} %) | "
            f"{100 * (1 - r['dlrc_bpp'] / r['margin_alone_bpp']):.1f} % | "
            f"{r['dlrc_psnr'] - r['margin_alone_psnr']:+.4f} | "
            f"{r['dlrc_msssim'] - r['margin_alone_msssim']:+.5f} | {100 * r['saving']:.1f} % | "
            f"{r['margin_alone_psnr'] - r['plain_psnr']:+.3f} |")
    return "\n".join(out)


def training_length_table() -> str:
    """Each codec trained 250 steps (results/steps250/) and 1000 (results/): the hyperprior's
    share of the plain bytes, and DLRC's saving."""
    out = ["| codec | lambda | steps at this lambda | plain bpp | plain PSNR | z share of plain "
           "| saved o_exp 2 | saved o_exp 0.5 |", "|---|---|---|---|---|---|---|---|"]
    for arch in ("bmshj2018-hyperprior", "mbt2018", "cheng2020-attn", "elic2022-official"):
        for sub in ("steps250/", ""):
            path = RESULTS / f"{sub}{arch}" / "rd.json"
            if not path.is_file():
                continue
            doc = json.loads(path.read_text())
            for lmbda in (0.0067, 0.0483):
                rows = {r["o_exp"]: r for r in doc["rows"] if r["lambda"] == lmbda}
                if not rows or "z_bpp" not in rows[2.0]:
                    continue
                r2, r05 = rows[2.0], rows[0.5]
                steps = doc["codecs"][f"{lmbda:g}"]["settings"]["steps"]
                out.append(f"| {arch} | {lmbda:g} | {steps} | {r2['plain_bpp']:.3f} | "
                           f"{r2['plain_psnr']:.2f} | {100 * r2['z_bpp'] / r2['plain_bpp']:.0f} % "
                           f"| {100 * r2['saving']:.1f} % | {100 * r05['saving']:.1f} % |")
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
    for rd in sorted(RESULTS.glob("**/rd.json")):  # each codec, the variants, steps250/
        name = rd.parent.relative_to(RESULTS).as_posix()
        print(f"### {name}\n\n{rd_table(name)}\n")
        if "margin_alone_bpp" in json.loads(rd.read_text())["rows"][0]:
            print(f"### {name}: against the margin codec alone\n\n{margin_table(name)}\n")
    print(f"### training length\n\n{training_length_table()}\n")
    for name, fn in (("overhead", overhead_table), ("ablation", ablation_table)):
        try:
            print(f"### {name}\n\n{fn()}\n")
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
