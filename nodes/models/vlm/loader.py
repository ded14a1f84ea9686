"""Model selection by spec: `load_vlm("small:<dir>")`, `load_vlm("hf-qwen2vl:<dir>")`.

Owns the small lazy registry of VLM kinds, so a workload names its model in one string (a
scenario option) and the ground model can be swapped (a mixture-of-experts VLM registers its
own kind later) without touching the workloads. Each kind maps to `"module:callable"`,
imported only when a model of that kind is loaded: `load_vlm` of a small model never imports
transformers. The registry dict is the only module-level state.

Example:
    register_vlm_kind("my-moe", "mypkg.moe:load_from_dir")   # callable(Path) -> VLM
    ground = load_vlm("my-moe:/models/moe")
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

from nodes.models.errors import ModelConfigError, ModelNotFoundError

__all__ = ["VLM_KINDS", "load_vlm", "parse_vlm_spec", "register_vlm_kind", "vlm_kinds"]

VLM_KINDS: dict[str, str] = {
    "small": "nodes.models.vlm.small:SmallVLM.load",
    "hf-qwen2vl": "nodes.models.vlm.hf_qwen2vl:HFQwen2VL.from_local_dir",
    "skymoe": "nodes.models.skymoe.vlm:SkyMoEVLM.load",  # dense or MoE SkyMoE (ground model)
}
_KEBAB = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")


def register_vlm_kind(kind: str, target: str) -> None:
    """Register `kind` (kebab-case) as `"package.module:callable"`; the callable takes the
    model directory (a Path) and returns a `VisionLanguageModel`. Re-registering the same
    target is a no-op; another target under a taken kind is an error."""
    if not _KEBAB.fullmatch(kind):
        raise ModelConfigError(f"VLM kind {kind!r}: expected kebab-case (e.g. 'hf-qwen2vl')")
    module, sep, name = target.partition(":")
    if not sep or not module or not name:
        raise ModelConfigError(f"VLM kind {kind!r}: target {target!r}, expected "
                               "'module:callable'")
    known = VLM_KINDS.get(kind)
    if known is not None and known != target:
        raise ModelConfigError(f"VLM kind {kind!r} registered twice: {known} and {target}")
    VLM_KINDS[kind] = target


def vlm_kinds() -> list[str]:
    """The registered kinds, sorted (imports nothing)."""
    return sorted(VLM_KINDS)


def parse_vlm_spec(spec: str) -> tuple[str, Path]:
    """`"kind:dir"` -> (kind, Path(dir)); checks the kind and the directory, loads nothing."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ModelConfigError(f"VLM spec {spec!r}: expected 'kind:directory' with kind one of "
                               f"{', '.join(vlm_kinds())}")
    kind, _, where = spec.partition(":")
    if kind not in VLM_KINDS:
        raise ModelConfigError(f"VLM spec {spec!r}: unknown kind {kind!r}; choose: "
                               f"{', '.join(vlm_kinds())}")
    path = Path(where)
    if not where or not path.is_dir():
        raise ModelNotFoundError(f"VLM spec {spec!r}: model directory {where!r} does not exist "
                                 "(build the small models with `make models-vlm`)")
    return kind, path


def _resolve(kind: str) -> Any:
    target = VLM_KINDS[kind]
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            raise ModelConfigError(f"VLM kind {kind!r}: target {target!r} has no {attr!r}")
    if not callable(obj):
        raise ModelConfigError(f"VLM kind {kind!r}: target {target!r} is not callable")
    return obj


def load_vlm(spec: str) -> Any:
    """The `VisionLanguageModel` a spec names, e.g. `"small:.cache/models/vlm/small-ground"`.

    Raises ModelConfigError (malformed spec, unknown kind: lists the valid kinds) and
    ModelNotFoundError (the directory does not exist, or the loader finds no weights there).
    """
    from nodes.models.vlm.base import VisionLanguageModel

    kind, path = parse_vlm_spec(spec)
    model = _resolve(kind)(path)
    if not isinstance(model, VisionLanguageModel):
        raise ModelConfigError(f"VLM spec {spec!r}: the {kind} loader returned "
                               f"{type(model).__name__}, expected a VisionLanguageModel")
    return model
