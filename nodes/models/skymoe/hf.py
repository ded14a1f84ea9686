"""The lab path: SkyMoE's stages on a Hugging Face decoder loaded from a local directory.

Owns loading a causal LM checkpoint (`transformers`, `local_files_only=True`; Qwen2 or Llama /
Vicuna layouts, whose decoder layers hold `self_attn.{q,v}_proj` and `mlp`), stage I's LoRA on
W_q and W_v, and stage II's upcycling of every second layer's MLP into an `MoELayer` of copies.
The vision tower and adaptor of the paper's LLaVA-style checkpoint are not wrapped here: this
module covers the LLM, where SkyMoE's changes are. Nothing is downloaded.

    lm = load_hf_llm(local_dir)                       # AutoModelForCausalLM, eval mode
    add_lora(lm, ("q_proj", "v_proj"), r=64)          # stage I (nodes.models.skymoe.lora)
    merge_lora(lm); moe = upcycle_hf_llm(lm, 4)       # stage II
    loss = lm(**batch).loss + alpha * hf_aux_loss(moe)
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.skymoe.moe import MoELayer, upcycle_ffn

__all__ = ["decoder_layers", "hf_aux_loss", "load_hf_llm", "upcycle_hf_llm"]


def load_hf_llm(local_dir: Path, dtype: torch.dtype = torch.float32):
    """`AutoModelForCausalLM` from `local_dir` only (a `save_pretrained` directory)."""
    from transformers import AutoModelForCausalLM

    local_dir = Path(local_dir)
    if not (local_dir / "config.json").is_file():
        raise ModelNotFoundError(f"Hugging Face LLM {local_dir}: no config.json, expected a "
                                 "save_pretrained directory (e.g. Vicuna-1.5 or Qwen2)")
    return AutoModelForCausalLM.from_pretrained(local_dir, local_files_only=True,
                                                dtype=dtype).eval()


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a Llama/Qwen2-style causal LM (`model.model.layers`)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList) or not all(hasattr(ly, "mlp") for ly in layers):
        raise ModelConfigError(f"{type(model).__name__}: no model.layers[i].mlp, expected a "
                               "Llama/Qwen2-style decoder")
    return layers


def upcycle_hf_llm(model: nn.Module, num_experts: int, top_k: int = 2, moe_every: int = 2,
                   normalize_topk: bool = True, seed: int = 0) -> list[MoELayer]:
    """Replace the MLP of layers `i % moe_every == moe_every - 1` by MoE layers of copies (in
    place); returns the new MoE layers."""
    torch.manual_seed(seed)
    dim = model.config.hidden_size
    out = []
    for i, layer in enumerate(decoder_layers(model)):
        if i % moe_every == moe_every - 1:
            layer.mlp = upcycle_ffn(layer.mlp, dim, num_experts, top_k, normalize_topk)
            out.append(layer.mlp)
    if not out:
        raise ModelConfigError(f"upcycling: moe_every={moe_every} selects no layer of "
                               f"{len(decoder_layers(model))}")
    return out


def hf_aux_loss(model: nn.Module) -> torch.Tensor:
    """Sum of the MoE layers' L_aux from the last forward pass."""
    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    return torch.stack([m.aux_loss for m in layers]).sum() if layers else torch.zeros(())
