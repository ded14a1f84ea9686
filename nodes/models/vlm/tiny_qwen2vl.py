"""A tiny Qwen2-VL built offline: Qwen2-VL's architecture with random weights, Qwen2's tokenizer.

Owns building and saving it to a local directory, which `HFQwen2VL.from_local_dir` then loads
through exactly the code path of the lab's real 2B/7B checkpoints. It answers nonsense (its
weights are random): it exists to exercise the real code path, never to produce results.
"""

from __future__ import annotations

from pathlib import Path

from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

__all__ = ["build_tiny_qwen2vl", "tiny_qwen2vl_config"]


def tiny_qwen2vl_config():
    """2 text layers of width 64, a 2-block ViT of width 64; Qwen2's vocabulary and token ids."""
    from transformers import Qwen2VLConfig

    return Qwen2VLConfig(
        text_config=dict(vocab_size=151936, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3],
                                          "rope_theta": 1e6},
                         bos_token_id=151643, eos_token_id=151645),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=64, num_heads=4, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
        vision_end_token_id=151653, tie_word_embeddings=True)


def build_tiny_qwen2vl(out_dir: Path, tiktoken_file: Path | None = None, seed: int = 0,
                       max_pixels: int = 224 * 224) -> Path:
    """Write model, tokenizer and image processor into `out_dir`; returns it."""
    import torch
    from transformers import (
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(tiny_qwen2vl_config()).eval()
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=max_pixels),
        tokenizer=build_qwen2_tokenizer(tiktoken_file),
        video_processor=Qwen2VLVideoProcessor())
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
