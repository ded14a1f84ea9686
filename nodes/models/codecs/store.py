"""The trained-weights cache: `<cache>/<arch>-<lambda>/weights.pt` + `provenance.json`.

The provenance record (architecture, channels, lambda, steps, crop, seed, the training data's
sha256, final loss/bpp/MSE, versions) sits beside the weights, so a result can always say which
model produced it and a stale cache is detected instead of silently reused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nodes.models.codecs.errors import CachedCodecError
from nodes.models.codecs.registry import build_codec


def entry_dir(cache_dir: Path, arch: str, lmbda: float) -> Path:
    """Folder of one trained codec."""
    return Path(cache_dir) / f"{arch}-{lmbda:g}"


def read_provenance(cache_dir: Path, arch: str, lmbda: float) -> dict[str, Any]:
    """The provenance record, or CachedCodecError naming the missing file."""
    path = entry_dir(cache_dir, arch, lmbda) / "provenance.json"
    if not path.is_file():
        raise CachedCodecError(
            f"codec {arch} lambda={lmbda:g}: {path} not found; expected a trained codec "
            "(run `make models-codecs`)"
        )
    return json.loads(path.read_text())


def save(model: Any, cache_dir: Path, arch: str, lmbda: float, provenance: dict[str, Any]) -> Path:
    """Write weights and provenance (weights first, so a record never names missing weights)."""
    import torch

    folder = entry_dir(cache_dir, arch, lmbda)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), folder / "weights.pt")
    tmp = folder / "provenance.json.tmp"
    tmp.write_text(json.dumps(provenance, indent=2, sort_keys=True) + "\n")
    tmp.replace(folder / "provenance.json")
    return folder


def load(cache_dir: Path, arch: str, lmbda: float) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode with entropy CDFs updated, provenance) of a cached trained codec."""
    import torch

    prov = read_provenance(cache_dir, arch, lmbda)
    weights = entry_dir(cache_dir, arch, lmbda) / "weights.pt"
    if not weights.is_file():
        raise CachedCodecError(f"codec {arch} lambda={lmbda:g}: {weights} not found")
    model = build_codec(arch, int(prov["n"]), int(prov["m"]))
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.update(force=True)
    model.eval()
    return model, prov
