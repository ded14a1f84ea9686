"""SkyMoE's network and VLM: upcycling keeps the function, LoRA trains only q/v adapters,
generation through the VLM interface, routing stats, save/load, errors that name the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nodes.models.errors import ModelConfigError, ModelNotFoundError
from nodes.models.skymoe.config import SkyMoEConfig, read_config
from nodes.models.skymoe.lora import LoRALinear, add_lora, lora_parameters, merge_lora
from nodes.models.skymoe.net import SkyMoENet, upcycle_net, widen_net
from nodes.models.skymoe.tokens import TokenMap
from nodes.models.skymoe.train import MoESettings
from nodes.models.skymoe.vlm import SkyMoEVLM, save_net

PROMPT = "Which scene does this image belong to?"


def _batch(net: SkyMoENet, tok) -> tuple[torch.Tensor, ...]:
    tm = TokenMap(tok, net.cfg.vocab)
    rows, labels, valid = tm.batch([PROMPT, "is there a road"], ["annual crop", "yes"], 48, 8)
    return torch.randn(2, net.cfg.grid ** 2, net.encoder.width), rows, labels, valid


@torch.no_grad()
def test_upcycled_and_widened_models_equal_the_dense_one(tiny_dense, qwen_tokenizer) -> None:
    vis, rows, _, valid = _batch(tiny_dense, qwen_tokenizer)
    assert not valid.all()                 # padding (not routed by the MoE) is left out below
    ref = tiny_dense(vis, rows, valid)[valid]
    for num_experts in (1, 4):
        moe = upcycle_net(tiny_dense, num_experts).eval()
        assert [i for i, b in enumerate(moe.blocks) if b.ffn in moe.moe_layers()] == [1, 3]
        assert torch.allclose(moe(vis, rows, valid)[valid], ref, atol=1e-5)
    wide = widen_net(tiny_dense, 2).eval()
    assert wide.cfg.ffn_dims == (48, 96, 48, 96)
    assert torch.allclose(wide(vis, rows, valid)[valid], ref, atol=1e-5)
    img = torch.rand(3, 80, 70)
    a = SkyMoEVLM(tiny_dense, qwen_tokenizer).generate(img, PROMPT, 6)
    b = SkyMoEVLM(upcycle_net(tiny_dense, 4), qwen_tokenizer).generate(img, PROMPT, 6)
    assert a.token_ids == b.token_ids
    assert b.token_probs == pytest.approx(a.token_probs, abs=1e-5)


def test_lora_trains_only_q_and_v_adapters(tiny_dense, qwen_tokenizer) -> None:
    vis, rows, labels, valid = _batch(tiny_dense, qwen_tokenizer)
    with torch.no_grad():
        before_out = tiny_dense(vis, rows, valid)
    before = {k: v.clone() for k, v in tiny_dense.state_dict().items()}
    wrapped = add_lora(tiny_dense, ("q_proj", "v_proj"), r=4)
    assert wrapped == [f"blocks.{i}.attn.{p}" for i in range(4) for p in ("q_proj", "v_proj")]
    trainable = [p for p in tiny_dense.parameters() if p.requires_grad]
    assert {id(p) for p in trainable} == {id(p) for p in lora_parameters(tiny_dense)}
    with torch.no_grad():                               # B = 0: the function is unchanged
        assert torch.allclose(tiny_dense(vis, rows, valid), before_out, atol=1e-6)
    opt = torch.optim.SGD(trainable, lr=0.5)
    for _ in range(2):
        logits = tiny_dense(vis, rows, valid)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for m in tiny_dense.modules():
        if isinstance(m, LoRALinear):
            assert m.lora_B.abs().sum() > 0
    with torch.no_grad():
        lora_out = tiny_dense(vis, rows, valid)
    assert merge_lora(tiny_dense) == 8
    after = tiny_dense.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {f"blocks.{i}.attn.{p}.weight" for i in range(4)
                       for p in ("q_proj", "v_proj")}
    with torch.no_grad():
        assert torch.allclose(tiny_dense(vis, rows, valid), lora_out, atol=1e-5)


def test_generation_features_routing_and_work(tiny_dense, qwen_tokenizer) -> None:
    vlm = SkyMoEVLM(upcycle_net(tiny_dense, 4), qwen_tokenizer)
    img = torch.rand(3, 64, 64)
    vlm.track_routing()
    gen = vlm.start(img, PROMPT)
    vlm.step(gen, 1)
    vlm.step(gen, 5)
    whole = vlm.generate(img, PROMPT, 6)
    assert gen.token_ids == whole.token_ids and 1 <= gen.num_tokens <= 6
    assert set(gen.token_ids) <= set(tiny_dense.cfg.vocab)        # Qwen2's own ids
    assert all(0 < p <= 1 for p in gen.token_probs)
    assert isinstance(vlm.decode(gen), str)
    assert vlm.token_features(gen).shape == (gen.num_tokens, 32)
    assert vlm.image_features(img).shape == (16, 32)
    assert vlm.region_features(torch.rand(5, 3, 20, 20)).shape == (5, 4, 32)
    assert vlm.text_features(PROMPT).shape[1] == 32
    stats = vlm.routing_stats()
    assert [s["layer"] for s in stats] == [1, 3]
    for s in stats:                                  # two generations, k = 2 per token
        assert sum(s["tokens_per_expert"]) == 2 * s["tokens"] > 0
    work = vlm.work(img, PROMPT)
    wide = SkyMoEVLM(widen_net(tiny_dense, 2), qwen_tokenizer).work(img, PROMPT)
    every = SkyMoEVLM(upcycle_net(tiny_dense, 4, top_k=4), qwen_tokenizer).work(img, PROMPT)
    assert work.token_flops == pytest.approx(wide.token_flops, rel=0.05)  # equal active width
    assert every.token_flops > 1.2 * work.token_flops                     # dispatch skips work
    assert work.params > wide.params and work.prefill_flops > 10 * work.token_flops


def test_save_load_round_trip(tiny_dense, qwen_tokenizer, tmp_path: Path) -> None:
    vlm = SkyMoEVLM(upcycle_net(tiny_dense, 4), qwen_tokenizer)
    vlm.save(tmp_path / "m")
    back = SkyMoEVLM.load(tmp_path / "m", qwen_tokenizer)
    assert back.cfg == vlm.cfg and back.cfg.num_experts == 4
    img = torch.rand(3, 64, 64)
    a, b = vlm.generate(img, PROMPT), back.generate(img, PROMPT)
    assert a.token_ids == b.token_ids
    assert b.token_probs == pytest.approx(a.token_probs, abs=1e-6)


def test_bad_dirs_and_configs_are_named(tiny_dense, tiny_cfg, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        SkyMoEVLM.load(tmp_path / "absent")
    with pytest.raises(ModelNotFoundError, match="config.json"):
        SkyMoEVLM.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"dim": 32, "colour": "red"}))
    with pytest.raises(ModelConfigError, match="colour"):
        read_config(tmp_path / "config.json")
    save_net(tiny_dense, tmp_path / "m")
    cfg = json.loads((tmp_path / "m/config.json").read_text())
    cfg["num_experts"] = 4                              # config says MoE, weights are dense
    (tmp_path / "m/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelConfigError, match="does not match config.json"):
        SkyMoEVLM.load(tmp_path / "m")
    (tmp_path / "m/weights.pt").unlink()
    with pytest.raises(ModelNotFoundError, match="weights.pt missing"):
        SkyMoEVLM.load(tmp_path / "m")
    with pytest.raises(ModelConfigError, match="dim=30"):
        SkyMoEConfig(dim=30, heads=4, vocab=[1, 2])
    with pytest.raises(ModelConfigError, match="vocab"):
        SkyMoEConfig()
    with pytest.raises(ModelConfigError, match="r=40"):
        add_lora(tiny_dense.blocks, ("q_proj",), r=40)
    with pytest.raises(ModelConfigError, match="no nn.Linear named"):
        add_lora(tiny_dense.blocks, ("query",), r=4)
    with pytest.raises(ModelConfigError, match="expected a dense model"):
        upcycle_net(upcycle_net(tiny_dense, 2), 2)
    with pytest.raises(ModelConfigError, match="num_experts=0 widen=1"):
        MoESettings(num_experts=0)
    with pytest.raises(ModelConfigError, match="template prefix not set"):
        SkyMoENet(tiny_cfg).sequence(torch.zeros(1, 16, 16), torch.zeros(1, 3, dtype=torch.long))


def test_hf_decoder_loaded_from_a_local_dir_upcycles_exactly(tmp_path: Path) -> None:
    """The lab path on a tiny random Qwen2 decoder built offline (same classes as Qwen2/Vicuna
    checkpoints; only the sizes differ)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nodes.models.skymoe.hf import hf_aux_loss, load_hf_llm, upcycle_hf_llm

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "lm")
    lm = load_hf_llm(tmp_path / "lm")
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        ref = lm(input_ids=ids).logits
    assert len(add_lora(lm, ("q_proj", "v_proj"), r=8)) == 8
    merge_lora(lm)
    moe = upcycle_hf_llm(lm, num_experts=4)
    assert len(moe) == 2
    out = lm(input_ids=ids, labels=ids)
    assert torch.allclose(out.logits.detach(), ref, atol=1e-5)
    total = out.loss + 0.01 * hf_aux_loss(lm)
    total.backward()
    assert moe[0].router.weight.grad is not None
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        load_hf_llm(tmp_path)


def test_skymoe_loads_by_spec_as_a_ground_model(tiny_dense, tmp_path: Path) -> None:
    """`skymoe:<dir>` is a VLM kind, so SpaceVerse's `ground_model` option can name it."""
    from nodes.models.vlm.loader import load_vlm

    save_net(upcycle_net(tiny_dense, 4), tmp_path / "m")
    model = load_vlm(f"skymoe:{tmp_path / 'm'}")
    assert isinstance(model, SkyMoEVLM)
    model.track_routing(True)
    prompt = "Which scene does this image belong to?"
    gen = model.step(model.start(torch.rand(3, 64, 64), prompt), 2)
    assert gen.token_ids and all(0.0 <= p <= 1.0 for p in gen.token_probs)
    assert sum(sum(layer["tokens_per_expert"]) for layer in model.routing_stats()) > 0
