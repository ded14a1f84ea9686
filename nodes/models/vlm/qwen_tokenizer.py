"""Qwen2's real tokenizer built offline from the `qwen.tiktoken` BPE file.

Owns finding the BPE file and converting it: the `dashscope` wheel ships `qwen.tiktoken`
(151,643 byte-level BPE ranks); we locate it through the installed distribution's file list
without importing dashscope, and transformers' `TikTokenConverter` turns it into a fast
tokenizer. Qwen2-VL's special tokens follow the BPE ranks in Qwen2's order, so every id equals
Qwen2's (`<|endoftext|>` 151643, `<|im_start|>` 151644, `<|image_pad|>` 151655).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from nodes.models.errors import ModelNotFoundError

__all__ = ["QWEN2_PATTERN", "QWEN2VL_SPECIAL_TOKENS", "build_qwen2_tokenizer",
           "qwen_tiktoken_path"]

# Qwen2's pre-tokenizer split (digits one at a time, unlike cl100k's \p{N}{1,3})
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
                 r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN2VL_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)


def qwen_tiktoken_path(distribution: str = "dashscope") -> Path:
    """Where the installed `distribution` keeps `qwen.tiktoken` (it is not imported)."""
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(f"qwen.tiktoken: distribution {distribution!r} not installed; "
                                 "expected it to ship resources/qwen.tiktoken (pip install "
                                 "--no-deps dashscope)") from None
    for f in dist.files or ():
        if f.name == "qwen.tiktoken":
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelNotFoundError(f"qwen.tiktoken: not among the files of {distribution!r}")


def build_qwen2_tokenizer(tiktoken_file: Path | None = None):
    """A `PreTrainedTokenizerFast` with Qwen2-VL's vocabulary and ids."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = Path(tiktoken_file) if tiktoken_file else qwen_tiktoken_path()
    if not path.is_file():
        raise ModelNotFoundError(f"qwen.tiktoken: {path} is not a file")
    conv = TikTokenConverter(vocab_file=str(path), pattern=QWEN2_PATTERN,
                             extra_special_tokens=list(QWEN2VL_SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(tokenizer_object=conv.converted(), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", model_max_length=32768)
