"""SkyMoE's training stages on real images: a short run learns, each stage trains only what it
should, the cache is reused while data and settings match, and the result loads as a VLM."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from nodes.models.skymoe.train import DenseSettings, MoESettings, build
from nodes.models.skymoe.vlm import SkyMoEVLM
from nodes.models.vlm.data import load_samples

TINY = DenseSettings(encoder_steps=8, base_steps=100, stage1_steps=8, batch=16, lr=3e-3,
                     lora_r=8, input_px=64, dim=32, layers=2, heads=4, ffn_dim=48)


def test_short_staged_run_learns_caches_and_loads(shared_data: Path, tmp_path: Path,
                                                  qwen_tokenizer) -> None:
    samples = load_samples(shared_data / "images", tasks=("rsvqa-lr", "ucmerced"))
    lines: list[str] = []
    moe = MoESettings(num_experts=2, steps=6, batch=16)
    built = build(shared_data / "images", tmp_path, TINY, [moe], log=lines.append,
                  samples=samples)
    assert sorted(built) == ["dense", "skymoe-e2-6steps"]
    prov = json.loads((tmp_path / "skymoe-e2-6steps/provenance.json").read_text())
    dense = prov["parent"]["stages"]
    first = float(next(ln for ln in lines if ln.startswith("stage0 step 0/")).split()[4])
    assert dense["stage0"]["final_ar_loss"] < 0.6 * first        # from ~ln(vocab) well down
    d = TINY.dim
    assert dense["stage1"]["trainable_params"] == 2 * TINY.layers * 2 * 8 * d  # A and B, q, v
    assert dense["stage1"]["lora_targets"] == ["blocks.0.attn.q_proj", "blocks.0.attn.v_proj",
                                               "blocks.1.attn.q_proj", "blocks.1.attn.v_proj"]
    stage2 = prov["stages"]["stage2"]
    expert = 3 * d * TINY.ffn_dim
    assert stage2["trainable_params"] == 2 * expert + 2 * d        # one MoE layer: 2 experts
    assert stage2["final_aux_loss"] >= 1.0 - 1e-6                  # L_aux >= 1 (1 = balanced)
    assert prov["split"]["train_images"] < len({s.image_key for s in samples})
    assert len(prov["data_sha256"]) == 64 and prov["torch"] == torch.__version__

    lines.clear()
    build(shared_data / "images", tmp_path, TINY, [moe], log=lines.append, samples=samples)
    assert lines == [f"dense: cached ({tmp_path / 'dense'})",
                     f"skymoe-e2-6steps: cached ({tmp_path / 'skymoe-e2-6steps'})"]

    vlm = SkyMoEVLM.load(tmp_path / "skymoe-e2-6steps", qwen_tokenizer)
    gen = vlm.generate(torch.rand(3, 256, 256), samples[0].prompt)
    assert gen.num_tokens >= 1 and vlm.cfg.num_experts == 2
