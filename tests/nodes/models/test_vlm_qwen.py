"""Qwen2's tokenizer from qwen.tiktoken, and the tiny Qwen2-VL through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nodes.models.errors import ModelNotFoundError
from nodes.models.vlm.qwen_tokenizer import QWEN2_PATTERN, qwen_tiktoken_path

pytest.importorskip("transformers", reason="the ml extra (transformers) is not installed")


@pytest.fixture(scope="module")
def tiktoken_file() -> Path:
    try:
        return qwen_tiktoken_path()
    except ModelNotFoundError as exc:
        pytest.skip(f"no qwen.tiktoken: {exc}")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiktoken_file: Path) -> Path:
    from nodes.models.vlm.tiny_qwen2vl import build_tiny_qwen2vl

    torch.set_num_threads(1)
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("tiny-qwen2vl"), tiktoken_file)


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path):
    from nodes.models.vlm.hf_qwen2vl import HFQwen2VL

    return HFQwen2VL.from_local_dir(tiny_dir)


def test_special_token_ids_are_qwen2s(tiny) -> None:
    tok = tiny.tokenizer
    assert tok.encode("<|endoftext|>") == [151643]
    assert tok.encode("<|im_start|>") == [151644]
    assert tok.encode("<|im_end|>") == [151645]
    assert tok.encode("<|vision_start|>") == [151652]
    assert tok.encode("<|image_pad|>") == [151655]


def test_text_ids_match_tiktoken_itself(tiny, tiktoken_file: Path) -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    ref = tiktoken.Encoding("qwen", pat_str=QWEN2_PATTERN,
                            mergeable_ranks=load_tiktoken_bpe(str(tiktoken_file)),
                            special_tokens={})
    assert tiny.tokenizer.encode("Hello world") == [9707, 1879]
    for text in ("Is a residential building present?", "Number of roads: 12",
                 "Ünïcode — émojis 🛰️ and 中文", "  spaces\n\nand\ttabs"):
        assert tiny.tokenizer.encode(text) == ref.encode(text)


def test_stepwise_generation_equals_one_shot(tiny) -> None:
    img = torch.rand(3, 90, 110, generator=torch.Generator().manual_seed(0))
    gen = tiny.start(img, "Is there a road?")
    tiny.step(gen, 1)
    assert gen.num_tokens == 1
    tiny.step(gen, 2)
    whole = tiny.generate(img, "Is there a road?", 3)
    assert gen.token_ids == whole.token_ids[: gen.num_tokens]
    assert all(0 < p <= 1 for p in gen.token_probs)
    assert tiny.token_features(gen).shape == (gen.num_tokens, 64)


def test_features_share_the_llm_space(tiny) -> None:
    img = torch.rand(3, 112, 112)
    assert tiny.image_features(img).shape == (16, 64)       # 8 x 8 patches, 2 x 2 merged
    assert tiny.text_features("is there a road").shape[-1] == 64
    assert tiny.region_features(torch.rand(5, 3, 10, 10)).shape[0] == 5
    w = tiny.work(img, "Is there a road?")
    assert w.params == sum(p.numel() for p in tiny.model.parameters())
    assert w.prefill_flops > w.token_flops > 0


def test_missing_dir_is_named(tmp_path: Path) -> None:
    from nodes.models.vlm.hf_qwen2vl import HFQwen2VL

    with pytest.raises(ModelNotFoundError, match="no config.json"):
        HFQwen2VL.from_local_dir(tmp_path)
