"""Model adapters run by node workloads: the VLM interface and its implementations, and the
learned image codecs (`nodes.models.codecs`, imported as a subpackage).

See nodes/models/README.md. Names are imported on first use, so importing `nodes.models` does not
load torch or transformers; only the workloads that run a model pay for them.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "nodes.models.errors": ("DatasetError", "ModelConfigError", "ModelError",
                            "ModelNotFoundError"),
    "nodes.models.vlm": ("Generation", "HFQwen2VL", "SmallVLM", "VisionLanguageModel",
                         "build_qwen2_tokenizer", "build_tiny_qwen2vl", "qwen_tiktoken_path"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nodes.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
