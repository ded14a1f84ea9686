"""Model adapters run by node workloads: the VLM interface and its implementations, and the
learned image codecs (`nodes.models.codecs`, imported as a subpackage).

See nodes/models/README.md. Names are imported on first use, so importing `nodes.models` does not
load torch or transformers; only the workloads that run a model pay for them.
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.models.errors": ("DatasetError", "ModelConfigError", "ModelError",
                            "ModelNotFoundError"),
    "nodes.models.skymoe": ("SkyMoEVLM",),
    "nodes.models.vlm": ("Generation", "HFQwen2VL", "SmallVLM", "VisionLanguageModel",
                         "build_qwen2_tokenizer", "build_tiny_qwen2vl", "qwen_tiktoken_path"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
