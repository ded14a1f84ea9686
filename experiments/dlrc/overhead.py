"""DLRC's on-board encoder overhead against each codec's own encode, by patch size (paper
Table 2 / Fig. 9), measured on this CPU and emulated for an on-board GPU.

For each codec and square patch size: the codec's `compress` (median of `--reps`, one torch
thread) and DLRC's extra on-board work on the same latent (LSH, selection, arbitration of the
satellite's own list, assignment-map coding), both on this machine, in one run. Memory: the
peak resident memory each adds above what the process held before it ran (Linux's VmHWM,
reset through /proc/self/clear_refs, in a fresh process per figure so no allocator cache from
an earlier run hides it), for the codec's compress and for DLRC's extra alike; and DLRC's
peak over its numpy work alone (tracemalloc). Emulated: the roofline of the codec's transforms
and of the LSH for `--accelerator` (nodes.compute; entropy coding is not emulated). Weights:
the cached trained codec where one exists (`make models-codecs`), else the same architecture
untrained (operation counts, hence times, do not depend on the weights; the row says which).

    python experiments/dlrc/overhead.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from nodes.dlrc import mapcodec  # noqa: E402
from nodes.dlrc.arbiter import arbitrate, global_map  # noqa: E402
from nodes.dlrc.lsh import CrossPolytopeLSH  # noqa: E402
from nodes.dlrc.selector import select  # noqa: E402


def model_for(cache: Path, arch: str, lmbda: float):  # noqa: ANN201
    from nodes.models.codecs import build_codec, store

    try:
        return store.load(cache, arch, lmbda)[0], f"trained, lambda {lmbda:g}"
    except Exception:  # noqa: BLE001 -- no cached weights: untrained, said so in the row
        import torch

        torch.manual_seed(0)
        m = build_codec(arch, 64, 64)
        m.update(force=True)
        return m.eval(), "untrained (timing only)"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_mib(fn) -> float:  # noqa: ANN001
    """MiB of resident memory `fn()` adds at its peak above the process's memory before it."""
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    fn()
    return (_status_kib("VmHWM") - before) / 1024


def probe_memory(cache: Path, arch: str, lmbda: float, size: int, rounds: int,
                 what: str, vecs_npy: str = "") -> float:
    """In this process (run fresh by `memory_mib`): peak MiB of the codec's compress on one
    random `size` px patch, or of DLRC's extra work (LSH set-up included) on the latent
    vectors saved in `vecs_npy`."""
    if what == "dlrc":
        vecs = np.load(vecs_npy)
        return peak_rss_mib(lambda: dlrc_extra(vecs, CrossPolytopeLSH(vecs.shape[1], rounds, 0)))
    import torch

    torch.set_num_threads(1)
    model, _ = model_for(cache, arch, lmbda)
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
    with torch.no_grad():
        return peak_rss_mib(lambda: model.compress(x))


def memory_mib(cache: Path, arch: str, lmbda: float, size: int, rounds: int,
               what: str, vecs: np.ndarray | None = None) -> float:
    """probe_memory in a fresh Python process (`vecs`: the latent vectors, for "dlrc")."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        vecs_npy = ""
        if vecs is not None:
            vecs_npy = str(Path(tmp) / "vecs.npy")
            np.save(vecs_npy, vecs)
        call = (f"probe_memory(Path({str(cache)!r}), {arch!r}, {lmbda!r}, {size!r}, "
                f"{rounds!r}, {what!r}, {vecs_npy!r})")
        code = (f"import sys; from pathlib import Path; sys.path.insert(0, {str(REPO)!r}); "
                f"from experiments.dlrc.overhead import probe_memory; print({call})")
        out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                             text=True, check=True, cwd=REPO, timeout=1800)
    return float(out.stdout.split()[-1])


def dlrc_extra(vecs: np.ndarray, lsh: CrossPolytopeLSH) -> None:
    sel = select(lsh.signatures(vecs), vecs)
    arb = arbitrate({1: sel.signatures}, [1])
    mapcodec.encode(global_map(sel.assignment, arb.plans[1]), 0)


def measure(model, arch: str, size: int, reps: int, rounds: int, acc_name: str,
            cache: Path, lmbda: float) -> dict:
    import torch

    from nodes.compute import accelerator, roofline_s
    from nodes.dlrc.latent import latent_coder
    from nodes.dlrc.work import codec_analysis_work, lsh_work

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((1, 3, size, size), dtype=np.float32))
    lsh = CrossPolytopeLSH(model.M, rounds, 0)
    t_codec, t_dlrc = [], []
    with torch.no_grad():
        vecs = latent_coder(model, arch).analyse(x).vectors()
        for _ in range(reps):
            t0 = time.perf_counter()
            model.compress(x)
            t_codec.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            dlrc_extra(vecs, lsh)
            t_dlrc.append(time.perf_counter() - t0)
    tracemalloc.start()
    dlrc_extra(vecs, lsh)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    acc = accelerator(acc_name)
    cw = codec_analysis_work(model, (size, size))
    lw = lsh_work(len(vecs), vecs.shape[1], rounds)
    codec_emu, lsh_emu = roofline_s(cw.flops, cw.bytes, acc), roofline_s(lw.flops, lw.bytes, acc)
    return {"arch": arch, "patch_px": size, "codec_s": float(np.median(t_codec)),
            "dlrc_s": float(np.median(t_dlrc)),
            "ratio": float(np.median(t_dlrc) / np.median(t_codec)),
            "dlrc_peak_mib": peak / 2**20,
            "codec_rss_peak_mib": memory_mib(cache, arch, lmbda, size, rounds, "codec"),
            "dlrc_rss_peak_mib": memory_mib(cache, arch, lmbda, size, rounds, "dlrc", vecs),
            "emulated_codec_transforms_s": codec_emu, "emulated_lsh_s": lsh_emu,
            "emulated_ratio": lsh_emu / codec_emu}


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=REPO / ".cache/models/codecs")
    p.add_argument("--arch", nargs="+",
                   default=["bmshj2018-hyperprior", "mbt2018", "cheng2020-attn",
                            "elic2022-official"])
    p.add_argument("--lmbda", type=float, default=0.0067)
    p.add_argument("--sizes", nargs="+", type=int, default=[256, 512, 1024, 2048])
    p.add_argument("--max-ar-px", type=int, default=1024,
                   help="largest size for autoregressive codecs (their compress walks every "
                        "position in Python: 2048 px takes minutes per repetition)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--accelerator", default="jetson-agx-orin")
    p.add_argument("--out", type=Path, default=REPO / "experiments/dlrc/results/overhead")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.arch:
        model, weights = model_for(args.cache, arch, args.lmbda)
        autoregressive = hasattr(model, "context_prediction")  # ELIC's passes are batched
        for size in args.sizes:
            if autoregressive and size > args.max_ar_px:
                continue
            reps = args.reps if size <= 512 else max(1, args.reps // 3)
            row = {**measure(model, arch, size, reps, args.rounds, args.accelerator,
                             args.cache, args.lmbda),
                   "weights": weights, "reps": reps}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "overhead.json").write_text(json.dumps(
        {"command": "python experiments/dlrc/overhead.py "
         + " ".join(argv if argv is not None else sys.argv[1:]),
         "timing": "measured on this development machine's CPU, one torch thread, median of "
                   "reps; emulated: roofline of transforms / LSH for " + args.accelerator,
         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
