"""Vision-language models behind one interface (step-wise generation, V(x), E(T)).

Names are imported on first use (transformers loads only for the Qwen2-VL adapter).
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.models.vlm.base": ("Generation", "VisionLanguageModel"),
    "nodes.models.vlm.data": ("SPLITS", "TASKS", "Sample", "load_samples", "select_split"),
    "nodes.models.vlm.boxes": ("detection_f1", "format_box", "format_boxes", "iou",
                               "parse_boxes"),
    "nodes.models.vlm.lab_datasets": ("load_dota", "load_resisc45", "read_dota_labels"),
    "nodes.models.vlm.small": ("SmallVLM", "SmallVLMConfig", "SmallVLMNet", "load_image",
                               "preset"),
    "nodes.models.vlm.hf_qwen2vl": ("HFQwen2VL",),
    "nodes.models.vlm.loader": ("load_vlm", "parse_vlm_spec", "register_vlm_kind", "vlm_kinds"),
    "nodes.models.vlm.qwen_tokenizer": ("build_qwen2_tokenizer", "qwen_tiktoken_path"),
    "nodes.models.vlm.tiny_qwen2vl": ("build_tiny_qwen2vl", "tiny_qwen2vl_config"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
