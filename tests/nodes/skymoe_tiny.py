"""A tiny SkyMoE (4 experts in layers 1 and 3) written to a folder, for the serve job's tests.

Random weights: its answers are not meant to be right (the tests check the serving, not the
model's accuracy), but its routing is real and its experts differ, so tokens spread over them.
"""

from __future__ import annotations

from pathlib import Path

TASKS = ("eurosat-rgb", "neon-count", "neon-grounding")
TEXTS = ("Which scene does this image belong to?", "How many trees are in this image?",
         "[refer] Where is <p>the largest tree on the left</p>?", "annual crop forest river",
         "sea lake pasture highway 0 1 2 3 4 5 6 7 8 9 <box>(12,34),(56,78)</box>")


def build_tiny_skymoe(model_dir: Path, name: str = "tiny-e4", experts: int = 4) -> Path:
    """Builds, upcycles (experts perturbed apart) and saves a tiny SkyMoE; returns the dir."""
    import torch

    from nodes.models.skymoe.config import SkyMoEConfig
    from nodes.models.skymoe.net import SkyMoENet, upcycle_net
    from nodes.models.skymoe.tokens import build_vocab
    from nodes.models.skymoe.vlm import save_net
    from nodes.models.vlm.qwen_tokenizer import build_qwen2_tokenizer

    torch.manual_seed(0)
    cfg = SkyMoEConfig(name=name, input_px=64, enc_widths=(8, 8, 16, 16), dim=32, layers=4,
                       heads=4, ffn_dim=48, max_answer_tokens=12,
                       vocab=build_vocab(build_qwen2_tokenizer(), TEXTS))
    dense = SkyMoENet(cfg).eval()
    net = upcycle_net(dense, experts) if experts else dense
    with torch.no_grad():
        net.head.weight.mul_(30)  # random heads are flat; a larger scale gives distinct tokens
        for m in net.moe_layers():
            for e in m.experts:
                for p in e.parameters():
                    p.add_(0.05 * torch.randn_like(p))
    save_net(net.eval(), model_dir)
    return model_dir
