"""SkyMoE: a mixture-of-experts vision-language model for remote sensing (see README.md).

Names are imported on first use, so importing the package loads neither torch nor transformers.
"""

from __future__ import annotations

from nodes.lazy import lazy_exports

_EXPORTS = {
    "nodes.models.skymoe.config": ("SkyMoEConfig", "read_config"),
    "nodes.models.skymoe.moe": ("MoELayer", "RoutingStats", "load_balance_loss", "upcycle_ffn"),
    "nodes.models.skymoe.lora": ("LoRALinear", "add_lora", "lora_parameters", "merge_lora"),
    "nodes.models.skymoe.net": ("SkyMoENet", "upcycle_net", "widen_net"),
    "nodes.models.skymoe.tokens": ("TokenMap", "build_vocab"),
    "nodes.models.skymoe.vlm": ("SkyMoEVLM", "load_net", "save_net"),
    "nodes.models.skymoe.hf": ("load_hf_llm", "upcycle_hf_llm"),
}
__all__, __getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
