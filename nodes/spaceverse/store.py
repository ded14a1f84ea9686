"""Trained confidence nets on disk, and the command that trains them (`calibrate`).

Owns the layout `<dir>/<net>/{config.json, weights.pt}` for the nets g~ (`g-tilde`), g (`g`)
and g' (`g-prime`), plus `<dir>/provenance.json` (which models, which samples, the settings),
so a satellite's workload loads the nets it was given instead of training them on board.

    python -m nodes.spaceverse.store --data DATA/images --models .cache/models/vlm \
        --out .cache/models/vlm/confidence [--calib-per-task 100]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from nodes.models.errors import ModelNotFoundError
from nodes.spaceverse.confidence import (
    ABLATION_AFTER_ANSWER,
    ABLATION_IMAGE_ONLY,
    SPACEVERSE_STAGES,
    ConfidenceNet,
    record_sample,
    train_confidence,
)
from nodes.spaceverse.errors import SpaceVerseConfigError

__all__ = ["NET_DIRS", "calibrate", "load_nets", "save_nets"]

NET_DIRS = {"g~": "g-tilde", "g": "g", "g'": "g-prime"}
_STAGES = {"g~": SPACEVERSE_STAGES, "g": ABLATION_IMAGE_ONLY, "g'": ABLATION_AFTER_ANSWER}


def save_nets(out_dir: Path, nets: Mapping[str, ConfidenceNet],
              provenance: Mapping[str, object] | None = None) -> None:
    """Write each net (keys of NET_DIRS) and the provenance into `out_dir`."""
    out_dir = Path(out_dir)
    for name, net in nets.items():
        if name not in NET_DIRS:
            raise SpaceVerseConfigError(f"confidence net {name!r}: expected one of "
                                        f"{', '.join(NET_DIRS)}")
        d = out_dir / NET_DIRS[name]
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"vis_dim": net.vis_dim, "tok_dim": net.tok_dim,
               "stage_tokens": list(net.stage_tokens),
               "proj_dim": net.proj[0].out_features, "hidden_dim": net.mlp[1].out_features}
        (d / "config.json").write_text(json.dumps(cfg, indent=1))
        torch.save(net.state_dict(), d / "weights.pt")
    if provenance is not None:
        (out_dir / "provenance.json").write_text(json.dumps(provenance, indent=1, default=str))


def load_nets(nets_dir: Path, names: Sequence[str] = tuple(NET_DIRS)) -> dict[str, ConfidenceNet]:
    """The nets `names` from `nets_dir`, in eval mode; ModelNotFoundError names what is missing."""
    out = {}
    for name in names:
        if name not in NET_DIRS:
            raise SpaceVerseConfigError(f"confidence net {name!r}: expected one of "
                                        f"{', '.join(NET_DIRS)}")
        d = Path(nets_dir) / NET_DIRS[name]
        for f in ("config.json", "weights.pt"):
            if not (d / f).is_file():
                raise ModelNotFoundError(f"confidence net {name}: {d / f} missing; train the "
                                         "nets with `python -m nodes.spaceverse.store`")
        cfg = json.loads((d / "config.json").read_text())
        net = ConfidenceNet(cfg["vis_dim"], cfg["tok_dim"], tuple(cfg["stage_tokens"]),
                            cfg["proj_dim"], cfg["hidden_dim"])
        net.load_state_dict(torch.load(d / "weights.pt", map_location="cpu", weights_only=True))
        out[name] = net.eval()
    return out


def calibrate(onboard, ground, samples: Sequence, max_new_tokens: int = 8
              ) -> tuple[dict[str, ConfidenceNet], float]:
    """Train g~, g and g' on `samples` (the calib split); returns the nets and the mean target."""
    from nodes.models.vlm.small import load_sample_image

    records = []
    for s in samples:
        img = load_sample_image(s)
        ans_g = ground.decode(ground.generate(img, s.prompt, max_new_tokens))
        records.append(record_sample(onboard, img, s.prompt, ans_g, max_new_tokens))
    if not records:
        raise SpaceVerseConfigError("calibrate: no calib samples, expected at least one")
    nets = {name: train_confidence(records, stages) for name, stages in _STAGES.items()}
    return nets, sum(r.target for r in records) / len(records)


def main(argv: list[str] | None = None) -> int:
    from nodes.models.vlm.data import load_samples, select_split, subsample
    from nodes.models.vlm.loader import load_vlm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the data folder's images/")
    ap.add_argument("--models", type=Path, required=True,
                    help="folder with small-onboard/ and small-ground/")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--calib-per-task", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    onboard = load_vlm(f"small:{args.models / 'small-onboard'}")
    ground = load_vlm(f"small:{args.models / 'small-ground'}")
    prov = json.loads((args.models / "small-onboard" / "provenance.json").read_text())
    samples = load_samples(args.data, eurosat_per_class=prov["settings"]["eurosat_per_class"])
    calib = subsample(select_split(samples, "calib", prov["settings"]["split_seed"]),
                      args.calib_per_task, args.seed)
    t0 = time.monotonic()
    nets, mean_target = calibrate(onboard, ground, calib)
    save_nets(args.out, nets, {
        "onboard": str(args.models / "small-onboard"), "ground": str(args.models / "small-ground"),
        "onboard_provenance": prov, "split": "calib", "calib_per_task": args.calib_per_task,
        "seed": args.seed, "samples": len(calib), "mean_target": mean_target,
        "wall_s": time.monotonic() - t0})
    print(f"confidence nets g~, g, g' trained on {len(calib)} calib samples "
          f"(mean target {mean_target:.3f}) in {time.monotonic() - t0:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
