"""Vision-language models behind one interface (step-wise generation, V(x), E(T)).

Names are imported on first use (transformers loads only for the Qwen2-VL adapter).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "nodes.models.vlm.base": ("Generation", "VisionLanguageModel"),
    "nodes.models.vlm.data": ("SPLITS", "TASKS", "Sample", "load_samples", "select_split"),
    "nodes.models.vlm.small": ("SmallVLM", "SmallVLMConfig", "SmallVLMNet", "load_image",
                               "preset"),
    "nodes.models.vlm.hf_qwen2vl": ("HFQwen2VL",),
    "nodes.models.vlm.qwen_tokenizer": ("build_qwen2_tokenizer", "qwen_tiktoken_path"),
    "nodes.models.vlm.tiny_qwen2vl": ("build_tiny_qwen2vl", "tiny_qwen2vl_config"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nodes.models.vlm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
